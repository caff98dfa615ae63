"""The operator's work calendar (工作日历): which days are working days and which hours are
working hours, on the State Council holiday schedule with its make-up working days (调休).

Known years come from the `chinese-calendar` package; the operator's own entries (a new
year's schedule, a local holiday) override it. A year neither knows falls back to Monday to
Friday, and `year_known` says so, so the operator can be told to enter it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import chinese_calendar
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import parse_hours
from core.errors import ConfigError
from tickets.models import CalendarDay
from tickets.rule_changes import changed


@dataclass(frozen=True)
class WorkCalendar:
    timezone: ZoneInfo
    hours: tuple[tuple[time, time], ...]
    overrides: dict[date, bool] = field(default_factory=dict)  # day -> is a working day

    def is_workday(self, day: date) -> bool:
        if day in self.overrides:
            return self.overrides[day]
        try:
            return bool(chinese_calendar.is_workday(day))
        except NotImplementedError:  # a year the package does not know yet
            return day.weekday() < 5

    def year_known(self, year: int) -> bool:
        if any(day.year == year for day in self.overrides):
            return True
        try:
            chinese_calendar.is_workday(date(year, 6, 1))
        except NotImplementedError:
            return False
        return True

    def is_working_time(self, moment: datetime) -> bool:
        local = moment.astimezone(self.timezone)
        return self.is_workday(local.date()) and within(self.hours, local.time())

    def is_staffed(self, moment: datetime, staffed_hours: str = "") -> bool:
        """Whether the line is staffed at `moment`: in the working time, or, for a line
        staffed beyond it (7x24, or 08:00-20:00 every day), within `staffed_hours` on any
        day, weekends and holidays included."""
        if not staffed_hours:
            return self.is_working_time(moment)
        return within(parse_hours(staffed_hours), moment.astimezone(self.timezone).time())


def within(spans: tuple[tuple[time, time], ...], moment: time) -> bool:
    return any(start <= moment < end for start, end in spans)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except Exception:
        raise ConfigError(f"config: calendar.timezone {name!r} is not a known time zone") \
            from None


_DAY_ROWS = select(CalendarDay.day, CalendarDay.workday).order_by(CalendarDay.day)


def load_calendar(session: Session, timezone: str, working_hours: str) -> WorkCalendar:
    """The calendar in force: package data, then the operator's entries on top."""
    rows = tuple(tuple(row) for row in session.execute(_DAY_ROWS))
    key = (str(session.get_bind().engine.url), timezone, working_hours)
    cached = _calendars.get(key)
    if cached is not None and cached[0] == rows:
        return cached[1]
    calendar = WorkCalendar(zone(timezone), parse_hours(working_hours), dict(rows))
    _calendars[key] = (rows, calendar)
    return calendar


# (database, zone, hours) -> (the operator's days as last read, the calendar made of them).
# Every load reads the days again with one plain Core query (the order loop loads only when
# an operator changed the rules: tickets.in_force); the same calendar object is handed out
# while they are unchanged, and the deadline arithmetic's per-year tables (keyed on its days)
# stay warm. Callers never change a calendar's `overrides`.
_calendars: dict[tuple[str, str, str],
                 tuple[tuple[tuple[date, bool], ...], WorkCalendar]] = {}


def set_day(session: Session, day: date, workday: bool, note: str = "") -> None:
    """Enter (or change) one day of the operator's calendar."""
    row = session.scalar(select(CalendarDay).where(CalendarDay.day == day))
    if row is None:
        row = CalendarDay(day=day, workday=workday)
        session.add(row)
    row.workday, row.note = workday, note[:100]
    session.flush()
    changed(session, "calendar")


def clear_day(session: Session, day: date) -> bool:
    """Remove the operator's entry for a day; the schedule's own rule applies again."""
    row = session.scalar(select(CalendarDay).where(CalendarDay.day == day))
    if row is None:
        return False
    session.delete(row)
    session.flush()
    changed(session, "calendar")
    return True
