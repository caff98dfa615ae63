"""An order bound to its calls by a real foreign key (issue 10, item 4), on SQLite and
PostgreSQL: a call stored already is linked at once and its record shows the case number; a
call still up is linked pending and resolved when its record is stored (call.ended, through
the tickets worker, once however often the bus delivers it); an unknown call id is refused
and stores nothing; a citizen who keys the case number in the IVR calling again has the call
added to that order; the recording is filed under the case number; the migration turns old
free-text call ids into links."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.clock import FixedClock
from core.config import Settings
from core.db import UtcDateTime, alembic_config, make_engine, session_factory, transaction, upgrade
from core.events import EventBus
from core.live import connect_redis
from recordings.catalogue import RecordingFile, recordings_of_case
from telephony import records
from telephony.events import CallEnded, CallStarted
from telephony.models import CallRecord
from tests import api_world
from tests.conftest import REDIS_SERVER_URL, make_settings
from tickets import service
from tickets.models import WorkOrder, WorkOrderCall
from tickets.worker import TicketsWorker

Sessions = sessionmaker[Session]
NOW = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
STARTED = NOW.timestamp() - 120


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[tuple[Settings, Sessions, EventBus]]:
    settings = make_settings(tmp_path, DATABASE_URL=database_url, REDIS_URL=REDIS_SERVER_URL)
    engine = make_engine(database_url)
    upgrade(engine)
    client = connect_redis(settings)
    bus = EventBus(client, stream=f"test:events:{uuid.uuid4().hex}")  # a shared server
    yield settings, session_factory(engine), bus
    for key in client.scan_iter(f"{bus.stream}*"):
        client.delete(key)
    engine.dispose()


def _record(call_id: str, *, ivr_path: list[dict[str, Any]] | None = None,
            agent: str | None = "8101", talk: float | None = 61.5) -> dict[str, Any]:
    return {"call_id": call_id, "caller_number": "13800138000", "caller_name": "",
            "entry_number": "12319", "started_at": STARTED, "ended_at": STARTED + 90,
            "duration_seconds": 90.0, "outcome": "answered" if agent else "ivr",
            "queue": "intake", "queue_position": 1, "wait_seconds": 4.0,
            "short_abandon": False, "agent": agent,
            "connected_at": STARTED + 20 if agent else None, "talk_seconds": talk,
            "hold_seconds": 0.0, "hangup_cause": 16, "hangup_cause_text": "Normal Clearing",
            "incomplete": False, "ivr_path": ivr_path or [], "agent_attempts": [],
            "transfers": [], "legs": []}


def _store(settings: Settings, sessions: Sessions, record: dict[str, Any],
           audio: bytes = b"RIFF-a-call") -> dict[str, Any]:
    """The telephony service's part: the recording on disk, the record stored once."""
    path = settings.storage.recordings_dir / "2026/11/29" / f"{record['call_id']}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(audio)
    recording = RecordingFile(path=path, sha256="ab" * 32, size=len(audio))
    with transaction(sessions) as session:
        assert records.store_call(session, record, recording)
        stored = records.get_call(session, record["call_id"])
    assert stored is not None
    return stored


def _open(sessions: Sessions, bus: EventBus | None, call_id: str = "") -> str:
    with transaction(sessions) as session:
        return service.open_order(session, appeal_type="complaint", description="暴露垃圾",
                                  channel="phone", actor="受理员小王", call_id=call_id,
                                  bus=bus, now=NOW).case_number


def _calls(sessions: Sessions, case_number: str) -> list[dict[str, Any]]:
    with sessions() as session:
        return service.calls_of_order(session, case_number)


def _case_of(sessions: Sessions, call_id: str) -> str | None:
    with sessions() as session:
        call = records.get_call(session, call_id)
    assert call is not None
    return call["case_number"]


