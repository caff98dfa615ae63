"""Time limits (时限) on the steps of a work order: the clock math, and the deadlines kept
for each order.

Clock kinds (计时方式), `amount` in hours for the first two and in days for the others:

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

The yellow warning (黄灯预警) falls when `percent` % of the limit is used, measured on the
limit's own clock: 80 % of 4 working hours is after 3.2 working hours; 80 % of 13 working
days is after 10.4 working days of working time. Times are exact to the microsecond.
Datetimes in and out are timezone-aware; results are in UTC, the working clock is read in
the calendar's zone.

A deadline row (`WorkOrderDeadline`) is one round of one step's clock on one order:
`on_transition` starts and stops them as the order moves, `extend` moves one later (延期),
`sweep` raises the yellow and red warnings and says which reds need supervision (督办).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from fractions import Fraction

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from hotline.errors import HotlineError
from tickets import workflow
from tickets.models import TimeLimit, WorkOrder, WorkOrderDeadline
from tickets.workcalendar import WorkCalendar

CLOCKS = ("continuous", "working_hours", "working_days", "calendar_days")
_NATURAL = ("continuous", "calendar_days")

# Steps of the case loop that carry a time limit.
STEPS = ("verify", "open", "dispatch", "sign", "handle", "check", "close", "complete")

_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)
_MAX_IDLE_DAYS = 400  # more than a year without working time: a broken calendar, not a gap


class DeadlineError(HotlineError):
    """A deadline operation that cannot be done (no such clock running, a bad amount)."""


# ---------------------------------------------------------------------------------------------
# Clock math


def _aware(moment: datetime, name: str = "start") -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name}: a timezone-aware datetime is needed, got {moment!r}")
    return moment.astimezone(UTC)


def _stored(moment: datetime) -> datetime:
    """A datetime read back from the database: SQLite returns UTC without its zone."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _spans(calendar: WorkCalendar) -> tuple[tuple[timedelta, timedelta], ...]:
    """Working spans as offsets from local midnight, sorted and merged; the parser's 24:00
    (time.max) is the end of the day."""
    def offset(t: time) -> timedelta:
        if t == time.max:
            return _DAY
        return timedelta(hours=t.hour, minutes=t.minute, seconds=t.second,
                         microseconds=t.microsecond)

    merged: list[tuple[timedelta, timedelta]] = []
    for start, end in sorted((offset(s), offset(e)) for s, e in calendar.hours):
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
    return [((midnight + s).replace(tzinfo=calendar.timezone).astimezone(UTC),
             (midnight + e).replace(tzinfo=calendar.timezone).astimezone(UTC))
            for s, e in spans]


def _add_working(calendar: WorkCalendar, start: datetime, length: timedelta) -> datetime:
    """The instant when `length` of working time has passed since `start`."""
    if length <= timedelta():
        return start
    spans = _spans(calendar)
    if not spans:
        raise ValueError("calendar: no working hours configured")
    remaining = length
    day = start.astimezone(calendar.timezone).date()
    idle = 0
    while idle <= _MAX_IDLE_DAYS:
        periods = _periods(calendar, day, spans)
        idle = 0 if periods else idle + 1
        for begin, end in periods:
            if end <= start:
                continue
            begin = max(begin, start)
            if remaining <= end - begin:
                return begin + remaining
            remaining -= end - begin
        day += _DAY
    raise ValueError(f"calendar: no working day within {_MAX_IDLE_DAYS} days after {day}")


def working_time(calendar: WorkCalendar, start: datetime, end: datetime) -> timedelta:
    """Working time (工作时) between two instants; nothing if `end` is not after `start`."""
    start, end = _aware(start), _aware(end, "end")
    if end <= start:
        return timedelta()
    spans = _spans(calendar)
    total = timedelta()
    day = start.astimezone(calendar.timezone).date()
    last = end.astimezone(calendar.timezone).date()
    while day <= last:
        for begin, finish in _periods(calendar, day, spans):
            overlap = min(finish, end) - max(begin, start)
            if overlap > timedelta():
                total += overlap
        day += _DAY
    return total


def _length(calendar: WorkCalendar, amount: float, clock: str) -> timedelta:
    """The limit on its own clock: natural time, or working time."""
    if clock not in CLOCKS:
        raise ValueError(f"clock: one of {', '.join(CLOCKS)}, got {clock!r}")
    if amount < 0:
        raise ValueError(f"amount: not below zero, got {amount!r}")
    unit = {"continuous": _HOUR, "working_hours": _HOUR, "calendar_days": _DAY,
            "working_days": working_day_length(calendar)}[clock]
    return _scale(unit, Fraction(amount))


