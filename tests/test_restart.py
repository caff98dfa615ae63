"""Services that stop and come back, with real calls: the telephony service restarted in the
middle of a call on the same event stream (the resync adopts the call that is still up and
finds the seats as they were; no domain event appears twice, the call is recorded once),
and a tickets worker away while a survey call fails (it handles the failure on its return,
once)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import select

from asterisk_conf.sandbox import Sandbox
from core.config import Settings
from core.db import transaction
from hotline.centre import Centre
from sipkit.kit import Call, Dtmf, SipKit, Wait
from telephony import records
from tests.conftest import (
    AGENT_PORT,
    CASE_LOOP,
    TEST_AGENTS,
    agent_ip,
    ensure_ready,
    wait_until,
)
from tickets import service
from tickets.models import Survey, WorkOrder
from tickets.worker import TicketsWorker

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
                # call.ended is published after the record's transaction commits
                wait_until(lambda: any(e["type"] == "call.ended" for _id, e in
                                       second.bus.read(after)), 10, "no call.ended")
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


def test_a_survey_call_that_fails_while_the_worker_is_down_is_handled_once(
        pbx: Sandbox, pbx_settings: Settings, kit: SipKit) -> None:
    """The worker places a survey call and goes away; the citizen's line is busy and the
    telephony service says so on the bus; the worker comes back and handles it, once."""
    settings = replace(pbx_settings, tickets=replace(
        pbx_settings.tickets, survey_after_workdays=0, survey_hours="00:00-24:00"))
    phone = "13912340091"
    with Centre(settings, web=False, worker=False) as centre:
        policy = service.Policy.from_settings(settings)
        with transaction(centre.sessions) as session:
            case = service.open_order(session, appeal_type="complaint", channel="phone",
                                      description="井盖松动", actor="受理员",
                                      citizen_phone=phone, policy=policy,
                                      now=centre.clock.now()).case_number
            for action, role in CASE_LOOP:
                service.transition(session, case, action, actor=role, role=role,
                                   policy=policy, now=centre.clock.now())
        before = centre.bus.last_id()
        with kit.agent_phone("citizen", settings.pbx.trunk_host, port=settings.pbx.trunk_port,
                             behaviour="refuse", refuse_code=486) as citizen:
            worker = TicketsWorker(settings, centre.sessions, centre.bus, centre.clock)
            [attempt] = worker.dial_surveys()  # ... and the worker stops here

            def failed() -> bool:
                return any(e["type"] == "outbound.failed" and e["reference"] == attempt
                           for _id, e in centre.bus.read(before))

            wait_until(failed, 30, "the busy line was not reported on the bus")
        assert [r.outcome for r in citizen.results()] == ["refused"]
        assert _survey(centre, case).state == "calling"  # nobody has handled it yet
        back = TicketsWorker(settings, centre.sessions, centre.bus, centre.clock)
        back.survey_outcomes()
        handled = _survey(centre, case)
        assert (handled.state, handled.call_attempts, handled.note) == ("scheduled", 1, "busy")
        back.survey_outcomes()
        assert _survey(centre, case).updated_at == handled.updated_at  # handled once


def _survey(centre: Centre, case: str) -> Survey:
    with centre.sessions() as session:
        found = session.scalar(select(Survey).join(WorkOrder).where(
            WorkOrder.case_number == case))
        assert found is not None
        session.expunge(found)
        return found
