"""The telephony service restarted in the middle of a real call, on the same event stream:
the resync adopts the call that is still up and finds the seats as they were, and no domain
event appears twice (the call's start, the agent's seat). The call is recorded once."""

from __future__ import annotations

from typing import Any

from asterisk_conf.sandbox import Sandbox
from hotline.centre import Centre
from hotline.config import Settings
from sipkit.kit import Call, Dtmf, SipKit, Wait
from telephony import records
from tests.conftest import AGENT_PORT, TEST_AGENTS, agent_ip, ensure_ready, wait_until

CALLER = "13700000091"


def _stored(centre: Centre) -> list[dict[str, Any]]:
    with centre.sessions() as session:
        return records.find_calls(session, records.CallQuery(caller_number=CALLER))[1]


def test_a_restart_mid_call_publishes_no_event_twice(
        pbx: Sandbox, pbx_settings: Settings, kit: SipKit) -> None:
    first = Centre(pbx_settings, web=False).start()
    try:
        ensure_ready(first)
        after = first.bus.last_id()
        with kit.agent_phone("8101", agent_ip("8101"), port=AGENT_PORT, answer_after=0.5,
                             talk_seconds=12), \
                kit.agent_phone("8102", agent_ip("8102"), port=AGENT_PORT, answer_after=0.5,
                                talk_seconds=12):
            run = kit.start_calls(Call(caller_id=CALLER, script=(Wait(1), Dtmf("1")),
                                       max_seconds=40))

            def connected() -> bool:
                return any(e["type"] == "call.agent_connected" for _id, e in
                           first.bus.read(after) if e.get("call_id"))

            wait_until(connected, 20, "the call did not reach an agent")
            first.stop()  # the telephony service goes away mid-call ...
            second = Centre(pbx_settings, web=False).start()  # ... and comes back
            try:
                [result] = run.wait()
                wait_until(lambda: bool(_stored(second)), 20, "the call was not recorded")
                published = [e for _id, e in second.bus.read(after)]
            finally:
                second.stop()
        assert result.outcome == "answered"
    finally:
        first.stop()
    ids = [e["id"] for e in published]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    [call_id] = {e["call_id"] for e in published if e["type"] == "call.started"}
    types = [e["type"] for e in published if e.get("call_id") == call_id]
    assert types.count("call.started") == 1 and types.count("call.ended") == 1
    talking = [e for e in published if e["type"] == "seat.changed"
               and e["state"] == "talking" and e["agent"] in TEST_AGENTS]
    assert len(talking) == 1  # the seat was talking before and after the restart
    [record] = _stored(second)
    assert record["outcome"] == "answered" and record["incomplete"]  # adopted at the resync
