"""Keep-my-place callback through the real Asterisk: a waiting caller presses 1 and hangs up;
a placeholder keeps their place; when an agent takes it, the caller's phone is rung once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from core import phones
from core.config import Settings
from hotline.centre import Centre
from sipkit.kit import Call, Dtmf, Hangup, SipKit, Wait
from telephony import commands, records
from telephony.ami import EventTap
from telephony.models import CallbackRequest
from tests.conftest import AGENT_PORT, agent_ip, ensure_ready, wait_until


@pytest.fixture
def agents_paused(centre: Centre) -> Iterator[Centre]:
    """Nobody answers until the test says so; both agents are ready again afterwards."""
    ensure_ready(centre)
    for agent in ("8101", "8102"):
        commands.send(centre.bus.client, "seat.pause", {"agent": agent, "reason": "meeting"})
    yield centre
    ensure_ready(centre)


def _request(centre: Centre, caller: str) -> CallbackRequest | None:
    with centre.sessions() as session:
        return session.scalar(select(CallbackRequest).where(
            CallbackRequest.caller_number == phones.normalise(caller)))



def test_a_callback_keeps_the_callers_place_and_rings_them_once(
        agents_paused: Centre, kit: SipKit, ami: EventTap, pbx_settings: Settings) -> None:
    centre = agents_paused
    first, second = "13300000001", "13300000002"
    # the first caller waits, then presses 1 in the queue; the second waits behind them
    run_first = kit.start_calls(Call(caller_id=first, script=(
        Wait(0.5), Dtmf("1"), Wait(4), Dtmf("1")), max_seconds=25))
    ami.wait_for(lambda e: e.get("Event") == "QueueCallerJoin"
                 and e.get("CallerIDNum") == first, timeout=15)
    run_second = kit.start_calls(Call(caller_id=second, script=(
        Wait(0.5), Dtmf("1"), Wait(35), Hangup())))
    [gone] = run_first.wait()
    assert gone.hangup_by == "far_end"  # told "we will call you back", then let go
    wait_until(lambda: (r := _request(centre, first)) is not None and r.state == "holding", 10,
          "the callback was not placed in the queue")
    placeholder = ami.wait_for(lambda e: e.get("Event") == "QueueCallerJoin"
                               and e.get("Channel", "").startswith("Local/" + first))
    assert placeholder["Position"] == "1"  # ahead of the second caller, as before

    with kit.agent_phone("8101", agent_ip("8101"), port=AGENT_PORT, answer_after=0.5,
                         talk_seconds=3) as agent, \
            kit.agent_phone("citizen", pbx_settings.pbx.trunk_host,
                            port=pbx_settings.pbx.trunk_port, answer_after=0.5,
                            talk_seconds=2) as citizen_phone:
        commands.send(centre.bus.client, "seat.resume", {"agent": "8101"})
        wait_until(lambda: (r := _request(centre, first)) is not None and r.state == "connected",
              20, "the caller was not called back")
        [waited] = run_second.wait()
    rung = citizen_phone.results()
    assert [(r.to_user, r.outcome) for r in rung] == [(first, "answered")]  # once
    served = [r.from_user for r in agent.results() if r.outcome == "answered"]
    assert served[:2] == [pbx_settings.hotline.entry_number, second]  # place kept
    assert waited.outcome == "answered"
    # the call the hotline placed is recorded as its own, apart from the citizen's call in
    record = _stored(centre, "outbound")
    assert (record["purpose"], record["citizen_number"], record["outcome"]) == (
        "callback", first, "answered")
    assert (record["queue"], record["agent"]) == (pbx_settings.hotline.default_queue, "8101")
    assert _stored(centre, "inbound")["hangup_by"] == "system"  # told, then let go


def _stored(centre: Centre, direction: str) -> dict[str, Any]:
    """The newest stored call of one direction, once the telephony service has it."""
    found: list[dict[str, Any]] = []

    def stored() -> bool:
        with centre.sessions() as session:
            found[:] = records.find_calls(session, records.CallQuery(
                caller_number="13300000001", direction=direction, limit=1))[1]
        return bool(found)

    wait_until(stored, 15, f"no {direction} call record of 13300000001")
    return found[0]
