"""The domain event bus: one Redis stream every room publishes to and reads from.

Every event has an id derived from what it describes (the call it started, the order and
the version a move made), and is published once: publishing an id the stream already got
(a telephony service restarted and resyncing, a replay) adds nothing. Services consume the
stream through consumer groups with acknowledgement (`consume`, `ack`): what is published
while a consumer is down waits for it, and what it read but did not finish is read again.

Events reach the stream through the outbox (core.outbox): `announce` stores an event in the
transaction of the change it describes, and the relay appends it once that is committed, now
or, while Redis is away, when Redis returns. A consumer group skips an event id it has
handled already (`consume`, `ack`). The stream is trimmed (`trim`) only below what every
group has acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import weakref
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

import redis
from sqlalchemy import event as orm_event
from sqlalchemy.orm import Session, sessionmaker

from core import outbox
from core.clock import SYSTEM_CLOCK, Clock
from core.db import transaction
from core.live import failing_fast

STREAM = "hotline:events"
SEEN_SECONDS = 7 * 24 * 3600  # how long a published (or a group's handled) event id is remembered
TRIM_CHUNK = 10_000  # entries read at a time when the trim looks for its floor
_STORED = "hotline.outbox_stored"  # session.info: this transaction stored events
# each session factory's relay (publish_on_commit), for `publish`
_RELAYS: weakref.WeakKeyDictionary[sessionmaker[Session], outbox.Relay] = (
    weakref.WeakKeyDictionary())


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
    """Store `event` in the outbox in the session's transaction: it is published once that
    commits (never for a rolled-back change), by the relay `publish_on_commit` attached, or
    by the centre's relay thread (a process without a relay, Redis away)."""
    at = float(getattr(event, "at", 0.0) or 0.0)
    outbox.store(session, event.id, event.type, event.as_dict(),
                 datetime.fromtimestamp(at, UTC))
    session.info[_STORED] = True


def publish(sessions: sessionmaker[Session], event: Event) -> None:
    """Publish an event that describes no stored change (a seat's state, a call's step):
    `publish_all` of the one event."""
    publish_all(sessions, [event])


def publish_all(sessions: sessionmaker[Session], events: Sequence[Event]) -> None:
    """Publish events that describe no stored change, in their order: appended at once, in
    one round trip, by the relay `publish_on_commit` attached while Redis answers and
    nothing stored waits before them, else stored together in a transaction of their own
    and relayed like every other (Redis away, or no relay in this process)."""
    if not events:
        return

    def store() -> None:
        with transaction(sessions) as session:
            for event in events:
                announce(session, event)

    relay = _RELAYS.get(sessions)
    if relay is None:
        store()
    else:
        relay.publish([(event.id, event.type, event.as_dict()) for event in events], store)


async def gather_burst(stop: asyncio.Event, seconds: float) -> None:
    """A consumer's pause after a read that found entries, so the rest of a burst comes in
    its next read: woken by every entry, a consumer pays a thread hop and two round trips
    for each (a call publishes ~13; ~100 a second at 8 calls/s), most of them of types it
    skips. The first entry after a quiet spell is still read at once."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def publish_on_commit(sessions: sessionmaker[Session], bus: EventBus | outbox.Stream,
                      clock: Clock = SYSTEM_CLOCK) -> outbox.Relay:
    """Let every session from `sessions` relay what it stored right after its commit; the
    relay is returned (the centre also runs its thread: `Relay.start`)."""
    # its own client, failing at once: a commit never waits on Redis retries
    stream = (EventBus(failing_fast(bus.client), bus.stream) if isinstance(bus, EventBus)
              else bus)  # a test's stand-in
    relay = outbox.Relay(sessions, stream, clock)
    _RELAYS[sessions] = relay

    # Both hooks also fire when a savepoint (begin_nested) is released or rolled back; the
    # events stored wait for the whole transaction's end, so those are passed over.
    @orm_event.listens_for(sessions, "after_commit")
    def _relay(session: Session) -> None:
        if not session.in_nested_transaction() and session.info.pop(_STORED, False):
            relay.after_commit()

    @orm_event.listens_for(sessions, "after_rollback")
    def _forget(session: Session) -> None:
        if not session.in_nested_transaction():
            session.info.pop(_STORED, None)

    return relay


# Mark the id seen and append the event in one step, or do neither: an event published
# twice (by two processes, or by one again after a restart) is in the stream once.
# An event of a `versioned` type bumps its key (KEYS[3]) instead of joining the stream,
# and says so on the channel of the key's name.
_PUBLISH_ONCE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
  if KEYS[3] then
    local version = redis.call('INCR', KEYS[3])
    redis.call('PUBLISH', KEYS[3], version)
    return version
  end
  return redis.call('XADD', KEYS[1], '*', 'type', ARGV[2], 'id', ARGV[3], 'data', ARGV[4])
end
return false
"""
# `_PUBLISH_ONCE` for several events in one call (none of a `versioned` type): KEYS[1] the
# stream, then each event's seen key; ARGV[1] the seconds, then type, id, data per event
_PUBLISH_ALL_ONCE = """
local appended = {}
for i = 2, #KEYS do
  local at = (i - 2) * 3 + 1
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    appended[i - 1] = redis.call('XADD', KEYS[1], '*', 'type', ARGV[at + 1],
                                 'id', ARGV[at + 2], 'data', ARGV[at + 3])
  else
    appended[i - 1] = false
  end
end
return appended
"""
# event type -> the Redis key the bus bumps (INCR) whenever it appends an event of that type
_VERSIONS: dict[str, str] = {}
# key -> what this process wants told, at once, when it bumps the key itself
_BUMPED: dict[str, weakref.WeakSet[Any]] = {}


