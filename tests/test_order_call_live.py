"""The order bound to the live call, through the real Asterisk with kit calls (issue 10,
item 4): an agent answers, the order is opened with the call's id while the call is up;
after the hang-up the call record shows the case number and the order lists the call with
its recording; a second call keying that case number in the IVR joins the same order."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from accounts.service import ROLES, add_user
from core.db import transaction
from hotline.centre import Centre
from recordings.catalogue import recordings_of_case
from sipkit.kit import Call, Dtmf, Hangup, SipKit, Wait
from telephony.models import CallRecord
from tests.conftest import AGENT_PORT, agent_ip, ensure_ready, wait_until
from tests.conftest import api as _api


def _event(centre: Centre, after: str, kind: str, **fields: str) -> dict[str, Any] | None:
    return next((e for _id, e in centre.bus.read(after, count=10_000) if e.get("type") == kind
                 and all(e.get(k) == v for k, v in fields.items())), None)


def _wait_event(centre: Centre, after: str, kind: str, timeout: float,
                **fields: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (found := _event(centre, after, kind, **fields)) is None:
        assert time.monotonic() < deadline, f"no {kind} {fields}"
        time.sleep(0.1)
    return found


def test_an_order_saved_during_the_call_gets_the_call_and_a_repeat_caller_joins_it(
        centre: Centre, kit: SipKit) -> None:
    with transaction(centre.sessions) as session:
        token = add_user(session, "测试受理员", ["operator"], True, ROLES,
                         now=centre.clock.now())
    operator = {"Authorization": f"Bearer {token}"}
    ensure_ready(centre)
    caller = "13600000071"
    after = centre.bus.last_id()
    with kit.agent_phone("8101", agent_ip("8101"), port=AGENT_PORT, answer_after=1.0), \
            kit.agent_phone("8102", agent_ip("8102"), port=AGENT_PORT, answer_after=1.0):
        run = kit.start_calls(Call(caller_id=caller, script=(
            Wait(1.0), Dtmf("1"), Wait(12.0), Hangup())))
        started = _wait_event(centre, after, "call.started", 15, caller_number=caller)
        call_id = started["call_id"]
        _wait_event(centre, after, "call.agent_connected", 15, call_id=call_id)
        # the agent types the order while talking
        status, order = _api("/api/v1/orders", {
            "appeal_type": "complaint", "description": "人民路口暴露垃圾",
            "channel": "phone", "citizen_phone": caller, "call_id": call_id}, operator)
        assert status == 201, order
        case = order["case_number"]
        assert [(c["call_id"], c["how"], c["pending"], c["recording"]) for c in
                order["calls"]] == [(call_id, "intake", True, None)]
        assert centre.telephony.live_calls() == [call_id]  # it was saved while the call was up
        [result] = run.wait()
    assert result.outcome == "answered"

    def call_view() -> dict[str, Any]:
        status, call = _api(f"/api/v1/calls/{call_id}")
        return call if status == 200 else {}

    wait_until(lambda: call_view().get("case_number") == case, 20,
               "the call record never showed the case number")
    status, order = _api(f"/api/v1/orders/{case}")
    assert status == 200
    [first] = order["calls"]
    assert (first["call_id"], first["how"], first["pending"], first["outcome"]) == (
        call_id, "intake", False, "answered")
    assert first["agent"] in ("8101", "8102") and 5 < first["talk_seconds"] < 14
    with centre.sessions() as session:
        path = session.scalar(select(CallRecord.recording_path).where(
            CallRecord.call_id == call_id))
    assert path is not None and "path" not in (first["recording"] or {})
    audio = Path(path).read_bytes()
    assert first["recording"] == {"sha256": hashlib.sha256(audio).hexdigest(),
                                  "bytes": len(audio)}
    assert len(audio) > 44
    assert [p.name for p in recordings_of_case(centre.settings.storage.recordings_dir,
                                                 case)] == [f"{call_id}.wav"]

    # The citizen calls again, keys 4 (progress) and the case number, then 1 for a person.
    again = centre.bus.last_id()
    with kit.agent_phone("8101", agent_ip("8101"), port=AGENT_PORT, answer_after=1.0), \
            kit.agent_phone("8102", agent_ip("8102"), port=AGENT_PORT, answer_after=1.0):
        [second] = kit.calls(Call(caller_id=caller, script=(
            Wait(1.0), Dtmf("4"), Wait(2.0), Dtmf(case, gap=0.15), Wait(9.0), Dtmf("1"),
            Wait(10.0), Hangup()), max_seconds=60))
    assert second.outcome == "answered"
    ended = _wait_ended(centre, again, caller)
    second_id = ended["call_id"]
    assert ("case", case) in [(s["node"], s["value"]) for s in ended["record"]["ivr_path"]]
    wait_until(lambda: _api(f"/api/v1/calls/{second_id}")[1].get("case_number") == case, 20,
               "the second call never joined the order")
    status, order = _api(f"/api/v1/orders/{case}")
    assert [(c["call_id"], c["how"], c["pending"]) for c in order["calls"]] == [
        (call_id, "intake", False), (second_id, "ivr", False)]
    assert order["calls"][1]["recording"]["bytes"] > 44
    assert len(recordings_of_case(centre.settings.storage.recordings_dir, case)) == 2


def _wait_ended(centre: Centre, after: str, caller: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        for _id, event in centre.bus.read(after, count=10_000):
            if event.get("type") == "call.ended" and \
                    event.get("record", {}).get("caller_number") == caller:
                return event
        assert time.monotonic() < deadline, "the second call's record was never stored"
        time.sleep(0.2)
