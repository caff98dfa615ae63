"""Time limits (时限): the four clocks worked out by hand across the 2026 holidays, their
invariants, and the deadlines kept as orders move, are extended and are swept; the database
part on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import chinese_calendar
import pytest
from alembic import command
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from accounts.service import add_user
from core.clock import FixedClock
from core.db import alembic_config, make_engine, session_factory, transaction, upgrade
from core.live import connect_redis
from hotline.web import create_app
from reports import kpis
from tests.conftest import REDIS_SERVER_URL, make_settings
from tickets import catalogue, deadlines, service, workflow
from tickets.models import Category, TimeLimit, WorkOrder, WorkOrderDeadline
from tickets.workcalendar import WorkCalendar, clear_day, load_calendar, parse_hours, set_day

SH = ZoneInfo("Asia/Shanghai")
# The default policy's calendar: the service computes the same clocks when it is wired in.
CAL = WorkCalendar(SH, parse_hours("08:30-12:00,13:30-17:30"))  # 7.5 working hours a day
ALL_DAY = WorkCalendar(SH, parse_hours("00:00-24:00"))
YELLOW = 80


def sh(month: int, day: int, hour: int = 0, minute: int = 0, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=SH)


def test_the_2026_schedule_the_cases_below_rely_on() -> None:
    workday = chinese_calendar.is_workday
    # National Day: Oct 1-7 off, make-up working Sunday Sep 20 and Saturday Oct 10;
    # Mid-Autumn Sep 25-27 off.
    assert workday(date(2026, 9, 30)) and workday(date(2026, 10, 8))
    assert not any(workday(date(2026, 10, d)) for d in range(1, 8))
    assert workday(date(2026, 9, 20)) and workday(date(2026, 10, 10))
    assert not any(workday(date(2026, 9, d)) for d in (19, 25, 26, 27))
    # Spring Festival: Feb 15-23 off, make-up working Saturdays Feb 14 and Feb 28.
    assert not any(workday(date(2026, 2, d)) for d in range(15, 24))
    assert workday(date(2026, 2, 14)) and workday(date(2026, 2, 28))
    assert not workday(date(2026, 3, 1))


# (clock, start, amount, due, yellow at 80 %), all in Shanghai time.
CASES = [
    # Last working day before National Day, 16:00: 1.5 h to 17:30, then Oct 1-7 are off, so
    # the other 2.5 h run from 08:30 on Thursday Oct 8 -> 11:00. Yellow after 3.2 h: 1.5 h
    # + 1.7 h (1 h 42 min) -> 10:12.
    ("working_hours", sh(9, 30, 16), 4, sh(10, 8, 11), sh(10, 8, 10, 12)),
    # Saturday Sep 19 is off, Sunday Sep 20 is a make-up working day: 08:30 + 2 h -> 10:30;
    # yellow after 1.6 h -> 10:06.
    ("working_hours", sh(9, 19, 10), 2, sh(9, 20, 10, 30), sh(9, 20, 10, 6)),
    # Friday Oct 9 16:00: 1.5 h, then the make-up Saturday Oct 10 takes 2.5 h -> 11:00.
    ("working_hours", sh(10, 9, 16), 4, sh(10, 10, 11), sh(10, 10, 10, 12)),
    # Mid-Autumn: Thu Sep 24 14:00-17:30 is 3.5 h, Sep 25-27 off, Mon Sep 28 morning 3.5 h,
    # the last hour 13:30 -> 14:30. Yellow after 6.4 h: 3.5 h + 2.9 h -> 08:30 + 2:54 = 11:24.
    ("working_hours", sh(9, 24, 14), 8, sh(9, 28, 14, 30), sh(9, 28, 11, 24)),
    # Started in the lunch break: the clock starts at 13:30. Yellow after 48 min -> 14:18.
    ("working_hours", sh(11, 24, 12, 10), 1, sh(11, 24, 14, 30), sh(11, 24, 14, 18)),
    # Used up exactly at the end of the afternoon: due 17:30, not at the next opening.
    ("working_hours", sh(11, 24, 13, 30), 4, sh(11, 24, 17, 30), sh(11, 24, 16, 42)),
    # Started at closing time: nothing counts until Wednesday 08:30.
    ("working_hours", sh(11, 24, 17, 30), 1, sh(11, 25, 9, 30), sh(11, 25, 9, 18)),
    # 13 working days across Spring Festival from Wed Feb 11 10:00 (1.5 h into the day):
    # working days after it are Feb 12, 13, 14 (make-up Sat), 24, 25, 26, 27, 28 (make-up
    # Sat), Mar 2, 3, 4, 5, 6 -> the 13th is Fri Mar 6, at the same position, 10:00.
    # Yellow after 80 % of 13 x 7.5 h = 78 h: Feb 11 has 6 h left, the nine working days
    # Feb 12 .. Mar 2 hold 67.5 h (73.5 h), Mar 3 takes 4.5 h: 3.5 h morning + 1 h -> 14:30.
    ("working_days", sh(2, 11, 10), 13, sh(3, 6, 10), sh(3, 3, 14, 30)),
    # Friday Feb 13 20:00, after hours: counting starts 08:30 on the make-up Saturday Feb 14,
    # one working day (7.5 h) is due at its close. Yellow after 6 h: 3.5 h morning + 2.5 h
    # -> 16:00.
    ("working_days", sh(2, 13, 20), 1, sh(2, 14, 17, 30), sh(2, 14, 16)),
    # Two: Feb 14 then (Feb 15-23 off) Tue Feb 24, at its close. Yellow after 12 h: 7.5 h on
    # Feb 14, 4.5 h on Feb 24 -> 3.5 h morning + 1 h -> 14:30.
    ("working_days", sh(2, 13, 20), 2, sh(2, 24, 17, 30), sh(2, 24, 14, 30)),
    # From the lunch break (3.5 h into the day) one working day later at the same position:
    # 4 h on Feb 24 afternoon + 3.5 h on Feb 25 morning -> 12:00. Yellow after 6 h: 4 h +
    # 2 h -> 10:30.
    ("working_days", sh(2, 24, 12, 30), 1, sh(2, 25, 12), sh(2, 25, 10, 30)),
    # Sep 30 10:00, 3 working days: Oct 8, Oct 9, Oct 10 (make-up Sat) -> Oct 10 10:00.
    # Yellow after 18 h: Sep 30 has 6 h left, Oct 8 and 9 add 15 h (21 h) -> 18 h falls on
    # Oct 9 after 4.5 of its hours: 3.5 h morning + 1 h -> 14:30.
    ("working_days", sh(9, 30, 10), 3, sh(10, 10, 10), sh(10, 9, 14, 30)),
    # Calendar days are natural time, holidays included: 3 x 24 h; yellow after 57.6 h =
    # 57 h 36 min -> Oct 3 01:36.
    ("calendar_days", sh(9, 30, 16), 3, sh(10, 3, 16), sh(10, 3, 1, 36)),
    # Continuous (紧急工作时) runs through a holiday night: 2 h; yellow after 96 min.
    ("continuous", sh(10, 1, 23), 2, sh(10, 2, 1), sh(10, 2, 0, 36)),
]


@pytest.mark.parametrize(("clock", "start", "amount", "due", "yellow"), CASES)
def test_due_and_yellow_worked_out_by_hand(clock: str, start: datetime, amount: int,
                                           due: datetime, yellow: datetime) -> None:
    assert deadlines.due(CAL, start, amount, clock) == due
    assert deadlines.warning_point(CAL, start, amount, clock, YELLOW) == yellow
    got = deadlines.due(CAL, start.astimezone(UTC), amount, clock)
    assert got.tzinfo is UTC and got == due  # the same instant given in UTC, answered in UTC
    assert deadlines.elapsed_fraction(CAL, start, amount, clock, due) == 1.0
    assert deadlines.elapsed_fraction(CAL, start, amount, clock, yellow) == pytest.approx(0.8)


# Limits in minutes: natural minutes on the natural clocks, minutes of working time on the
# working ones. (clock, start, minutes, due, yellow at 80 %), Shanghai time.
MINUTE_CASES = [
    # The urgent 10-minute dispatch, on a Saturday night: 22:10; yellow after 8 min.
    ("continuous", sh(11, 28, 22), 10, sh(11, 28, 22, 10), sh(11, 28, 22, 8)),
    # 30 working minutes from 17:20 on the eve of National Day: 10 min to 17:30, Oct 1-7 off,
    # 20 min from 08:30 on Thu Oct 8 -> 08:50. Yellow after 24 min: 10 + 14 -> 08:44.
    ("working_hours", sh(9, 30, 17, 20), 30, sh(10, 8, 8, 50), sh(10, 8, 8, 44)),
    # The same minutes of working time on the working-days clock, across the lunch break:
    # 11:45 + 15 min to 12:00, 15 min from 13:30 -> 13:45; yellow after 24 min -> 13:39.
    ("working_days", sh(11, 24, 11, 45), 30, sh(11, 24, 13, 45), sh(11, 24, 13, 39)),
    # 90 working minutes from Friday Feb 13 17:00: 30 min, then the make-up Saturday Feb 14
    # from 08:30 + 60 min -> 09:30; yellow after 72 min: 30 + 42 -> 09:12.
    ("working_days", sh(2, 13, 17), 90, sh(2, 14, 9, 30), sh(2, 14, 9, 12)),
    # Natural minutes on the calendar-days clock, through midnight into the holiday: 00:20;
    # yellow after 24 min -> 00:14.
    ("calendar_days", sh(9, 30, 23, 50), 30, sh(10, 1, 0, 20), sh(10, 1, 0, 14)),
]


@pytest.mark.parametrize(("clock", "start", "minutes", "due", "yellow"), MINUTE_CASES)
def test_limits_in_minutes_worked_out_by_hand(clock: str, start: datetime, minutes: int,
                                              due: datetime, yellow: datetime) -> None:
    assert deadlines.due(CAL, start, minutes, clock, "minutes") == due
    assert deadlines.warning_point(CAL, start, minutes, clock, YELLOW, "minutes") == yellow
    assert deadlines.elapsed_fraction(CAL, start, minutes, clock, due, "minutes") == 1.0
    assert deadlines.elapsed_fraction(CAL, start, minutes, clock, yellow, "minutes") == \
        pytest.approx(0.8)


def test_a_unit_is_minutes_or_the_clocks_own() -> None:
    assert deadlines.due(CAL, sh(11, 24, 9), 120, "working_hours", "minutes") == \
        deadlines.due(CAL, sh(11, 24, 9), 2, "working_hours", "") == sh(11, 24, 11)
    assert [deadlines.unit_name(c) for c in deadlines.CLOCKS] == ["hours", "hours", "days",
                                                                  "days"]
    assert deadlines.unit_name("working_days", "minutes") == "minutes"
    with pytest.raises(ValueError, match="unit: minutes, or ''"):
        deadlines.due(CAL, sh(11, 24, 9), 2, "working_hours", "hours")


def test_elapsed_fraction_stands_still_over_the_holiday() -> None:
    start = sh(9, 30, 16)  # 4 working hours, due Oct 8 11:00 (see CASES)
    assert deadlines.elapsed_fraction(CAL, start, 4, "working_hours", sh(9, 30, 15)) == 0.0
    assert deadlines.elapsed_fraction(CAL, start, 4, "working_hours", sh(10, 3)) == 0.375
    assert deadlines.elapsed_fraction(CAL, start, 4, "working_hours", sh(10, 8, 8)) == 0.375
    # Oct 8 14:30: 1.5 h + 3.5 h morning + 1 h afternoon = 6 h of 4 -> 1.5 (half again late)
    assert deadlines.elapsed_fraction(CAL, start, 4, "working_hours", sh(10, 8, 14, 30)) == 1.5
    assert deadlines.working_time(CAL, start, sh(10, 8, 11)) == timedelta(hours=4)
    assert deadlines.working_day_length(CAL) == timedelta(hours=7.5)


def test_the_operators_own_days_override_the_schedule() -> None:
    # A local holiday on Oct 8 pushes the National Day case to Friday Oct 9, 11:00; a
    # make-up Sunday Oct 11 declared by the operator counts like any working day.
    local = WorkCalendar(SH, CAL.hours, {date(2026, 10, 8): False, date(2026, 10, 11): True})
    assert deadlines.due(local, sh(9, 30, 16), 4, "working_hours") == sh(10, 9, 11)
    # Sat Oct 10 (make-up) 16:00: 1.5 h, then the declared Sunday Oct 11 -> 11:00.
    assert deadlines.due(local, sh(10, 10, 16), 4, "working_hours") == sh(10, 11, 11)


def test_round_the_clock_working_hours_still_skip_holidays() -> None:
    # 24 h working days: Sep 30 22:00-24:00 is 2 h, Oct 1-7 off, Oct 8 00:00 + 2 h.
    assert deadlines.due(ALL_DAY, sh(9, 30, 22), 4, "working_hours") == sh(10, 8, 2)
    # One working day is 24 working hours here: the same time on the next working day.
    assert deadlines.due(ALL_DAY, sh(9, 30, 22), 1, "working_days") == sh(10, 8, 22)


def test_fractions_of_an_hour_are_exact() -> None:
    # 0.5 working hours from 11:45: 15 min before lunch, 15 min after -> 13:45.
    assert deadlines.due(CAL, sh(11, 24, 11, 45), 0.5, "working_hours") == sh(11, 24, 13, 45)
    assert deadlines.due(CAL, sh(11, 24, 9), 0, "working_hours") == sh(11, 24, 9)


@pytest.mark.parametrize(("args", "message"), [
    ((datetime(2026, 9, 30, 16), 4, "working_hours"), "timezone-aware"),
    ((sh(9, 30, 16), 4, "fortnights"), "clock"),
    ((sh(9, 30, 16), -1, "continuous"), "amount"),
])
def test_bad_input_is_refused(args: tuple, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=message):
        deadlines.due(CAL, *args)


def test_a_warning_beyond_the_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="percent"):
        deadlines.warning_point(CAL, sh(9, 30, 16), 4, "working_hours", 120)


def test_a_calendar_without_working_days_is_an_error_not_a_hang() -> None:
    never = WorkCalendar(SH, CAL.hours, {sh(1, 1).date() + timedelta(days=i): False
                                         for i in range(800)})
    with pytest.raises(ValueError, match="no working day"):
        deadlines.due(never, sh(1, 1), 1, "working_hours")


# --- long spans ------------------------------------------------------------------------------


def test_the_rest_of_the_2026_schedule_the_long_spans_rely_on() -> None:
    workday = chinese_calendar.is_workday
    # New Year Jan 1-2 off, make-up Sunday Jan 4; Qingming Apr 6; Labour Day May 1, 4, 5 off,
    # make-up Saturday May 9; Dragon Boat Jun 19. With the days above: 248 working days.
    assert not any(workday(date(2026, m, d)) for m, d in ((1, 1), (1, 2), (4, 6), (5, 1),
                                                          (5, 4), (5, 5), (6, 19)))
    assert workday(date(2026, 1, 4)) and workday(date(2026, 5, 9))
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(365)]
    assert sum(workday(d) for d in days) == 248
    with pytest.raises(NotImplementedError):  # 2027 is not in the package yet
        workday(date(2027, 1, 1))


# Working days after Wed Feb 11 2026, counted by month from the schedule above: Feb 12-28: 8
# (Feb 12, 13, make-up Sat 14, 24-27, make-up Sat 28), Mar 22, Apr 21 (less Apr 6), May 19
# (less 1, 4, 5, plus Sat 9), Jun 21 (less 19), Jul 23, Aug 21, Sep 22 (less 25, plus Sun 20),
# Oct 18 (less 1, 2, 5, 6, 7, plus Sat 10), Nov 21: 196 to Nov 30; Dec has 23 (219 in all).
LONG = sh(2, 11, 10)


def test_two_hundred_working_days_across_spring_festival_and_national_day() -> None:
    # 196 to Nov 30, then the 4th working day of December (Tue 1, Wed 2, Thu 3, Fri 4), at the
    # same position, 10:00. Yellow after 160: 8 + 22 + 21 + 19 + 21 + 23 + 21 + 22 = 157 to
    # Sep 30, then after National Day Thu Oct 8, Fri Oct 9 and the make-up Saturday Oct 10.
    assert deadlines.due(CAL, LONG, 200, "working_days") == sh(12, 4, 10)
    assert deadlines.warning_point(CAL, LONG, 200, "working_days", YELLOW) == sh(10, 10, 10)
    assert deadlines.working_time(CAL, LONG, sh(12, 4, 10)) == timedelta(hours=1500)


def test_four_hundred_working_days_run_into_years_counted_monday_to_friday() -> None:
    # 219 working days to the end of 2026, so the 181st Monday-Friday of 2027 (no schedule
    # known: Monday to Friday assumed). Fri Jan 1 is the 1st; 180 more are 36 whole weeks from
    # Mon Jan 4, ending Friday Sep 10 (Jan 4 + 35 weeks = Mon Sep 6). Yellow after 320: the
    # 101st of 2027, Jan 1 and 20 weeks: Mon May 17, Fri May 21.
    assert deadlines.due(CAL, LONG, 400, "working_days") == sh(9, 10, 10, year=2027)
    assert deadlines.warning_point(CAL, LONG, 400, "working_days", YELLOW) == \
        sh(5, 21, 10, year=2027)
    assert deadlines.due(CAL, LONG, 400 * 7.5, "working_hours") == sh(9, 10, 10, year=2027)
    # two more skip the weekend: Mon Sep 13, Tue Sep 14
    assert deadlines.due(CAL, LONG, 402, "working_days") == sh(9, 14, 10, year=2027)
    # 700: 2027 holds 261 (52 weeks and Fri Jan 1), so the 220th Monday-Friday of 2028, which
    # begins on a Saturday: Mon Jan 3 and 43 weeks and 4 days, Mon Oct 30 -> Fri Nov 3.
    assert deadlines.due(CAL, LONG, 700, "working_days") == sh(11, 3, 10, year=2028)
    assert deadlines.working_time(CAL, LONG, sh(11, 3, 10, year=2028)) == \
        timedelta(hours=5250)
    assert deadlines.working_time(CAL, LONG, sh(9, 10, 10, year=2027)) == timedelta(hours=3000)
    # The operator enters 2027's Spring Festival: Mon-Fri Feb 8-12 off, Saturday Feb 20 worked.
    # Four working days fewer before September: Fri Sep 10 -> Thu Sep 16; May 21 -> May 27.
    entered = {date(2027, 2, d): False for d in range(8, 13)} | {date(2027, 2, 20): True}
    local = WorkCalendar(SH, CAL.hours, entered)
    assert deadlines.due(local, LONG, 400, "working_days") == sh(9, 16, 10, year=2027)
    assert deadlines.warning_point(local, LONG, 400, "working_days", YELLOW) == \
        sh(5, 27, 10, year=2027)


def test_new_years_day_2027_is_a_working_day_until_the_operator_enters_it() -> None:
    # From Thu Dec 31 2026 10:00, two working days: Fri Jan 1 2027 (assumed), Mon Jan 4.
    start = sh(12, 31, 10)
    assert deadlines.due(CAL, start, 2, "working_days") == sh(1, 4, 10, year=2027)
    holiday = WorkCalendar(SH, CAL.hours, {date(2027, 1, 1): False})
    assert deadlines.due(holiday, start, 2, "working_days") == sh(1, 5, 10, year=2027)
    # After hours on Fri Dec 31 2027, two working days count from Mon Jan 3 2028 08:30 and are
    # used up at Tuesday's close, 17:30, not at Wednesday's opening.
    evening = sh(12, 31, 20, year=2027)
    assert deadlines.due(CAL, evening, 2, "working_days") == sh(1, 4, 17, 30, year=2028)


def test_a_day_daylight_saving_stretches_counts_its_real_hours_in_a_year_not_known() -> None:
    # Egypt's rule (tzdata since 2023): summer time ends at 24:00 on the last Thursday of
    # October, so Thu Oct 28 2027 in Cairo is 25 hours long.
    cairo = ZoneInfo("Africa/Cairo")
    assert datetime(2027, 10, 28, 23, tzinfo=cairo).utcoffset() == timedelta(hours=3)
    assert datetime(2027, 10, 29, 1, tzinfo=cairo).utcoffset() == timedelta(hours=2)
    round_the_clock = WorkCalendar(cairo, parse_hours("00:00-24:00"))
    # From Wed Oct 27 12:00, 48 working hours: 12 on Wednesday, 25 on Thursday, the last 11
    # on Friday from midnight -> Fri Oct 29 11:00 (winter time).
    start = datetime(2027, 10, 27, 12, tzinfo=cairo)
    assert deadlines.due(round_the_clock, start, 48, "working_hours") == \
        datetime(2027, 10, 29, 11, tzinfo=cairo)
    assert deadlines.working_time(round_the_clock, start,
                                  datetime(2027, 10, 29, tzinfo=cairo)) == timedelta(hours=37)


def test_a_due_time_beyond_the_year_9999_is_refused_quickly() -> None:
    # Thu Dec 30 9999 10:00: one working day is Fri Dec 31 10:00, the last the calendar holds;
    # two would be Monday in the year 10000.
    last = sh(12, 30, 10, year=9999)
    assert deadlines.due(CAL, last, 1, "working_days") == sh(12, 31, 10, year=9999)
    assert deadlines.due(CAL, last, 37, "continuous") == sh(12, 31, 23, year=9999)
    for amount, clock in ((2, "working_days"), (38, "continuous"), (2, "calendar_days")):
        with pytest.raises(deadlines.DeadlineError, match="beyond the year 9999"):
            deadlines.due(CAL, last, amount, clock)
    for amount, clock in ((10**9, "working_hours"), (10**30, "working_days"),
                          (10**9, "continuous"), (10**100, "calendar_days")):
        began = time.perf_counter()
        with pytest.raises(deadlines.DeadlineError, match="beyond the year 9999"):
            deadlines.due(CAL, LONG, amount, clock)
        with pytest.raises(deadlines.DeadlineError, match="beyond the year 9999"):
            deadlines.warning_point(CAL, LONG, amount, clock, 100)
        assert time.perf_counter() - began < 0.5  # a bound on a hang, not a benchmark
    with pytest.raises(ValueError, match="amount: a finite number"):
        deadlines.due(CAL, LONG, float("inf"), "working_hours")


# --- invariants ------------------------------------------------------------------------------

STARTS = st.datetimes(min_value=datetime(2025, 12, 1), max_value=datetime(2026, 12, 20),
                      timezones=st.just(SH))
HOURS = st.integers(0, 400).map(lambda n: n / 2)  # up to 200 h, in half hours
DAYS = st.integers(0, 40)
CLOCK_AMOUNTS = st.one_of(
    st.tuples(st.sampled_from(["continuous", "working_hours"]), HOURS),
    st.tuples(st.sampled_from(["working_days", "calendar_days"]), DAYS))


@settings(max_examples=150, deadline=None)
@given(STARTS, CLOCK_AMOUNTS, st.integers(0, 40), st.integers(0, 100), st.integers(0, 100))
def test_due_is_after_the_start_grows_with_the_amount_and_holds_the_warning(
        start: datetime, clock_amount: tuple[str, float], more: int, p1: int, p2: int) -> None:
    clock, amount = clock_amount
    first = deadlines.due(CAL, start, amount, clock)
    later = deadlines.due(CAL, start, amount + more, clock)
    assert start <= first <= later
    low, high = sorted((p1, p2))
    w_low = deadlines.warning_point(CAL, start, amount, clock, low)
    w_high = deadlines.warning_point(CAL, start, amount, clock, high)
    assert start <= w_low <= w_high <= first
    assert deadlines.warning_point(CAL, start, amount, clock, 100) == first


@settings(max_examples=100, deadline=None)
@given(STARTS, HOURS, DAYS)
def test_natural_clocks_are_plain_addition(start: datetime, hours: float, days: int) -> None:
    assert deadlines.due(CAL, start, hours, "continuous") == start + timedelta(hours=hours)
    assert deadlines.due(CAL, start, days, "calendar_days") == start + timedelta(days=days)


@settings(max_examples=100, deadline=None)
@given(STARTS, HOURS, HOURS)
def test_working_hours_count_exactly_and_add_up(start: datetime, a: float, b: float) -> None:
    end = deadlines.due(CAL, start, a, "working_hours")
    assert deadlines.working_time(CAL, start, end) == timedelta(hours=a)
    if a:  # the limit runs out inside working time (or at the close of a period)
        tick = timedelta(microseconds=1)
        assert deadlines.working_time(CAL, end - tick, end) == tick
    # the property an extension relies on: more time later is the same as more time at once
    assert deadlines.due(CAL, end, b, "working_hours") == \
        deadlines.due(CAL, start, a + b, "working_hours")


@settings(max_examples=60, deadline=None)
@given(STARTS, st.integers(1, 30))
def test_working_days_are_working_day_lengths_of_working_time(start: datetime, days: int
                                                              ) -> None:
    end = deadlines.due(CAL, start, days, "working_days")
    assert deadlines.working_time(CAL, start, end) == days * timedelta(hours=7.5)
    local_start, local_end = start.astimezone(SH), end.astimezone(SH)
    tick = timedelta(microseconds=1)
    if CAL.is_working_time(start) and CAL.is_working_time(start - tick):
        # inside a period (not at its opening): the same position, N working days on
        assert local_end.time() == local_start.time()
        between = [local_start.date() + timedelta(days=i)
                   for i in range(1, (local_end.date() - local_start.date()).days + 1)]
        assert sum(CAL.is_workday(d) for d in between) == days


# --- the database part -----------------------------------------------------------------------


@pytest.fixture
def sessions(database_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(database_url)
    upgrade(engine)
    factory = session_factory(engine)
    with transaction(factory) as session:
        _seed(session)
    yield factory
    engine.dispose()


LIMITS = [  # (step, category_prefix, appeal_type, urgency, amount, clock)
    ("verify", "", "", "", 1, "working_hours"),
    ("open", "", "", "", 1, "working_hours"),
    ("open", "", "", "urgent", 1, "continuous"),
    ("dispatch", "", "", "", 1, "working_hours"),
    ("sign", "", "", "", 1, "working_hours"),
    ("handle", "", "", "", 5, "working_days"),
    ("handle", "", "", "urgent", 12, "continuous"),
    ("handle", "01", "", "", 3, "working_days"),
    ("handle", "0102", "", "", 4, "working_hours"),
    ("handle", "0102", "complaint", "", 6, "working_hours"),
    ("handle", "0102", "", "urgent", 2, "continuous"),
    ("handle", "C01", "", "", 2, "working_days"),  # components, stored with a C (catalogue)
    ("check", "", "", "", 1, "working_hours"),
    # no "close" limit: that step runs without a clock
    ("complete", "", "", "", 3, "working_days"),
    ("complete", "", "complaint", "", 13, "working_days"),
]


def _seed(session) -> None:  # type: ignore[no-untyped-def]
    for code, kind, name in (("01", "event", "市容环境"), ("0101", "event", "私搭乱建"),
                             ("0102", "event", "暴露垃圾"), ("01", "component", "公用设施"),
                             ("0102", "component", "污水井盖")):
        session.add(Category(code=code, kind=kind, name=name, active=True))
    for step, prefix, appeal, urgency, amount, clock in LIMITS:
        session.add(TimeLimit(step=step, category_prefix=prefix, appeal_type=appeal,
                              urgency=urgency, amount=amount, clock=clock))


def utc(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """Shanghai wall time as the UTC instant the services store."""
    return sh(month, day, hour, minute).astimezone(UTC)


def _open(sessions, at: datetime, **fields) -> str:  # type: ignore[no-untyped-def]
    values = {"appeal_type": "complaint", "description": "人民路口暴露垃圾，三天没人清理",
              "channel": "phone", "actor": "受理员小王", "citizen_phone": "13800138000",
              "category_code": "0102", **fields}
    with transaction(sessions) as session:
        order = service.open_order(session, now=at, **values)
        deadlines.on_transition(session, order, "create", at, CAL, YELLOW)
        return order.case_number


ROLE = {a.name: a.roles[0] for a in workflow.ACTIONS.values()}


def _move(sessions, number: str, action: str, at: datetime) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        order = service.transition(session, number, action, actor="t", role=ROLE[action],
                                   now=at)
        deadlines.on_transition(session, order, action, at, CAL, YELLOW)


def _order(session, number: str) -> WorkOrder:  # type: ignore[no-untyped-def]
    return session.scalar(select(WorkOrder).where(WorkOrder.case_number == number))


def _clocks(sessions, number: str) -> list[tuple]:  # type: ignore[no-untyped-def,type-arg]
    """(step, round, due, met) in Shanghai wall time, in the order the clocks started."""
    with sessions() as session:
        rows = deadlines.deadlines(session, number)

    def local(moment: datetime | None) -> datetime | None:
        return moment.astimezone(SH).replace(tzinfo=None) if moment else None

    return [(d.step, d.round, local(d.due_at), local(d.met_at)) for d in rows]


def _limit(sessions, step: str, **order_fields) -> tuple | None:  # type: ignore[no-untyped-def,type-arg]
    with sessions() as session:
        order = WorkOrder(**{"appeal_type": "report", "category_code": "",
                             "category_kind": "event", "urgency": "normal", **order_fields})
        row = deadlines.limit_for(session, order, step)
    return None if row is None else (row.category_prefix, row.appeal_type, row.urgency,
                                     row.amount, row.clock)


def test_the_most_specific_limit_wins(sessions) -> None:  # type: ignore[no-untyped-def]
    assert _limit(sessions, "handle") == ("", "", "", 5, "working_days")
    assert _limit(sessions, "handle", category_code="0101") == ("01", "", "", 3, "working_days")
    assert _limit(sessions, "handle", category_code="0102") == \
        ("0102", "", "", 4, "working_hours")
    # On one prefix an exact urgency beats an exact appeal type: an urgent complaint is urgent.
    # (Until the limits were aligned with the centre's one-day promise for urgent orders, the
    # appeal type won here and an urgent complaint on 0102 got 6 working hours.)
    assert _limit(sessions, "handle", category_code="010203", appeal_type="complaint",
                  urgency="urgent") == ("0102", "", "urgent", 2, "continuous")
    assert _limit(sessions, "handle", category_code="010203", appeal_type="complaint") == \
        ("0102", "complaint", "", 6, "working_hours")
    assert _limit(sessions, "handle", category_code="0102", urgency="urgent") == \
        ("0102", "", "urgent", 2, "continuous")
    # A longer prefix beats an exact urgency on a shorter one: 01 has no urgent limit of its
    # own, so its normal one applies to urgent orders too; without a category, the urgent one.
    assert _limit(sessions, "handle", category_code="0101", urgency="urgent") == \
        ("01", "", "", 3, "working_days")
    assert _limit(sessions, "handle", urgency="urgent") == ("", "", "urgent", 12, "continuous")
    # component 0102 is not event 0102
    assert _limit(sessions, "handle", category_code="0102", category_kind="component") == \
        ("C01", "", "", 2, "working_days")
    assert _limit(sessions, "complete", appeal_type="complaint") == \
        ("", "complaint", "", 13, "working_days")
    assert _limit(sessions, "complete", appeal_type="enquiry") == \
        ("", "", "", 3, "working_days")
    assert _limit(sessions, "close") is None


def test_a_calendar_or_limit_changed_in_another_process_is_in_force_at_the_next_step(
        sessions, database_url: str) -> None:  # type: ignore[no-untyped-def]
    """Calendars and limits are cached per process (tickets.workcalendar, tickets.catalogue);
    an operator's change made through another engine (another process) is seen at once."""
    other_engine = make_engine(database_url)
    other = session_factory(other_engine)
    try:
        with sessions() as session:  # warm this process's caches
            assert load_calendar(session, "Asia/Shanghai", "08:30-12:00,13:30-17:30") \
                .overrides == {}
            assert _limit(sessions, "sign") == ("", "", "", 1, "working_hours")
        with transaction(other) as session:
            set_day(session, date(2026, 10, 8), workday=False, note="local holiday")
            set_day(session, date(2026, 10, 11), workday=True, note="make-up Sunday")
            catalogue.set_limit(session, "sign", 4, "working_hours")
        with sessions() as session:
            cached = load_calendar(session, "Asia/Shanghai", "08:30-12:00,13:30-17:30")
        # the hand-worked case of test_the_operators_own_days_override_the_schedule, through
        # the cached calendar: the same due times as the uncached one
        assert deadlines.due(cached, sh(9, 30, 16), 4, "working_hours") == sh(10, 9, 11)
        assert deadlines.due(cached, sh(10, 10, 16), 4, "working_hours") == sh(10, 11, 11)
        assert _limit(sessions, "sign") == ("", "", "", 4, "working_hours")
        with transaction(other) as session:
            clear_day(session, date(2026, 10, 8))
        with sessions() as session:
            again = load_calendar(session, "Asia/Shanghai", "08:30-12:00,13:30-17:30")
        assert deadlines.due(again, sh(9, 30, 16), 4, "working_hours") == sh(10, 8, 11)
    finally:
        other_engine.dispose()