def versioned(event_type: str, key: str) -> None:
    """Events of `event_type` bump `key` (INCR) where others join the stream: a room's
    cache of something its operator edits (the work calendar, the time limits) compares
    `key` with what it read, and no consumer of the stream wants them. Announced with the
    change like any event, one moves the key right after the commit of a process that
    publishes on commit, else (Redis away, a process without a relay) once the centre's
    relay gets it out; once per event id, as the stream gets an event. Each bump is
    published on the channel named `key` too (`follow_bumps`)."""
    _VERSIONS[event_type] = key


class Bumped(Protocol):
    def bumped(self) -> None: ...


def follow_bumps(key: str, follower: Bumped) -> None:
    """Have `follower.bumped()` called when this process bumps `key` (its relay appends a
    `versioned` event), before the append returns: the channel tells every process, this
    one a moment later than its own next step may come. Held weakly."""
    _BUMPED.setdefault(key, weakref.WeakSet()).add(follower)


class EventBus:
    def __init__(self, client: redis.Redis, stream: str = STREAM) -> None:
        self.client, self.stream = client, stream
        self._publish_once = client.register_script(_PUBLISH_ONCE)
        self._publish_all_once = client.register_script(_PUBLISH_ALL_ONCE)
        self._reading: dict[tuple[str, str], str] = {}  # (group, entry id) -> event id
        # per group, the entries `consume` gave out and `ack` has not acknowledged yet; the
        # (group, consumer)s whose pending list was read empty since (see `consume`)
        self._given: dict[str, set[str]] = {}
        self._drained: set[tuple[str, str]] = set()
        self.read_up_to: dict[str, str] = {}  # per group, the newest entry `consume` read

    def append(self, event_id: str, event_type: str, payload: dict[str, Any]) -> str | None:
        """Append an event unless its id was published already: the outbox relay's step.
        Its stream entry id (for a `versioned` type, its key's new version), or None for a
        repeat."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        keys = [self.stream, f"{self.stream}:seen:{event_id}"]
        version = _VERSIONS.get(event_type)
        if version is not None:
            keys.append(version)
        entry_id = self._publish_once(keys=keys,
                                      args=[SEEN_SECONDS, event_type, event_id, body])
        if entry_id is None:
            return None
        if version is not None:
            for follower in list(_BUMPED.get(version, ())):
                follower.bumped()
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def append_all(self, items: Sequence[tuple[str, str, dict[str, Any]]]
                   ) -> list[str | None]:
        """`append` each of `items` (id, type, payload), in their order, in one round trip
        (one at a time when one is of a `versioned` type: a key to bump, followers to
        tell); each one's stream entry id, or None for a repeat."""
        if any(event_type in _VERSIONS for _id, event_type, _payload in items):
            return [self.append(*item) for item in items]
        if not items:
            return []
        keys, args = [self.stream], [SEEN_SECONDS]
        for event_id, event_type, payload in items:
            keys.append(f"{self.stream}:seen:{event_id}")
            args += [event_type, event_id,
                     json.dumps(payload, ensure_ascii=False, separators=(",", ":"))]
        return [None if entry_id is None else _text(entry_id)
                for entry_id in self._publish_all_once(keys=keys, args=args)]

    def publish(self, event: Event) -> str | None:
        """Append `event` straight to the stream, bypassing the outbox: for tests and
        benchmarks that stand in for a room. The rooms publish with `announce`."""
        return self.append(event.id, event.type, event.as_dict())

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

    def consume(self, group: str, consumer: str, count: int = 500, block_ms: int | None = None,
                types: Collection[str] | Callable[[str], bool] | None = None
                ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Events for `consumer` of `group`: first those it read before and never
        acknowledged (it stopped half-way), then new ones. Acknowledge them with `ack`
        once handled (several in one call: one round trip); an unacknowledged one comes
        again at the consumer's next start. An event whose id the group handled already
        (published again after its id was forgotten, a restored outbox) is acknowledged
        and skipped. With `types` (event types, or a test of one), only the events it
        wants are decoded and given; the others are acknowledged together, undecoded.
        `read_up_to[group]` is then the newest entry read."""
        wanted = types if types is None or callable(types) else types.__contains__
        reader = (group, consumer)
        pending = None
        if reader not in self._drained or self._given.get(group):
            # what this consumer left unacknowledged (here, or in a process before this
            # one); once none is left the read is skipped, until one is left again
            pending = self.client.xreadgroup(group, consumer, {self.stream: "0"}, count=count)
            if not any(got for _stream, got in pending or []):
                self._drained.add(reader)
        fresh = self.client.xreadgroup(group, consumer, {self.stream: ">"}, count=count,
                                       block=block_ms)
        skipped: list[str] = []
        chosen: list[tuple[str, bytes | str, dict[str, Any] | None, bytes]] = []
        for _stream, got in (pending or []) + (fresh or []):
            for entry_id, fields in got:
                key = _text(entry_id)
                if not fields:  # a pending entry trimmed from the stream comes back empty
                    skipped.append(key)
                    continue
                self.read_up_to[group] = key
                event = None
                if wanted is not None:
                    kind = fields.get(b"type")
                    if kind is None:  # an entry `append` did not write: its data says
                        event = json.loads(fields[b"data"])
                        kind = event.get("type", "") if isinstance(event, dict) else ""
                    if not wanted(_text(kind)):
                        skipped.append(key)
                        continue
                chosen.append((key, fields.get(b"id", b""), event, fields[b"data"]))
        handled = self._handled(group, [event_id for _key, event_id, _e, _d in chosen])
        given = self._given.setdefault(group, set())
        try:
            for (key, event_id, event, data), seen in zip(chosen, handled, strict=True):
                if seen:
                    skipped.append(key)
                    continue
                self._reading[(group, key)] = _text(event_id)
                given.add(key)
                yield key, json.loads(data) if event is None else event
        finally:
            if skipped:
                self.client.xack(self.stream, group, *skipped)

    def _handled(self, group: str, event_ids: list[Any]) -> list[bool]:
        if not event_ids:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for event_id in event_ids:
                name = event_id.decode() if isinstance(event_id, bytes) else str(event_id)
                pipe.exists(f"{self.stream}:handled:{group}:{name}")
            return [bool(found) and bool(event_id)
                    for found, event_id in zip(pipe.execute(), event_ids, strict=True)]

    def ack(self, group: str, *entry_ids: str) -> None:
        """The entries are handled: acknowledged, and their event ids remembered as handled
        by the group (SEEN_SECONDS), all at once in one round trip."""
        if not entry_ids:
            return
        with self.client.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, group, *entry_ids)
            for entry_id in entry_ids:
                event_id = self._reading.pop((group, entry_id), "")
                if event_id:
                    pipe.set(f"{self.stream}:handled:{group}:{event_id}", "1", ex=SEEN_SECONDS)
            pipe.execute()
        given = self._given.get(group)
        if given:
            given.difference_update(entry_ids)

    def trim(self, keep: int) -> int:
        """Drop entries every consumer group has acknowledged, keeping at least the newest
        `keep` (readers that look back, like the screen pop, and groups made later); an
        entry some group has not acknowledged, or not read yet, is never dropped. How many
        entries went."""
        if not self.client.exists(self.stream):
            return 0
        floors = []
        for group in self.client.xinfo_groups(self.stream):
            name = _text(group["name"])
            # (acknowledged between XINFO and XPENDING: no oldest, as if none were pending)
            oldest = (self.client.xpending(self.stream, name)["min"]
                      if int(group.get("pending") or 0) else None)
            if oldest is not None:
                floors.append(_entry_key(_text(oldest)))
            else:  # everything delivered is acknowledged: what follows it is not read yet
                floors.append(_next_key(_entry_key(_text(group["last-delivered-id"]))))
        beyond = self._beyond(keep)
        if beyond is None:
            return 0  # no more than `keep` entries
        floors.append(_next_key(beyond))
        floor = min(floors)
        return int(self.client.xtrim(self.stream, minid=f"{floor[0]}-{floor[1]}",
                                     approximate=False))

    def _beyond(self, keep: int) -> tuple[int, int] | None:
        """The newest entry older than the newest `keep`, or None: reads only the entries
        beyond `keep` from the oldest, in chunks (a minute's worth once the stream was
        trimmed), never the `keep` entries themselves (200,000 each minute, parsed into this
        process, had been most of the relay thread's work and of its heap's churn)."""
        excess = int(self.client.xlen(self.stream)) - keep
        after, last = "-", None
        while excess > 0:
            chunk = self.client.xrange(self.stream, min=after, count=min(excess, TRIM_CHUNK))
            if not chunk:
                break
            last = _entry_key(_text(chunk[-1][0]))
            excess -= len(chunk)
            after = f"({last[0]}-{last[1]}"
        return last

    def last_id(self) -> str:
        info = self.client.xinfo_stream(self.stream) if self.client.exists(self.stream) else None
        if not info:
            return "0-0"
        last = info["last-generated-id"]
        return last.decode() if isinstance(last, bytes) else str(last)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms or 0), int(seq or 0)


def _next_key(key: tuple[int, int]) -> tuple[int, int]:
    return key[0], key[1] + 1
