"""The event outbox: domain events stored in the transaction of the change they describe,
then relayed to the Redis stream.

`store` writes an event's row in the caller's transaction, so a change and its events are
committed together or not at all, and whether Redis is there at that moment does not
matter. A `Relay` appends the rows to the stream in their order and stamps them relayed;
while Redis is away it retries with back-off, and when Redis returns every row goes out.
It can neither lose a row (a row is stamped only after its XADD) nor double one (the bus
appends an event id once: a row appended just before a crash, and so not stamped, is
skipped when relayed again). Relayed rows are deleted after RETENTION.

Every process that commits may relay right after its commit (`Relay.after_commit`); the
centre also runs a relay thread (`Relay.start`) that catches what others left: events
committed while Redis was away, or by a process without a relay of its own. While that
thread runs, a committing thread only reads the rows and appends them; the thread stamps
what was appended once a round (POLL_SECONDS), so a commit costs one read, not a write
transaction of its own. A row appended and not yet stamped when the process dies is
relayed again by the next relay and skipped by the bus (its id was seen).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol

import redis
from sqlalchemy import JSON, Integer, Row, String, delete, func, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_never,
    wait_exponential,
)

from core.clock import SYSTEM_CLOCK, Clock
from core.db import Base, UtcDateTime, insert_for, is_busy, transaction

log = logging.getLogger(__name__)

BATCH = 500  # rows relayed per transaction
POLL_SECONDS = 1.0  # the relay thread looks for rows other processes left this often
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 15.0  # seconds between tries while Redis is away
RETENTION = timedelta(days=2)  # relayed rows are kept this long (to look into), then deleted
TRIM_EVERY_SECONDS = 60.0  # how often the relay thread trims the stream (EventBus.trim)
# PostgreSQL: one relay at a time across processes, so rows go out in their order
_LOCK_KEY = 12319_0032


class Stream(Protocol):
    """What the relay needs of the bus (core.events.EventBus)."""

    def append(self, event_id: str, event_type: str, payload: dict[str, Any]) -> str | None:
        ...

    def append_all(self, items: Sequence[tuple[str, str, dict[str, Any]]]
                   ) -> list[str | None]: ...

    def trim(self, keep: int) -> int: ...


class OutboxEvent(Base):
    __tablename__ = "event_outbox"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(200), unique=True)
    type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    relayed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)


def store(session: Session, event_id: str, event_type: str, payload: dict[str, Any],
          created_at: datetime) -> None:
    """The event's row, in `session`'s transaction; an id stored already adds nothing."""
    session.execute(_store_statement(session.get_bind().dialect.name), {
        "event_id": event_id, "type": event_type, "payload": payload,
        "created_at": created_at})


@lru_cache(maxsize=4)
def _store_statement(dialect: str) -> Any:
    """store's INSERT, built once per database kind (every move stores an event: building
    the statement cost more than running it)."""
    return insert_for(dialect, OutboxEvent.__table__).on_conflict_do_nothing(
        index_elements=["event_id"])


def backlog(session: Session) -> int:
    """How many stored events wait to be relayed: the outbox's queue length (a metric)."""
    return int(session.scalar(select(func.count()).select_from(OutboxEvent)
                              .where(OutboxEvent.relayed_at.is_(None))) or 0)