def test_an_order_opened_on_a_finished_call_lists_it_and_the_call_shows_the_case(
        world: tuple[Settings, Sessions, EventBus]) -> None:
    settings, sessions, bus = world
    _store(settings, sessions, _record("1764381480.7"))
    case = _open(sessions, bus, "1764381480.7")
    assert case == "202611290001"
    assert _calls(sessions, case) == [{
        "call_id": "1764381480.7", "how": "intake", "linked_at": NOW, "pending": False,
        "started_at": datetime(2026, 11, 29, 1, 58, tzinfo=UTC), "agent": "8101",
        "outcome": "answered", "talk_seconds": 61.5,
        "recording": {"sha256": "ab" * 32, "bytes": 11}}]
    assert _case_of(sessions, "1764381480.7") == case


def test_an_unknown_call_id_is_refused_and_nothing_is_stored(
        world: tuple[Settings, Sessions, EventBus]) -> None:
    _settings, sessions, bus = world
    for wrong, says in (("1764381480.99", "no call '1764381480.99'"),
                        ("../../etc/passwd", "call_id: a call's id"),
                        ("<b>1</b>", "call_id: a call's id")):
        with pytest.raises(service.OrderError, match=says) as refused:
            _open(sessions, bus, wrong)
        assert refused.value.status == 400
    with sessions() as session:
        assert session.scalar(select(func.count(WorkOrder.id))) == 0
        assert session.scalar(select(func.count(WorkOrderCall.id))) == 0
    assert _open(sessions, bus) == "202611290001"  # the refused ones gave their number back


def test_an_order_saved_while_the_call_is_up_gets_the_call_when_it_ends(
        world: tuple[Settings, Sessions, EventBus]) -> None:
    settings, sessions, bus = world
    # the telephony service announced the call; it is still up, so no record exists
    assert bus.publish(CallStarted(at=STARTED, call_id="1764381480.8",
                                   caller_number="13800138000")) is not None
    case = _open(sessions, bus, "1764381480.8")
    [pending] = _calls(sessions, case)
    assert (pending["call_id"], pending["pending"], pending["agent"], pending["recording"]) == (
        "1764381480.8", True, None, None)
    # the call ends: its record is stored, then call.ended reaches the tickets worker
    worker = TicketsWorker(settings, sessions, bus, FixedClock(NOW))
    stored = _store(settings, sessions, _record("1764381480.8"))
    assert _case_of(sessions, "1764381480.8") is None  # not until the worker has it
    assert worker.call_ended(stored) == case
    assert worker.call_ended(stored) == case  # the bus delivered it twice: one link
    with sessions() as session:
        assert session.scalar(select(func.count(WorkOrderCall.id))) == 1
    [linked] = _calls(sessions, case)
    assert (linked["pending"], linked["agent"], linked["outcome"], linked["talk_seconds"],
            linked["recording"]) == (False, "8101", "answered", 61.5,
                                     {"sha256": "ab" * 32, "bytes": 11})
    assert _case_of(sessions, "1764381480.8") == case
    recording = settings.storage.recordings_dir / "2026/11/29/1764381480.8.wav"
    assert recordings_of_case(settings.storage.recordings_dir, case) == [recording.resolve()]
    link = settings.storage.recordings_dir / "cases" / case / "1764381480.8.wav"
    assert link.is_symlink() and link.read_bytes() == b"RIFF-a-call"


def test_call_ended_through_the_bus_links_the_pending_call_once(
        world: tuple[Settings, Sessions, EventBus]) -> None:
    """The worker's consumer group: call.ended published (twice, as a restarted telephony
    service might try) is handled once and acknowledged."""
    settings, sessions, bus = world
    worker = TicketsWorker(settings, sessions, bus, FixedClock(NOW))
    bus.publish(CallStarted(at=STARTED, call_id="1764381480.9"))
    case = _open(sessions, bus, "1764381480.9")
    stored = _store(settings, sessions, _record("1764381480.9"))
    for _ in range(2):
        bus.publish(CallEnded(at=STARTED + 90, call_id="1764381480.9", record=stored))
    worker.handle_events()
    assert _case_of(sessions, "1764381480.9") == case
    assert [c["pending"] for c in _calls(sessions, case)] == [False]
    assert bus.client.xpending(bus.stream, "tickets")["pending"] == 0


