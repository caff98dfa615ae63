"""Nothing published twice, nothing lost on the bus: every domain event has an id from what
it describes and is published once; the tickets worker reads the stream through a consumer
group, so an event published while it is down, or read but not finished when it stopped, is
handled when it comes back, and handled once."""

from __future__ import annotations

import dataclasses
import itertools
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from core.clock import FixedClock
from core.config import Settings
from core.db import make_engine, session_factory, transaction, upgrade
from core.events import DomainEvent, EventBus
from core.live import connect_redis
from telephony import events as telephony_events
from telephony.calls import CallTracker
from telephony.events import CallStarted, OutboundCallFailed, SeatChanged
from telephony.seats import SeatBoard
from tests.conftest import CASE_LOOP, REDIS_SERVER_URL, make_settings
from tickets import events as tickets_events
from tickets import service, surveys
from tickets.events import WorkOrderMoved
from tickets.models import Survey, WorkOrder
from tickets.worker import EVENTS_GROUP, TicketsWorker

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


def _types() -> list[type[DomainEvent]]:
    modules = (telephony_events, tickets_events)
    return [t for m in modules for t in vars(m).values()
            if isinstance(t, type) and issubclass(t, DomainEvent) and "type" in vars(t)
            and t is not DomainEvent]


def test_every_event_type_has_an_id_from_what_it_describes() -> None:
    assert {t.type for t in _types()} >= {"call.started", "call.ended", "seat.changed",
                                         "outbound.failed", "work_order.opened",
                                         "work_order.moved", "work_order.deadline",
                                         "survey.finished"}
    for kind in _types():
        event = kind(at=NOW.timestamp())
        assert event.id.startswith(kind.type + ":") and event.as_dict()["id"] == event.id
    # the same fact, seen again later, is the same event; another fact is another
    started = CallStarted(at=1.0, call_id="h-1.1", caller_number="13800138000")
    again = CallStarted(at=99.0, call_id="h-1.1", caller_number="13800138000")
    assert started.id == again.id == "call.started:h-1.1"
    moves = [WorkOrderMoved(at=1.0, case_number="202611240001", version=v, action="open")
             for v in (2, 3)]
    assert moves[0].id == "work_order.moved:202611240001:2" != moves[1].id
    ready = SeatChanged(at=1795492049.1, agent="8001", state="ready")
    assert ready.id == "seat.changed:8001:ready::1795492049.100000"


@pytest.fixture(params=["embedded", "server"])
def bus(request: pytest.FixtureRequest, tmp_path: Path) -> EventBus:
    env = {} if request.param == "embedded" else {"REDIS_URL": REDIS_SERVER_URL}
    client = connect_redis(make_settings(tmp_path, **env))
    stream = f"test:events:{uuid.uuid4().hex}"  # the server is shared with other runs
    client.delete(stream)
    return EventBus(client, stream=stream)


def test_an_event_published_twice_is_in_the_stream_once(bus: EventBus) -> None:
    first = OutboundCallFailed(at=1.0, purpose="survey", reference=f"sv-{bus.stream}",
                               reason="busy")
    again = dataclasses.replace(first, at=2.0)  # the same attempt's failure, seen again
    other = dataclasses.replace(first, reference=f"sv-other-{bus.stream}")
    assert bus.publish(first) is not None
    assert bus.publish(again) is None
    assert bus.publish(other) is not None
    assert [e["reference"] for _id, e in bus.read()] == [first.reference, other.reference]


@pytest.fixture
def closed_order(tmp_path: Path) -> tuple[Settings, str]:
    """A closed order whose survey is due, with its own embedded Redis."""
    settings = make_settings(tmp_path)
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    policy = service.Policy(survey_after_workdays=0, survey_hours="00:00-24:00")
    with transaction(sessions) as session:
        number = service.open_order(session, appeal_type="complaint", channel="phone",
                                    description="路灯不亮", actor="受理员",
                                    citizen_phone="13912340077", policy=policy,
                                    now=NOW).case_number
        for action, role in CASE_LOOP:
            service.transition(session, number, action, actor=role, role=role, policy=policy,
                               now=NOW)
    return settings, number


def _survey(settings: Settings, number: str) -> Survey:
    sessions = session_factory(make_engine(settings.storage.database_url))
    with sessions() as session:
        found = session.scalar(select(Survey).join(WorkOrder).where(
            WorkOrder.case_number == number))
        assert found is not None
        session.expunge(found)
        return found