_OPERATOR_ELSEWHERE = """
import sys
from datetime import date
from core.db import make_engine, session_factory, transaction
from tickets import catalogue
from tickets.workcalendar import set_day
engine = make_engine(sys.argv[1])
with transaction(session_factory(engine)) as session:
    catalogue.set_limit(session, "sign", 4, "working_hours")
    set_day(session, date(2026, 11, 25), workday=False, note="本地假日")
engine.dispose()
"""


def test_a_limit_and_a_day_changed_by_another_process_are_used_at_the_next_step(
        sessions, database_url: str) -> None:  # type: ignore[no-untyped-def]
    """The calendar and the limits are cached per process: an operator's change made by
    another process (its own interpreter, its own connections) is in force at this process's
    next move."""
    number = _open(sessions, utc(11, 24, 9))
    _move(sessions, number, "open", utc(11, 24, 9, 5))  # both caches warm, old values
    subprocess.run([sys.executable, "-c", _OPERATOR_ELSEWHERE, database_url], check=True,
                   cwd=Path(__file__).resolve().parent.parent, timeout=120)
    _move(sessions, number, "dispatch", utc(11, 24, 16))
    # sign: now 4 working hours from Tue 16:00: 1.5 h Tuesday, Wednesday a holiday now,
    # 2.5 h from Thursday 08:30 -> Thu 11:00 (the old limit: Tue 17:00; the new limit on the
    # old calendar: Wed 11:00)
    assert _clocks(sessions, number)[-1] == ("sign", 1, datetime(2026, 11, 26, 11), None)