def test_a_call_that_ended_before_the_order_committed_is_resolved_by_the_sweep(
        world: tuple[Settings, Sessions, EventBus]) -> None:
    settings, sessions, bus = world
    worker = TicketsWorker(settings, sessions, bus, FixedClock(NOW))
    bus.publish(CallStarted(at=STARTED, call_id="1764381481.1"))
    # The desk saves while the call is up; the call ends and its call.ended is handled
    # before the save commits, so the worker found no link to resolve then.
    case = _open(sessions, bus, "1764381481.1")
    _store(settings, sessions, _record("1764381481.1"))
    assert _calls(sessions, case)[0]["pending"] is True
    assert worker.resolve_pending_calls() == ["1764381481.1"]
    assert worker.resolve_pending_calls() == []
    assert _case_of(sessions, "1764381481.1") == case
    assert _calls(sessions, case)[0]["pending"] is False


def test_a_later_call_is_added_and_a_call_belongs_to_one_order(
        world: tuple[Settings, Sessions, EventBus]) -> None:
    settings, sessions, bus = world
    _store(settings, sessions, _record("1764381482.1"))
    _store(settings, sessions, _record("1764381482.2", agent="8102", talk=12.0))
    first, second = _open(sessions, bus, "1764381482.1"), _open(sessions, bus)
    with transaction(sessions) as session:
        service.link_call(session, first, "1764381482.2", actor="受理员小王", bus=bus,
                          recordings_dir=settings.storage.recordings_dir, now=NOW)
        again = service.link_call(session, first, "1764381482.2", actor="受理员小李",
                                  bus=bus, now=NOW + timedelta(minutes=1))
        assert again.actor == "受理员小王"  # linked once
    with pytest.raises(service.CallTaken, match=f"belongs to work order {first}") as taken, \
            transaction(sessions) as session:
        service.link_call(session, second, "1764381482.2", actor="受理员小李", bus=bus,
                          now=NOW)
    assert taken.value.status == 409
    assert [(c["call_id"], c["how"], c["agent"]) for c in _calls(sessions, first)] == [
        ("1764381482.1", "intake", "8101"), ("1764381482.2", "agent", "8102")]
    assert _calls(sessions, second) == []
    assert _case_of(sessions, "1764381482.2") == first
    assert len(recordings_of_case(settings.storage.recordings_dir, first)) == 1
    with pytest.raises(service.OrderNotFound), transaction(sessions) as session:
        service.link_call(session, "209912310001", "1764381482.1", actor="x", now=NOW)


def test_a_citizen_keying_the_case_number_calling_again_adds_the_call_to_it(
        world: tuple[Settings, Sessions, EventBus]) -> None:
    settings, sessions, bus = world
    case, other = _open(sessions, bus), _open(sessions, bus)
    worker = TicketsWorker(settings, sessions, bus, FixedClock(NOW))
    keyed = [{"at": STARTED + 5, "node": "menu", "value": "2"},
             {"at": STARTED + 9, "node": "case", "value": "209901010001"},  # no such case
             {"at": STARTED + 19, "node": "case", "value": case}]
    stored = _store(settings, sessions, _record("1764381483.1", ivr_path=keyed))
    assert worker.call_ended(stored) == case
    assert worker.call_ended(stored) == case
    assert [(c["call_id"], c["how"]) for c in _calls(sessions, case)] == [
        ("1764381483.1", "ivr")]
    assert _calls(sessions, other) == []
    assert _case_of(sessions, "1764381483.1") == case
    # keying nothing that exists links nothing
    lost = _store(settings, sessions, _record("1764381483.2", ivr_path=keyed[:2]))
    assert worker.call_ended(lost) == ""
    assert _case_of(sessions, "1764381483.2") is None


