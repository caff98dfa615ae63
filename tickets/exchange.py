"""Data exchange (数据交换) with the city's digital urban-management platform (数字城管平台 /
12345 platform): signed webhooks out, signed status updates in.

Outbound: every work-order move that commits leaves one `WebhookDelivery` row written in the
same transaction (the outbox), so an event exists iff the move happened. `deliver_due` sends
the rows at least once, in creation order per case, each with its event id as idempotency key
so the platform takes it once; failures are retried with exponential backoff.

Inbound: a department working on the platform signs for, feeds back, returns an order or asks
for more time; `apply_inbound` checks the signature, applies the move as the department and
keeps its answer under the request's idempotency key, so a replay changes nothing and gets the
very same answer.

Signatures: HMAC-SHA256 over ``f"{timestamp}.{body}"`` with the shared secret, sent as
``X-Hotline-Signature: sha256=<hex>`` next to ``X-Hotline-Timestamp`` (Unix seconds); a
timestamp more than five minutes off is refused, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import logging
import re
import ssl
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, sessionmaker

from core.clock import Clock
from core.config import Exchange
from core.db import transaction
from core.errors import HotlineError
from tickets import service, workflow
from tickets.events import Move, OrderEvent
from tickets.models import InboundUpdate, WebhookDelivery, WorkOrder
from tickets.policy import Policy

log = logging.getLogger(__name__)

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
MAX_BACKOFF_SECONDS = 3600
SIGNATURE_TOLERANCE_SECONDS = 300
MAX_INBOUND_BYTES = 64 * 1024  # the web layer should stop reading one byte past this
MAX_NOTE = 2000
INBOUND_ACTIONS = ("sign", "feedback", "return", "request_extension", "request_park")
USER_AGENT = "hotline12319-exchange/1"

_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_.]{0,39}")
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:~+/=-]{8,80}")
# YYYYMMDD and the day's count: 4 digits, more after the 9,999th order of a day.
_CASE_NUMBER = re.compile(r"[0-9]{12,16}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # as the service drops them
# Bidi embeddings, overrides and isolates can make a note read differently on the desk than
# what was stored; the service already drops C0 controls.
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
_INBOUND_FIELDS = {"case_number", "action", "actor", "note", "expected_version"}
_HASH_FIELDS = ("request_sha256", "signed_sha256")


class ExchangeError(HotlineError):
    """A delivery that cannot be enqueued or put back; the message says why."""


# --- signatures -------------------------------------------------------------------------------


def _message(timestamp: str, body: bytes | str) -> bytes:
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    return timestamp.encode("utf-8") + b"." + raw


def sign(secret: str, timestamp: str | int, body: bytes | str) -> str:
    """The `X-Hotline-Signature` value: ``sha256=`` and the hex HMAC of ``timestamp.body``."""
    if not secret:
        raise ValueError("exchange: an empty secret would make every signature forgeable")
    digest = hmac.new(secret.encode("utf-8"), _message(str(timestamp), body), hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify(secret: str, timestamp: str | int, body: bytes | str, signature: str,
           now: datetime | float, tolerance_s: float = SIGNATURE_TOLERANCE_SECONDS) -> bool:
    """True if `signature` is ours for this body and the timestamp is within `tolerance_s`
    of `now` (either way, so a request made up for later is refused too)."""
    if not secret or isinstance(timestamp, bool) or not isinstance(signature, str):
        return False
    text = str(timestamp)
    if not re.fullmatch(r"[0-9]{1,12}", text):
        return False
    now_s = now.timestamp() if isinstance(now, datetime) else float(now)
    if abs(now_s - int(text)) > tolerance_s:
        return False
    expected = sign(secret, text, body).encode("ascii")
    return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))


# --- outbound: the outbox -----------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    """Aware UTC; SQLite hands back naive datetimes that were stored as UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else _utc(moment).isoformat()


