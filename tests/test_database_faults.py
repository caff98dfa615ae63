"""Database faults (issue 15, item 3): PostgreSQL restarted under load.

A PostgreSQL server of the test's own (initdb into a temporary directory, its own port and
socket directory) is restarted while 20 clients post orders to the web app served by
waitress: every answer is 201 or 503 with Retry-After and the one error body, a 503 retried
with its Idempotency-Key never takes an order in twice, and the app serves 201s again after
the restart without being restarted (the pool's pre-ping). The machine's shared PostgreSQL
is never touched: other test runs use it.

The telephony service storing a finished call's record while the database restarts backs
off, stores it once when the database is back and announces it once; the tickets worker
backs off (one warning, no traceback each tick) and binds a finished call to its order once
when the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from waitress.server import create_server

from accounts.service import ROLES, add_user
from core.clock import FixedClock
from core.db import make_engine, session_factory, transaction, upgrade
from core.events import EventBus, publish_on_commit
from core.live import connect_redis
from hotline.web import create_app, stop_web_server
from telephony import records
from telephony.events import CallEnded, CallStarted
from telephony.models import CallRecord
from telephony.service import TelephonyService
from tests import api_world, isolation
from tests.conftest import REDIS_SERVER_URL, make_settings
from tickets import catalogue, service
from tickets.models import OrderRequest, WorkOrder, WorkOrderCall, WorkOrderEvent
from tickets.worker import TicketsWorker

PG_BIN = Path("/usr/lib/postgresql/15/bin")
NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # 10:00 in Beijing
CLIENTS = 20
DOWN_SECONDS = 3.0  # between the fast shutdown and the start

pytestmark = pytest.mark.skipif(not (PG_BIN / "initdb").exists(),
                                reason="PostgreSQL 15's server binaries are not installed")


@dataclass
class PrivateServer:
    """A PostgreSQL server for this test alone, run as the `postgres` system user."""

    data: Path
    sockets: Path
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"postgresql://hotline@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"),
                        "-D", str(self.data), "-l", str(self.log), "-w", *args],
                       check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._ctl("-o", f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
                        "-c fsync=off", "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "stop")

    def restart(self, down_seconds: float) -> None:
        """A fast shutdown (every session terminated "due to administrator command", the
        transactions in flight rolled back), `down_seconds` refusing connections, a start."""
        self.stop()
        time.sleep(down_seconds)
        self.start()


@pytest.fixture
def private_pg() -> Iterator[PrivateServer]:
    # not under the run's directory: the postgres user cannot enter that
    root = Path(tempfile.mkdtemp(prefix="hotline-dbfault-", dir=isolation.SYSTEM_TMP))
    server = PrivateServer(root / "data", root / "sockets", isolation.free_port(),
                           root / "server.log")
    server.sockets.mkdir()
    shutil.chown(root, "postgres")
    shutil.chown(server.sockets, "postgres")
    subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D",
                    str(server.data), "-U", "hotline", "--auth=trust", "-E", "UTF8",
                    "--no-sync"], check=True, capture_output=True, timeout=120)
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # stopped already
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Answer:
    key: str
    status: int
    sent_at: float
    retry_after: str | None
    body: dict[str, Any]


def test_orders_posted_while_postgresql_restarts_are_201_or_503_and_never_twice(
        private_pg: PrivateServer, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, DATABASE_URL=private_pg.url,
                             REDIS_URL=REDIS_SERVER_URL)
    engine = make_engine(private_pg.url)
    upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        catalogue.seed(session)
        token = add_user(session, "operator-account", ["operator"], False, ROLES, now=NOW)
    app = create_app(settings, sessions, connect_redis(settings), FixedClock(NOW))
    server = create_server(app, host="127.0.0.1", port=0, threads=8)
    serving = threading.Thread(target=server.run, daemon=True)
    serving.start()
    base = f"http://127.0.0.1:{server.effective_port}"

    answers: list[Answer] = []
    lock = threading.Lock()
    stop_new = threading.Event()
    restarted_at: list[float] = []

    def client(number: int) -> None:
        with httpx.Client(base_url=base, timeout=30, headers={
                "Authorization": f"Bearer {token}"}) as http:
            for i in range(10_000):
                if stop_new.is_set():
                    return
                key = f"fault-{number:02d}-{i:04d}"
                body = {"appeal_type": "enquiry", "description": f"停电测试 {key}"}
                give_up = time.monotonic() + 90
                while time.monotonic() < give_up:  # this order until it is taken in
                    sent = time.monotonic()
                    response = http.post("/api/v1/orders", json=body,
                                         headers={"Idempotency-Key": key})
                    answer = Answer(key, response.status_code, sent,
                                    response.headers.get("Retry-After"), response.json())
                    with lock:
                        answers.append(answer)
                    if response.status_code != 503:
                        break
                    time.sleep(float(answer.retry_after or 1))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    try:
        for thread in threads:
            thread.start()
        _wait_until(lambda: sum(a.status == 201 for a in answers) >= 60, 120)
        private_pg.restart(DOWN_SECONDS)
        restarted_at.append(time.monotonic())
        # the app serves again by itself: 201s for requests sent after the start
        _wait_until(lambda: sum(a.status == 201 and a.sent_at > restarted_at[0]
                                for a in answers) >= 2 * CLIENTS, 120)
        stop_new.set()
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads)
    finally:
        stop_new.set()
        stop_web_server(server, serving)

    print(f"\n{len(answers)} answers: {sum(a.status == 201 for a in answers)} 201, "
          f"{sum(a.status == 503 for a in answers)} 503, "
          f"{len({a.key for a in answers if a.status == 503})} orders sent again after a 503")
    statuses = {a.status for a in answers}
    assert statuses <= {201, 503}, [a for a in answers if a.status not in (201, 503)][:3]
    unavailable = [a for a in answers if a.status == 503]
    assert unavailable, "the restart hit no request: nothing was shown"
    for a in unavailable:
        assert a.retry_after == "1"
        assert a.body["error"] == "Service Unavailable"
        assert a.body["detail"].startswith("storage unavailable")
    taken: dict[str, set[str]] = {}
    for a in answers:
        if a.status == 201:
            taken.setdefault(a.key, set()).add(a.body["case_number"])
    keys = {a.key for a in answers}
    assert set(taken) == keys  # every order sent was taken in at last
    assert all(len(numbers) == 1 for numbers in taken.values())  # a replay: the same order
    with sessions() as session:
        orders = {o.description.removeprefix("停电测试 "): o.case_number
                  for o in session.scalars(select(WorkOrder))}
        assert session.scalar(select(func.count(WorkOrder.id))) == len(keys)  # none twice
        assert orders == {key: next(iter(numbers)) for key, numbers in taken.items()}
        creations = session.execute(select(WorkOrderEvent.order_id, func.count()).where(
            WorkOrderEvent.action == "create").group_by(WorkOrderEvent.order_id)).all()
        assert len(creations) == len(keys) and {n for _id, n in creations} == {1}
        assert session.scalar(select(func.count(OrderRequest.id))) == len(keys)
    engine.dispose()


def test_a_call_record_stored_while_postgresql_restarts_is_stored_and_announced_once(
        private_pg: PrivateServer, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, DATABASE_URL=private_pg.url,
                             REDIS_URL=REDIS_SERVER_URL)
    engine = make_engine(private_pg.url)
    upgrade(engine)
    sessions = session_factory(engine)
    with sessions() as session:  # a pooled connection the restart will kill
        assert records.get_call(session, "none") is None
    bus = EventBus(connect_redis(settings), stream=f"dbfault-{uuid.uuid4().hex}")
    publish_on_commit(sessions, bus)  # the call's end goes out through the outbox
    service = TelephonyService(settings, sessions, bus, FixedClock(NOW))
    call_id = f"{1764400000 + os.getpid() % 100000}.{uuid.uuid4().int % 1000}"
    epoch = NOW.timestamp() - 120
    record = {
        "call_id": call_id, "caller_number": "13566667777", "caller_name": "",
        "entry_number": "12319", "started_at": epoch, "ended_at": epoch + 60,
        "duration_seconds": 60, "outcome": "answered", "queue": "intake",
        "queue_position": 1, "wait_seconds": 3, "short_abandon": False, "agent": "8001",
        "connected_at": epoch + 3, "talk_seconds": 57, "hold_seconds": 0,
        "hangup_cause": 16, "hangup_cause_text": "", "ivr_path": [], "agent_attempts": [],
        "transfers": [], "legs": [], "recording": "", "incomplete": False}
    try:
        private_pg.stop()  # the call ends while the database is down
        finishing = threading.Thread(target=asyncio.run, args=(service._finish(
            CallEnded(call_id=call_id, at=epoch + 60, record=record)),))
        finishing.start()
        time.sleep(DOWN_SECONDS)
        assert finishing.is_alive()  # waiting for the database, not given up
        private_pg.start()
        finishing.join(60)
        assert not finishing.is_alive()
        assert service.stored == 1
        with sessions() as session:
            assert records.get_call(session, call_id)["call_id"] == call_id
            assert session.scalar(select(func.count(CallRecord.id)).where(
                CallRecord.call_id == call_id)) == 1
        announced = [e for _id, e in bus.read() if e.get("type") == "call.ended"]
        assert [e["call_id"] for e in announced] == [call_id]
        # the same call's end seen again (a replay): neither stored nor announced again
        asyncio.run(service._finish(CallEnded(call_id=call_id, at=epoch + 60, record=record)))
        assert service.stored == 1
        assert len([e for _id, e in bus.read() if e.get("type") == "call.ended"]) == 1
    finally:
        bus.client.delete(bus.stream, *bus.client.keys(f"{bus.stream}:*"))
        engine.dispose()


def _wait_until(condition: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_an_order_sent_again_with_its_idempotency_key_is_taken_in_once(
        database_url: str, tmp_path: Path) -> None:
    """What makes a 503's retry safe when the first request's COMMIT went through and only
    its answer was lost: the same key and body get the first order back."""
    world = api_world.build(database_url, tmp_path)
    body = {"appeal_type": "enquiry", "description": "井盖丢失 幸福路口"}
    keyed = {**world.tokens["operator"], "Idempotency-Key": "desk-7f3a-0001"}
    first = world.client.post("/api/v1/orders", json=body, headers=keyed)
    again = world.client.post("/api/v1/orders", json=body, headers=keyed)
    assert first.status_code == again.status_code == 201
    assert again.json["case_number"] == first.json["case_number"]
    assert [h["action"] for h in again.json["history"]] == ["create"]
    reused = world.client.post("/api/v1/orders", json={**body, "urgency": "urgent"},
                               headers=keyed)
    assert reused.status_code == 409 and "Idempotency-Key" in reused.json["detail"]
    # another sender's key of the same spelling is theirs: a new order
    theirs = world.client.post("/api/v1/orders", json=body, headers={
        **world.tokens["sees_phone"], "Idempotency-Key": "desk-7f3a-0001"})
    assert theirs.status_code == 201 and theirs.json["case_number"] != first.json["case_number"]
    bad = world.client.post("/api/v1/orders", json=body, headers={
        **world.tokens["operator"], "Idempotency-Key": "short"})
    assert bad.status_code == 400 and "Idempotency-Key" in bad.json["detail"]
    # without a key every request is a new order, as before
    plain = [world.client.post("/api/v1/orders", json=body, headers=world.tokens["operator"])
             for _ in range(2)]
    assert [p.status_code for p in plain] == [201, 201]
    with world.sessions() as session:
        assert session.scalar(select(func.count(WorkOrder.id)).where(
            WorkOrder.description == "井盖丢失 幸福路口")) == 4  # first, theirs, two plain


class _CountingWorker(TicketsWorker):
    """The tickets worker, counting the finished calls it bound to their orders."""

    linked: list[str]

    def call_ended(self, record: dict[str, object], now: datetime | None = None) -> str:
        case_number = super().call_ended(record, now)
        self.linked.append(case_number)
        return case_number


def test_the_tickets_worker_finishes_its_job_once_when_postgresql_is_back(
        private_pg: PrivateServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path, DATABASE_URL=private_pg.url,
                             REDIS_URL=REDIS_SERVER_URL)
    engine = make_engine(private_pg.url)
    upgrade(engine)
    sessions = session_factory(engine)
    bus = EventBus(connect_redis(settings), stream=f"dbfault-{uuid.uuid4().hex}")
    worker = _CountingWorker(settings, sessions, bus, FixedClock(NOW))
    worker.linked = []
    call_id = f"{1764400000 + os.getpid() % 100000}.{uuid.uuid4().int % 1000}"
    bus.publish(CallStarted(at=NOW.timestamp() - 60, call_id=call_id))
    record = {
        "call_id": call_id, "caller_number": "13566667777", "caller_name": "",
        "entry_number": "12319", "started_at": NOW.timestamp() - 60,
        "ended_at": NOW.timestamp(), "duration_seconds": 60, "outcome": "answered",
        "queue": "intake", "queue_position": 1, "wait_seconds": 3, "short_abandon": False,
        "agent": "8001", "connected_at": NOW.timestamp() - 57, "talk_seconds": 57,
        "hold_seconds": 0, "hangup_cause": 16, "hangup_cause_text": "", "ivr_path": [],
        "agent_attempts": [], "transfers": [], "legs": [], "recording": "",
        "incomplete": False}
    with transaction(sessions) as session:  # taken in while the call is up: linked pending
        case_number = service.open_order(
            session, appeal_type="complaint", description="噪音扰民", channel="phone",
            actor="8001", call_id=call_id, bus=bus, now=NOW).case_number
    with transaction(sessions) as session:  # the call ends, its record is stored ...
        records.store_call(session, record, None)
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    running = threading.Thread(target=loop.run_until_complete, args=(worker.run(stop),))
    try:
        private_pg.stop()  # ... and the database goes down before the worker binds it
        bus.publish(CallEnded(call_id=call_id, at=NOW.timestamp(), record=record))
        running.start()
        time.sleep(DOWN_SECONDS)
        assert worker.linked == []
        private_pg.start()
        _wait_until(lambda: worker.linked, 60)
        time.sleep(2 * 1.0)  # two more ticks: nothing is done again
    finally:
        loop.call_soon_threadsafe(stop.set)
        running.join(30)
        bus.client.delete(bus.stream, *bus.client.keys(f"{bus.stream}:*"))
    assert worker.linked == [case_number]  # bound once, when the database was back
    assert any("database unavailable" in r.getMessage() for r in caplog.records)
    with sessions() as session:
        links = session.scalars(select(WorkOrderCall).where(
            WorkOrderCall.call_id == call_id)).all()
        assert [link.call_record_id is not None for link in links] == [True]
        assert records.get_call(session, call_id)["case_number"] == case_number
    engine.dispose()


def test_no_pooled_connection_free_is_a_503_not_a_500(tmp_path: Path) -> None:
    world = api_world.build(f"sqlite:///{tmp_path / 'h.db'}", tmp_path)
    narrow = make_engine(f"sqlite:///{tmp_path / 'h.db'}", pool_size=1, max_overflow=0,
                         pool_timeout=0.2)
    world.app.extensions["hotline.sessions"] = session_factory(narrow)
    with narrow.connect():  # the one connection, held
        held = world.client.get("/api/v1/orders", headers=world.tokens["operator"])
    assert held.status_code == 503 and held.headers["Retry-After"] == "1"
    assert held.json["detail"].startswith("storage busy")
    free = world.client.get("/api/v1/orders", headers=world.tokens["operator"])
    assert free.status_code == 200
    narrow.dispose()


def test_the_desk_form_saved_again_with_its_key_takes_the_order_in_once(
        tmp_path: Path) -> None:
    world = api_world.build(f"sqlite:///{tmp_path / 'h.db'}", tmp_path)
    form = {"appeal_type": "complaint", "category_code": "0102", "description": "路面塌陷",
            "latitude": 45.7504, "longitude": 126.6306}
    keyed = {**world.tokens["operator"], "Idempotency-Key": "desk-0123456789abcdef"}
    first = world.client.post("/desk/orders", json=form, headers=keyed)
    again = world.client.post("/desk/orders", json=form, headers=keyed)
    assert first.status_code == again.status_code == 201, first.json
    assert again.json == first.json
    with world.sessions() as session:
        assert session.scalar(select(func.count(WorkOrder.id)).where(
            WorkOrder.description == "路面塌陷")) == 1
