"""The domain event bus: one Redis stream every room publishes to and reads from.

Every event has an id derived from what it describes (the call it started, the order and
the version a move made), and is published once: publishing an id the stream already got
(a telephony service restarted and resyncing, a replay) adds nothing. Services consume the
stream through consumer groups with acknowledgement (`consume`, `ack`): what is published
while a consumer is down waits for it, and what it read but did not finish is read again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Protocol

import redis
from sqlalchemy import event as orm_event
from sqlalchemy.orm import Session, sessionmaker

STREAM = "hotline:events"
SEEN_SECONDS = 7 * 24 * 3600  # how long a published event's id is remembered
_PENDING = "hotline.pending_events"


class Event(Protocol):
    type: str

    @property
    def id(self) -> str: ...

    def as_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class DomainEvent:
    """The base of every room's explicit event types; `at` is Unix epoch seconds. Each
    type names, in `identity`, what makes one event of it the same event again."""

    type: ClassVar[str] = "event"
    at: float

    def identity(self) -> tuple[object, ...]:
        raise NotImplementedError(f"{type(self).__name__} has no identity")

    @property
    def id(self) -> str:
        """The type and what the event is about; hashed when that gets long."""
        key = ":".join(str(part) for part in self.identity())
        if len(key) > 80:
            key = hashlib.sha256(key.encode()).hexdigest()[:32]
        return f"{self.type}:{key}"

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "id": self.id, **asdict(self)}


def announce(session: Session, event: Event) -> None:
    """Publish `event` once the session's transaction commits (never for a rolled-back
    change); a session without a bus attached (see `publish_on_commit`) drops it."""
    session.info.setdefault(_PENDING, []).append(event)


def publish_on_commit(sessions: sessionmaker[Session], bus: EventBus) -> None:
    """Let every session from `sessions` publish what it announced, after its commit."""

    @orm_event.listens_for(sessions, "after_commit")
    def _publish(session: Session) -> None:
        for event in session.info.pop(_PENDING, []):
            bus.publish(event)

    @orm_event.listens_for(sessions, "after_rollback")
    def _forget(session: Session) -> None:
        session.info.pop(_PENDING, None)


# Mark the id seen and append the event in one step, or do neither: an event published
# twice (by two processes, or by one again after a restart) is in the stream once.
_PUBLISH_ONCE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*',
                    'type', ARGV[3], 'id', ARGV[4], 'data', ARGV[5])
end
return false
"""


class EventBus:
    def __init__(self, client: redis.Redis, stream: str = STREAM, maxlen: int = 200_000) -> None:
        self.client, self.stream, self.maxlen = client, stream, maxlen
        self._publish_once = client.register_script(_PUBLISH_ONCE)

    def publish(self, event: Event) -> str | None:
        """Append `event` unless its id was published already; its stream entry id, or
        None for a repeat."""
        body = json.dumps(event.as_dict(), ensure_ascii=False, separators=(",", ":"))
        entry_id = self._publish_once(
            keys=[self.stream, f"{self.stream}:seen:{event.id}"],
            args=[SEEN_SECONDS, self.maxlen, event.type, event.id, body])
        if entry_id is None:
            return None
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def published(self, event_id: str) -> bool:
        """Whether an event with this id was published (within the last SEEN_SECONDS)."""
        return bool(self.client.exists(f"{self.stream}:seen:{event_id}"))

    def read(self, after: str = "0-0", count: int = 500, block_ms: int | None = None
             ) -> list[tuple[str, dict[str, Any]]]:
        """Events after the id `after`, oldest first."""
        answer = self.client.xread({self.stream: after}, count=count, block=block_ms)
        out = []
        for _stream, entries in answer or []:
            for entry_id, fields in entries:
                key = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                out.append((key, json.loads(fields[b"data"])))
        return out

    def ensure_group(self, group: str) -> None:
        """A consumer group reading from the stream's end: created once, it then keeps
        every event published while its consumers are away."""
        try:
            self.client.xgroup_create(self.stream, group, id="$", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def consume(self, group: str, consumer: str, count: int = 500, block_ms: int | None = None
                ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Events for `consumer` of `group`: first those it read before and never
        acknowledged (it stopped half-way), then new ones. Acknowledge each with `ack`
        once handled; an unacknowledged one comes again at the consumer's next start."""
        pending = self.client.xreadgroup(group, consumer, {self.stream: "0"}, count=count)
        fresh = self.client.xreadgroup(group, consumer, {self.stream: ">"}, count=count,
                                       block=block_ms)
        for _stream, entries in (pending or []) + (fresh or []):
            for entry_id, fields in entries:
                key = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                if fields:  # a pending entry trimmed from the stream comes back empty
                    yield key, json.loads(fields[b"data"])
                else:
                    self.ack(group, key)

    def ack(self, group: str, entry_id: str) -> None:
        self.client.xack(self.stream, group, entry_id)

    def last_id(self) -> str:
        info = self.client.xinfo_stream(self.stream) if self.client.exists(self.stream) else None
        if not info:
            return "0-0"
        last = info["last-generated-id"]
        return last.decode() if isinstance(last, bytes) else str(last)