def public_fields(order: WorkOrder) -> dict[str, Any]:
    """What the platform may see of an order: no citizen name or phone, no call id."""
    return {
        "case_number": order.case_number, "state": order.state, "version": order.version,
        "appeal_type": order.appeal_type, "category_code": order.category_code,
        "description": order.description, "channel": order.channel, "urgency": order.urgency,
        "address": order.address, "latitude": order.latitude, "longitude": order.longitude,
        "grid_code": order.grid_code, "department_code": order.department_code,
        "rework_count": order.rework_count, "first_call_resolved": order.first_call_resolved,
        "duplicate_of": order.duplicate_of, "merged_into": order.merged_into,
        "created_at": _iso(order.created_at), "updated_at": _iso(order.updated_at),
        "closed_at": _iso(order.closed_at),
    }


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 500:
        raise ExchangeError(f"exchange: webhook URL must be http(s)://host/... within 500 "
                            f"characters, got {url[:80]!r}")


def enqueue(session: Session, order: WorkOrder, event_type: str, payload: dict[str, Any],
            url: str, now: datetime) -> WebhookDelivery | None:
    """Record one event for the platform in the caller's transaction (None: no URL set).

    The order's public fields are frozen now, as they were at this move, not at sending."""
    if not url:
        return None
    _check_url(url)
    if not _EVENT_TYPE.fullmatch(event_type):
        raise ExchangeError(f"exchange: event type {event_type[:50]!r}: lower-case letters, "
                            "digits, '_' and '.', at most 40")
    now = _utc(now)
    event_id = str(uuid.uuid4())
    envelope = {"event_id": event_id, "event_type": event_type,
                "case_number": order.case_number, "occurred_at": now.isoformat(),
                "order": public_fields(order), "data": payload}
    try:
        json.dumps(envelope, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ExchangeError(f"exchange: event payload is not plain JSON: {exc}") from None
    row = WebhookDelivery(event_id=event_id, event_type=event_type,
                          case_number=order.case_number, payload=envelope, url=url,
                          state=PENDING, attempts=0, next_attempt_at=now, last_error="",
                          created_at=now)
    session.add(row)
    session.flush()
    return row


def waiting(session: Session) -> int:
    """Events for the platform not delivered yet (retried until delivered or failed)."""
    return session.scalar(select(func.count()).select_from(WebhookDelivery).where(
        WebhookDelivery.state == PENDING)) or 0


def follow_move(event: OrderEvent, move: Move) -> None:
    """Subscriber of every move (tickets.follow_ups): with `exchange.webhook_url` set, the
    platform hears of it, through the outbox row written in the move's transaction."""
    if move.policy.webhook_url:
        enqueue(move.session, move.order, f"work_order.{move.action}",
                {"action": move.action, "state": move.order.state}, move.policy.webhook_url,
                move.now)


def body_of(delivery: WebhookDelivery) -> bytes:
    """The exact bytes POSTed (and signed) for a delivery."""
    return json.dumps(delivery.payload, ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")


def backoff(retry_seconds: int, attempts: int) -> timedelta:
    """Wait after the `attempts`-th failed try: retry_seconds × 2^(attempts-1), at most 1 h."""
    exponent = min(max(attempts - 1, 0), 32)  # 2**32 s is already far beyond the cap
    return timedelta(seconds=min(retry_seconds * 2 ** exponent, MAX_BACKOFF_SECONDS))


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to; `state` is the delivery's state afterwards."""

    event_id: str
    case_number: str
    state: str
    attempts: int
    status: int | None  # HTTP status, None when no answer came
    error: str
    next_attempt_at: datetime | None


@dataclass(frozen=True)
class _Claimed:
    id: int
    event_id: str
    case_number: str
    url: str
    body: bytes
    attempts: int


@dataclass(frozen=True)
class _Answer:
    status: int | None
    detail: str


def _blocked() -> Any:
    """An earlier event of the same case still pending: this one has to wait its turn."""
    earlier = aliased(WebhookDelivery)
    return exists().where(earlier.case_number == WebhookDelivery.case_number,
                          earlier.state == PENDING, earlier.id < WebhookDelivery.id)


def _due(sessions: sessionmaker[Session], now: datetime, skip: set[int],
         batch: int) -> list[int]:
    query = (select(WebhookDelivery.id)
             .where(WebhookDelivery.state == PENDING, WebhookDelivery.next_attempt_at <= now,
                    ~_blocked())
             .order_by(WebhookDelivery.id).limit(batch + len(skip)))
    with sessions() as session:
        return [i for i in session.scalars(query) if i not in skip][:batch]


def _claim(sessions: sessionmaker[Session], delivery_id: int, now: datetime,
           lease: timedelta) -> _Claimed | None:
    """Take one attempt: count it and push next_attempt_at out by the lease, in one
    conditional update, so a second worker finds nothing due. A worker that dies after this
    leaves the row pending; it is tried again once the lease runs out."""
    with transaction(sessions) as session:
        taken = session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.state == PENDING,
                   WebhookDelivery.next_attempt_at <= now, ~_blocked())
            .values(attempts=WebhookDelivery.attempts + 1, next_attempt_at=now + lease)
            .execution_options(synchronize_session=False))
        if taken.rowcount != 1:
            return None
        row = session.get_one(WebhookDelivery, delivery_id)
        return _Claimed(row.id, row.event_id, row.case_number, row.url, body_of(row),
                        row.attempts)