@pytest.mark.parametrize("stops", ["before reading", "after reading"])
def test_a_failure_published_while_the_worker_is_away_is_handled_once(
        closed_order: tuple[Settings, str], stops: str) -> None:
    settings, number = closed_order
    engine = make_engine(settings.storage.database_url)
    sessions = session_factory(engine)
    bus = EventBus(connect_redis(settings))
    clock = FixedClock(NOW)
    worker = TicketsWorker(settings, sessions, bus, clock)  # its group exists from here on
    with transaction(sessions) as session:
        [survey_id] = surveys.due_calls(session, NOW)
        attempt = surveys.claim_call(session, survey_id, NOW)
        assert attempt is not None
    # the worker is down; the telephony service reports the citizen's line busy
    assert bus.publish(OutboundCallFailed(at=NOW.timestamp(), purpose="survey",
                                          reference=attempt.attempt_id, number="x",
                                          reason="busy")) is not None
    if stops == "after reading":  # it read the event, then died before handling it
        assert [e["reference"] for _id, e in bus.consume(EVENTS_GROUP, worker.consumer)] == [
            attempt.attempt_id]
    back = TicketsWorker(settings, sessions, bus, clock)  # started again
    back.survey_outcomes()
    retry = _survey(settings, number)
    assert (retry.state, retry.call_attempts, retry.note) == ("scheduled", 1, "busy")
    clock.advance(timedelta(minutes=1))
    back.survey_outcomes()  # nothing left to handle: acknowledged
    assert _survey(settings, number).updated_at == retry.updated_at
    assert bus.client.xpending(bus.stream, EVENTS_GROUP)["pending"] == 0
    engine.dispose()


def test_a_restarted_telephony_service_publishes_nothing_twice(tmp_path: Path) -> None:
    """The events a resync produces again (the call still up, adopted again; the seats as
    they were) are the ones the first run published: the stream gets none of them twice."""
    bus = EventBus(connect_redis(make_settings(tmp_path)))

    live = [{"Channel": "PJSIP/citizens-00000001", "Uniqueid": "h-9.1", "Linkedid": "h-9.1",
             "CallerIDNum": "13800138000", "CallerIDName": "", "Exten": "12319",
             "Duration": "00:00:07"}]
    members = [{"Queue": "intake", "Name": "8001", "Location": "PJSIP/8001", "Paused": "0",
                "InCall": "1"}]
    saved: list[str] = []
    for run in itertools.count():  # the first run, then the restarted one
        tracker, board = CallTracker(), SeatBoard()
        board.restore(saved)
        at = 1795492100.0 + run * 30
        for event in tracker.resync(live, at) + board.resync(members, at):
            bus.publish(event)
        saved = [json.dumps(seat.as_dict()) for seat in board.seats.values()]
        if run == 1:
            break
    published = [e["id"] for _id, e in bus.read()]
    assert published == ["call.started:h-9.1",
                         "seat.changed:8001:talking::1795492100.000000"]


def test_a_consumer_reads_only_its_types_and_acknowledges_a_batch_at_once(
        bus: EventBus) -> None:
    group = "test-types"
    bus.ensure_group(group)
    wanted = CallStarted(at=1.0, call_id="c-1", caller_number="13800138000")
    others = [SeatChanged(at=2.0, agent="8001", state="ready"),
              OutboundCallFailed(at=3.0, purpose="survey", reference="sv-1", reason="busy")]
    later = CallStarted(at=4.0, call_id="c-2", caller_number="13800138001")
    for event in (others[0], wanted, others[1], later):
        bus.publish(event)
    # an entry written without the type field: its data says what it is
    bus.client.xadd(bus.stream, {"data": json.dumps({"type": "call.started", "call_id": "c-3"})})
    bus.client.xadd(bus.stream, {"data": json.dumps({"type": "seat.changed"})})
    read = list(bus.consume(group, "one", types={"call.started"}))
    assert [e["call_id"] for _id, e in read] == ["c-1", "c-2", "c-3"]
    # the four others are acknowledged already; the three given out wait for `ack`
    assert bus.client.xpending(bus.stream, group)["pending"] == 3
    bus.ack(group, read[0][0], read[1][0])  # one XACK for two
    assert bus.client.xpending(bus.stream, group)["pending"] == 1
    # the one not acknowledged (its handling failed) is given again, alone
    again = list(bus.consume(group, "one", types={"call.started"}))
    assert [e["call_id"] for _id, e in again] == ["c-3"]
    bus.ack(group, again[0][0])
    assert bus.client.xpending(bus.stream, group)["pending"] == 0
    assert list(bus.consume(group, "one", types={"call.started"})) == []
    # another process's bus, same consumer: finds nothing left either
    assert list(EventBus(bus.client, stream=bus.stream).consume(group, "one")) == []