def test_a_complaint_runs_the_whole_loop_on_the_clock(sessions) -> None:  # type: ignore[no-untyped-def]
    # Tuesday Nov 24 and Wednesday Nov 25 2026 are ordinary working days.
    number = _open(sessions, utc(11, 24, 9))
    for action, at in [("request_verification", utc(11, 24, 9, 10)),
                       ("verified", utc(11, 24, 9, 40)), ("open", utc(11, 24, 9, 50)),
                       ("dispatch", utc(11, 24, 10)), ("sign", utc(11, 24, 10, 30)),
                       ("feedback", utc(11, 24, 16)), ("request_check", utc(11, 24, 16, 10)),
                       ("rework", utc(11, 24, 16, 40)), ("feedback", utc(11, 25, 11)),
                       ("request_check", utc(11, 25, 11, 5)),
                       ("check_passed", utc(11, 25, 14)), ("close", utc(11, 25, 14, 30))]:
        _move(sessions, number, action, at)
    d = datetime
    assert _clocks(sessions, number) == [
        # created 09:00, 1 working hour to open it
        ("open", 1, d(2026, 11, 24, 10), d(2026, 11, 24, 9, 50)),
        # 13 working days, 0.5 h into Nov 24: the 13th working day after is Fri Dec 11
        ("complete", 1, d(2026, 12, 11, 9), d(2026, 11, 25, 14, 30)),
        ("verify", 1, d(2026, 11, 24, 10, 10), d(2026, 11, 24, 9, 40)),
        ("dispatch", 1, d(2026, 11, 24, 10, 50), d(2026, 11, 24, 10)),
        ("sign", 1, d(2026, 11, 24, 11), d(2026, 11, 24, 10, 30)),
        # complaint on 0102: 6 working hours from 10:30: 1.5 h + 4 h today, 0.5 h tomorrow
        ("handle", 1, d(2026, 11, 25, 9), d(2026, 11, 24, 16)),
        ("check", 1, d(2026, 11, 24, 17, 10), d(2026, 11, 24, 16, 40)),
        # the rework restarts handling: 50 min today, 3.5 h tomorrow morning, 1 h 40 after
        ("handle", 2, d(2026, 11, 25, 15, 10), d(2026, 11, 25, 11)),
        # 11:05 + 1 working hour: 55 min before lunch, 5 min after -> 13:35; checked 14:00
        ("check", 2, d(2026, 11, 25, 13, 35), d(2026, 11, 25, 14)),
    ]  # no close clock: no limit is configured for it
    with sessions() as session:
        rows = deadlines.deadlines(session, number)
        order = _order(session, number)
        assert deadlines.open_deadlines(session, order.id) == []
    assert [r.on_time for r in rows] == [True] * 8 + [False]
    assert rows[0].yellow_at == utc(11, 24, 9, 48)  # 80 % of an hour
    assert all(r.started_at.tzinfo is not None for r in rows)


