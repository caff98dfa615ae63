"""Time limits (时限) on the steps of a work order: the clock math, and the deadlines kept
for each order.

Clock kinds (计时方式), `amount` in the clock's own unit, hours for the first two and days
for the others, or in minutes on any clock (unit "minutes", 分钟):

- ``continuous`` (紧急工作时): natural time, holidays and nights included; due = start +
  amount hours.
- ``working_hours`` (工作时): only time inside the calendar's working-hour spans on working
  days counts (the State Council schedule with its make-up working days 调休, and the
  operator's overrides). Started outside working hours, the clock starts at the next working
  period; a limit used up exactly at the end of a period is due at that end (17:30), not at
  the next opening.
- ``working_days`` (工作日): N working days = N times the length of a working day in working
  hours (7.5 h with 08:30-12:00,13:30-17:30), counted on the ``working_hours`` clock. So it
  falls due at the same position of the working clock N working days later: started Tuesday
  10:00, 1 working day is due Wednesday 10:00 (Friday 10:00 is due on the next working day,
  a make-up Saturday included, at 10:00); started outside working hours (evening, holiday,
  lunch break), counting starts with the next working period, so started Friday 20:00,
  1 working day is due at the close of the next working day (17:30); likewise started at
  the opening (08:30), 1 working day is due at that day's close.
- ``calendar_days`` (自然日): N times 24 hours of natural time; in a zone without daylight
  saving (China) that is the same local time N days later.

In minutes a limit is N natural minutes on the natural clocks (continuous, calendar_days) and
N minutes of working time on the working ones (working_hours, working_days): the standards'
10-minute urgent dispatch is 10 natural minutes; a 30-minute check started at 17:20 on
working time is due at 08:50 on the next working day.

The yellow warning (黄灯预警) falls when `percent` % of the limit is used, measured on the
limit's own clock: 80 % of 4 working hours is after 3.2 working hours; 80 % of 13 working
days is after 10.4 working days of working time. Times are exact to the microsecond.
Datetimes in and out are timezone-aware; results are in UTC, the working clock is read in
the calendar's zone.

A deadline row (`WorkOrderDeadline`) is one round of one step's clock on one order:
`on_transition` starts and stops them as the order moves, `extend` moves one later (延期,
in the round's own unit), `sweep` raises the yellow and red warnings and says which reds
need supervision (督办).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from fractions import Fraction
from functools import lru_cache
from itertools import pairwise
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from core.errors import HotlineError
from tickets import catalogue, workflow
from tickets.events import Move, OrderEvent
from tickets.models import WorkOrder, WorkOrderDeadline
from tickets.workcalendar import WorkCalendar

CLOCKS = ("continuous", "working_hours", "working_days", "calendar_days")
_NATURAL = ("continuous", "calendar_days")
UNITS = ("", "minutes")  # "": the clock's own unit

# Steps of the case loop that carry a time limit.
STEPS = ("verify", "open", "dispatch", "sign", "handle", "check", "close", "complete")

_US = timedelta(microseconds=1)
_DAY = timedelta(days=1)
_HOUR_US = 3_600_000_000
_DAY_US = 24 * _HOUR_US
_MINUTE_US = 60_000_000
_MAX_IDLE_DAYS = 400  # more than a year without working time: a broken calendar, not a gap
_LAST_DAY = date.max.toordinal()
_DST_SLACK_US = 2 * _HOUR_US  # the most a zone's offset moves a day's working time


class DeadlineError(HotlineError):
    """A deadline operation that cannot be done (no such clock running, a bad amount)."""


# ---------------------------------------------------------------------------------------------
# Clock math
#
# Working time is counted a year at a time, never a day at a time, so a limit of years costs
# what one of days does: a local year the calendar package or the operator knows is a table of
# its working days with the working time up to each (built once, searched with bisect); a year
# neither knows is Monday to Friday counted in whole weeks, with the few days a change of the
# zone's UTC offset (daylight saving) cuts or stretches counted on their own. Only the first
# and the last day of a span are looked at period by period. Beyond the year 9999 is an error.


def _aware(moment: datetime, name: str = "start") -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name}: a timezone-aware datetime is needed, got {moment!r}")
    return moment.astimezone(UTC)


def _stored(moment: datetime) -> datetime:
    """A datetime read back from the database: SQLite returns UTC without its zone."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _beyond(what: str) -> DeadlineError:
    return DeadlineError(f"{what}: beyond the year 9999, past what the calendar can represent")


