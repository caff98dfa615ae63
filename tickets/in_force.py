"""The operator's rules in force for the order loop: the work calendar (its days and working
hours) and the time limits, read from the database once per change, not once per step.

A `RulesCache` (one per process, on its `Policy`) keeps what it read together with the
version it read under (tickets.rule_changes.VERSION_KEY, which every committed edit bumps,
whatever process made it). It learns that the version moved without asking: every bump is
published on the key's channel, which a thread of the cache follows, and a bump made by
this process itself tells the cache before the edit's relay returns
(core.events.follow_bumps). Only then does a step ask Redis for the version, one GET, and
read the tables again if it moved; GET before reading: an edit committed after the GET
bumps the version after it, so the next step asks again. While nothing moves a step asks
Redis nothing, except once every RECHECK_SECONDS (a channel that went quiet unnoticed).

Until the channel is followed (the first steps, Redis or the channel lost and not yet
regained) every step asks, as if a bump had come. While Redis cannot be asked, every step
reads the tables (correct, slower) and nothing is kept: a cache kept through an outage
could miss an edit made meanwhile. What a process cannot see: an edit made while Redis was
away from its writer but not from this process bumps the version only once the centre's
relay gets its event out (within the relay's back-off, at most ~15 s after Redis answers it
again); until then this process may use what it read before the edit. Another process's
bump reaches this one within the channel's delivery (well under a millisecond on one
host), where a GET a step saw it at the next step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import redis
from sqlalchemy.orm import Session

from core.errors import HotlineError
from core.events import follow_bumps
from core.live import failing_fast
from tickets import catalogue
from tickets.rule_changes import EDITED, VERSION_KEY
from tickets.workcalendar import WorkCalendar, load_calendar

log = logging.getLogger(__name__)

Limits = Mapping[str, Sequence[catalogue.LimitInForce]]  # step -> its limits


@dataclass(frozen=True)
class InForce:
    """The calendar and the time limits one step follows, read together."""

    calendar: WorkCalendar
    limits: Limits


def read(session: Session, timezone: str, working_hours: str) -> InForce:
    """The rules as the database holds them now (two plain reads)."""
    return InForce(load_calendar(session, timezone, working_hours),
                   catalogue.limits_in_force(session))


RECHECK_SECONDS = 5.0  # the version asked for at least this often, the channel followed
LISTEN_BACKOFF_MAX = 5.0  # seconds between tries to follow the channel again


class RulesCache:
    """The rules in force for one process, re-read when their version in Redis moved.
    `client` is called for Redis at the first step (a process reaches Redis on first use);
    its commands fail at once rather than retry while Redis is away."""

    def __init__(self, client: Callable[[], redis.Redis], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._connect = client
        self._client: redis.Redis | None = None
        self._clock = clock  # for RECHECK_SECONDS: an interval, never a date
        # (database, zone, hours) -> (version read under, the rules read)
        self._held: dict[tuple[str, str, str], tuple[bytes | None, InForce]] = {}
        self._lock = threading.Lock()
        self.reads = 0  # times the tables were read (for the metrics and the tests)
        self.asked = 0  # times Redis was asked for the version (for the tests)
        # the channel: followed (set by the thread once subscribed), a bump since the last
        # GET, the version that GET returned and when
        self._following = False
        self._moved = True
        self._version_asked: tuple[bytes | None, float] | None = None
        self._listener: threading.Thread | None = None
        follow_bumps(VERSION_KEY, self)
        _CACHES.add(self)

    def bumped(self) -> None:
        """The version moved (this process's bump, or the channel's): the next step asks."""
        self._moved = True

    @property
    def follows(self) -> bool:
        """Whether the channel is followed: a step asks Redis only after a bump."""
        return self._following

    def _followed(self, now: bool) -> None:
        """The thread subscribed (True) or lost the channel (False): either way the next
        step asks, as bumps may have gone unheard."""
        self._moved, self._following = True, now

    def _version(self) -> tuple[bool, bytes | None]:
        """(whether Redis answered, the version), asked only when it may have moved."""
        known = self._version_asked
        if (self._following and not self._moved and known is not None
                and self._clock() - known[1] < RECHECK_SECONDS):
            return True, known[0]
        self._moved = False  # before the GET: a bump after it is heard again
        self._version_asked = None
        try:
            if self._client is None:
                self._client = failing_fast(self._connect())
            self.asked += 1
            version = self._client.get(VERSION_KEY)
        except (redis.RedisError, OSError, HotlineError) as exc:
            log.debug("rules cache: Redis away (%s); reading the tables", type(exc).__name__)
            self._moved = True
            return False, None
        self._version_asked = (version, self._clock())
        if self._listener is None or not self._listener.is_alive():
            self._listener = threading.Thread(
                target=_follow, args=(weakref.ref(self), self._client), daemon=True,
                name="rules-cache-channel")
            self._listener.start()
        return True, version

    def get(self, session: Session, timezone: str, working_hours: str) -> InForce:
        if session.info.get(EDITED):  # its own edit is not committed (nor counted) yet
            self.reads += 1
            return read(session, timezone, working_hours)
        key = (str(session.get_bind().engine.url), timezone, working_hours)
        answered, version = self._version()
        if not answered:
            with self._lock:
                self._held.clear()  # what was read before may be stale when Redis returns
            self.reads += 1
            return read(session, timezone, working_hours)
        with self._lock:
            held = self._held.get(key)
        if held is not None and held[0] == version:
            return held[1]
        rules = read(session, timezone, working_hours)
        self.reads += 1
        if rules.limits:  # an empty table is filled (first catalogue load) without a bump
            with self._lock:
                self._held[key] = (version, rules)
        return rules


_CACHES: weakref.WeakSet[RulesCache] = weakref.WeakSet()


def _forked() -> None:
    """A forked child has none of its parent's threads: its caches follow no channel
    until they start their own."""
    for cache in list(_CACHES):
        cache._following, cache._listener, cache._moved = False, None, True


os.register_at_fork(after_in_child=_forked)


def _follow(cache_ref: weakref.ref[RulesCache], client: redis.Redis) -> None:
    """The cache's thread: follow the version's channel, telling the cache of every bump,
    until the cache is gone; subscribe again after a loss, backing off. Holds the cache
    weakly: a process's caches come and go with its app (tests make many)."""
    backoff = 0.5
    while cache_ref() is not None:
        pubsub = client.pubsub()
        try:
            pubsub.subscribe(VERSION_KEY)
            while cache_ref() is not None:  # the cache is not held while waiting
                message = pubsub.get_message(timeout=1.0)
                if (cache := cache_ref()) is None:
                    return
                kind = message.get("type") if message is not None else None
                if kind == "subscribe":  # confirmed: every later bump will be heard
                    cache._followed(True)
                    backoff = 0.5
                elif kind == "message":
                    cache.bumped()
                del cache
            return
        except (redis.RedisError, OSError, ValueError) as exc:
            # ValueError: the connection closed under the read (the process stopping)
            log.debug("rules cache: the channel is lost (%s)", type(exc).__name__)
        except Exception as exc:  # whatever it was, the steps must not trust a dead channel
            # (no traceback: a stopping process closes the client's connections under the
            # read in more ways than one, and the steps stay correct by asking)
            log.warning("rules cache: following the channel failed (%r); steps ask Redis "
                        "until it is followed again", exc)
        finally:
            with contextlib.suppress(redis.RedisError, OSError):
                pubsub.close()
        if (cache := cache_ref()) is not None:
            cache._followed(False)
            del cache
        time.sleep(backoff)
        backoff = min(backoff * 2, LISTEN_BACKOFF_MAX)