def test_returns_deferrals_and_a_void_stop_and_restart_the_right_clocks(sessions) -> None:  # type: ignore[no-untyped-def]
    number = _open(sessions, utc(11, 24, 9))
    steps = [("open", 9, 5), ("dispatch", 9, 10), ("return", 9, 20), ("dispatch", 9, 30),
             ("sign", 9, 40), ("return", 10, 0), ("defer", 10, 10), ("resume", 10, 20)]
    for action, hour, minute in steps:
        _move(sessions, number, action, utc(11, 24, hour, minute))
    with sessions() as session:
        running = deadlines.open_deadlines(session, _order(session, number).id)
    # each return sends the order back for re-dispatch (改派); resume starts a fourth round
    assert [(r.step, r.round) for r in running] == [("dispatch", 4), ("complete", 1)]
    _move(sessions, number, "void", utc(11, 24, 10, 30))
    clocks = _clocks(sessions, number)
    assert all(met is not None for *_, met in clocks)
    met = {(step, rnd): m.time().isoformat("minutes") for step, rnd, _, m in clocks}
    assert met == {("open", 1): "09:05", ("complete", 1): "10:30", ("dispatch", 1): "09:10",
                   ("sign", 1): "09:20", ("dispatch", 2): "09:30", ("sign", 2): "09:40",
                   ("handle", 1): "10:00", ("dispatch", 3): "10:10", ("dispatch", 4): "10:30"}


