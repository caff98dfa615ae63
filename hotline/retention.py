"""Retention and the quality sample, composed: the call records (telephony) name the
recordings, the work orders (tickets) say which are still open, `recordings.retention`
decides and deletes; the daily loop of the centre runs it, watches the recordings' disk and
draws last week's quality sample (质检抽样).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import date, datetime, timedelta
from functools import partial
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session, sessionmaker

from core.clock import Clock
from core.config import Settings
from core.db import transaction
from core.events import EventBus, publish
from quality import service as quality
from recordings import retention
from telephony import records
from tickets import call_facts

log = logging.getLogger(__name__)
# a deleted recording is no longer offered for playing: the call record forgets its file
retention.on_delete(records.recording_deleted)


def candidates(sessions: sessionmaker[Session], settings: Settings,
               now: datetime) -> list[retention.Stored]:
    """The recordings old enough to be considered (older than the retention period)."""
    before = now - timedelta(days=settings.retention.recording_days)
    with sessions() as session:
        rows = records.recordings_before(session, before, limit=1_000_000)
    return [retention.Stored(r["call_id"], r["path"], r["started_at"], r["case_number"])
            for r in rows]


def run_retention(sessions: sessionmaker[Session], settings: Settings, now: datetime, *,
                  dry_run: bool = False, actor: str = "retention") -> retention.Outcome:
    def open_cases(cases: set[str]) -> set[str]:
        with sessions() as session:
            return call_facts.open_case_numbers(session, cases)

    return retention.run(sessions, candidates(sessions, settings, now),
                         recordings_dir=settings.storage.recordings_dir,
                         days=settings.retention.recording_days, now=now,
                         open_cases=open_cases, actor=actor, dry_run=dry_run)


def draw_last_week(sessions: sessionmaker[Session], settings: Settings,
                   now: datetime) -> int:
    """The quality sample of the week before this one (a finished week: the random pick
    is then the same whenever it is drawn); the number of new samples."""
    zone = settings.calendar.timezone
    day: date = now.astimezone(ZoneInfo(zone)).date() - timedelta(days=7)
    with transaction(sessions) as session:
        return len(quality.draw(session, day, now=now, zone=zone, settings=settings.quality))


class RetentionLoop:
    """The centre's daily jobs: at `retention.run_hour` (local) once a day, retention and
    last week's quality sample; every `retention.disk_check_seconds`, the disk's free
    space, warned of once each time it falls below `retention.min_free_mb`."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], bus: EventBus,
                 clock: Clock) -> None:
        self.settings, self.sessions, self.bus, self.clock = settings, sessions, bus, clock
        self.last_day: date | None = None
        self.disk_low = False

    def tick(self) -> None:
        now = self.clock.now()
        local = now.astimezone(ZoneInfo(self.settings.calendar.timezone))
        self.check_disk(now)
        if local.hour >= self.settings.retention.run_hour and self.last_day != local.date():
            self.last_day = local.date()
            outcome = run_retention(self.sessions, self.settings, now)
            drawn = draw_last_week(self.sessions, self.settings, now)
            log.info("retention: %d recordings deleted, %d kept; quality: %d calls sampled",
                     len(outcome.deleted), len(outcome.kept), drawn)

    def check_disk(self, now: datetime) -> retention.DiskLow | None:
        warning = retention.watch_disk(
            self.settings.storage.recordings_dir, self.settings.retention.min_free_mb,
            now=now, was_low=self.disk_low, publish=partial(publish, self.sessions))
        self.disk_low = warning is not None
        return warning

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.tick)
            except Exception:  # a failing run must not stop the next day's
                log.exception("retention loop failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.retention.disk_check_seconds)
