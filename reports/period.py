"""The reports page's periods (报表周期) and hourly call figures: a day, an ISO week or a
month of the centre's time zone, picked by one of its days, and the calls of one day hour
by hour beside the same weekday a week before (同比上周同日).

Every figure comes from the room's own doors (reports.kpis for the period, telephony's
call measures for each hour), so the page and its exports say what /api/v1/kpis says.
"today" is the injected clock's, in the centre's time zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from core.config import Settings
from reports import kpis
from telephony.measures import call_measures_tiled

UNITS = ("day", "week", "month")
# the unit's report rows: a day by hour, a week or a month by day
ROW_UNITS: dict[str, str | timedelta] = {"day": timedelta(hours=1), "week": "day",
                                         "month": "day"}
HOURS = 24


@dataclass(frozen=True)
class Period:
    """[first, following) in local days; `start`/`end` the same bounds in UTC."""

    unit: str
    day: date  # the day it was picked by
    first: date
    following: date
    start: datetime
    end: datetime
    label: str  # 2026-11-26, 2026-W48, 2026-11
    previous: date  # a day of the period before, and of the one after
    next: date


def local_day(now: datetime, timezone: str) -> date:
    """Today in the centre's time zone."""
    return now.astimezone(ZoneInfo(timezone)).date()


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), zone).astimezone(UTC)


def period(unit: str, day: date, timezone: str) -> Period:
    """The `unit` ("day", "week" from Monday, "month") of the centre's time zone holding
    `day`."""
    if unit not in UNITS:
        raise kpis.MeasureError(f"unit: one of {', '.join(UNITS)}, got {unit!r}")
    zone = ZoneInfo(timezone)
    if unit == "day":
        first, following = day, day + timedelta(days=1)
        label = day.isoformat()
    elif unit == "week":
        first = day - timedelta(days=day.weekday())
        following = first + timedelta(days=7)
        iso = first.isocalendar()
        label = f"{iso.year}-W{iso.week:02d}"
    else:
        first = day.replace(day=1)
        following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
        label = f"{first.year}-{first.month:02d}"
    return Period(unit, day, first, following, _midnight(first, zone),
                  _midnight(following, zone), label, first - timedelta(days=1), following)


@dataclass(frozen=True)
class Hour:
    """One local hour of a day: inbound calls (来电), offered, answered, the answer rate."""

    hour: int
    calls: int
    offered: int
    answered: int
    answer_rate: float | None


def hourly(session: Session, day: date, timezone: str) -> tuple[Hour, ...]:
    """The 24 local hours of `day` (a day that skips or repeats an hour for daylight saving
    has 23 or 25 hours; each is labelled by its local hour)."""
    zone = ZoneInfo(timezone)
    parts = kpis.buckets(_midnight(day, zone), _midnight(day + timedelta(days=1), zone),
                         timedelta(hours=1), timezone)
    _day, hours = call_measures_tiled(session, [(part.start, part.end) for part in parts])
    return tuple(Hour(part.start.astimezone(zone).hour, calls.calls, calls.offered,
                      calls.answered, calls.answer_rate)
                 for part, calls in zip(parts, hours, strict=True))


@dataclass(frozen=True)
class ReportView:
    """What the reports page shows: the period's report (whole and by row: hours of a
    day, days of a week or month), its CJ/T 292 evaluation, and the calls of `day` and of
    the same weekday a week earlier, hour by hour."""

    period: Period
    timezone: str
    report: kpis.HotlineReport
    evaluation: kpis.Evaluation
    day: date
    day_hours: tuple[Hour, ...]
    week_before: date
    week_before_hours: tuple[Hour, ...]


def report_view(session: Session, settings: Settings, unit: str, day: date,
                now: datetime) -> ReportView:
    timezone = settings.calendar.timezone
    picked = period(unit, day, timezone)
    report = kpis.hotline_report(
        session, picked.start, picked.end, bucket=ROW_UNITS[unit], timezone=timezone,
        repeat_lookback=timedelta(hours=settings.hotline.repeat_window_hours), now=now)
    evaluation = kpis.evaluate(session, picked.start, picked.end, now=now)
    before = day - timedelta(days=7)
    return ReportView(picked, timezone, report, evaluation, day,
                      hourly(session, day, timezone), before,
                      hourly(session, before, timezone))


def chart_data(view: ReportView) -> dict[str, Any]:
    """The charts' series, for the page's JSON block."""
    return {
        "hours": [f"{h.hour:02d}" for h in view.day_hours],
        "day": view.day.isoformat(), "week_before": view.week_before.isoformat(),
        "calls": [h.calls for h in view.day_hours],
        "calls_week_before": [h.calls for h in view.week_before_hours],
        # percent, 2 decimals; null where nothing was offered
        "answer_rate": [None if h.answer_rate is None else round(h.answer_rate * 100, 2)
                        for h in view.day_hours],
    }