def test_park_unpark_and_reopen_start_new_rounds(sessions) -> None:  # type: ignore[no-untyped-def]
    number = _open(sessions, utc(11, 24, 9))
    for i, action in enumerate(["open", "dispatch", "sign", "park", "unpark", "feedback",
                                "request_check", "check_passed", "close", "reopen"]):
        _move(sessions, number, action, utc(11, 24, 10, i * 5))
    with sessions() as session:
        running = deadlines.open_deadlines(session, _order(session, number).id)
    assert sorted((r.step, r.round) for r in running) == [("complete", 2), ("handle", 3)]
    reopened = {r.step: r for r in running}
    # reopened 10:45: a fresh 13 working days for the citizen from that moment
    assert reopened["complete"].due_at == utc(12, 11, 10, 45)
    clocks = _clocks(sessions, number)
    # signed 10:10, 6 working hours (1 h 50 + 4 h today, 10 min tomorrow), parked 10:15
    assert ("handle", 1, datetime(2026, 11, 25, 8, 40), datetime(2026, 11, 24, 10, 15)) \
        in clocks


def test_a_question_answered_on_the_call_stops_its_clocks(sessions) -> None:  # type: ignore[no-untyped-def]
    number = _open(sessions, utc(11, 24, 9), appeal_type="enquiry", category_code="")
    _move(sessions, number, "resolve_on_call", utc(11, 24, 9, 3))
    assert _clocks(sessions, number) == [
        ("open", 1, datetime(2026, 11, 24, 10), datetime(2026, 11, 24, 9, 3)),
        # an enquiry has 3 working days: Nov 27 at 09:00
        ("complete", 1, datetime(2026, 11, 27, 9), datetime(2026, 11, 24, 9, 3))]


def test_an_urgent_order_is_opened_on_the_continuous_clock(sessions) -> None:  # type: ignore[no-untyped-def]
    # Saturday Nov 28 22:00: one natural hour, not Monday morning
    number = _open(sessions, utc(11, 28, 22), urgency="urgent")
    assert _clocks(sessions, number)[0] == ("open", 1, datetime(2026, 11, 28, 23), None)