class Relay:
    """Moves outbox rows to the bus. `relay_pending` once, `after_commit` from a committing
    thread (never waits for another relay, never raises), `start` for a thread that keeps
    at it and retries while Redis is away."""

    def __init__(self, sessions: sessionmaker[Session], bus: Stream,
                 clock: Clock = SYSTEM_CLOCK, *, trim_keep: int = 200_000) -> None:
        self.sessions, self.bus, self.clock, self.trim_keep = sessions, bus, clock, trim_keep
        self._lock = threading.Lock()  # one relay at a time in this process
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.redis_away = False  # the last try failed: committing threads leave it alone
        self._failed_at = 0.0  # time.monotonic() of that try
        # commits of this process that stored events, and how many of them are known relayed
        self._stores = self._drained = 0
        self._count_lock = threading.Lock()
        self.relayed = 0
        # seqs of rows a committing thread appended, for the relay thread to stamp
        self._unstamped: set[int] = set()

    def relay_pending(self, *, wait: bool = True) -> int:
        """Relay every unrelayed row, oldest first; how many were appended. Raises a
        RedisError when Redis is away (the rows stay for the next try). Without `wait`,
        returns 0 at once when another relay is at work (it will see these rows too)."""
        if not self._lock.acquire(blocking=wait):
            self._wake.set()
            return 0
        try:
            total = 0
            while True:
                mark = self._stores
                done, more, whole = self._relay_batch(wait)
                total += done
                if not more:
                    if whole:  # all this process stored up to `mark` is out
                        with self._count_lock:
                            self._drained = max(self._drained, mark)
                        self.redis_away = False
                    return total
        finally:
            self._lock.release()

    def publish(self, items: Sequence[tuple[str, str, dict[str, Any]]],
                store: Callable[[], None]) -> None:
        """Events that describe no stored change (a call's steps, seats' states), as (id,
        type, payload): appended at once, all in one round trip, while Redis answers and
        nothing this process stored waits before them, so the AMI loop's events cost a
        Redis call a loop turn, not a transaction each; otherwise `store`d in the outbox
        (in a transaction of their own), behind what waits."""
        if not self.redis_away and self._drained == self._stores:
            try:
                self.bus.append_all(items)
                return
            except (redis.RedisError, OSError) as exc:
                self.redis_away, self._failed_at = True, time.monotonic()
                log.warning("event relay: Redis is away (%s); events kept in the outbox",
                            type(exc).__name__)
        store()

    def _relay_batch(self, wait: bool) -> tuple[int, bool, bool]:
        if not wait and self._thread is not None and self._thread.is_alive():
            return self._append_batch()
        with self.sessions() as session:  # a plain read: nothing waiting takes no lock
            waiting = session.scalars(
                select(OutboxEvent.seq).where(OutboxEvent.relayed_at.is_(None))
                .order_by(OutboxEvent.seq).limit(len(self._unstamped) + 1)).all()
        if not waiting:
            return 0, False, True
        only_appended = self._unstamped.issuperset(waiting)  # by committing threads
        # a write transaction from its start: on SQLite a read that then stamps the rows is
        # refused at once when another writer committed in between ("database is locked").
        # A committing thread (not `wait`) never waits for the lock: while another writer
        # holds it, the relay thread gets the rows out (that writer may be waiting for the
        # very thread that committed, the centre's loop: both would stall)
        try:
            with transaction(self.sessions, wait=wait) as session:
                appended, rows = ((0, self._stamp(session, sorted(self._unstamped)))
                                  if only_appended else self._stamp_batch(session, wait))
        except OperationalError as exc:
            if wait or not is_busy(exc):
                raise
            self._wake.set()
            return 0, False, False
        if rows is None:
            return 0, False, False
        self._unstamped.difference_update(rows)
        return appended, not only_appended and len(rows) == BATCH, True

    def _stamp_batch(self, session: Session, wait: bool) -> tuple[int, list[int] | None]:
        """Append the oldest waiting rows and stamp them: (appended, their seqs), or (0,
        None) when another process's relay is at work."""
        if not self._one_relay(session, wait):
            return 0, None
        seqs, rows = self._waiting(session)
        appended = self._append(rows)
        if seqs:
            session.execute(update(OutboxEvent).where(OutboxEvent.seq.in_(seqs))
                            .values(relayed_at=self.clock.now()))
        return appended, seqs

    def _one_relay(self, session: Session, wait: bool) -> bool:
        """PostgreSQL: this transaction relays alone across processes, so rows go out in
        their order (waiting for the lock, or False at once when another holds it: the
        thread is woken to look again). SQLite needs none: its writers go one at a time,
        and relays that only read append in seq order, the bus taking an id once."""
        if session.get_bind().dialect.name != "postgresql":
            return True
        if wait:
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            return True
        if session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _LOCK_KEY}):
            return True
        self._wake.set()
        return False

    def _waiting(self, session: Session) -> tuple[list[int], Sequence[Row[Any]]]:
        """The oldest waiting rows' seqs, and the rows no committing thread appended yet
        (those in `_unstamped` wait only for their stamp: their payloads are not read
        again, at every commit, until the relay thread stamps them)."""
        seqs = list(session.scalars(select(OutboxEvent.seq)
                                    .where(OutboxEvent.relayed_at.is_(None))
                                    .order_by(OutboxEvent.seq).limit(BATCH)))
        fresh = [seq for seq in seqs if seq not in self._unstamped]
        rows = session.execute(
            select(OutboxEvent.seq, OutboxEvent.event_id, OutboxEvent.type,
                   OutboxEvent.payload)
            .where(OutboxEvent.seq.in_(fresh)).order_by(OutboxEvent.seq)).all() if fresh else []
        return seqs, rows

    def _append(self, rows: Sequence[Row[Any]]) -> int:
        """Append the rows in their order, in one round trip; how many were new to the bus."""
        appended = sum(entry_id is not None for entry_id in self.bus.append_all(
            [(event_id, event_type, payload) for _seq, event_id, event_type, payload in rows]))
        self.relayed += appended
        return appended

    def _append_batch(self) -> tuple[int, bool, bool]:
        """A committing thread's relay while the relay thread runs: the waiting rows
        appended in a read transaction, their seqs left for the thread to stamp."""
        with self.sessions() as session:
            if not self._one_relay(session, wait=False):
                return 0, False, False
            seqs, rows = self._waiting(session)
            appended = self._append(rows)  # under the lock, as the thread's relay
        self._unstamped.update(row.seq for row in rows)
        if len(seqs) == BATCH:  # a batch of rows waits: the thread stamps them, then goes on
            self._wake.set()
            return appended, False, False
        return appended, False, True

    def _stamp(self, session: Session, seqs: list[int]) -> list[int]:
        """Stamp the rows committing threads appended (`seqs`): the thread's one write
        transaction a round."""
        for at in range(0, len(seqs), BATCH):
            session.execute(update(OutboxEvent)
                            .where(OutboxEvent.seq.in_(seqs[at:at + BATCH]),
                                   OutboxEvent.relayed_at.is_(None))
                            .values(relayed_at=self.clock.now()))
        return seqs

    def after_commit(self) -> None:
        """A commit stored events: relay them now unless Redis was away at the last try
        or another relay is at work (then the relay thread, or the next commit, does)."""
        with self._count_lock:
            self._stores += 1
        running = self._thread is not None and self._thread.is_alive()
        if self.redis_away and (running or time.monotonic() - self._failed_at < BACKOFF_MAX):
            self._wake.set()  # the thread retries; without one, the next commit after a pause
            return
        try:
            self.relay_pending(wait=False)
            self.redis_away = False
        except (redis.RedisError, OSError) as exc:
            self.redis_away, self._failed_at = True, time.monotonic()
            self._wake.set()
            log.warning("event relay: Redis is away (%s); events stay in the outbox",
                        type(exc).__name__)
        except Exception:  # the caller's change is committed: never fail it afterwards
            self._wake.set()
            log.exception("event relay failed; the relay thread retries")

    def forget_relayed(self) -> int:
        """Delete rows relayed longer than RETENTION ago; how many."""
        with transaction(self.sessions) as session:
            result = session.execute(delete(OutboxEvent).where(
                OutboxEvent.relayed_at < self.clock.now() - RETENTION))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    # -- the relay thread -------------------------------------------------------------

    def start(self) -> Relay:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True, name="event-relay")
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.redis_away:
            return
        try:  # what the last commits left goes out now, not when the next process starts
            self.relay_pending(wait=False)
        except Exception as exc:  # it stays in the outbox for the next relay
            log.warning("event relay: events left in the outbox at stop (%s)",
                        type(exc).__name__)

    def _run(self) -> None:
        retrying = Retrying(
            retry=retry_if_exception_type((redis.RedisError, OSError)),
            wait=wait_exponential(multiplier=BACKOFF_FIRST, max=BACKOFF_MAX),
            stop=stop_never, sleep=self._sleep, before_sleep=self._away, reraise=True)
        last_trim = 0.0
        while not self._stop.is_set():
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                retrying(self._relay_or_stop)
                self.redis_away = False
                if self.clock.time() - last_trim >= TRIM_EVERY_SECONDS:
                    last_trim = self.clock.time()
                    self.bus.trim(self.trim_keep)
                    self.forget_relayed()
            except _Stopping:
                return
            except Exception:  # a database hiccup: the next round tries again
                log.exception("event relay failed; trying again")
                self._stop.wait(BACKOFF_MAX)

    def _relay_or_stop(self) -> int:
        if self._stop.is_set():
            raise _Stopping
        return self.relay_pending()

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Stopping

    def _away(self, state: RetryCallState) -> None:
        self.redis_away = True
        error = state.outcome.exception() if state.outcome else None
        log.warning("event relay: Redis is away (%s); try %d, events kept in the outbox",
                    type(error).__name__, state.attempt_number)


class _Stopping(Exception):
    """The relay thread was told to stop while waiting for Redis."""