def _local_day(calendar: WorkCalendar, moment: datetime) -> date:
    try:
        return moment.astimezone(calendar.timezone).date()
    except OverflowError:
        raise _beyond("time") from None


def _spans(calendar: WorkCalendar) -> tuple[tuple[timedelta, timedelta], ...]:
    return _merged_spans(calendar.hours)


@lru_cache(maxsize=64)
def _merged_spans(hours: tuple[tuple[time, time], ...]
                  ) -> tuple[tuple[timedelta, timedelta], ...]:
    """Working spans as offsets from local midnight, sorted and merged; the parser's 24:00
    (time.max) is the end of the day."""
    def offset(t: time) -> timedelta:
        if t == time.max:
            return _DAY
        return timedelta(hours=t.hour, minutes=t.minute, seconds=t.second,
                         microseconds=t.microsecond)

    merged: list[tuple[timedelta, timedelta]] = []
    for start, end in sorted((offset(s), offset(e)) for s, e in hours):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


def working_day_length(calendar: WorkCalendar) -> timedelta:
    """How much working time one working day holds (its nominal wall-clock length)."""
    return sum((end - start for start, end in _spans(calendar)), timedelta())


def _periods(calendar: WorkCalendar, day: date,
             spans: tuple[tuple[timedelta, timedelta], ...]) -> list[tuple[datetime, datetime]]:
    """The working periods of one local day, as UTC instants; none on a day off."""
    if not calendar.is_workday(day):
        return []
    midnight = datetime.combine(day, time())
    try:
        return [((midnight + s).replace(tzinfo=calendar.timezone).astimezone(UTC),
                 (midnight + e).replace(tzinfo=calendar.timezone).astimezone(UTC))
                for s, e in spans]
    except OverflowError:
        raise _beyond(f"working hours of {day}") from None


def _weekday(ordinal: int) -> int:
    return (ordinal - 1) % 7  # date.fromordinal(1), 1 January of year 1, was a Monday


def _weekdays(lo: int, hi: int) -> int:
    """How many Mondays to Fridays there are in the days [lo, hi) (ordinals)."""
    if hi <= lo:
        return 0
    weeks, extra = divmod(hi - lo, 7)
    return weeks * 5 + sum(_weekday(lo + i) < 5 for i in range(extra))


def _nth_weekday(lo: int, n: int) -> int:
    """The `n`-th (from 1) Monday to Friday on or after day `lo`, in whole weeks."""
    day = lo + max(0, 7 - _weekday(lo)) if _weekday(lo) >= 5 else lo
    weeks, rest = divmod(n - 1, 5)
    day += weeks * 7
    for _ in range(rest):
        day += 3 if _weekday(day) == 4 else 1
    return day


