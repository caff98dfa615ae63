"""The domain event bus: one Redis stream every room publishes to and reads from.

An event is published once, with its type and its JSON body; consumers keep their own
position (or a consumer group), so a slow consumer never loses events while it catches up.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Protocol

import redis
from sqlalchemy import event as orm_event
from sqlalchemy.orm import Session, sessionmaker

STREAM = "hotline:events"
_PENDING = "hotline.pending_events"


class Event(Protocol):
    type: str

    def as_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class DomainEvent:
    """The base of every room's explicit event types; `at` is Unix epoch seconds."""

    type: ClassVar[str] = "event"
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}


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


class EventBus:
    def __init__(self, client: redis.Redis, stream: str = STREAM, maxlen: int = 200_000) -> None:
        self.client, self.stream, self.maxlen = client, stream, maxlen

    def publish(self, event: Event) -> str:
        body = json.dumps(event.as_dict(), ensure_ascii=False, separators=(",", ":"))
        entry_id = self.client.xadd(self.stream, {"type": event.type, "data": body},
                                    maxlen=self.maxlen, approximate=True)
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

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

    def last_id(self) -> str:
        info = self.client.xinfo_stream(self.stream) if self.client.exists(self.stream) else None
        if not info:
            return "0-0"
        last = info["last-generated-id"]
        return last.decode() if isinstance(last, bytes) else str(last)