def _headers(secret: str, event_id: str, body: bytes, now: datetime) -> dict[str, str]:
    timestamp = str(int(now.timestamp()))
    return {"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT,
            "X-Hotline-Event-Id": event_id, "X-Hotline-Timestamp": timestamp,
            "X-Hotline-Signature": sign(secret, timestamp, body), "Idempotency-Key": event_id}


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> _Answer:
    """One POST without redirects or proxies: a webhook goes where it is configured or fails."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(host, parts.port, timeout=timeout,
                                                 context=ssl.create_default_context())
    else:
        connection = http.client.HTTPConnection(host, parts.port, timeout=timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        start = response.read(2048)
        return _Answer(response.status, start.decode("utf-8", "replace"))
    except TimeoutError:
        return _Answer(None, f"no answer within {timeout:g} s")
    except (OSError, http.client.HTTPException) as exc:
        return _Answer(None, f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()


def _short(text: str, limit: int = 300) -> str:
    flat = " ".join(_CONTROL.sub(" ", text).split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def _finish(sessions: sessionmaker[Session], claimed: _Claimed, answer: _Answer,
            now: datetime, max_attempts: int, retry_seconds: int) -> Outcome:
    status = answer.status
    if status is not None and 200 <= status < 300:
        with transaction(sessions) as session:
            # Whoever holds the lease now, the platform has the event: delivered is the truth.
            session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == claimed.id, WebhookDelivery.state == PENDING)
                .values(state=DELIVERED, delivered_at=now, last_error="")
                .execution_options(synchronize_session=False))
        return Outcome(claimed.event_id, claimed.case_number, DELIVERED, claimed.attempts,
                       status, "", None)
    if status is None:
        error = answer.detail
    else:
        error = f"HTTP {status}: {answer.detail}" if answer.detail.strip() else f"HTTP {status}"
    permanent = status is not None and (300 <= status < 500 and status not in (408, 429))
    exhausted = claimed.attempts >= max_attempts
    if permanent or exhausted:
        state, next_at = FAILED, None
        if exhausted and not permanent:
            error = f"gave up after {claimed.attempts} attempts; last: {error}"
    else:
        state, next_at = PENDING, now + backoff(retry_seconds, claimed.attempts)
    error = _short(error)
    with transaction(sessions) as session:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == claimed.id, WebhookDelivery.state == PENDING,
                   WebhookDelivery.attempts == claimed.attempts)  # still our attempt
            .values(state=state, last_error=error,
                    **({"next_attempt_at": next_at} if next_at else {}))
            .execution_options(synchronize_session=False))
    return Outcome(claimed.event_id, claimed.case_number, state, claimed.attempts, status,
                   error, next_at)


def deliver_due(sessions: sessionmaker[Session], secret: str, max_attempts: int,
                retry_seconds: int, clock: Clock, timeout: float = 5,
                batch: int = 100) -> list[Outcome]:
    """Send every due event once, oldest first, never one ahead of a still-pending earlier
    event of the same case; an event released by its predecessor's delivery goes out in the
    same call. 2xx: delivered; 3xx and 4xx (but 408, 429): failed at once; anything else
    (5xx, timeout, refused): tried again after `backoff`, failed after `max_attempts`.

    Every time (lease, backoff, signature timestamp) is read from `clock` when it is
    needed: a round of slow receivers does not stamp its last request with its first
    minute."""
    if not secret:
        raise ExchangeError("exchange: no webhook secret (exchange.webhook_secret)")
    lease = timedelta(seconds=max(60.0, timeout * 4))
    outcomes: list[Outcome] = []
    tried: set[int] = set()
    while True:
        due = _due(sessions, clock.now(), tried, batch)
        if not due:
            return outcomes
        for delivery_id in due:
            tried.add(delivery_id)
            # The lease runs from the claim, not from the round: a round of slow receivers
            # must not hand out leases that have already run out.
            claimed = _claim(sessions, delivery_id, clock.now(), lease)
            if claimed is None:
                continue  # another worker has it, or an earlier event went pending again
            try:
                answer = _post(claimed.url, claimed.body,
                               _headers(secret, claimed.event_id, claimed.body,
                                        clock.now()),
                               timeout)
            except Exception as exc:  # a bad URL must not stop the other cases' events
                log.exception("exchange: sending %s failed", claimed.event_id)
                answer = _Answer(None, f"{type(exc).__name__}: {exc}")
            outcomes.append(_finish(sessions, claimed, answer, clock.now(), max_attempts,
                                    retry_seconds))


def redeliver(session: Session, event_id: str, *, now: datetime,
              url: str | None = None) -> WebhookDelivery:
    """Put a failed delivery back to pending with a fresh count (an operator's action),
    optionally to a corrected URL. Note the platform may then get it after later events of
    the same case; the order's `version` in the body tells it which is newer."""
    row = session.scalar(select(WebhookDelivery).where(WebhookDelivery.event_id == event_id))
    if row is None:
        raise ExchangeError(f"exchange: no delivery {event_id[:40]!r}")
    if url is not None:
        _check_url(url)
    changes: dict[str, Any] = {"state": PENDING, "attempts": 0,
                               "next_attempt_at": _utc(now)}
    if url is not None:
        changes["url"] = url
    moved = session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == row.id, WebhookDelivery.state == FAILED)
        .values(**changes).execution_options(synchronize_session=False))
    if moved.rowcount != 1:
        raise ExchangeError(f"exchange: delivery {event_id} is {row.state}, only a failed "
                            "one can be sent again")
    session.refresh(row)
    return row