def _urgent_opening_in_minutes(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        row = session.scalar(select(TimeLimit).where(TimeLimit.step == "open",
                                                     TimeLimit.urgency == "urgent"))
        row.amount, row.unit = 10, "minutes"  # the standards' 10-minute urgent opening


def test_an_urgent_opening_in_minutes_warns_falls_due_and_counts_late(sessions) -> None:  # type: ignore[no-untyped-def]
    _urgent_opening_in_minutes(sessions)
    # Saturday Nov 28 22:00: 10 natural minutes -> 22:10, yellow after 8 -> 22:08
    early, late = (_open(sessions, utc(11, 28, 22), urgency="urgent") for _ in range(2))
    with sessions() as session:
        opening = next(d for d in deadlines.deadlines(session, early) if d.step == "open")
    assert (opening.amount, opening.unit, opening.clock) == (10, "minutes", "continuous")
    assert (opening.yellow_at, opening.due_at) == (utc(11, 28, 22, 8), utc(11, 28, 22, 10))
    assert _sweep(sessions, utc(11, 28, 22, 7)) == []
    assert _sweep(sessions, utc(11, 28, 22, 8)) == [("open", "yellow", False)] * 2
    _move(sessions, early, "open", utc(11, 28, 22, 10))  # at the due time: on time
    assert _sweep(sessions, utc(11, 28, 22, 10)) == []
    assert _sweep(sessions, utc(11, 28, 22, 11)) == [("open", "red", True)]
    _move(sessions, late, "open", utc(11, 28, 22, 12))
    with sessions() as session:
        judged = {number: next(d.on_time for d in deadlines.deadlines(session, number)
                               if d.step == "open") for number in (early, late)}
        staff = kpis.evaluate_staff(session, utc(11, 28), utc(11, 29))
    assert judged == {early: True, late: False}
    chief = next(r for r in staff["shift_chief"] if r.who == "t")
    assert (chief.figures["open_done"], chief.figures["open_on_time"]) == (2, 1)
    assert chief.components["on_time_open"] == 0.5


def test_the_migration_keeps_old_limits_and_going_back_rounds_minutes_up(sessions) -> None:  # type: ignore[no-untyped-def]
    _urgent_opening_in_minutes(sessions)
    with transaction(sessions) as session:
        session.add_all([  # 90 working minutes, 30 natural minutes on a days clock
            TimeLimit(step="close", amount=90, clock="working_days", unit="minutes"),
            TimeLimit(step="verify", urgency="urgent", amount=30, clock="calendar_days",
                      unit="minutes")])
    _open(sessions, utc(11, 28, 22), urgency="urgent")
    engine = sessions.kw["bind"]

    def rows() -> list[tuple]:  # type: ignore[type-arg]
        with engine.connect() as conn:
            limits = conn.execute(text(
                "SELECT step, urgency, amount, clock FROM time_limits "
                "WHERE step IN ('open', 'close', 'verify', 'handle') AND category_prefix = ''"
                " ORDER BY step, urgency")).all()
            clocks = conn.execute(text("SELECT step, amount, clock FROM work_order_deadlines "
                                       "ORDER BY step")).all()
        return [tuple(r) for r in limits + clocks]

    command.downgrade(alembic_config(engine), "0013")  # the migration before minutes
    # the old schema has no minutes: whole hours of the same kind of time, rounded up
    assert rows() == [("close", "", 2, "working_hours"), ("handle", "", 5, "working_days"),
                      ("handle", "urgent", 12, "continuous"),
                      ("open", "", 1, "working_hours"), ("open", "urgent", 1, "continuous"),
                      ("verify", "", 1, "working_hours"), ("verify", "urgent", 1, "continuous"),
                      ("complete", 13, "working_days"), ("open", 1, "continuous")]
    upgrade(engine)  # and back: every row counts its clock's own unit again
    with engine.connect() as conn:
        assert set(conn.execute(text("SELECT unit FROM time_limits UNION "
                                     "SELECT unit FROM work_order_deadlines")).scalars()) == {""}
        assert set(conn.execute(text("SELECT extended FROM work_order_deadlines")).scalars()) \
            == {0}  # extended before: the amount in force counts as the original limit
    with sessions() as session:
        assert deadlines.limit_for(session, WorkOrder(appeal_type="report", category_code="",
                                                      urgency="normal"), "handle").unit == ""


def test_a_repeated_call_for_one_move_changes_nothing(sessions) -> None:  # type: ignore[no-untyped-def]
    number = _open(sessions, utc(11, 24, 9))
    _move(sessions, number, "open", utc(11, 24, 9, 5))
    before = _clocks(sessions, number)
    with transaction(sessions) as session:
        order = _order(session, number)
        deadlines.on_transition(session, order, "open", utc(11, 24, 9, 5), CAL, YELLOW)
    assert _clocks(sessions, number) == before
    with pytest.raises(ValueError, match="no action"), transaction(sessions) as session:
        deadlines.on_transition(session, _order(session, number), "shred", utc(11, 24, 9, 6),
                                CAL, YELLOW)


def _handling(sessions) -> str:  # type: ignore[no-untyped-def]
    """A report on 0102 (4 working hours to handle) signed for Tue Nov 24 16:00: due
    Wed 11:00 (1.5 h + 2.5 h), yellow Wed 10:12 (1.5 h + 1.7 h)."""
    number = _open(sessions, utc(11, 24, 15), appeal_type="report")
    for action, minute in (("open", 5), ("dispatch", 10)):
        _move(sessions, number, action, utc(11, 24, 15, minute))
    _move(sessions, number, "sign", utc(11, 24, 16))
    return number


def _handle(sessions, number: str) -> deadlines.Deadline:  # type: ignore[no-untyped-def]
    with sessions() as session:
        return next(d for d in deadlines.open_deadlines(session, _order(session, number).id)
                    if d.step == "handle")


def _sweep(sessions, now: datetime) -> list[tuple[str, str, bool]]:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        changed = deadlines.sweep(session, CAL, now)
    return [(w.step, w.warning, w.escalate) for w in changed]


def test_sweeps_warn_yellow_then_red_once_each(sessions) -> None:  # type: ignore[no-untyped-def]
    number = _handling(sessions)
    handle = _handle(sessions, number)
    assert (handle.due_at, handle.yellow_at) == (utc(11, 25, 11), utc(11, 25, 10, 12))
    # the complaint clock (3 working days) runs too but is far from its yellow point
    assert _sweep(sessions, utc(11, 25, 10, 11)) == []
    assert _sweep(sessions, utc(11, 25, 10, 12)) == [("handle", "yellow", False)]
    assert _sweep(sessions, utc(11, 25, 10, 30)) == []
    assert _sweep(sessions, utc(11, 25, 11)) == []  # due at 11:00 is still on time
    # a now in Shanghai time means the same instant
    assert _sweep(sessions, sh(11, 25, 11, 1)) == [("handle", "red", True)]
    assert _sweep(sessions, utc(11, 25, 12)) == []
    handle = _handle(sessions, number)
    assert (handle.warning, handle.escalated_at) == ("red", utc(11, 25, 11, 1))
    with sessions() as session:
        row = session.scalar(select(WorkOrderDeadline).where(WorkOrderDeadline.step == "handle"))
        assert row.warning == "red"


def test_a_clock_missed_between_sweeps_goes_straight_to_red_and_met_ones_are_left(
        sessions) -> None:  # type: ignore[no-untyped-def]
    late, done = _handling(sessions), _handling(sessions)
    _move(sessions, done, "feedback", utc(11, 25, 10, 30))
    changed = _sweep(sessions, utc(11, 25, 14))
    assert changed == [("handle", "red", True)]
    # both reports' 3 working days from Tue 15:00 reach 80 % (18 h) on Fri 09:00: 2.5 h
    # Tuesday, 7.5 h Wednesday and Thursday, 0.5 h Friday
    with transaction(sessions) as session:
        warnings = deadlines.sweep(session, CAL, utc(11, 27, 9))
    assert sorted((w.case_number, w.step, w.warning) for w in warnings) == [
        (late, "complete", "yellow"), (done, "complete", "yellow")]
    assert all(w.due_at == utc(11, 27, 15) for w in warnings)
    assert _handle(sessions, late).warning == "red"


def test_two_sweepers_escalate_each_clock_once(sessions) -> None:  # type: ignore[no-untyped-def]
    numbers = [_handling(sessions) for _ in range(3)]
    barrier = threading.Barrier(2)
    results: list[list[deadlines.Warning]] = []
    errors: list[BaseException] = []

    def sweeper() -> None:
        try:
            barrier.wait(5)
            with transaction(sessions) as session:
                results.append(deadlines.sweep(session, CAL, utc(11, 25, 14)))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=sweeper) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    escalated = sorted(w.case_number for r in results for w in r if w.escalate)
    assert escalated == sorted(numbers)


