"""The operator's rules in force for the order loop: the work calendar (its days and working
hours) and the time limits, read from the database once per change, not once per step.

A `RulesCache` (one per process, on its `Policy`) keeps what it read together with the
version it read under (tickets.rule_changes.VERSION_KEY, which every committed edit bumps,
whatever process made it). Each step asks Redis for the version, one GET, and reads the
tables again only when it moved. GET before reading: an edit committed after the GET bumps
the version after it, so the next step reads again.

While Redis cannot be asked, every step reads the tables (correct, slower) and nothing is
kept: a cache kept through an outage could miss an edit made meanwhile. What a process
cannot see: an edit made while Redis was away from its writer but not from this process
bumps the version only once the centre's relay gets its event out (within the relay's
back-off, at most ~15 s after Redis answers it again); until then this process may use
what it read before the edit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import redis
from sqlalchemy.orm import Session

from core.errors import HotlineError
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


class RulesCache:
    """The rules in force for one process, re-read when their version in Redis moved.
    `client` is called for Redis at the first step (a process reaches Redis on first use);
    its commands fail at once rather than retry while Redis is away."""

    def __init__(self, client: Callable[[], redis.Redis]) -> None:
        self._connect = client
        self._client: redis.Redis | None = None
        # (database, zone, hours) -> (version read under, the rules read)
        self._held: dict[tuple[str, str, str], tuple[bytes | None, InForce]] = {}
        self._lock = threading.Lock()
        self.reads = 0  # times the tables were read (for the metrics and the tests)

    def _version(self) -> tuple[bool, bytes | None]:
        """(whether Redis answered, the version)."""
        try:
            if self._client is None:
                self._client = failing_fast(self._connect())
            return True, self._client.get(VERSION_KEY)
        except (redis.RedisError, OSError, HotlineError) as exc:
            log.debug("rules cache: Redis away (%s); reading the tables", type(exc).__name__)
            return False, None

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