def test_the_migration_links_old_call_ids_that_name_a_stored_call(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine, "0015")
    moment = {"created_at", "updated_at", "started_at"}
    row = {"appeal_type": "report", "category_code": "", "description": "旧工单",
           "citizen_phone": "", "citizen_name": "", "channel": "phone", "state": "intake",
           "version": 1, "rework_count": 0, "first_call_resolved": False, "created_at": NOW,
           "updated_at": NOW}
    orders = sa.table("work_orders", *(sa.column(c, UtcDateTime() if c in moment else None)
                                       for c in (*row, "case_number", "call_id")))
    calls = CallRecord.__table__  # a Core insert names only the columns given or defaulted
    with engine.begin() as conn:
        conn.execute(calls.insert(), [
            {"call_id": cid, "caller_number": "13800138000", "started_at": NOW,
             "outcome": "answered"} for cid in ("old.1", "old.2")])
        conn.execute(orders.insert(), [
            {**row, "case_number": "202611290001", "call_id": "old.1"},
            {**row, "case_number": "202611290002", "call_id": "typed-by-hand"},
            {**row, "case_number": "202611290003", "call_id": "old.1"},  # named twice
            {**row, "case_number": "202611290004", "call_id": ""}])
    upgrade(engine)
    sessions = session_factory(engine)
    assert [(c["call_id"], c["how"]) for c in _calls(sessions, "202611290001")] == [
        ("old.1", "migrated")]
    for case in ("202611290002", "202611290003", "202611290004"):
        assert _calls(sessions, case) == []
    with sessions() as session:
        assert session.scalar(select(WorkOrder.call_id).where(
            WorkOrder.case_number == "202611290002")) == "typed-by-hand"  # kept as told
        assert dict(session.execute(select(
            sa.column("call_id"), sa.column("case_number")).select_from(
            sa.table("call_records"))).all()) == {"old.1": "202611290001",
                                                            "old.2": None}
    command.downgrade(alembic_config(engine), "0015")
    with engine.connect() as conn:
        assert "work_order_calls" not in sa.inspect(conn).get_table_names()
    engine.dispose()


def test_the_api_adds_a_later_call_and_shows_both_directions(database_url: str,
                                                              tmp_path: Path) -> None:
    world = api_world.build(database_url, tmp_path)
    http, operator = world.client, world.tokens["operator"]
    url = f"/api/v1/orders/{world.case}/calls"
    added = http.post(url, json={"call_id": world.call_id}, headers=operator)
    assert added.status_code == 201, added.json
    assert added.json == {
        "call_id": "1732400000.42", "how": "agent", "linked_at": "2026-11-24T02:00:00+00:00",
        "pending": False, "started_at": "2026-11-24T01:00:00+00:00", "agent": "8001",
        "outcome": "answered", "talk_seconds": 57.0,
        "recording": {"sha256": None, "bytes": None}}
    again = http.post(url, json={"call_id": world.call_id}, headers=operator)
    assert again.status_code == 200 and again.json == added.json
    taken = http.post(f"/api/v1/orders/{world.other_case}/calls",
                      json={"call_id": world.call_id}, headers=operator)
    assert taken.status_code == 409
    assert taken.json["detail"] == f"call_id: call 1732400000.42 belongs to work order {world.case}"
    unknown = http.post(url, json={"call_id": "1732400000.43"}, headers=operator)
    assert unknown.status_code == 400 and "no call '1732400000.43'" in unknown.json["detail"]
    assert http.post(url, json={"call_id": "1732400000.42"},
                     headers=world.tokens["dispatcher"]).status_code == 403
    order = http.get(f"/api/v1/orders/{world.case}", headers=operator).json
    assert [c["call_id"] for c in order["calls"]] == ["1732400000.42"]
    assert "path" not in json.dumps(order["calls"])
    call = http.get(f"/api/v1/calls/{world.call_id}", headers=operator).json
    assert call["case_number"] == world.case
    opened = http.post("/api/v1/orders", headers=operator, json={
        "appeal_type": "help", "description": "井盖缺失", "call_id": "1732400000.44"})
    assert opened.status_code == 400 and "call_id: no call" in opened.json["detail"]
    world.engine.dispose()