def deliveries(session: Session, case_number: str | None = None,
               state: str | None = None) -> list[WebhookDelivery]:
    """Deliveries in creation order, optionally of one case and/or in one state."""
    query = select(WebhookDelivery).order_by(WebhookDelivery.id)
    if case_number is not None:
        query = query.where(WebhookDelivery.case_number == case_number)
    if state is not None:
        query = query.where(WebhookDelivery.state == state)
    return list(session.scalars(query))


class WebhookSender:
    """Delivers due events every `interval` seconds on an asyncio loop (the centre's
    `BackgroundLoop`); the HTTP and the database work run in a worker thread."""

    def __init__(self, sessions: sessionmaker[Session], exchange: Exchange, *,
                 clock: Clock, interval: float = 5.0, timeout: float = 5.0) -> None:
        self.sessions = sessions
        self.exchange = exchange
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        self.delivered = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    def deliver_now(self) -> list[Outcome]:
        outcomes = deliver_due(self.sessions, self.exchange.webhook_secret,
                               self.exchange.max_attempts, self.exchange.retry_seconds,
                               self.clock, timeout=self.timeout)
        self.delivered += sum(o.state == DELIVERED for o in outcomes)
        return outcomes

    def wake(self) -> None:
        """Send soon rather than at the next tick (after a move committed); thread-safe."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; a failing round is logged and the next one tried."""
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        try:
            while not stop.is_set():
                try:
                    await asyncio.to_thread(self.deliver_now)
                except Exception:  # the database may be back by the next tick
                    log.exception("exchange: delivery round failed")
                waiters = [asyncio.ensure_future(stop.wait()),
                           asyncio.ensure_future(self._wake.wait())]
                try:
                    await asyncio.wait(waiters, timeout=self.interval,
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()
                self._wake.clear()
        finally:
            self._loop = self._wake = None


# --- inbound ------------------------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Request:
    case_number: str
    action: str
    actor: str
    note: str
    expected_version: int | None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _Refused(400, f"JSON: field {key[:40]!r} given twice")
        seen[key] = value
    return seen


def _no_constants(name: str) -> Any:
    raise _Refused(400, f"JSON: {name} is not a number")


def _text(data: dict[str, Any], field: str, limit: int, required: bool) -> str:
    value = data.get(field, "")
    if not isinstance(value, str):
        raise _Refused(400, f"{field}: text expected")
    cleaned = _CONTROL.sub("", _BIDI.sub("", value)).strip()
    if required and not cleaned:
        raise _Refused(400, f"{field}: required")
    if len(cleaned) > limit:
        raise _Refused(400, f"{field}: at most {limit} characters (got {len(cleaned)})")
    return cleaned


def _parse(body: bytes) -> _Request:
    """The request, strictly: one JSON object, known fields only, right types and sizes."""
    if len(body) > MAX_INBOUND_BYTES:
        raise _Refused(413, f"body too large: at most {MAX_INBOUND_BYTES} bytes")
    try:
        text = body.decode("utf-8")
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise _Refused(400, "body: not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise _Refused(400, f"JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise _Refused(400, "JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise _Refused(400, "JSON: an object expected")
    unknown = sorted(set(data) - _INBOUND_FIELDS)
    if unknown:
        raise _Refused(400, f"unknown field {unknown[0][:40]!r}; allowed: "
                            f"{', '.join(sorted(_INBOUND_FIELDS))}")
    number = data.get("case_number")
    if not isinstance(number, str) or not _CASE_NUMBER.fullmatch(number):
        raise _Refused(400, "case_number: the case number, 12 to 16 digits, expected")
    action = data.get("action")
    if action not in INBOUND_ACTIONS:
        raise _Refused(400, f"action: one of {', '.join(INBOUND_ACTIONS)}")
    actor = _text(data, "actor", 50, required=True)
    note = _text(data, "note", MAX_NOTE, required=False)
    version = data.get("expected_version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                or not 1 <= version < 2 ** 31):
        raise _Refused(400, "expected_version: a whole number from 1 expected")
    return _Request(number, action, actor, note, version)


def _public(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k not in _HASH_FIELDS}


def _replayed(session: Session, key: str, request_sha: str) -> tuple[int, dict[str, Any]] | None:
    row = session.scalar(select(InboundUpdate).where(InboundUpdate.idempotency_key == key))
    if row is None:
        return None
    if row.response.get("request_sha256") != request_sha:
        return 409, {"ok": False, "error": "idempotency key reused with a different request"}
    return row.status_code, _public(row.response)


def _same_signed_request(session: Session, request: _Request, key: str, signed_sha: str,
                         now: datetime) -> bool:
    """The signature does not cover the Idempotency-Key header: the same signed bytes under a
    fresh key, within the signature's lifetime, is a replay, not a second request."""
    since = now - timedelta(seconds=2 * SIGNATURE_TOLERANCE_SECONDS)
    rows = session.scalars(select(InboundUpdate.response).where(
        InboundUpdate.case_number == request.case_number,
        InboundUpdate.action == request.action, InboundUpdate.received_at >= since,
        InboundUpdate.idempotency_key != key))
    return any(r.get("signed_sha256") == signed_sha for r in rows)


def _apply(session: Session, request: _Request, now: datetime,
           policy: Policy | None) -> tuple[int, dict[str, Any]]:
    order = session.scalar(select(WorkOrder).where(
        WorkOrder.case_number == request.case_number))
    if order is None:
        return 404, {"ok": False, "error": f"no work order {request.case_number}"}
    if request.expected_version is not None and request.expected_version != order.version:
        return 409, {"ok": False, "error": f"work order {order.case_number} is at version "
                                           f"{order.version}, not {request.expected_version}",
                     "state": order.state, "version": order.version}
    try:
        with session.begin_nested():
            moved = service.transition(
                session, request.case_number, request.action, actor=request.actor,
                role=workflow.DEPARTMENT, note=request.note,
                expected_version=request.expected_version, now=now,
                **({"policy": policy} if policy is not None else {}))
    except service.ConcurrentChange:
        raise  # a race, not an answer: the caller keeps nothing and the platform retries
    except workflow.WorkflowError as exc:
        session.refresh(order)
        return 409, {"ok": False, "error": str(exc), "state": order.state,
                     "version": order.version}
    except service.OrderError as exc:
        return 422, {"ok": False, "error": str(exc)}
    return 200, {"ok": True, "case_number": moved.case_number, "action": request.action,
                 "state": moved.state, "version": moved.version}


def apply_inbound(session: Session, *, idempotency_key: str, body_bytes: bytes,
                  timestamp: str, signature: str, secret: str, now: datetime,
                  policy: Policy | None = None) -> tuple[int, dict[str, Any]]:
    """Apply one signed status update from the platform as the department, in the caller's
    transaction, and answer (HTTP status, JSON object).

    401 bad or stale signature, 400 malformed key or request, 413 body over 64 KiB, 404 no
    such case, 409 forbidden move / version conflict / key reused for another request /
    a concurrent move (``"retry": true``), 422 refused by the order's rules, 200 applied.
    Every answer but 401, a bad key, a reused key and a concurrent move is kept under the
    key: a replay gets it again and changes nothing. Pass the centre's `policy` so the move
    keeps the operator's calendar and sends its own webhook like any other move."""
    now = _utc(now)
    if not verify(secret, timestamp, body_bytes, signature, now):
        return 401, {"ok": False, "error": "signature: invalid or timestamp too old"}
    if not isinstance(idempotency_key, str) or not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        return 400, {"ok": False, "error": "Idempotency-Key: 8-80 characters of letters, "
                                           "digits and . _ : ~ + / = -"}
    request_sha = hashlib.sha256(body_bytes).hexdigest()
    signed_sha = hashlib.sha256(_message(str(timestamp), body_bytes)).hexdigest()
    earlier = _replayed(session, idempotency_key, request_sha)
    if earlier is not None:
        return earlier
    try:
        request: _Request | None = _parse(body_bytes)
        refused: _Refused | None = None
    except _Refused as exc:
        request, refused = None, exc

    # Claim the key before acting: a concurrent twin blocks on the unique index until this
    # transaction ends, then finds the answer instead of moving the order a second time.
    row = InboundUpdate(idempotency_key=idempotency_key,
                        case_number=request.case_number if request else "",
                        action=request.action if request else "", status_code=0,
                        response={}, received_at=now)
    claim = session.begin_nested()
    try:
        session.add(row)
        session.flush()
    except IntegrityError:
        claim.rollback()
        return _replayed(session, idempotency_key, request_sha) or (
            409, {"ok": False, "error": "a request with this key is in progress; retry",
                  "retry": True})

    if refused is not None:
        status, answer = refused.status, {"ok": False, "error": str(refused)}
    elif request is not None and _same_signed_request(session, request, idempotency_key,
                                                      signed_sha, now):
        status, answer = 409, {"ok": False, "error": "this signed request was already "
                                                     "received under another idempotency key"}
    else:
        assert request is not None
        try:
            status, answer = _apply(session, request, now, policy)
        except service.ConcurrentChange as exc:
            claim.rollback()
            return 409, {"ok": False, "error": str(exc), "retry": True}
    row.status_code = status
    row.response = {**answer, "request_sha256": request_sha, "signed_sha256": signed_sha}
    session.flush()
    claim.commit()
    return status, answer