@dataclass(frozen=True)
class _Year:
    """The working days of one local year, days [start, stop) as ordinals.

    A year the calendar knows is a table: `days`, its working days, and `ends`, the working
    time (microseconds) of the year up to the end of each. A year it does not know is Monday
    to Friday (`days` None), each day `nominal` long except the few in `odd`, (day, working
    time), whose working hours a change of the zone's UTC offset (daylight saving) cuts or
    stretches."""

    start: int
    stop: int
    nominal: int
    days: tuple[int, ...] | None = None
    ends: tuple[int, ...] = ()
    odd: tuple[tuple[int, int], ...] = ()

    def _before(self, day: int) -> tuple[int, int]:
        """(working days, working time) of the year before `day`."""
        if self.days is None:
            count = _weekdays(self.start, day)
            return count, count * self.nominal + sum(
                length - self.nominal for odd, length in self.odd if odd < day)
        count = bisect_left(self.days, day)
        return count, self.ends[count - 1] if count else 0

    def working(self, lo: int, hi: int) -> int:
        """Working time of the days [lo, hi) within this year."""
        return self._before(min(hi, self.stop))[1] - self._before(max(lo, self.start))[1]

    def first(self, lo: int) -> int | None:
        """The first working day on or after `lo` in this year."""
        if self.days is None:
            day = _nth_weekday(max(lo, self.start), 1)
        else:
            i = bisect_left(self.days, lo)
            day = self.days[i] if i < len(self.days) else self.stop
        return day if day < self.stop else None

    def last(self) -> int | None:
        if self.days is None:
            day = self.stop - 1
            return day - max(0, _weekday(day) - 4)
        return self.days[-1] if self.days else None

    def locate(self, lo: int, length: int) -> tuple[int, int] | None:
        """The working day of this year on which `length` (> 0) of working time counted from
        the start of day `lo` runs out, and how much of it is still to count on that day;
        None when the year holds less."""
        lo = max(lo, self.start)
        if self.days is not None:
            count, before = self._before(lo)
            i = bisect_left(self.ends, before + length, lo=count)
            if i == len(self.days):
                return None
            return self.days[i], before + length - (self.ends[i - 1] if i else 0)
        for odd, odd_length in self.odd:  # whole weeks between the odd days
            if odd < lo:
                continue
            found = self._locate_weekdays(lo, odd, length)
            if found is not None:
                return found
            length -= _weekdays(lo, odd) * self.nominal
            if length <= odd_length:
                return odd, length
            length -= odd_length
            lo = odd + 1
        return self._locate_weekdays(lo, self.stop, length)

    def _locate_weekdays(self, lo: int, hi: int, length: int) -> tuple[int, int] | None:
        n = -(-length // self.nominal)  # working days begun, the last one included
        day = _nth_weekday(lo, n)
        return (day, length - (n - 1) * self.nominal) if day < hi else None


def _ordinal_of_new_year(year: int) -> int:
    return date(year, 1, 1).toordinal() if year <= date.max.year else _LAST_DAY + 1


@lru_cache(maxsize=16384)
def _shifts(zone: ZoneInfo, year: int) -> tuple[int, ...]:
    """The local days of `year` around a change of the zone's UTC offset (daylight saving),
    as ordinals; none for a zone that keeps one offset through the year. Offsets are sampled
    weekly, then each change is found to the second by bisection: daylight saving changes
    over weeks or months, never back within days."""
    local = [datetime(year, 1, 1, tzinfo=zone) + timedelta(weeks=w) for w in range(53)]
    local = [moment for moment in local if moment.year == year]
    local.append(datetime(year, 12, 31, 23, 59, 59, tzinfo=zone))
    days: set[int] = set()
    for before, after in pairwise(local):
        if before.utcoffset() == after.utcoffset():
            continue
        try:
            low, high = before.astimezone(UTC), after.astimezone(UTC)
        except OverflowError:  # the first or the last day a datetime can hold
            continue
        offset = before.utcoffset()
        while high - low > timedelta(seconds=1):
            middle = low + (high - low) / 2
            if middle.astimezone(zone).utcoffset() == offset:
                low = middle
            else:
                high = middle
        for side in (low, high):  # a working span ending at 24:00 reaches the next day
            day = side.astimezone(zone).date().toordinal()
            days.update((day - 1, day))
    return tuple(sorted(days))


@lru_cache(maxsize=16384)
def _year(zone: ZoneInfo, hours: tuple[tuple[time, time], ...], year: int,
          overrides: tuple[tuple[date, bool], ...]) -> _Year:
    """One year of the calendar with these working hours and this year's operator entries."""
    calendar = WorkCalendar(zone, hours, dict(overrides))
    spans = _merged_spans(hours)
    start, stop = _ordinal_of_new_year(year), _ordinal_of_new_year(year + 1)
    nominal = sum((end - begin) // _US for begin, end in spans)

    def length(day: int) -> int:
        return sum((end - begin) // _US
                   for begin, end in _periods(calendar, date.fromordinal(day), spans))

    if not calendar.year_known(year):  # Monday to Friday
        odd = ((day, length(day)) for day in _shifts(zone, year)
               if start <= day < stop and _weekday(day) < 5)
        return _Year(start, stop, nominal, odd=tuple(o for o in odd if o[1] != nominal))
    days = tuple(day for day in range(start, stop)
                 if calendar.is_workday(date.fromordinal(day)))
    ends: list[int] = []
    total = 0
    for day in days:
        total += length(day)
        ends.append(total)
    return _Year(start, stop, nominal, days, tuple(ends))


class _Years:
    """The calendar's working days, a year at a time."""

    def __init__(self, calendar: WorkCalendar) -> None:
        self.calendar = calendar
        by_year: dict[int, list[tuple[date, bool]]] = {}
        for day, works in calendar.overrides.items():
            by_year.setdefault(day.year, []).append((day, works))
        self.overrides = {year: tuple(sorted(items)) for year, items in by_year.items()}
        self.nominal = working_day_length(calendar) // _US

    def year(self, year: int) -> _Year:
        return _year(self.calendar.timezone, self.calendar.hours, year,
                     self.overrides.get(year, ()))

    def working(self, lo: int, hi: int) -> int:
        """Working time (microseconds) of the whole days [lo, hi)."""
        total = 0
        year = date.fromordinal(lo).year if lo <= _LAST_DAY else date.max.year + 1
        while lo < hi:
            part = self.year(year)
            total += part.working(lo, hi)
            lo, year = part.stop, year + 1
        return total

    def locate(self, lo: int, length: int, last: int) -> tuple[int, int]:
        """The working day on or after day `lo` on which `length` (> 0) of working time runs
        out, and what is left to count on it; `last` is the last working day seen before."""
        # A day holds at most its nominal working time and a daylight-saving hour or two: a
        # length no day before the year 10000 can reach is refused without counting.
        if length > (_LAST_DAY + 1 - lo) * (self.nominal + _DST_SLACK_US):
            raise _beyond("due time")
        year = date.fromordinal(lo).year if lo <= _LAST_DAY else date.max.year + 1
        while year <= date.max.year:
            part = self.year(year)
            first = part.first(lo)
            idle_to = first if first is not None else part.stop
            if idle_to - last - 1 > _MAX_IDLE_DAYS:
                raise ValueError(f"calendar: no working day within {_MAX_IDLE_DAYS} days after "
                                 f"{date.fromordinal(last + 1)}")
            if first is not None:
                found = part.locate(lo, length)
                if found is not None:
                    return found
                length -= part.working(lo, part.stop)
                last = part.last() or last  # a year with a first day has a last
            lo, year = part.stop, year + 1
        raise _beyond("due time")


def _add_working(calendar: WorkCalendar, start: datetime, length: int) -> datetime:
    """The instant when `length` microseconds of working time have passed since `start`."""
    if length <= 0:
        return start
    spans = _spans(calendar)
    if not spans:
        raise ValueError("calendar: no working hours configured")
    day = _local_day(calendar, start)
    periods = _periods(calendar, day, spans)
    for begin, end in periods:  # the rest of the first day, period by period
        if end <= start:
            continue
        begin = max(begin, start)
        part = (end - begin) // _US
        if length <= part:
            return begin + timedelta(microseconds=length)
        length -= part
    seen = day.toordinal() if periods else day.toordinal() - 1
    found, length = _Years(calendar).locate(day.toordinal() + 1, length, seen)
    for begin, end in _periods(calendar, date.fromordinal(found), spans):
        part = (end - begin) // _US
        if length <= part:
            return begin + timedelta(microseconds=length)
        length -= part
    raise AssertionError("a located working day holds what is left")  # pragma: no cover


def working_time(calendar: WorkCalendar, start: datetime, end: datetime) -> timedelta:
    """Working time (工作时) between two instants; nothing if `end` is not after `start`."""
    start, end = _aware(start), _aware(end, "end")
    if end <= start:
        return timedelta()
    spans = _spans(calendar)
    first, last = _local_day(calendar, start), _local_day(calendar, end)

    def overlap(day: date) -> int:
        return sum(max(min(finish, end) - max(begin, start), timedelta()) // _US
                   for begin, finish in _periods(calendar, day, spans))

    if first == last:
        return timedelta(microseconds=overlap(first))
    whole = _Years(calendar).working(first.toordinal() + 1, last.toordinal())
    return timedelta(microseconds=overlap(first) + whole + overlap(last))


def unit_name(clock: str, unit: str = "") -> str:
    """What an amount on `clock` counts (计时单位): minutes, or the clock's own hours or days."""
    if unit == "minutes":
        return unit
    return "hours" if clock in ("continuous", "working_hours") else "days"


def _length(calendar: WorkCalendar, amount: float, clock: str, unit: str) -> int:
    """The limit on its own clock, in microseconds of natural time or of working time."""
    if clock not in CLOCKS:
        raise ValueError(f"clock: one of {', '.join(CLOCKS)}, got {clock!r}")
    if unit not in UNITS:
        raise ValueError(f"unit: minutes, or '' for the clock's own, got {unit!r}")
    try:
        exact = Fraction(amount)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"amount: a finite number, got {amount!r}") from None
    if exact < 0:
        raise ValueError(f"amount: not below zero, got {amount!r}")
    if unit == "minutes":
        return _scale(_MINUTE_US, exact)
    own = {"continuous": _HOUR_US, "working_hours": _HOUR_US, "calendar_days": _DAY_US,
           "working_days": working_day_length(calendar) // _US}[clock]
    return _scale(own, exact)


def _scale(length: int, factor: Fraction) -> int:
    return round(factor * length)


def _advance(calendar: WorkCalendar, start: datetime, length: int, clock: str) -> datetime:
    if clock not in _NATURAL:
        return _add_working(calendar, start, length)
    try:
        moment = start + timedelta(microseconds=length)
    except OverflowError:
        raise _beyond("due time") from None
    _local_day(calendar, moment)  # representable on the calendar too
    return moment


def due(calendar: WorkCalendar, start: datetime, amount: float, clock: str,
        unit: str = "") -> datetime:
    """When a limit of `amount` (in `unit`, "" for the clock's own) on `clock` started at
    `start` runs out (UTC)."""
    start = _aware(start)
    return _advance(calendar, start, _length(calendar, amount, clock, unit), clock)


def warning_point(calendar: WorkCalendar, start: datetime, amount: float, clock: str,
                  percent: float, unit: str = "") -> datetime:
    """When `percent` % of the limit is used, on the limit's own clock (the yellow warning)."""
    if not 0 <= percent <= 100:
        raise ValueError(f"percent: 0-100, got {percent!r}")
    start = _aware(start)
    part = _scale(_length(calendar, amount, clock, unit), Fraction(percent) / 100)
    return _advance(calendar, start, part, clock)


def elapsed_fraction(calendar: WorkCalendar, start: datetime, amount: float, clock: str,
                     now: datetime, unit: str = "") -> float:
    """How much of the limit is used at `now`: 0 before the start, 1 at the due time, above 1
    when overdue (1.5 = half the limit again past due)."""
    start, now = _aware(start), _aware(now, "now")
    length = _length(calendar, amount, clock, unit)
    used = now - start if clock in _NATURAL else working_time(calendar, start, now)
    if length <= 0:
        return 1.0 if now >= start else 0.0
    return max(used, timedelta()) // _US / length


# ---------------------------------------------------------------------------------------------
# Which actions start and stop which clocks

# action -> (steps it meets or ends, steps it starts). An action leading to closed, voided or
# merged ends every clock still running, so none of them can escalate a finished order.
_RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "create": ((), ("open", "complete")),
    "request_verification": ((), ("verify",)),
    "verified": (("verify",), ()),
    # opening straight from verifying settles the verification the chief did not wait for
    "open": (("verify", "open"), ("dispatch",)),
    "dispatch": (("dispatch",), ("sign",)),
    "sign": (("sign",), ("handle",)),
    # back at the centre for re-dispatch (改派): the department's clocks stop, the
    # dispatcher's starts again
    "return": (("sign", "handle"), ("dispatch",)),
    "feedback": (("handle",), ()),
    "request_check": ((), ("check",)),
    "check_passed": (("check",), ("close",)),
    "rework": (("check",), ("handle",)),
    "reopen": ((), ("handle", "complete")),
    "park": (("handle",), ()),
    "unpark": ((), ("handle",)),
    "defer": (("dispatch",), ()),
    "resume": ((), ("dispatch",)),
}
_ENDS_ALL = ("closed", *workflow.FINAL)


def limit_for(session: Session, order: WorkOrder, step: str,
              in_force: Mapping[str, Sequence[catalogue.LimitInForce]] | None = None
              ) -> catalogue.LimitInForce | None:
    """The time limit in force for `step` of `order`, as the catalogue (tickets.catalogue,
    the room's one keeper of limits) picks it: the most specific one, None for a step
    without a limit for this order. `in_force`: the limits the caller read already."""
    return catalogue.limit_for(session, step, category_code=order.category_code or "",
                               kind=order.category_kind or "event",
                               appeal_type=order.appeal_type or "",
                               urgency=order.urgency or "", in_force=in_force)


def follow_move(event: OrderEvent, move: Move) -> None:
    """Subscriber of every move (tickets.follow_ups): the clocks it stops and starts."""
    on_transition(move.session, move.order, move.action, move.now, move.calendar,
                  move.policy.yellow_percent, limits=move.rules.limits)


def on_transition(session: Session, order: WorkOrder, action: str, now: datetime,
                  calendar: WorkCalendar, yellow_percent: float, *,
                  limits: Mapping[str, Sequence[catalogue.LimitInForce]] | None = None
                  ) -> None:
    """Stop the clocks `action` meets or ends and start the ones it starts (a new round of
    the step), in the caller's transaction; "create" for a new order.

    A stopped clock gets `met_at` = now whether the step was done (sign) or abandoned
    (return ends the sign clock): the order's events tell which. Idempotent: a second call for
    the same move (same action, same instant) changes nothing. `limits`: the time limits
    in force as the move read them (tickets.in_force); without them they are read here,
    once for every clock the move starts."""
    now = _aware(now, "now")
    if action != "create" and action not in workflow.ACTIONS:
        raise ValueError(f"deadlines: no action {action[:40]!r}")
    # every round of the order at once (plain rows, no ORM objects): the running ones, and
    # each step's last round number
    rounds = session.execute(_ROUNDS, {"order_id": order.id}).all()
    running = {row.step: row for row in rounds if row.met_at is None}
    last_round: dict[str, int] = {}
    for row in rounds:
        last_round[row.step] = max(last_round.get(row.step, 0), row.round)
    stops, starts = _RULES.get(action, ((), ()))
    if order.state in _ENDS_ALL:
        stops, starts = tuple(running), ()
    met = [running[step].id for step in stops if step in running]
    new: list[dict[str, object]] = []
    for step in starts:
        current = running.get(step)
        if current is not None and _stored(current.started_at) == now:
            continue  # this very move already started it
        if current is not None:  # a step runs one round at a time
            met.append(current.id)
        if limits is None:
            limits = catalogue.limits_in_force(session)
        limit = limit_for(session, order, step, limits)
        if limit is None:
            continue
        last_round[step] = last_round.get(step, 0) + 1
        new.append({
            "order_id": order.id, "step": step, "round": last_round[step],
            "clock": limit.clock, "amount": limit.amount, "unit": limit.unit,
            "started_at": now,
            "yellow_at": warning_point(calendar, now, limit.amount, limit.clock,
                                       yellow_percent, limit.unit),
            "due_at": due(calendar, now, limit.amount, limit.clock, limit.unit),
            "extensions": 0, "met_at": None, "warning": "", "escalated_at": None})
    # Core statements: the ORM's unit of work added nothing here but its own cost
    if met:
        session.execute(_MEET, {"ids": sorted(set(met)), "at": now})
    if new:
        session.execute(_START, new)


# the statements of on_transition, built once (building costs more than running them)
_CLOCKS = WorkOrderDeadline.__table__
_ROUNDS = select(_CLOCKS.c.id, _CLOCKS.c.step, _CLOCKS.c.round, _CLOCKS.c.started_at,
                 _CLOCKS.c.met_at).where(_CLOCKS.c.order_id == bindparam("order_id"))
_MEET = update(_CLOCKS).where(_CLOCKS.c.id.in_(bindparam("ids", expanding=True))) \
    .values(met_at=bindparam("at", type_=_CLOCKS.c.met_at.type))
_START = insert(_CLOCKS)


def extend(session: Session, order: WorkOrder, step: str, amount: int, now: datetime,
           calendar: WorkCalendar, yellow_percent: float) -> WorkOrderDeadline:
    """An extension granted (延期): the running round of `step` gets `amount` more in its own
    unit on its own clock (minutes, hours or days, as the round's limit counts). Its `amount`
    becomes the limit in force (original plus extensions), so due and yellow are recomputed
    from the start and a deadline only ever moves later. A warning the new times no longer
    justify is lowered; a new breach warns (and escalates) again.

    One extension is at most the round's original limit (延期不超过原时限): 4 working hours
    can be extended by 1 to 4 working hours at a time, 13 working days by up to 13. A longer
    one is a DeadlineError, refused before any calendar arithmetic; each further extension
    needs its own request and grant."""
    now = _aware(now, "now")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise DeadlineError(f"extension: a whole amount above zero, got {amount!r}")
    # FOR UPDATE (PostgreSQL) so a sweeper waits and then sees the new due time
    row = session.scalar(select(WorkOrderDeadline).where(
        WorkOrderDeadline.order_id == order.id, WorkOrderDeadline.step == step,
        WorkOrderDeadline.met_at.is_(None)).order_by(WorkOrderDeadline.round.desc())
        .limit(1).with_for_update())
    if row is None:
        raise DeadlineError(f"work order {order.case_number}: no {step!r} clock running")
    original = row.amount - row.extended
    if amount > original:
        raise DeadlineError(
            f"extension: at most the {step} clock's original limit at a time, {original} "
            f"{unit_name(row.clock, row.unit)} on {row.clock}, got {amount}")
    started = _stored(row.started_at)
    total = row.amount + amount
    new_due = due(calendar, started, total, row.clock, row.unit)
    old_due = _stored(row.due_at)
    row.amount, row.extended, row.extensions = total, row.extended + amount, row.extensions + 1
    row.due_at = max(new_due, old_due)
    row.yellow_at = warning_point(calendar, started, total, row.clock, yellow_percent,
                                  row.unit)
    level = "red" if row.due_at < now else "yellow" if _stored(row.yellow_at) <= now else ""
    if _LEVELS.index(level) < _LEVELS.index(row.warning or ""):
        row.warning = level
    session.flush()
    return row


# ---------------------------------------------------------------------------------------------
# Warnings

_LEVELS = ("", "yellow", "red")


@dataclass(frozen=True)
class Warning:  # shadows the builtin on purpose: the name the worker uses
    """A clock that crossed a warning in a sweep; `escalate`: it just went red, the caller
    takes the workflow's supervise action (督办)."""

    case_number: str
    step: str
    round: int
    warning: str  # yellow | red
    escalate: bool
    due_at: datetime


def sweep(session: Session, calendar: WorkCalendar | None, now: datetime) -> list[Warning]:
    """Raise the warnings of running clocks: yellow once the yellow point is reached, red
    (with `escalated_at`) once the due time is past. Each change is one conditional UPDATE on
    the old warning, so of two sweepers exactly one reports (and escalates) a change; only
    running clocks of open orders are looked at.

    `calendar` is not consulted: yellow and due times were fixed when each clock started (or
    was extended), so a later edit of the calendar does not move clocks already running."""
    now = _aware(now, "now")
    deadline = WorkOrderDeadline
    open_orders = select(WorkOrder.id).where(WorkOrder.state.in_(workflow.OPEN))
    running = (deadline.met_at.is_(None), deadline.order_id.in_(open_orders))
    reds = session.execute(
        update(deadline)
        .where(*running, deadline.due_at < now, deadline.warning.in_(("", "yellow")))
        .values(warning="red", escalated_at=now)
        .returning(deadline.id)
        .execution_options(synchronize_session="fetch")).scalars().all()
    yellows = session.execute(
        update(deadline)
        .where(*running, deadline.yellow_at <= now, deadline.due_at >= now,
               deadline.warning == "")
        .values(warning="yellow")
        .returning(deadline.id)
        .execution_options(synchronize_session="fetch")).scalars().all()
    changed = {**dict.fromkeys(yellows, "yellow"), **dict.fromkeys(reds, "red")}
    if not changed:
        return []
    rows = session.execute(
        select(deadline.id, deadline.step, deadline.round, deadline.due_at,
               WorkOrder.case_number)
        .join(WorkOrder, WorkOrder.id == deadline.order_id)
        .where(deadline.id.in_(changed))).all()
    alerts = [Warning(r.case_number, r.step, r.round, changed[r.id],
                            changed[r.id] == "red", _stored(r.due_at)) for r in rows]
    return sorted(alerts, key=lambda a: (a.due_at, a.case_number, a.step))


# ---------------------------------------------------------------------------------------------
# Readers


@dataclass(frozen=True)
class Deadline:
    """One round of one step's clock, as the API shows it (datetimes in UTC); `unit` is
    what `amount` counts: minutes, hours or days."""

    case_number: str
    step: str
    round: int
    clock: str
    amount: int
    unit: str
    started_at: datetime
    yellow_at: datetime
    due_at: datetime
    extensions: int
    met_at: datetime | None
    warning: str
    escalated_at: datetime | None

    @property
    def on_time(self) -> bool | None:
        """None while running; otherwise whether it stopped by the due time."""
        return None if self.met_at is None else self.met_at <= self.due_at


def _view(row: WorkOrderDeadline, case_number: str) -> Deadline:
    return Deadline(case_number, row.step, row.round, row.clock, row.amount,
                    unit_name(row.clock, row.unit),
                    _stored(row.started_at), _stored(row.yellow_at), _stored(row.due_at),
                    row.extensions, _stored(row.met_at) if row.met_at else None,
                    row.warning, _stored(row.escalated_at) if row.escalated_at else None)


def open_deadlines(session: Session, order_id: int) -> list[Deadline]:
    """The clocks running on an order, the soonest due first."""
    rows = session.execute(
        select(WorkOrderDeadline, WorkOrder.case_number)
        .join(WorkOrder, WorkOrder.id == WorkOrderDeadline.order_id)
        .where(WorkOrderDeadline.order_id == order_id, WorkOrderDeadline.met_at.is_(None))
        .order_by(WorkOrderDeadline.due_at, WorkOrderDeadline.id)).all()
    return [_view(row, number) for row, number in rows]


def deadlines(session: Session, case_number: str) -> list[Deadline]:
    """Every clock an order has had, in the order they started; DeadlineError if there is no
    such order."""
    order_id = session.scalar(select(WorkOrder.id).where(WorkOrder.case_number == case_number))
    if order_id is None:
        raise DeadlineError(f"no work order {case_number[:20]!r}")
    rows = session.scalars(select(WorkOrderDeadline).where(
        WorkOrderDeadline.order_id == order_id).order_by(WorkOrderDeadline.started_at,
                                                         WorkOrderDeadline.id)).all()
    return [_view(row, case_number) for row in rows]