def test_an_extension_moves_the_deadline_later_on_its_own_clock(sessions) -> None:  # type: ignore[no-untyped-def]
    number = _handling(sessions)
    assert _sweep(sessions, utc(11, 25, 11, 1)) == [("handle", "red", True)]
    for action in ("request_extension", "grant_extension"):
        _move(sessions, number, action, utc(11, 25, 11, 5))
    with transaction(sessions) as session:
        row = deadlines.extend(session, _order(session, number), "handle", 2,
                               utc(11, 25, 11, 5), CAL, YELLOW)
        assert (row.amount, row.extensions) == (6, 1)
    handle = _handle(sessions, number)
    # 6 working hours from Tue 16:00: 1.5 h, Wed morning 3.5 h, 1 h after lunch -> 14:30;
    # yellow after 4.8 h: 1.5 h + 3.3 h -> 11:48; no longer late, so no longer red
    assert (handle.due_at, handle.yellow_at) == (utc(11, 25, 14, 30), utc(11, 25, 11, 48))
    assert (handle.warning, handle.extensions) == ("", 1)
    assert _sweep(sessions, utc(11, 25, 11, 48)) == [("handle", "yellow", False)]
    # missing the extended limit is a new breach: supervised again
    assert _sweep(sessions, utc(11, 25, 14, 31)) == [("handle", "red", True)]


def test_an_extension_never_moves_a_deadline_earlier_and_needs_a_running_clock(
        sessions) -> None:  # type: ignore[no-untyped-def]
    number = _handling(sessions)
    with transaction(sessions) as session:
        order = _order(session, number)
        for amount in (0, -3, 1.5):
            with pytest.raises(deadlines.DeadlineError, match="amount"):
                deadlines.extend(session, order, "handle", amount, utc(11, 25, 9), CAL,
                                 YELLOW)
        with pytest.raises(deadlines.DeadlineError, match="no 'check' clock"):
            deadlines.extend(session, order, "check", 1, utc(11, 25, 9), CAL, YELLOW)
    _move(sessions, number, "feedback", utc(11, 25, 9))
    with pytest.raises(deadlines.DeadlineError, match="no 'handle' clock"), \
            transaction(sessions) as session:
        deadlines.extend(session, _order(session, number), "handle", 1, utc(11, 25, 9, 1),
                         CAL, YELLOW)
    with pytest.raises(deadlines.DeadlineError, match="no work order"), sessions() as session:
        deadlines.deadlines(session, "209901010001")



def test_one_extension_is_at_most_the_rounds_original_limit(sessions) -> None:  # type: ignore[no-untyped-def]
    number = _handling(sessions)  # 4 working hours from Tue Nov 24 16:00, due Wed 11:00
    for action in ("request_extension", "grant_extension"):
        _move(sessions, number, action, utc(11, 25, 9))

    def extend(amount: int) -> WorkOrderDeadline:
        with transaction(sessions) as session:
            return deadlines.extend(session, _order(session, number), "handle", amount,
                                    utc(11, 25, 9), CAL, YELLOW)

    with pytest.raises(deadlines.DeadlineError,
                       match="at most the handle clock's original limit at a time, 4 hours on "
                             "working_hours, got 5"):
        extend(5)
    row = extend(4)  # the whole original limit again: 8 working hours
    assert (row.amount, row.extended, row.extensions) == (8, 4, 1)
    # 1.5 h on Tuesday, 3.5 h Wednesday morning, 3 h from 13:30 -> Wed 16:30
    assert _handle(sessions, number).due_at == utc(11, 25, 16, 30)
    row = extend(4)  # each extension is measured against the original 4, not the 8
    assert (row.amount, row.extended, row.extensions) == (12, 8, 2)
    # 12 h: 1.5 on Tuesday, 7.5 on Wednesday, 3 h from 08:30 on Thursday -> 11:30
    assert _handle(sessions, number).due_at == utc(11, 26, 11, 30)
    for huge in (5, 1_000_000, 10**9, 10**30):
        began = time.perf_counter()
        with pytest.raises(deadlines.DeadlineError, match="original limit"):
            extend(huge)
        assert time.perf_counter() - began < 0.5  # refused before any calendar arithmetic
    assert _handle(sessions, number).amount == 12  # nothing changed


def test_a_huge_extension_is_refused_quickly_and_changes_nothing(sessions) -> None:  # type: ignore[no-untyped-def]
    number = _handling(sessions)
    _move(sessions, number, "request_extension", utc(11, 25, 9))
    with sessions() as session:
        before = (_order(session, number).version, len(service.history(session, number)))
    for huge in (1_000_000, 10**9):
        began = time.perf_counter()
        with pytest.raises(service.OrderError, match="original limit at a time, 4 hours"), \
                transaction(sessions) as session:
            service.grant_extension(session, number, huge, actor="老李", role="shift_chief",
                                    now=utc(11, 25, 9, 5))
        assert time.perf_counter() - began < 0.5  # a bound on a hang, not a benchmark
    with sessions() as session:
        assert (_order(session, number).version,
                len(service.history(session, number))) == before
    assert _handle(sessions, number).due_at == utc(11, 25, 11)

# --- the shipped limits fit together --------------------------------------------------------

LOOP = ("open", "dispatch", "sign", "handle", "check", "close")  # the case loop's clocks
# Tuesday 10:00, Friday 16:00, the eve of National Day 16:00, a Sunday night
CHAIN_STARTS = (sh(11, 24, 10), sh(11, 27, 16), sh(9, 30, 16), sh(11, 29, 23))


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('shipped') / 'h.db'}")
    upgrade(engine)
    factory = session_factory(engine)
    with transaction(factory) as session:
        catalogue.seed(session)
    yield factory
    engine.dispose()


def _shipped_limits(session: Any, **order: str) -> dict[str, TimeLimit]:
    probe = WorkOrder(**{"category_code": "", "category_kind": "event", "urgency": "normal",
                         **order})
    found = {step: deadlines.limit_for(session, probe, step) for step in (*LOOP, "complete")}
    missing = [step for step, limit in found.items() if limit is None]
    assert not missing, f"{order}: no limit for {missing}"
    return found  # type: ignore[return-value]


def _chain(limits: dict[str, TimeLimit], start: datetime) -> tuple[list[datetime], datetime]:
    """Each step of the loop started when the one before falls due: their due times (Shanghai
    wall time), and the appeal's own due time."""
    at, dues = start, []
    for step in LOOP:
        at = deadlines.due(CAL, at, limits[step].amount, limits[step].clock, limits[step].unit)
        dues.append(at.astimezone(SH).replace(tzinfo=None))
    whole = limits["complete"]
    complete = deadlines.due(CAL, start, whole.amount, whole.clock, whole.unit)
    return dues, complete.astimezone(SH).replace(tzinfo=None)


def test_on_time_steps_never_make_the_appeal_late_with_the_shipped_limits(shipped) -> None:  # type: ignore[no-untyped-def]
    late = []
    with shipped() as session:
        codes = [("event", "")] + [(c.kind, c.code) for c in catalogue.categories(session)]
        assert len(codes) > 80
        for kind, code in codes:
            for appeal in catalogue.APPEAL_TYPES:
                for urgency in catalogue.URGENCIES:
                    limits = _shipped_limits(session, category_kind=kind, category_code=code,
                                             appeal_type=appeal, urgency=urgency)
                    for start in CHAIN_STARTS:
                        dues, complete = _chain(limits, start)
                        day = start.astimezone(SH).replace(tzinfo=None) + timedelta(days=1)
                        if urgency == "urgent" and complete > day:  # the centre's promise
                            late.append(f"{kind} {code or '-'} {appeal} urgent from "
                                        f"{start:%a %m-%d %H:%M}: complete due {complete}")
                        if dues[-1] > complete:
                            late.append(f"{kind} {code or '-'} {appeal} {urgency} from "
                                        f"{start:%a %m-%d %H:%M}: close due {dues[-1]}, "
                                        f"complete due {complete}")
    assert late == []


