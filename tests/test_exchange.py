"""Data exchange with the city platform (数据交换): signed webhooks to a real HTTP receiver on
127.0.0.1 (flaky, down, refusing, slow), order per case, backoff, redelivery; signed inbound
updates applied once, replays, hostile bodies, two identical requests at once. SQLite and
PostgreSQL wherever the database takes part."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.background import BackgroundLoop
from core.clock import SYSTEM_CLOCK, FixedClock
from core.config import Exchange
from core.db import make_engine, session_factory, transaction, upgrade
from tests.conftest import wait_until
from tickets import exchange, service, workflow
from tickets.models import InboundUpdate, WebhookDelivery

SECRET = "4f6b0c1e9a7d3b5f8e2a6c4d0b9f7e1a"
T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
Sessions = sessionmaker[Session]

# Pinned outside the code under test, with
#   printf '%s' '1795492049.{"a":1}' | openssl dgst -sha256 -hmac "$SECRET"
PINNED_AT = 1795492049
PINNED_BODY = b'{"a":1}'
PINNED_SIGNATURE = "sha256=2a98142f01a10a9ebd695f6880d18129047525f40f933ee94d763b64f97a6c10"
# ... and over UTF-8 bytes, with the same command on
#   '1795492049.{"case_number":"202611240001","note":"已签收"}'
PINNED_UTF8_BODY = '{"case_number":"202611240001","note":"已签收"}'
PINNED_UTF8_SIGNATURE = (
    "sha256=54f44664f2a610ab88c8459e5b4048c5778d46d610d5fb4c6a16b3e9b3056ba3")


def platform_signature(secret: str, timestamp: str, body: bytes) -> str:
    """The platform's side, written from the README alone and not with tickets.exchange:
    HMAC-SHA256 with the shared secret over `timestamp.body`, sent as sha256=<hex>. A test
    that checks signatures with the code that makes them passes whatever that code does."""
    message = timestamp.encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def platform_accepts(headers: dict[str, str], body: bytes, now: float) -> bool:
    """What a platform following the README accepts: our signature, at most five minutes
    off its own clock."""
    timestamp = headers.get("x-hotline-timestamp", "")
    if not timestamp.isascii() or not timestamp.isdigit() or abs(now - int(timestamp)) > 300:
        return False
    return hmac.compare_digest(headers.get("x-hotline-signature", ""),
                               platform_signature(SECRET, timestamp, body))


def test_the_signature_is_the_published_hmac_of_timestamp_dot_body() -> None:
    assert exchange.sign(SECRET, PINNED_AT, PINNED_BODY) == PINNED_SIGNATURE
    assert exchange.sign(SECRET, str(PINNED_AT), PINNED_BODY.decode()) == PINNED_SIGNATURE
    assert exchange.sign(SECRET, PINNED_AT, PINNED_UTF8_BODY) == PINNED_UTF8_SIGNATURE
    assert exchange.sign(SECRET, PINNED_AT, PINNED_UTF8_BODY.encode()) == PINNED_UTF8_SIGNATURE
    assert exchange.verify(SECRET, str(PINNED_AT), PINNED_BODY, PINNED_SIGNATURE, PINNED_AT)
    # the helper the receiver below checks with agrees with openssl too
    assert platform_signature(SECRET, str(PINNED_AT), PINNED_BODY) == PINNED_SIGNATURE


def test_signatures_verify_and_refuse_tampering_strangers_and_stale_requests() -> None:
    body = '{"case_number":"202611240001","note":"已签收"}'.encode()
    ts = str(int(T0.timestamp()))
    good = exchange.sign(SECRET, ts, body)
    assert good.startswith("sha256=") and len(good) == 7 + 64
    assert exchange.verify(SECRET, ts, body, good, T0)
    assert exchange.verify(SECRET, int(ts), body.decode(), good, T0.timestamp() + 300)
    assert not exchange.verify(SECRET, ts, body + b" ", good, T0)  # body changed
    assert not exchange.verify("another secret", ts, body, good, T0)
    assert not exchange.verify(SECRET, str(int(ts) + 1), body, good, T0)  # timestamp changed
    assert not exchange.verify(SECRET, ts, body, good, T0 + timedelta(seconds=301))  # stale
    assert not exchange.verify(SECRET, ts, body, good, T0 - timedelta(seconds=301))  # future
    for forged in ("", good[7:], good.upper(), good[:-1], good + "0", "sha256=签名"):
        assert not exchange.verify(SECRET, ts, body, forged, T0)
    for odd in ("", "-1", "1e9", " 1", "１２３"):
        assert not exchange.verify(SECRET, odd, body, exchange.sign(SECRET, odd, body), T0)
    assert not exchange.verify("", ts, body, good, T0)
    with pytest.raises(ValueError):
        exchange.sign("", ts, body)


def test_backoff_doubles_from_the_retry_interval_up_to_an_hour() -> None:
    assert [exchange.backoff(30, n).total_seconds() for n in range(1, 8)] == [
        30, 60, 120, 240, 480, 960, 1920]
    assert exchange.backoff(30, 8) == timedelta(hours=1)
    assert exchange.backoff(1000, 3) == timedelta(hours=1)
    assert exchange.backoff(30, 10_000) == timedelta(hours=1)


# --- the platform's end ------------------------------------------------------------------------


class Receiver:
    """The platform as a real HTTP server: checks every signature, keeps each event once by
    its Idempotency-Key (before answering, as a platform that fails after storing would), and
    answers what `respond(event, earlier_posts_of_it)` says."""

    def __init__(self) -> None:
        self.now: datetime | None = None  # None: check timestamps against the real clock
        self.respond: Callable[[dict[str, Any], int], tuple[int, str]] = lambda e, n: (200, "")
        self.delay = 0.0
        self.posts: list[dict[str, Any]] = []
        self.accepted: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.take(self, body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hotline/events?v=1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def take(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        now = self.now.timestamp() if self.now else time.time()
        signed = platform_accepts(headers, body, now)
        event = json.loads(body)
        with self.lock:
            earlier = sum(p["event"]["event_id"] == event["event_id"] for p in self.posts)
            self.posts.append({"headers": headers, "body": body, "event": event,
                               "signed": signed, "path": handler.path})
            if signed:
                self.accepted.setdefault(headers["idempotency-key"], event)
        time.sleep(self.delay)  # a slow platform: the condition under test, not a wait
        status, text = self.respond(event, earlier) if signed else (401, "bad signature")
        payload = text.encode()
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def ids(self, case_number: str | None = None) -> list[str]:
        return [p["event"]["event_id"] for p in self.posts
                if case_number is None or p["event"]["case_number"] == case_number]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def sessions(database_url: str) -> Sessions:
    engine = make_engine(database_url)
    upgrade(engine)
    return session_factory(engine)


def _open(sessions: Sessions, url: str, now: datetime = T0) -> str:
    with transaction(sessions) as session:
        order = service.open_order(
            session, appeal_type="complaint", description="人民路口暴露垃圾，三天没人清理",
            channel="phone", actor="受理员小王", citizen_phone="13800138000",
            citizen_name="张三", now=now)
        exchange.enqueue(session, order, "work_order.created", {"action": "create"}, url, now)
        return order.case_number


def _move(sessions: Sessions, number: str, action: str, role: str, url: str,
          now: datetime = T0) -> None:
    with transaction(sessions) as session:
        order = service.transition(session, number, action, actor=f"{role}-1", role=role,
                                   now=now)
        exchange.enqueue(session, order, "work_order.moved", {"action": action, "role": role},
                         url, now)


def _deliver(sessions: Sessions, receiver: Receiver | None, at: datetime,
             max_attempts: int = 8, retry_seconds: int = 30) -> list[exchange.Outcome]:
    if receiver is not None:
        receiver.now = at
    return exchange.deliver_due(sessions, SECRET, max_attempts, retry_seconds, FixedClock(at),
                                timeout=2)


def _rows(sessions: Sessions, case_number: str | None = None) -> list[WebhookDelivery]:
    with sessions() as session:
        return exchange.deliveries(session, case_number)


def _at(moment: datetime | None) -> datetime | None:
    return None if moment is None else exchange._utc(moment)


# --- outbound -----------------------------------------------------------------------------------


def test_an_event_exists_iff_the_move_committed(sessions: Sessions, receiver: Receiver) -> None:
    number = _open(sessions, receiver.url)
    with pytest.raises(workflow.WorkflowError), transaction(sessions) as session:
        order = service.transition(session, number, "open", actor="chief",
                                   role=workflow.SHIFT_CHIEF, now=T0)
        exchange.enqueue(session, order, "work_order.moved", {"action": "open"},
                         receiver.url, T0)
        service.transition(session, number, "sign", actor="dept", role=workflow.DEPARTMENT,
                           now=T0)
    with transaction(sessions) as session:
        order = service.transition(session, number, "open", actor="chief",
                                   role=workflow.SHIFT_CHIEF, now=T0)
        assert exchange.enqueue(session, order, "work_order.moved", {}, "", T0) is None
        with pytest.raises(exchange.ExchangeError, match="event type"):
            exchange.enqueue(session, order, "Moved!", {}, receiver.url, T0)
        with pytest.raises(exchange.ExchangeError, match="plain JSON"):
            exchange.enqueue(session, order, "work_order.moved", {"at": T0}, receiver.url, T0)
    rows = _rows(sessions, number)
    assert [r.event_type for r in rows] == ["work_order.created"]
    assert rows[0].state == "pending" and rows[0].attempts == 0
    assert rows[0].payload["order"]["state"] == "intake"  # as it was at that move


def test_a_flaky_receiver_gets_the_event_once_after_two_failures(
        sessions: Sessions, receiver: Receiver) -> None:
    receiver.respond = lambda event, n: (500, "upstream busy") if n < 2 else (200, "ok")
    number = _open(sessions, receiver.url)

    first = _deliver(sessions, receiver, T0)
    assert [(o.state, o.status, o.attempts) for o in first] == [("pending", 500, 1)]
    assert first[0].error == "HTTP 500: upstream busy"
    assert first[0].next_attempt_at == T0 + timedelta(seconds=30)
    assert _deliver(sessions, receiver, T0 + timedelta(seconds=29)) == []  # not due yet
    second = _deliver(sessions, receiver, T0 + timedelta(seconds=30))
    assert second[0].next_attempt_at == T0 + timedelta(seconds=90)  # 30 s, then 60 s
    third = _deliver(sessions, receiver, T0 + timedelta(seconds=90))
    assert [(o.state, o.status, o.attempts) for o in third] == [("delivered", 200, 3)]
    assert _deliver(sessions, receiver, T0 + timedelta(hours=5)) == []

    assert len(receiver.posts) == 3 and all(p["signed"] for p in receiver.posts)
    assert len(receiver.accepted) == 1  # the platform dedupes by Idempotency-Key
    (row,) = _rows(sessions, number)
    assert (row.state, row.attempts, row.last_error) == ("delivered", 3, "")
    assert _at(row.delivered_at) == T0 + timedelta(seconds=90)
    post = receiver.posts[0]
    headers, event = post["headers"], post["event"]
    assert post["path"] == "/hotline/events?v=1"
    assert headers["idempotency-key"] == headers["x-hotline-event-id"] == row.event_id
    assert headers["x-hotline-timestamp"] == str(int(T0.timestamp()))
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert {p["body"] for p in receiver.posts} == {post["body"]}  # the same bytes each time
    assert "人民路口".encode() in post["body"]  # UTF-8, not \u escapes
    assert set(event) == {"event_id", "event_type", "case_number", "occurred_at", "order",
                          "data"}
    assert event["case_number"] == number and event["data"] == {"action": "create"}
    assert datetime.fromisoformat(event["occurred_at"]) == T0
    assert event["order"]["version"] == 1 and event["order"]["state"] == "intake"
    assert "13800138000" not in post["body"].decode() and "张三" not in post["body"].decode()


def test_a_delivery_carries_the_pinned_signature_and_the_platform_accepts_it(
        sessions: Sessions, receiver: Receiver) -> None:
    # A row written directly, so the bytes sent are the pinned body (an enqueued event
    # carries a random event id); from here on it is an ordinary delivery over HTTP.
    at = datetime.fromtimestamp(PINNED_AT, UTC)
    with transaction(sessions) as session:
        session.add(WebhookDelivery(
            event_id="evt-pinned-0001", event_type="work_order.created",
            case_number="202611240001", payload={"a": 1}, url=receiver.url, state="pending",
            attempts=0, next_attempt_at=at, last_error="", created_at=at))
    (outcome,) = _deliver(sessions, receiver, at)
    assert (outcome.state, outcome.status) == ("delivered", 200)
    (post,) = receiver.posts
    assert post["body"] == PINNED_BODY
    assert post["headers"]["x-hotline-timestamp"] == str(PINNED_AT)
    assert post["headers"]["x-hotline-signature"] == PINNED_SIGNATURE
    assert post["signed"]  # the README's platform took it


def test_events_of_one_case_arrive_in_order_even_when_the_first_fails(
        sessions: Sessions, receiver: Receiver) -> None:
    a = _open(sessions, receiver.url)
    _move(sessions, a, "open", workflow.SHIFT_CHIEF, receiver.url)
    _move(sessions, a, "dispatch", workflow.DISPATCHER, receiver.url)
    b = _open(sessions, receiver.url)
    a1 = _rows(sessions, a)[0].event_id
    receiver.respond = lambda e, n: (503, "maintenance") if e["event_id"] == a1 and n < 2 \
        else (200, "")

    outcomes = _deliver(sessions, receiver, T0)
    assert [(o.case_number, o.state) for o in outcomes] == [(a, "pending"), (b, "delivered")]
    assert receiver.ids(a) == [a1]  # a's later events wait behind the failing one
    _deliver(sessions, receiver, T0 + timedelta(seconds=30))
    assert receiver.ids(a) == [a1, a1]
    outcomes = _deliver(sessions, receiver, T0 + timedelta(seconds=90))
    assert [o.state for o in outcomes] == ["delivered"] * 3  # released in the same round
    rows = _rows(sessions, a)
    assert receiver.ids(a) == [a1, a1, a1, rows[1].event_id, rows[2].event_id]
    versions = [p["event"]["order"]["version"] for p in receiver.posts
                if p["event"]["case_number"] == a]
    assert versions == sorted(versions) == [1, 1, 1, 2, 3]
    assert all(r.state == "delivered" for r in _rows(sessions))


def test_refusals_fail_at_once_and_busy_answers_are_retried(
        sessions: Sessions, receiver: Receiver) -> None:
    answers = {400: "bad payload: field order.grid_code missing", 404: "", 302: "moved",
               408: "slow", 429: "too many", 503: "busy"}
    cases = {_open(sessions, receiver.url): status for status in answers}
    refused = next(n for n, s in cases.items() if s == 400)
    _move(sessions, refused, "open", workflow.SHIFT_CHIEF, receiver.url)
    receiver.respond = lambda e, n: (
        (cases[e["case_number"]], answers[cases[e["case_number"]]])
        if e["event_type"] == "work_order.created" else (200, ""))
    round_one = _deliver(sessions, receiver, T0)
    # A failed event no longer holds back its case: the next one goes in the same round.
    assert [(o.case_number, o.state) for o in round_one if o.status == 200] == [
        (refused, "delivered")]
    outcomes = {cases[o.case_number]: o for o in round_one if o.status != 200}
    assert {s: o.state for s, o in outcomes.items()} == {
        400: "failed", 404: "failed", 302: "failed", 408: "pending", 429: "pending",
        503: "pending"}
    assert outcomes[400].error == "HTTP 400: bad payload: field order.grid_code missing"
    assert outcomes[404].error == "HTTP 404"
    rows = {cases[r.case_number]: r for r in _rows(sessions)
            if r.event_type == "work_order.created"}
    assert rows[400].state == "failed" and rows[400].attempts == 1
    assert rows[400].last_error.startswith("HTTP 400: bad payload")
    assert _at(rows[429].next_attempt_at) == T0 + timedelta(seconds=30)
    assert len(_deliver(sessions, receiver, T0 + timedelta(days=1))) == 3
    assert len(receiver.ids()) == 10  # the three refused ones were not sent again


def test_a_receiver_that_does_not_answer_in_time_is_retried(
        sessions: Sessions, receiver: Receiver) -> None:
    _open(sessions, receiver.url)
    receiver.delay = 1.5
    receiver.now = T0
    (outcome,) = exchange.deliver_due(sessions, SECRET, 8, 30, FixedClock(T0), timeout=0.5)
    assert (outcome.state, outcome.status) == ("pending", None)
    assert outcome.error == "no answer within 0.5 s"
    assert outcome.next_attempt_at == T0 + timedelta(seconds=30)


def test_a_long_error_body_is_cut_and_flattened(sessions: Sessions, receiver: Receiver) -> None:
    _open(sessions, receiver.url)
    receiver.respond = lambda e, n: (422, "<html>\r\n\x1b[31m" + "错误" * 500)
    (outcome,) = _deliver(sessions, receiver, T0)
    (row,) = _rows(sessions)
    assert row.last_error == outcome.error and len(row.last_error) == 300
    assert row.last_error.startswith("HTTP 422: <html> [31m错误") and "\x1b" not in row.last_error


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_receiver_down_is_retried_with_backoff_then_failed_then_redelivered(
        sessions: Sessions, receiver: Receiver) -> None:
    down = f"http://127.0.0.1:{_closed_port()}/hook"
    number = _open(sessions, down)
    at, expected = T0, []
    for attempt in range(1, 5):
        (outcome,) = _deliver(sessions, None, at, max_attempts=4)
        assert outcome.attempts == attempt and outcome.status is None
        assert "refused" in outcome.error.lower()
        (row,) = _rows(sessions, number)
        if attempt < 4:
            assert outcome.state == row.state == "pending"
            at = at + timedelta(seconds=30 * 2 ** (attempt - 1))
            assert outcome.next_attempt_at == _at(row.next_attempt_at) == at
            expected.append(at)
            assert _deliver(sessions, None, at - timedelta(seconds=1), max_attempts=4) == []
    assert expected == [T0 + timedelta(seconds=s) for s in (30, 90, 210)]
    assert outcome.state == row.state == "failed" and row.attempts == 4
    assert row.last_error.startswith("gave up after 4 attempts; last: ConnectionRefusedError")
    assert _deliver(sessions, None, at + timedelta(days=1), max_attempts=4) == []

    with transaction(sessions) as session:
        with pytest.raises(exchange.ExchangeError, match="no delivery"):
            exchange.redeliver(session, "no-such-event", now=at)
        with pytest.raises(exchange.ExchangeError, match="http"):
            exchange.redeliver(session, row.event_id, now=at, url="ftp://platform/hook")
        back = exchange.redeliver(session, row.event_id, now=at, url=receiver.url)
        assert (back.state, back.attempts, back.url) == ("pending", 0, receiver.url)
    with transaction(sessions) as session, \
            pytest.raises(exchange.ExchangeError, match="only a failed one"):
        exchange.redeliver(session, row.event_id, now=at)
    (outcome,) = _deliver(sessions, receiver, at, max_attempts=4)
    assert outcome.state == "delivered" and receiver.ids() == [row.event_id]
    with sessions() as session:
        assert [r.event_id for r in exchange.deliveries(session, state="delivered")] == [
            row.event_id]
        assert exchange.deliveries(session, state="failed") == []


def test_two_workers_never_send_the_same_attempt(sessions: Sessions,
                                                 receiver: Receiver) -> None:
    numbers = [_open(sessions, receiver.url) for _ in range(3)]
    receiver.delay = 0.3
    barrier = threading.Barrier(2)
    results: list[list[exchange.Outcome]] = []

    def work() -> None:
        barrier.wait(5)
        results.append(_deliver(sessions, receiver, T0))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(o.case_number for r in results for o in r) == sorted(numbers)
    assert sorted(p["event"]["case_number"] for p in receiver.posts) == sorted(numbers)
    assert all(r.state == "delivered" and r.attempts == 1 for r in _rows(sessions))


def test_a_crash_after_sending_leaves_the_event_pending_until_the_lease_ends(
        sessions: Sessions, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    _open(sessions, receiver.url)

    def crash(*args: Any, **kwargs: Any) -> exchange.Outcome:
        raise RuntimeError("worker killed")

    monkeypatch.setattr(exchange, "_finish", crash)
    with pytest.raises(RuntimeError):
        _deliver(sessions, receiver, T0)
    monkeypatch.undo()
    (row,) = _rows(sessions)
    assert (row.state, row.attempts) == ("pending", 1)
    assert _at(row.next_attempt_at) == T0 + timedelta(seconds=60)  # the lease
    assert _deliver(sessions, receiver, T0 + timedelta(seconds=59)) == []
    (outcome,) = _deliver(sessions, receiver, T0 + timedelta(seconds=60))
    assert (outcome.state, outcome.attempts) == ("delivered", 2)
    assert len(receiver.posts) == 2 and len(receiver.accepted) == 1


def test_the_sender_delivers_in_the_background(sessions: Sessions, receiver: Receiver) -> None:
    # the sender signs with the machine's clock and the receiver checks against it: a real
    # background round, whatever the day
    sender = exchange.WebhookSender(sessions, Exchange(receiver.url, SECRET, 3, 1),
                                    clock=SYSTEM_CLOCK, interval=30)
    first_round = threading.Event()
    deliver_now = sender.deliver_now

    def counted() -> list[exchange.Outcome]:
        outcomes = deliver_now()
        first_round.set()
        return outcomes

    sender.deliver_now = counted  # type: ignore[method-assign]
    background = BackgroundLoop("exchange-test")
    try:
        stop: asyncio.Event = background.run(_new_event())
        running = asyncio.run_coroutine_threadsafe(sender.run(stop), background.loop)
        # the event is made after the first round, so only wake() can send it before the
        # 30 s interval is up
        assert first_round.wait(10), "the sender's first round did not run"
        number = _open(sessions, receiver.url, now=SYSTEM_CLOCK.now())
        sender.wake()
        wait_until(lambda: receiver.accepted, 10, "the woken sender delivered nothing")
        background.loop.call_soon_threadsafe(stop.set)
        running.result(10)
    finally:
        background.stop()
    assert [e["case_number"] for e in receiver.accepted.values()] == [number]
    assert all(p["signed"] for p in receiver.posts) and sender.delivered == 1


async def _new_event() -> asyncio.Event:
    return asyncio.Event()


# --- inbound ------------------------------------------------------------------------------------


def _dispatched(sessions: Sessions) -> str:
    number = _open(sessions, "")
    _move(sessions, number, "open", workflow.SHIFT_CHIEF, "")
    _move(sessions, number, "dispatch", workflow.DISPATCHER, "")
    return number


def _raw(body: dict[str, Any] | bytes) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()


def _inbound(sessions: Sessions, body: dict[str, Any] | bytes, key: str = "evt-00000001", *,
             at: datetime = T0, ts: str | None = None, signature: str | None = None,
             secret: str = SECRET, policy: service.Policy | None = None
             ) -> tuple[int, dict[str, Any]]:
    raw = _raw(body)
    ts = str(int(at.timestamp())) if ts is None else ts
    signature = platform_signature(secret, ts, raw) if signature is None else signature
    with transaction(sessions) as session:
        return exchange.apply_inbound(session, idempotency_key=key, body_bytes=raw,
                                      timestamp=ts, signature=signature, secret=SECRET, now=at,
                                      policy=policy)


def _stored(sessions: Sessions) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(InboundUpdate)) or 0


def _steps(sessions: Sessions, number: str) -> list[str]:
    with sessions() as session:
        return [s.action for s in service.history(session, number)]


def test_a_bad_or_stale_signature_is_refused_and_nothing_kept(sessions: Sessions) -> None:
    number = _dispatched(sessions)
    body = {"case_number": number, "action": "sign", "actor": "市政管理处"}
    ts = str(int(T0.timestamp()))
    for status, answer in (
            _inbound(sessions, body, secret="not the shared secret"),
            _inbound(sessions, body, signature=platform_signature(SECRET, ts, b"{}")),
            _inbound(sessions, body, signature=""),
            _inbound(sessions, body, at=T0, ts=str(int(T0.timestamp()) - 301))):
        assert status == 401 and "signature" in answer["error"]
    assert _stored(sessions) == 0
    assert _steps(sessions, number) == ["create", "open", "dispatch"]
    status, answer = _inbound(sessions, body, key="short")
    assert status == 400 and "Idempotency-Key" in answer["error"] and _stored(sessions) == 0


def test_an_update_applies_once_and_a_replay_gets_the_same_answer(sessions: Sessions) -> None:
    number = _dispatched(sessions)
    body = {"case_number": number, "action": "sign", "actor": "市政管理处·李工",
            "note": "已签收，今日到场", "expected_version": 3}
    policy = service.Policy(webhook_url="http://127.0.0.1:9/platform")
    first = _inbound(sessions, body, policy=policy)
    assert first == (200, {"ok": True, "case_number": number, "action": "sign",
                           "state": "handling", "version": 4})
    # The platform retries later, signing the same body afresh.
    assert _inbound(sessions, body, at=T0 + timedelta(seconds=90), policy=policy) == first
    assert _steps(sessions, number) == ["create", "open", "dispatch", "sign"]
    assert [r.event_type for r in _rows(sessions, number)] == ["work_order.sign"]
    with sessions() as session:
        event = service.history(session, number)[-1]
        (kept,) = session.scalars(select(InboundUpdate))
    assert (event.role, event.actor, event.note) == ("department", "市政管理处·李工",
                                                     "已签收，今日到场")
    assert (kept.case_number, kept.action, kept.status_code) == (number, "sign", 200)

    status, answer = _inbound(sessions, {**body, "action": "return"})
    assert status == 409
    assert answer["error"] == "idempotency key reused with a different request"
    # The very same signed bytes under a fresh key: a replay, not a second request.
    raw, ts = _raw(body), str(int(T0.timestamp()))
    status, answer = _inbound(sessions, raw, key="evt-00000002", ts=ts,
                              signature=platform_signature(SECRET, ts, raw))
    assert status == 409 and "already received" in answer["error"]
    assert _steps(sessions, number) == ["create", "open", "dispatch", "sign"]

    extension = {"case_number": number, "action": "request_extension", "actor": "李工",
                 "note": "需协调供电部门"}
    assert _inbound(sessions, extension, key="evt-00000003")[0] == 200
    assert _steps(sessions, number)[-1] == "request_extension"


def test_errors_are_clear_and_kept_so_replays_answer_the_same(sessions: Sessions) -> None:
    number = _dispatched(sessions)
    sign = {"case_number": number, "action": "sign", "actor": "市政管理处"}
    cases: list[tuple[dict[str, Any] | bytes, int, str]] = [
        ({**sign, "case_number": "209901010001"}, 404, "no work order 209901010001"),
        ({**sign, "action": "feedback"}, 409, "cannot be taken from 'dispatched'"),
        ({**sign, "expected_version": 1}, 409, "at version 3, not 1"),
        (b'{"note": "' + b"x" * (64 * 1024) + b'"}', 413, "at most 65536 bytes"),
        (b"not json", 400, "JSON: Expecting value"),
        (b"[1, 2]", 400, "an object expected"),
        (b"\xff\xfe{}", 400, "not UTF-8"),
        (b'{"case_number": "1", "case_number": "2"}', 400, "'case_number' given twice"),
        (_raw({**sign, "expected_version": float("nan")}), 400, "NaN is not a number"),
        ({**sign, "priority": "high"}, 400, "unknown field 'priority'"),
        ({**sign, "case_number": 202611240001}, 400, "case_number"),
        ({**sign, "action": "close"}, 400, "action: one of sign, feedback, return"),
        ({**sign, "actor": None}, 400, "actor: text expected"),
        ({**sign, "expected_version": True}, 400, "expected_version"),
        ({**sign, "expected_version": "3"}, 400, "expected_version"),
    ]
    answers = []
    for n, (body, status, message) in enumerate(cases):
        got = _inbound(sessions, body, key=f"err-{n:08d}")
        assert got[0] == status and message in got[1]["error"], (body, got)
        assert got[1]["ok"] is False and "request_sha256" not in got[1]
        answers.append(got)
    assert _stored(sessions) == len(cases)
    for n, (body, _status, _message) in enumerate(cases):
        assert _inbound(sessions, body, key=f"err-{n:08d}", at=T0 + timedelta(minutes=3)) \
            == answers[n]
    assert _stored(sessions) == len(cases)
    assert answers[1][1]["state"] == "dispatched" and answers[2][1]["version"] == 3
    assert _steps(sessions, number) == ["create", "open", "dispatch"]


def test_hostile_text_is_cleaned_or_refused_with_a_clear_message(sessions: Sessions) -> None:
    number = _dispatched(sessions)
    base = {"case_number": number, "action": "sign"}
    refused = [({**base, "actor": "\x00\x07 "}, "actor: required"),
               ({**base, "actor": "名" * 51}, "actor: at most 50 characters"),
               ({**base, "actor": "李工", "note": "长" * 2001}, "note: at most 2000 characters"),
               ({**base, "actor": "李工", "note": ["<b>"]}, "note: text expected")]
    for n, (body, message) in enumerate(refused):
        status, answer = _inbound(sessions, body, key=f"bad-{n:08d}")
        assert status == 400 and message in answer["error"]
    note = "<script>alert('x')</script>\x00\x1b[31m红色\u202e反转\n第二行"
    status, _answer = _inbound(sessions, {**base, "actor": "<b>李工</b>", "note": note})
    assert status == 200
    with sessions() as session:
        event = service.history(session, number)[-1]
    # Markup stays text (every page escapes it); controls and bidi overrides are dropped.
    assert event.note == "<script>alert('x')</script>[31m红色反转\n第二行"
    assert event.actor == "<b>李工</b>"


def test_a_concurrent_move_is_answered_retry_and_not_kept(
        sessions: Sessions, monkeypatch: pytest.MonkeyPatch) -> None:
    number = _dispatched(sessions)
    body = {"case_number": number, "action": "sign", "actor": "李工"}

    def race(*args: Any, **kwargs: Any) -> None:
        raise service.ConcurrentChange(f"work order {number} was changed by someone else")

    monkeypatch.setattr(service, "transition", race)
    status, answer = _inbound(sessions, body)
    assert status == 409 and answer["retry"] is True and _stored(sessions) == 0
    monkeypatch.undo()
    assert _inbound(sessions, body)[0] == 200  # the platform's retry goes through


def test_two_identical_requests_at_once_move_the_order_once(
        sessions: Sessions, monkeypatch: pytest.MonkeyPatch) -> None:
    number = _dispatched(sessions)
    applied: list[str] = []
    real_apply = exchange._apply

    def slow_apply(*args: Any) -> tuple[int, dict[str, Any]]:
        applied.append(threading.current_thread().name)
        # Holds the first request open so the twin overlaps it. Not a wait for an event:
        # the twin's arrival at the lock cannot be seen from here (on SQLite it blocks
        # inside BEGIN IMMEDIATE), and a twin that comes later must get the same answer.
        time.sleep(0.5)
        return real_apply(*args)

    monkeypatch.setattr(exchange, "_apply", slow_apply)
    body = {"case_number": number, "action": "sign", "actor": "李工"}
    barrier = threading.Barrier(2)
    answers: list[tuple[int, dict[str, Any]]] = []

    def post() -> None:
        barrier.wait(5)
        answers.append(_inbound(sessions, body, key="twin-0000001"))

    threads = [threading.Thread(target=post) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(answers) == 2 and answers[0] == answers[1]
    assert answers[0][0] == 200 and len(applied) == 1
    assert _steps(sessions, number) == ["create", "open", "dispatch", "sign"]
    assert _stored(sessions) == 1
