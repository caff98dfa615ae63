"""An agent puts the citizen on hold and transfers them, through the real Asterisk: the kit
desk phone sends the re-INVITEs (a=sendonly, then sendrecv) and a REFER, as a desk phone's
hold and transfer keys do. The call record must show the hold time and the transfer, and the
citizen must reach the second agent."""

from __future__ import annotations

from hotline.centre import Centre
from sipkit.kit import Call, Dtmf, Hangup, SipKit, Wait
from telephony.ami import EventTap
from tests.conftest import AGENT_PORT, agent_ip, api, ensure_ready, offered, wait_until


def _record(caller: str) -> dict | None:  # type: ignore[type-arg]
    status, page = api(f"/api/v1/calls?caller_number={caller}")
    assert status == 200
    return page["items"][0] if page["total"] else None


def test_an_agent_holds_then_transfers_the_citizen_to_a_colleague(
        centre: Centre, kit: SipKit, ami: EventTap) -> None:
    ensure_ready(centre)
    caller = "13800138061"
    with kit.agent_phone("8101", agent_ip("8101"), port=AGENT_PORT, answer_after=0.5,
                         hold=(1.5, 3.0), transfer=(1.0, "8102")) as first, \
            kit.agent_phone("8102", agent_ip("8102"), port=AGENT_PORT,
                            answer_after=0.5) as second:
        result = kit.call(Call(caller_id=caller, script=(
            Wait(0.5), Dtmf("1"), Wait(16), Hangup())))
    assert result.outcome == "answered" and result.hangup_by == "caller"
    [took] = offered(first, caller)
    assert took.outcome == "answered" and took.transferred_to == "8102"
    assert took.held_at is not None and took.unheld_at is not None
    held_for = took.unheld_at - took.held_at
    [colleague] = offered(second, caller)  # the citizen, not a new caller
    assert colleague.outcome == "answered" and colleague.hangup_by == "far_end"

    wait_until(lambda: _record(caller) is not None, 15, "no call record")
    record = _record(caller)
    assert record is not None
    assert record["outcome"] == "answered" and record["agent"] == "8101"
    assert abs(record["hold_seconds"] - held_for) < 0.5  # timed from Asterisk's events
    [transfer] = record["transfers"]
    assert (transfer["kind"], transfer["to"], transfer["result"]) == (
        "blind", "8102", "Success")
    holds = [e for e in ami.snapshot() if e.get("Event") in ("Hold", "Unhold")
             and caller in (e.get("CallerIDNum"), e.get("ConnectedLineNum"))]
    # one hold, taken back (Asterisk repeats an Unhold when the transfer moves the caller)
    assert [e["Event"] for e in holds][:2] == ["Hold", "Unhold"]
    assert [e["Event"] for e in holds].count("Hold") == 1