d = datetime
HAND_WORKED_CHAINS = [
    # A complaint on 0101 私搭乱建 on Tuesday 10:00: open 30 and dispatch 30 working minutes,
    # sign 1 working hour -> 12:00, the end of the morning; 12 working days later at that
    # position (Nov 25, 26, 27, 30, Dec 1-4, 7-10) -> Thu Dec 10 12:00; check 30 working
    # minutes after lunch -> 14:00; close 1 working hour -> 15:00. The appeal: 13 working
    # days -> Fri Dec 11 10:00.
    ({"category_code": "0101", "appeal_type": "complaint"}, sh(11, 24, 10),
     [d(2026, 11, 24, 10, 30), d(2026, 11, 24, 11), d(2026, 11, 24, 12), d(2026, 12, 10, 12),
      d(2026, 12, 10, 14), d(2026, 12, 10, 15)], d(2026, 12, 11, 10)),
    # An urgent report on 0102 on Friday 16:00, all on natural time: 10 + 10 + 30 minutes,
    # 2 hours to handle, 30 + 30 minutes -> 19:50; the appeal: one calendar day.
    ({"category_code": "0102", "appeal_type": "report", "urgency": "urgent"}, sh(11, 27, 16),
     [d(2026, 11, 27, 16, 10), d(2026, 11, 27, 16, 20), d(2026, 11, 27, 16, 50),
      d(2026, 11, 27, 18, 50), d(2026, 11, 27, 19, 20), d(2026, 11, 27, 19, 50)],
     d(2026, 11, 28, 16)),
    # Help on 0401 路面塌陷 at 16:00 on the eve of National Day: open 16:30, dispatch 17:00;
    # signing has 30 minutes to 17:30, then Oct 1-7 off -> Thu Oct 8 09:00; handling one
    # calendar day -> Fri Oct 9 09:00; check 09:30; close 10:30. The appeal: 3 working days
    # at the same position, Oct 8, 9 and the make-up Saturday Oct 10 -> 16:00.
    ({"category_code": "0401", "appeal_type": "help"}, sh(9, 30, 16),
     [d(2026, 9, 30, 16, 30), d(2026, 9, 30, 17), d(2026, 10, 8, 9), d(2026, 10, 9, 9),
      d(2026, 10, 9, 9, 30), d(2026, 10, 9, 10, 30)], d(2026, 10, 10, 16)),
    # An enquiry without a category on Sunday night: nothing counts until Monday 08:30, open
    # 09:00, dispatch 09:30, sign 10:30, handle 2 working days -> Wed Dec 2 10:30, check
    # 11:00, close 12:00. The appeal: 3 working days from Monday 08:30 -> Wed Dec 2 17:30.
    ({"appeal_type": "enquiry"}, sh(11, 29, 23),
     [d(2026, 11, 30, 9), d(2026, 11, 30, 9, 30), d(2026, 11, 30, 10, 30), d(2026, 12, 2, 10, 30),
      d(2026, 12, 2, 11), d(2026, 12, 2, 12)], d(2026, 12, 2, 17, 30)),
    # A suggestion on component 0402 行道树 on Friday 16:00: open 16:30, dispatch 17:00, sign
    # 30 minutes Friday and 30 Monday -> Mon Nov 30 09:00; 5 working days (Dec 1-4, 7) ->
    # Mon Dec 7 09:00; check 09:30; close 10:30. The appeal: 13 working days after Friday
    # (Nov 30, Dec 1-4, 7-11, 14-16) -> Wed Dec 16 16:00.
    ({"category_code": "0402", "category_kind": "component", "appeal_type": "suggestion"},
     sh(11, 27, 16),
     [d(2026, 11, 27, 16, 30), d(2026, 11, 27, 17), d(2026, 11, 30, 9), d(2026, 12, 7, 9),
      d(2026, 12, 7, 9, 30), d(2026, 12, 7, 10, 30)], d(2026, 12, 16, 16)),
]


@pytest.mark.parametrize(("order", "start", "dues", "complete"), HAND_WORKED_CHAINS)
def test_shipped_chains_worked_out_by_hand(shipped, order: dict[str, str], start: datetime,  # type: ignore[no-untyped-def]
                                           dues: list[datetime], complete: datetime) -> None:
    with shipped() as session:
        limits = _shipped_limits(session, **order)
    assert _chain(limits, start) == (dues, complete)


# --- the API ---------------------------------------------------------------------------------

API_NOW = utc(11, 24, 10)  # Tuesday 10:00 in Beijing


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[tuple[FlaskClient, Any]]:
    settings = make_settings(tmp_path, DATABASE_URL=database_url, REDIS_URL=REDIS_SERVER_URL)
    engine = make_engine(database_url)
    upgrade(engine)
    factory = session_factory(engine)
    with transaction(factory) as session:
        catalogue.seed(session)
        catalogue.set_limit(session, "open", 10, "continuous", urgency="urgent", unit="minutes")
    app = create_app(settings, factory, connect_redis(settings), FixedClock(API_NOW))
    yield app.test_client(), factory
    engine.dispose()


def _token(factory: Any, name: str, role: str) -> dict[str, str]:
    """A token for `role`; a department handler works for municipal, the department the
    road-collapse orders these tests take in (category 0401) are dispatched to."""
    with transaction(factory) as session:
        token = add_user(session, name, [role], False,
                         tuple(r for r in workflow.ROLES if r != workflow.SYSTEM), now=API_NOW,
                         department="municipal" if role == "department" else None)
    return {"Authorization": f"Bearer {token}"}


URGENT = {"appeal_type": "help", "description": "小区门口路面塌陷，有人受伤", "channel": "phone",
          "citizen_phone": "13800138000", "category_code": "0401", "urgency": "urgent"}


def test_the_order_view_says_what_each_amount_counts(api) -> None:  # type: ignore[no-untyped-def]
    http, factory = api
    created = http.post("/api/v1/orders", json=URGENT,
                        headers=_token(factory, "受理员", "operator"))
    assert created.status_code == 201, created.json
    shown = {d["step"]: d for d in created.json["deadlines"]}
    assert {k: shown["open"][k] for k in ("amount", "unit", "clock", "due_at")} == {
        "amount": 10, "unit": "minutes", "clock": "continuous",
        "due_at": utc(11, 24, 10, 10).isoformat()}  # 10 natural minutes
    assert (shown["complete"]["unit"], shown["complete"]["clock"]) == ("days", "calendar_days")


def test_an_extension_beyond_the_original_limit_is_a_quick_400(api) -> None:  # type: ignore[no-untyped-def]
    http, factory = api
    who = {role: _token(factory, role, role) for role in
           ("operator", "shift_chief", "dispatcher", "department")}
    case = http.post("/api/v1/orders", json={**URGENT, "urgency": "normal"},
                     headers=who["operator"]).json["case_number"]
    for action, role in (("open", "shift_chief"), ("dispatch", "dispatcher"),
                         ("sign", "department"), ("request_extension", "department")):
        moved = http.post(f"/api/v1/orders/{case}/actions/{action}", json={},
                          headers=who[role])
        assert moved.status_code == 200, moved.json
    version = moved.json["version"]
    handle = next(d for d in moved.json["deadlines"] if d["step"] == "handle")
    for huge, detail in ((handle["amount"] + 1, "at most the handle clock's original limit"),
                         (10**9, "at most the handle clock's original limit"),
                         (10**30, "amount: at most 1000000000")):  # bounded at the edge
        began = time.perf_counter()
        refused = http.post(f"/api/v1/orders/{case}/actions/grant_extension",
                            json={"amount": huge}, headers=who["shift_chief"])
        assert time.perf_counter() - began < 0.5  # a bound on a hang, not a benchmark
        assert refused.status_code == 400
        assert detail in refused.json["detail"]
    assert http.get(f"/api/v1/orders/{case}",
                    headers=who["shift_chief"]).json["version"] == version
    granted = http.post(f"/api/v1/orders/{case}/actions/grant_extension",
                        json={"amount": handle["amount"]}, headers=who["shift_chief"])
    assert granted.status_code == 200
    extended = next(d for d in granted.json["deadlines"] if d["step"] == "handle")
    assert (extended["amount"], extended["unit"], extended["extensions"]) == \
        (2 * handle["amount"], handle["unit"], 1)