def _scale(length: timedelta, factor: Fraction) -> timedelta:
    return timedelta(microseconds=round(factor * (length // timedelta(microseconds=1))))


def _advance(calendar: WorkCalendar, start: datetime, length: timedelta, clock: str
             ) -> datetime:
    if clock in _NATURAL:
        return start + length
    return _add_working(calendar, start, length)


def due(calendar: WorkCalendar, start: datetime, amount: float, clock: str) -> datetime:
    """When a limit of `amount` on `clock` started at `start` runs out (UTC)."""
    start = _aware(start)
    return _advance(calendar, start, _length(calendar, amount, clock), clock)


def warning_point(calendar: WorkCalendar, start: datetime, amount: float, clock: str,
                  percent: float) -> datetime:
    """When `percent` % of the limit is used, on the limit's own clock (the yellow warning)."""
    if not 0 <= percent <= 100:
        raise ValueError(f"percent: 0-100, got {percent!r}")
    start = _aware(start)
    part = _scale(_length(calendar, amount, clock), Fraction(percent) / 100)
    return _advance(calendar, start, part, clock)


def elapsed_fraction(calendar: WorkCalendar, start: datetime, amount: float, clock: str,
                     now: datetime) -> float:
    """How much of the limit is used at `now`: 0 before the start, 1 at the due time, above 1
    when overdue (1.5 = half the limit again past due)."""
    start, now = _aware(start), _aware(now, "now")
    length = _length(calendar, amount, clock)
    used = now - start if clock in _NATURAL else working_time(calendar, start, now)
    if length <= timedelta():
        return 1.0 if now >= start else 0.0
    return max(used, timedelta()) / length


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


def limit_for(session: Session, order: WorkOrder, step: str) -> TimeLimit | None:
    """The most specific time limit for `step` of `order`: the longest category prefix
    first ("" matches all), then an exact appeal type over "", then an exact urgency over "".
    None: the step has no limit for this order.

    Component prefixes are stored with a "C" in front (see tickets.catalogue), since event
    and component codes overlap; the order's category is put in the same form to match."""
    category = order.category_code or ""
    if category and order.category_kind == "component":
        category = "C" + category
    rows = session.scalars(select(TimeLimit).where(
        TimeLimit.step == step,
        TimeLimit.appeal_type.in_(("", order.appeal_type)),
        TimeLimit.urgency.in_(("", order.urgency or "")))).all()
    matching = [r for r in rows if category.startswith(r.category_prefix or "")]
    if not matching:
        return None
    return max(matching, key=lambda r: (len(r.category_prefix or ""), r.appeal_type != "",
                                        r.urgency != ""))


def on_transition(session: Session, order: WorkOrder, action: str, now: datetime,
                  calendar: WorkCalendar, yellow_percent: float) -> None:
    """Stop the clocks `action` meets or ends and start the ones it starts (a new round of
    the step), in the caller's transaction; "create" for a new order.

    A stopped clock gets `met_at` = now whether the step was done (sign) or abandoned
    (return ends the sign clock): the order's events tell which. Idempotent: a second call for
    the same move (same action, same instant) changes nothing."""
    now = _aware(now, "now")
    if action != "create" and action not in workflow.ACTIONS:
        raise ValueError(f"deadlines: no action {action[:40]!r}")
    running = {row.step: row for row in session.scalars(select(WorkOrderDeadline).where(
        WorkOrderDeadline.order_id == order.id, WorkOrderDeadline.met_at.is_(None)))}
    stops, starts = _RULES.get(action, ((), ()))
    if order.state in _ENDS_ALL:
        stops, starts = tuple(running), ()
    for step in stops:
        if step in running:
            running[step].met_at = now
    for step in starts:
        current = running.get(step)
        if current is not None and _stored(current.started_at) == now:
            continue  # this very move already started it
        if current is not None:  # a step runs one round at a time
            current.met_at = now
        limit = limit_for(session, order, step)
        if limit is None:
            continue
        last = session.scalar(select(func.max(WorkOrderDeadline.round)).where(
            WorkOrderDeadline.order_id == order.id, WorkOrderDeadline.step == step)) or 0
        session.add(WorkOrderDeadline(
            order_id=order.id, step=step, round=last + 1, clock=limit.clock,
            amount=limit.amount, started_at=now,
            yellow_at=warning_point(calendar, now, limit.amount, limit.clock, yellow_percent),
            due_at=due(calendar, now, limit.amount, limit.clock), extensions=0, met_at=None,
            warning="", escalated_at=None))
    session.flush()


def extend(session: Session, order: WorkOrder, step: str, amount: int, now: datetime,
           calendar: WorkCalendar, yellow_percent: float) -> WorkOrderDeadline:
    """An extension granted (延期): the running round of `step` gets `amount` more on its own
    clock. Its `amount` becomes the limit in force (original plus extensions), so due and
    yellow are recomputed from the start and a deadline only ever moves later. A warning the
    new times no longer justify is lowered; a new breach warns (and escalates) again."""
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
    started = _stored(row.started_at)
    total = row.amount + amount
    new_due = due(calendar, started, total, row.clock)
    old_due = _stored(row.due_at)
    row.amount, row.extensions = total, row.extensions + 1
    row.due_at = max(new_due, old_due)
    row.yellow_at = warning_point(calendar, started, total, row.clock, yellow_percent)
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
    """One round of one step's clock, as the API shows it (datetimes in UTC)."""

    case_number: str
    step: str
    round: int
    clock: str
    amount: int
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
