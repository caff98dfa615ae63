"""Order measures (工单指标), the combined hotline report (热线报表) and the CJ/T 292
evaluation (考核评价) of staff, departments and regions, from stored orders, events,
deadlines and surveys.

Conventions shared by everything here:

- A window is [start, end) of time-zone aware datetimes, compared in UTC. Rates are
  fractions rounded to 4 digits (0.6667), None when there was nothing to divide by.
- Counting is done by SQL aggregates (count over CASE, EXISTS and correlated subqueries,
  no dialect functions); ratios, scores and time differences are taken in Python, so SQLite
  and PostgreSQL give the same figures.
- A deadline row's `met_at` is when its clock stopped, whether the step was done or
  abandoned (tickets.deadlines: a return ends the handling clock, a void ends them all). The
  event that stopped it is the order's latest event at or before `met_at`; the step was done
  only if that event is one of the step's `DONE_ACTIONS`, and the event's actor did it.
  Abandoned rounds count nowhere.
- A deadline is due in a window if it was done in it (by `met_at`), or if it fell due in it
  (`due_at` in [start, min(end, now))) and was still not met at the window's end; each
  window is judged as of its end, so a past month's figures do not move when late work is
  finished later. On time: `met_at <= due_at`.
- Reports and the evaluation read the rollups (tickets.rollups) for a window of whole UTC
  hours (every local day, week and month of a whole-hour time zone): the month and day rows
  of the months and days whole inside it, the hour rows of the rest; the part of the last
  hour before `now` that deadlines fall due in is read from the deadlines. The orders
  changed since the rollups were last folded are folded in before a report reads. A window
  not of whole hours, or `raw=True`, computes everything from the events: the reference the
  rollups are tested and benchmarked against.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import wraps
from typing import Any, Concatenate, ParamSpec, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import and_, case, exists, false, func, literal_column, or_, select
from sqlalchemy.orm import Session, aliased

from core.config import Calendar, Hotline, Settings
from telephony import surge
from telephony.measures import (
    DEFAULT_SERVICE_SECONDS,
    CallMeasures,
    MeasureError,
    call_measures,
    call_measures_tiled,
    check_window,
    plain,
    ratio,
    utc,
)
from telephony.surge import SurgeCallMeasures
from tickets import rollups, workflow
from tickets.models import OrderRollup, Survey, WorkOrder, WorkOrderDeadline, WorkOrderEvent
from tickets.rollups import (
    CHECK_DISPATCH_LIMIT,
    DONE_ACTIONS,
    FIELD_CHANNEL,
    REWORK_ACTIONS,
    SUPERVISOR_AREA_ACTIONS,
    TASK_LIMITS,
    VERIFY_DISPATCH_LIMIT,
    covering_all,
    hour_key,
    hour_of,
)

P = ParamSpec("P")
R = TypeVar("R")


def _settled(report: Callable[Concatenate[Session, P], R]) -> Callable[Concatenate[Session, P], R]:
    """A report that reads the order rollups folds the orders changed since into them
    first (tickets.rollups.settle): it reads them exact."""
    @wraps(report)
    def settled(session: Session, *args: P.args, **kwargs: P.kwargs) -> R:
        rollups.settle(session)
        return report(session, *args, **kwargs)
    return settled


# The settings' defaults (core.config), for reports asked for without the settings.
DEFAULT_TIMEZONE = Calendar().timezone
DEFAULT_REPEAT_LOOKBACK = timedelta(hours=Hotline().repeat_window_hours)
BUCKET_UNITS = ("day", "week", "month")
MAX_BUCKETS = 1000

# --- order measures ---------------------------------------------------------------------

# First-call resolution (首呼解决率) is judged on the appeal types an operator can settle on
# the call (an enquiry answered, a suggestion or praise recorded); complaints, reports and
# help need the field. The rate over all phone orders is given beside it.
FCR_APPEAL_TYPES = ("enquiry", "suggestion", "praise")
# Orders that never became work of their own (void: out of scope; merge: a repeat report).
NOT_COUNTED_STATES = ("voided", "merged")
SATISFIED_MAX_RATING = 3  # 1 非常满意, 2 满意, 3 基本满意 count as satisfied
RATINGS = (1, 2, 3, 4, 5)
# REWORK_ACTIONS (tickets.rollups): each sends the order back to the department and adds
# one to WorkOrder.rework_count: 返工 (failed check), 不满意重办 (reopened after a
# dissatisfied callback).

# Service targets (GB/T 33358 and local rules; verify locally).
TARGETS = {"answer_rate": 0.95, "service_level": 0.80, "satisfaction_rate": 0.85}

# --- evaluation -------------------------------------------------------------------------

# DONE_ACTIONS (tickets.rollups): which actions complete a step; any other action that
# stopped its clock abandoned it.
# Orders the operator keys in from a call; web/Open311 orders arrive by themselves and
# field orders are supervisors' reports (their "create" event is recorded as an operator's).
OPERATOR_INTAKE_CHANNELS = ("phone",)
# Sending a task to a field supervisor (核实派遣 / 核查派遣) has no clock of its own in
# tickets.deadlines, so it is timed from the event that made it possible (the order entering
# intake; the department's feedback) to the request: VERIFY_DISPATCH_LIMIT and
# CHECK_DISPATCH_LIMIT (tickets.rollups, 10 minutes). Verify locally.

OPERATOR_WEIGHTS = {"count": 0.25, "on_time_verify_dispatch": 0.40,
                    "on_time_check_dispatch": 0.35}
SUPERVISOR_WEIGHTS = {"valid_report": 0.40, "missed_report": 0.20, "on_time_verify": 0.20,
                      "on_time_check": 0.20}
SHIFT_CHIEF_WEIGHTS = {"on_time_open": 0.25, "accurate_open": 0.40, "on_time_close": 0.35}
DISPATCHER_WEIGHTS = {"count": 0.20, "on_time_dispatch": 0.40, "accurate_dispatch": 0.40}
AREA_WEIGHTS = {"count": 0.10, "closing": 0.30, "on_time_handling": 0.30, "rework": 0.30}
REGION_LEVELS = {"county": 6, "street": 9}  # grid-code prefixes: 6-digit county, +3 street
STREET_WIDTH = max(REGION_LEVELS.values())
GRADES = ((90.0, "A"), (75.0, "B"), (60.0, "C"), (40.0, "D"))  # below the last: E
SCORE_DIGITS = 2


# ---------------------------------------------------------------------------------------
# Buckets


@dataclass(frozen=True)
class Bucket:
    """One reporting period: `label` names it in the centre's time zone."""

    label: str
    start: datetime
    end: datetime


def _zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise MeasureError(f"timezone: no time zone {timezone[:60]!r}") from None


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), zone).astimezone(UTC)


def _next_period(day: date, unit: str) -> date:
    if unit == "day":
        return day + timedelta(days=1)
    if unit == "week":
        return day + timedelta(days=7)
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _label(day: date, unit: str) -> str:
    if unit == "day":
        return day.isoformat()
    if unit == "week":
        iso = day.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    return f"{day.year}-{day.month:02d}"


def buckets(start: datetime, end: datetime, unit: str | timedelta | None = "day",
            timezone: str = DEFAULT_TIMEZONE) -> list[Bucket]:
    """[start, end) cut into periods of the centre's time zone: "day", "week" (ISO, from
    Monday 00:00, labelled 2026-W48) or "month", clipped to the window at both ends; a
    timedelta cuts equal periods from `start` (shifts, hours); None keeps the window whole.

    Boundaries are local midnights turned into UTC here, so the databases only ever compare
    timestamps: a call at 07:30 Beijing time is in that Beijing day although it is the
    previous day in UTC."""
    start, end = check_window(start, end)
    zone = _zone(timezone)

    def local(moment: datetime) -> str:
        return moment.astimezone(zone).isoformat(timespec="minutes")

    if unit is None:
        return [Bucket(f"{local(start)}/{local(end)}", start, end)]
    out: list[Bucket] = []
    if isinstance(unit, timedelta):
        if unit <= timedelta():
            raise MeasureError(f"bucket: a period above zero, got {unit!r}")
        lo = start
        while lo < end and len(out) <= MAX_BUCKETS:
            out.append(Bucket(local(lo), lo, min(lo + unit, end)))
            lo += unit
    elif unit in BUCKET_UNITS:
        day = start.astimezone(zone).date()
        if unit == "week":
            day -= timedelta(days=day.weekday())
        elif unit == "month":
            day = day.replace(day=1)
        while _midnight(day, zone) < end and len(out) <= MAX_BUCKETS:
            following = _next_period(day, unit)
            lo, hi = max(_midnight(day, zone), start), min(_midnight(following, zone), end)
            if lo < hi:
                out.append(Bucket(_label(day, unit), lo, hi))
            day = following
    else:
        raise MeasureError(f"bucket: one of {', '.join(BUCKET_UNITS)}, a timedelta or None; "
                           f"got {unit!r}")
    if len(out) > MAX_BUCKETS:
        raise MeasureError(f"bucket: more than {MAX_BUCKETS} periods; take a longer one")
    return out


# ---------------------------------------------------------------------------------------
# Order measures


@dataclass(frozen=True)
class OrderMeasures:
    """Work-order measures of one window.

    - orders created (受理) in the window, by state, appeal type and channel.
    - first-call resolution (首呼解决率): phone orders created in the window and resolved on
      the call / phone orders of `FCR_APPEAL_TYPES`; `fcr_rate_all` divides by all phone
      orders. Voided and merged orders count in neither.
    - on-time completion (按时办结率): `complete` deadlines done on time / due (done +
      overdue-unmet), as the module docstring says.
    - callback rate (回访率): of the orders closed (结案, `closed_at`) in the window through the
      full loop and with a phone number, those with an answered survey (any round, answered
      at any time) / them. First-call answers get no callback and an anonymous citizen
      cannot be called, so neither is due one; `orders_closed` counts every closure.
    - satisfaction (满意率): surveys answered in the window rated 1-3 / rated; the mean rating
      (1 best .. 5 worst) and the count of each rating.
    - rework count (返工): `REWORK_ACTIONS` events in the window.
    """

    start: datetime
    end: datetime
    orders_created: int
    by_state: dict[str, int]
    by_appeal_type: dict[str, int]
    by_channel: dict[str, int]
    phone_orders: int
    phone_resolved_on_call: int
    fcr_rate_all: float | None
    fcr_answerable_orders: int
    fcr_resolved_on_call: int
    fcr_rate: float | None
    complete_done: int
    complete_on_time: int
    complete_overdue_unmet: int
    complete_due: int
    on_time_completion_rate: float | None
    orders_closed: int
    callbacks_due: int
    callbacks_reached: int
    callback_rate: float | None
    rated: int
    satisfied: int
    satisfaction_rate: float | None
    mean_rating: float | None
    ratings: dict[int, int]
    rework_count: int

    def as_dict(self) -> dict[str, Any]:
        return plain(self)  # type: ignore[no-any-return]


def _at_in(column: Any, start: datetime, end: datetime) -> Any:
    return and_(column >= start, column < end)


def _deadline_due(start: datetime, end: datetime, cutoff: datetime,
                  d: Any = WorkOrderDeadline) -> tuple[Any, Any]:
    """(clock stopped in the window, fell due in the window and still unmet at its end)."""
    stopped = and_(d.met_at.is_not(None), d.met_at >= start, d.met_at < end)
    overdue = and_(d.due_at >= start, d.due_at < cutoff,
                   or_(d.met_at.is_(None), d.met_at >= end))
    return stopped, overdue


def _stopped_by(d: Any = WorkOrderDeadline) -> tuple[Any, Any]:
    """Scalar subqueries: the action and the actor of the event that stopped `d`'s clock."""
    e = WorkOrderEvent

    def latest(column: Any) -> Any:
        return (select(column).where(e.order_id == d.order_id, e.at <= d.met_at)
                .order_by(e.at.desc(), e.seq.desc()).limit(1).correlate(d).scalar_subquery())
    return latest(e.action), latest(e.actor)


def _done(step_column: Any, action_column: Any, steps: Iterable[str]) -> Any:
    return or_(*(and_(step_column == step, action_column.in_(DONE_ACTIONS[step]))
                 for step in steps))


def _rolled(start: datetime, end: datetime, raw: bool) -> bool:
    """Whether the rollups answer for [start, end): whole UTC hours, not asked raw."""
    return not raw and hour_of(start) == start and hour_of(end) == end


def _rows_of(windows: Iterable[tuple[datetime, datetime]]) -> Any:
    """The rollup rows that add up to `windows` (contiguous, of whole UTC hours): their
    months, days and hours (tickets.rollups.covering)."""
    r = OrderRollup
    return or_(false(), *(and_(r.grain == grain, r.hour >= lo, r.hour < hi)
                          for grain, lo, hi in covering_all(windows)))


def _sums(session: Session, figure: str, start: datetime, end: datetime, *keys: Any,
          where: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    """(keys..., n) of `figure` over [start, end), without the zero sums an order's changes
    leave behind."""
    r = OrderRollup
    # on the connection: through the ORM, each of a month's ~20,000 grid rows cost as much
    # again as reading it
    rows = session.connection().execute(
        select(*keys, func.sum(r.n)).where(r.figure == figure, _rows_of([(start, end)]),
                                           *where).group_by(*keys)).all()
    return [(*row[:-1], int(row[-1])) for row in rows if row[-1]]


def _area_key(column: Any, expression: Any) -> Any:
    """`expression` as the area figures group it: a grid code cut to its street (the finest
    region level; a county's figures are its streets' added up), a department as it is. The
    width is inline SQL, so the SELECT and the GROUP BY render the very same expression."""
    if column is not WorkOrder.grid_code:
        return expression
    return func.substr(expression, literal_column("1"), literal_column(str(STREET_WIDTH)))


def _overdue_rolled(session: Session, step: str, start: datetime, end: datetime,
                    cutoff: datetime, column: Any = None) -> Counter[Any]:
    """`step` rounds that fell due in [start, cutoff) and were unmet at `end`, per value of
    the order `column` (None: all under None): the whole hours from the rollups (`unmet`
    and `late` by due hour), the rest of the hour `cutoff` falls in from the deadlines."""
    r, d = OrderRollup, WorkOrderDeadline
    whole = max(start, hour_of(cutoff))
    key = {None: None, WorkOrder.department_code: r.k2, WorkOrder.grid_code: r.k3}[column]
    keys = () if key is None else (_area_key(column, key),)
    out: Counter[Any] = Counter()
    for row in (_sums(session, "unmet", start, whole, *keys, where=[r.k1 == step])
                + _sums(session, "late", start, whole, *keys,
                        where=[r.k1 == step, r.k4 >= hour_key(end)])):
        out[row[0] if keys else None] += row[-1]
    if whole < cutoff:
        area = None if column is None else _area_key(column, column)
        rest = (select(*(() if area is None else (area,)), func.count())
                .select_from(d).join(WorkOrder, WorkOrder.id == d.order_id)
                .where(d.step == step, d.due_at >= whole, d.due_at < cutoff,
                       or_(d.met_at.is_(None), d.met_at >= end)))
        if area is not None:
            rest = rest.group_by(area)
        for row in session.execute(rest):
            if row[-1]:
                out[row[0] if column is not None else None] += int(row[-1])
    return out


def _order_counts_rolled(session: Session, start: datetime, end: datetime,
                         cutoff: datetime) -> dict[str, Any]:
    r = OrderRollup
    created = [(state, appeal, channel, resolved == "1", n) for state, appeal, channel,
               resolved, n in _sums(session, "created", start, end, r.k1, r.k2, r.k3, r.k4)]
    done = _sums(session, "complete_done", start, end, r.k1)
    closed = _sums(session, "closed", start, end, r.k1, r.k2)
    return {
        "created": created,
        "complete": (sum(n for _, n in done), sum(n for ok, n in done if ok == "1"),
                     _overdue_rolled(session, "complete", start, end, cutoff)[None]),
        "closed": (sum(n for *_, n in closed), sum(n for due, _, n in closed if due == "1"),
                   sum(n for _, reached, n in closed if reached == "1")),
        "ratings": [(int(k), n) for k, n in _sums(session, "rating", start, end, r.k1)],
        "reworks": sum(n for (n,) in _sums(session, "rework", start, end)),
    }


@_settled
def order_measures(session: Session, start: datetime, end: datetime, *,
                   now: datetime, raw: bool = False) -> OrderMeasures:
    """The work-order measures of [start, end); `now` bounds what can be overdue yet.
    From the rollups, or from the events with `raw` (see the module docstring)."""
    start, end = check_window(start, end)
    cutoff = min(end, utc(now))
    counts = (_order_counts_rolled(session, start, end, cutoff) if _rolled(start, end, raw)
              else _order_counts_raw(session, start, end, cutoff))
    return _order_measures(start, end, counts)


def _order_measures(start: datetime, end: datetime, counts: Mapping[str, Any]
                    ) -> OrderMeasures:
    by_state: Counter[str] = Counter()
    by_appeal: Counter[str] = Counter()
    by_channel: Counter[str] = Counter()
    phone = phone_fcr = answerable = answerable_fcr = 0
    for state, appeal, channel, resolved, count in counts["created"]:
        by_state[state] += count
        by_appeal[appeal] += count
        by_channel[channel] += count
        if channel != "phone" or state in NOT_COUNTED_STATES:
            continue
        phone += count
        phone_fcr += count if resolved else 0
        if appeal in FCR_APPEAL_TYPES:
            answerable += count
            answerable_fcr += count if resolved else 0
    done_n, on_time, overdue_n = counts["complete"]
    closed, due_callbacks, reached_n = counts["closed"]
    ratings = dict.fromkeys(RATINGS, 0)
    for rating, count in counts["ratings"]:
        ratings[int(rating)] += int(count)
    rated = sum(ratings.values())
    satisfied = sum(n for r, n in ratings.items() if r <= SATISFIED_MAX_RATING)
    reworks = counts["reworks"]

    return OrderMeasures(
        start=start, end=end, orders_created=sum(by_state.values()),
        by_state=dict(sorted(by_state.items())), by_appeal_type=dict(sorted(by_appeal.items())),
        by_channel=dict(sorted(by_channel.items())),
        phone_orders=phone, phone_resolved_on_call=phone_fcr,
        fcr_rate_all=ratio(phone_fcr, phone),
        fcr_answerable_orders=answerable, fcr_resolved_on_call=answerable_fcr,
        fcr_rate=ratio(answerable_fcr, answerable),
        complete_done=int(done_n), complete_on_time=int(on_time),
        complete_overdue_unmet=int(overdue_n), complete_due=int(done_n) + int(overdue_n),
        on_time_completion_rate=ratio(on_time, int(done_n) + int(overdue_n)),
        orders_closed=int(closed), callbacks_due=int(due_callbacks),
        callbacks_reached=int(reached_n), callback_rate=ratio(reached_n, due_callbacks),
        rated=rated, satisfied=satisfied, satisfaction_rate=ratio(satisfied, rated),
        mean_rating=ratio(sum(r * n for r, n in ratings.items()), rated, 2),
        ratings=ratings, rework_count=int(reworks),
    )


@_settled
def order_measures_tiled(session: Session, tiles: Sequence[tuple[datetime, datetime]], *,
                         now: datetime) -> tuple[OrderMeasures, list[OrderMeasures]]:
    """The measures of the whole of `tiles` (contiguous whole-hour windows, in order) and of
    each tile, from the rollups with one statement per figure for them all (a report's
    order part): each rollup row (an hour, or a day or month whole inside one tile) is put
    in its tile by a CASE on its start."""
    r, d = OrderRollup, WorkOrderDeadline
    start, end = tiles[0][0], tiles[-1][1]
    now = utc(now)
    tile = case(*((r.hour < hi, i) for i, (_lo, hi) in enumerate(tiles)), else_=len(tiles))
    n = len(tiles)

    def sums(figure: str, *keys: Any, upto: datetime = end, where: Iterable[Any] = ()
             ) -> list[tuple[Any, ...]]:
        rows = session.connection().execute(
            select(tile, *keys, func.sum(r.n))
            .where(r.figure == figure, _rows_of((lo, min(hi, upto)) for lo, hi in tiles
                                                if lo < upto), *where)
            .group_by(tile, *keys)).all()
        return [(int(row[0]), *row[1:-1], int(row[-1])) for row in rows if row[-1]]

    counts: list[dict[str, Any]] = [
        {"created": [], "complete": [0, 0, 0], "closed": [0, 0, 0], "ratings": [],
         "reworks": 0} for _ in range(n + 1)]  # the tiles, then the whole
    whole = counts[n]
    for i, state, appeal, channel, resolved, k in sums("created", r.k1, r.k2, r.k3, r.k4):
        for c in (counts[i], whole):
            c["created"].append((state, appeal, channel, resolved == "1", k))
    for i, ok, k in sums("complete_done", r.k1):
        for c in (counts[i], whole):
            c["complete"][0] += k
            c["complete"][1] += k if ok == "1" else 0
    for i, due, reached, k in sums("closed", r.k1, r.k2):
        for c in (counts[i], whole):
            c["closed"][0] += k
            c["closed"][1] += k if due == "1" else 0
            c["closed"][2] += k if reached == "1" else 0
    for i, rating, k in sums("rating", r.k1):
        for c in (counts[i], whole):
            c["ratings"].append((int(rating), k))
    for i, k in sums("rework"):
        counts[i]["reworks"] += k
        whole["reworks"] += k
    # overdue: due in [tile start, min(tile end, now)), unmet at the tile's (whole's) end
    due_upto = max(start, min(end, hour_of(now)))
    for i, k in sums("unmet", upto=due_upto, where=[r.k1 == "complete"]):
        counts[i]["complete"][2] += k
        whole["complete"][2] += k
    ends, whole_end = [hour_key(hi) for _lo, hi in tiles], hour_key(end)  # once, not per row
    for i, met, k in sums("late", r.k4, upto=due_upto, where=[r.k1 == "complete"]):
        counts[i]["complete"][2] += k if met >= ends[i] else 0
        whole["complete"][2] += k if met >= whole_end else 0
    if start <= due_upto < now and due_upto < end:  # the hour `now` is in, from the deadlines
        i = next(j for j, (lo, hi) in enumerate(tiles) if lo <= due_upto < hi)
        for c, until in ((counts[i], tiles[i][1]), (whole, end)):
            c["complete"][2] += session.scalar(
                select(func.count()).select_from(d).where(
                    d.step == "complete", d.due_at >= due_upto, d.due_at < now,
                    or_(d.met_at.is_(None), d.met_at >= until))) or 0
    measures = [_order_measures(lo, hi, c) for (lo, hi), c in zip(tiles, counts, strict=False)]
    return _order_measures(start, end, whole), measures


def _order_counts_raw(session: Session, start: datetime, end: datetime,
                      cutoff: datetime) -> dict[str, Any]:
    """order_measures' counts from the orders, events, deadlines and surveys."""
    o, d, e = WorkOrder, WorkOrderDeadline, WorkOrderEvent

    created = session.execute(
        select(o.state, o.appeal_type, o.channel, o.first_call_resolved, func.count())
        .where(_at_in(o.created_at, start, end))
        .group_by(o.state, o.appeal_type, o.channel, o.first_call_resolved)).all()
    stopped, overdue = _deadline_due(start, end, cutoff)
    action, _actor = _stopped_by()
    clocks = select(d.due_at, d.met_at, action.label("action"), overdue.label("overdue")) \
        .where(d.step == "complete", or_(stopped, overdue)).subquery()
    done = and_(clocks.c.met_at >= start, clocks.c.met_at < end,
                clocks.c.action.in_(DONE_ACTIONS["complete"]))
    done_n, on_time, overdue_n = session.execute(select(
        func.count(case((done, 1))),
        func.count(case((and_(done, clocks.c.met_at <= clocks.c.due_at), 1))),
        func.count(case((clocks.c.overdue, 1))))).one()

    reached = exists().where(Survey.order_id == o.id, Survey.answered_at.is_not(None))
    callback_due = and_(o.first_call_resolved.is_(False), o.citizen_phone != "")
    closed, due_callbacks, reached_n = session.execute(select(
        func.count(),
        func.count(case((callback_due, 1))),
        func.count(case((and_(callback_due, reached), 1))),
    ).select_from(o).where(_at_in(o.closed_at, start, end))).one()

    ratings = session.execute(
        select(Survey.rating, func.count())
        .where(_at_in(Survey.answered_at, start, end), Survey.rating.is_not(None))
        .group_by(Survey.rating)).all()
    reworks = session.scalar(select(func.count()).select_from(e).where(
        e.action.in_(REWORK_ACTIONS), _at_in(e.at, start, end))) or 0
    return {"created": [tuple(row) for row in created],
            "complete": (int(done_n), int(on_time), int(overdue_n)),
            "closed": (int(closed), int(due_callbacks), int(reached_n)),
            "ratings": [(int(r), int(n)) for r, n in ratings], "reworks": int(reworks)}


# ---------------------------------------------------------------------------------------
# The hotline report


@dataclass(frozen=True)
class ReportBucket:
    """One period's figures. `calls` counts every citizen's call, those of a surge
    (突发事件模式) included; `surge` counts the surge's calls apart (telephony.surge), so that
    `calls` less `surge` are the ordinary days' calls."""

    label: str
    start: datetime
    end: datetime
    calls: CallMeasures
    orders: OrderMeasures
    surge: SurgeCallMeasures

    def as_dict(self) -> dict[str, Any]:
        return plain(self)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class HotlineReport:
    """Call and order measures of a window, whole (`total`) and per bucket, and how the
    whole window stands against `TARGETS` (None: no figure to judge)."""

    start: datetime
    end: datetime
    timezone: str
    bucket: str
    total: ReportBucket
    buckets: tuple[ReportBucket, ...]
    targets: dict[str, dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return plain(self)  # type: ignore[no-any-return]


@_settled
def hotline_report(session: Session, start: datetime, end: datetime, *,
                   bucket: str | timedelta | None = "day",
                   timezone: str = DEFAULT_TIMEZONE, queue: str | None = None,
                   service_seconds: float = DEFAULT_SERVICE_SECONDS,
                   repeat_lookback: timedelta = DEFAULT_REPEAT_LOOKBACK,
                   now: datetime, raw: bool = False) -> HotlineReport:
    """The hotline report (热线报表) of [start, end): telephony.measures' call measures (of
    `queue`, or all; surge calls included), the surge calls apart (telephony.surge) and
    the order measures, for the window and per `bucket` of the centre's time zone (see
    `buckets`). The buckets are bounded by instants computed here, so both databases cut
    the days the same way; as they tile the window, each half reads them all in a few
    statements grouped by bucket (`call_measures_tiled`, `order_measures_tiled` for
    buckets of whole hours), with the figures of reading each bucket on its own."""

    periods = buckets(start, end, bucket, timezone)
    start, end = check_window(start, end)
    tiles = [(p.start, p.end) for p in periods]
    orders: dict[tuple[datetime, datetime], OrderMeasures] = {}
    calls: dict[tuple[datetime, datetime], CallMeasures] = {}
    surges: dict[tuple[datetime, datetime], SurgeCallMeasures] = {}
    if periods and not raw:
        # the periods tile the window: each half reads all of them in a few statements
        whole_calls, each_calls = call_measures_tiled(
            session, tiles, queue=queue, service_seconds=service_seconds,
            repeat_lookback=repeat_lookback)
        calls = dict(zip(tiles, each_calls, strict=True)) | {(start, end): whole_calls}
    if periods:
        whole_surge, each_surge = surge.call_measures_tiled(session, tiles, queue=queue)
        surges = dict(zip(tiles, each_surge, strict=True)) | {(start, end): whole_surge}
    if periods and all(_rolled(p.start, p.end, raw) for p in periods):
        whole, each = order_measures_tiled(session, tiles, now=now)
        orders = {(p.start, p.end): m for p, m in zip(periods, each, strict=True)}
        orders[(start, end)] = whole

    def part(label: str, lo: datetime, hi: datetime) -> ReportBucket:
        called = calls.get((lo, hi)) or call_measures(
            session, lo, hi, queue=queue, service_seconds=service_seconds,
            repeat_lookback=repeat_lookback, raw=raw)
        measured = orders.get((lo, hi)) or order_measures(session, lo, hi, now=now, raw=raw)
        return ReportBucket(label, lo, hi, called, measured,
                            surges.get((lo, hi)) or surge.call_measures(session, lo, hi,
                                                                        queue=queue))

    total = part("total", start, end)
    figures = {"answer_rate": total.calls.answer_rate,
               "service_level": total.calls.service_level,
               "satisfaction_rate": total.orders.satisfaction_rate}
    targets = {name: {"target": goal, "value": figures[name],
                      "met": None if figures[name] is None else figures[name] >= goal}
               for name, goal in TARGETS.items()}
    unit = (f"{bucket.total_seconds():g}s" if isinstance(bucket, timedelta)
            else bucket or "window")
    return HotlineReport(start, end, timezone, unit, total,
                         tuple(part(p.label, p.start, p.end) for p in periods), targets)


# ---------------------------------------------------------------------------------------
# CJ/T 292 evaluation


@dataclass(frozen=True)
class EvaluationRow:
    """One evaluated person, department or region: the raw `figures`, the `components`
    as fractions (None: nothing to judge), the weighted score out of 100 and its grade."""

    kind: str  # operator | supervisor | shift_chief | dispatcher | department | county | street
    who: str
    figures: dict[str, int]
    components: dict[str, float | None]
    score: float | None
    grade: str | None

    def as_dict(self) -> dict[str, Any]:
        return plain(self)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Evaluation:
    start: datetime
    end: datetime
    operators: tuple[EvaluationRow, ...]
    supervisors: tuple[EvaluationRow, ...]
    shift_chiefs: tuple[EvaluationRow, ...]
    dispatchers: tuple[EvaluationRow, ...]
    departments: tuple[EvaluationRow, ...]
    counties: tuple[EvaluationRow, ...]
    streets: tuple[EvaluationRow, ...]

    def as_dict(self) -> dict[str, Any]:
        return plain(self)  # type: ignore[no-any-return]


def grade(score: float | None) -> str | None:
    """A ≥ 90, B ≥ 75, C ≥ 60, D ≥ 40, E below; None for no score."""
    if score is None:
        return None
    return next((letter for floor, letter in GRADES if score >= floor), "E")


def weighted_score(components: Mapping[str, float | None],
                   weights: Mapping[str, float]) -> float | None:
    """Σ weight × component × 100 over the components that have a figure, divided by the
    sum of their weights: a component with nothing to judge (no verification to time, say)
    neither rewards nor punishes; None if no component has a figure. Rounded to 2 digits;
    the grade is taken from the rounded score, so the two always agree."""
    present = {name: value for name, value in components.items() if value is not None}
    weight = sum(weights[name] for name in present)
    if not present or weight <= 0:
        return None
    return round(sum(weights[name] * value for name, value in present.items())
                 / weight * 100, SCORE_DIGITS)


def _fraction(part: float, whole: float) -> float | None:
    return None if not whole else part / whole


def _row(kind: str, who: str, figures: dict[str, int], components: dict[str, float | None],
         weights: Mapping[str, float]) -> EvaluationRow:
    score = weighted_score(components, weights)
    rounded = {name: None if value is None else round(value, 4)
               for name, value in components.items()}
    return EvaluationRow(kind, who, figures, rounded, score, grade(score))


def _ranked(rows: Iterable[EvaluationRow]) -> tuple[EvaluationRow, ...]:
    return tuple(sorted(rows, key=lambda r: (r.score is None, -(r.score or 0.0), r.who)))


def _count_score(count: int, busiest: int) -> float | None:
    """Count score (工作量得分): the count relative to the busiest of the same kind in the
    window (the busiest scores 100); None when nobody did any."""
    return _fraction(count, busiest)


def _step_stats(session: Session, start: datetime, end: datetime, rolled: bool = False
                ) -> dict[tuple[str, str], tuple[int, int]]:
    """(step, actor) -> (rounds done in the window, of them on time), each round credited to
    the actor of the event that did it."""
    if rolled:
        r = OrderRollup
        out: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        for step, who, ok, n in _sums(session, "step", start, end, r.k1, r.k2, r.k3):
            out[(step, who)][0] += n
            out[(step, who)][1] += n if ok == "1" else 0
        return {key: (n, k) for key, (n, k) in out.items()}
    d = WorkOrderDeadline
    action, actor = _stopped_by()
    steps = ("verify", "open", "dispatch", "check", "close")
    clocks = select(d.step, d.due_at, d.met_at, action.label("action"), actor.label("actor")) \
        .where(d.step.in_(steps), d.met_at >= start, d.met_at < end).subquery()
    rows = session.execute(
        select(clocks.c.step, clocks.c.actor, func.count(),
               func.count(case((clocks.c.met_at <= clocks.c.due_at, 1))))
        .where(_done(clocks.c.step, clocks.c.action, steps))
        .group_by(clocks.c.step, clocks.c.actor)).all()
    return {(step, who): (int(n), int(ok)) for step, who, n, ok in rows}


def _task_dispatch(session: Session, start: datetime, end: datetime, action: str,
                   limit: timedelta, rolled: bool = False) -> dict[str, tuple[int, int]]:
    """actor -> (`action` events in the window, of them within `limit` of the order entering
    the state the action leaves). The gap is taken in Python: interval arithmetic in SQL
    differs between the databases. The rollups hold it for the default limit only."""
    if rolled and limit == TASK_LIMITS[action]:
        return _flags_rolled(session, start, end, "task", action)
    e, before = WorkOrderEvent, aliased(WorkOrderEvent)
    entered = (select(before.at)
               .where(before.order_id == e.order_id, before.seq < e.seq,
                      before.to_state == e.from_state, before.from_state != before.to_state)
               .order_by(before.seq.desc()).limit(1).correlate(e).scalar_subquery())
    stats: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for actor, at, since in session.execute(
            select(e.actor, e.at, entered).where(e.action == action, _at_in(e.at, start, end))):
        stats[actor][0] += 1
        if since is not None and utc(at) - utc(since) <= limit:
            stats[actor][1] += 1
    return {actor: (n, ok) for actor, (n, ok) in stats.items()}


def _flags_rolled(session: Session, start: datetime, end: datetime, figure: str,
                  action: str | None = None) -> dict[str, tuple[int, int]]:
    """actor -> (count, of them flagged) of a figure keyed (actor, flag), or (action,
    actor, flag) when `action` is given."""
    r = OrderRollup
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    if action is None:
        rows = _sums(session, figure, start, end, r.k1, r.k2)
    else:
        rows = _sums(session, figure, start, end, r.k2, r.k3, where=[r.k1 == action])
    for who, flag, n in rows:
        out[who][0] += n
        out[who][1] += n if flag == "1" else 0
    return {who: (n, k) for who, (n, k) in out.items()}


def _flagged(session: Session, start: datetime, end: datetime, action: str, flag: Any,
             *where: Any) -> dict[str, tuple[int, int]]:
    """actor -> (`action` events in the window, of them with `flag`)."""
    e = WorkOrderEvent
    rows = (select(e.actor, flag.label("flag")).select_from(e)
            .join(WorkOrder, WorkOrder.id == e.order_id)
            .where(e.action == action, _at_in(e.at, start, end), *where).subquery())
    return {actor: (int(n), int(k)) for actor, n, k in session.execute(
        select(rows.c.actor, func.count(), func.count(case((rows.c.flag, 1))))
        .group_by(rows.c.actor))}


@_settled
def evaluate_staff(session: Session, start: datetime, end: datetime, *,
                   verify_dispatch_limit: timedelta = VERIFY_DISPATCH_LIMIT,
                   check_dispatch_limit: timedelta = CHECK_DISPATCH_LIMIT,
                   patrol_areas: Mapping[str, Sequence[str]] | None = None,
                   raw: bool = False) -> dict[str, tuple[EvaluationRow, ...]]:
    """The staff evaluation of [start, end), by role: "operator", "supervisor",
    "shift_chief", "dispatcher". Someone is evaluated in a role if they took an action in
    that role in the window; figures are grouped by the actor's name, whatever the role.

    - 受理员 operator: count score (orders keyed in from `OPERATOR_INTAKE_CHANNELS`) 25 % +
      on-time verification dispatch (转核实 within `verify_dispatch_limit` of the order
      entering intake) 40 % + on-time check dispatch (转核查 within `check_dispatch_limit`
      of the department's feedback) 35 %. The workflow gives 转核查 to dispatchers, so an
      operator has a check-dispatch figure only if the same person also dispatches.
    - 监督员 supervisor: valid reports (field orders they reported that were opened 立案, at
      any time) 40 % + (1 - missed-report rate) 20 % + on-time verification 20 % + on-time
      check 20 %. Missed reports (漏报): orders opened in the window in the supervisor's area
      that did not come from the field / orders opened there; the area is `patrol_areas`
      [actor] (grid-code prefixes) or else the grids they reported, verified or checked in
      the window.
    - 值班长 shift chief: on-time opening 25 % + accurate opening ((opened - voided later) /
      opened) 40 % + on-time closing 35 %.
    - 派遣员 dispatcher: count score (dispatches) 20 % + on-time dispatch 40 % + accurate
      dispatch ((dispatched - returned) / dispatched) 40 %; a dispatch is returned (回退, the
      department sent it back as not theirs) if the order's next dispatch-or-return event
      after it is a return. The failed-check 返工 is the department's, not the dispatcher's.

    On-time rates count the deadline rounds the actor did in the window (see the module
    docstring); an overdue step nobody has done yet has no actor and shows at the
    department and the centre instead. Count scores: see `_count_score`.
    """
    start, end = check_window(start, end)
    rolled = _rolled(start, end, raw)
    o, e, r = WorkOrder, WorkOrderEvent, OrderRollup
    acted = _sums(session, "act", start, end, r.k1, r.k2, r.k3, r.k4) if rolled else \
        session.execute(
            select(e.role, e.actor, e.action, o.channel, func.count())
            .select_from(e).join(o, o.id == e.order_id).where(_at_in(e.at, start, end))
            .group_by(e.role, e.actor, e.action, o.channel)).all()
    members: dict[str, set[str]] = defaultdict(set)
    intake: Counter[str] = Counter()
    dispatches: Counter[str] = Counter()
    for role, actor, action, channel, count in acted:
        if action == "create":  # recorded as the operator's, whoever reported
            if channel in OPERATOR_INTAKE_CHANNELS:
                members[workflow.OPERATOR].add(actor)
                intake[actor] += count
            elif channel == FIELD_CHANNEL:
                members[workflow.SUPERVISOR].add(actor)
            continue
        members[role].add(actor)
        if action == "dispatch":
            dispatches[actor] += count

    steps = _step_stats(session, start, end, rolled)

    def on_time(step: str, actor: str) -> float | None:
        done, ok = steps.get((step, actor), (0, 0))
        return _fraction(ok, done)

    def step_figures(step: str, actor: str) -> dict[str, int]:
        done, ok = steps.get((step, actor), (0, 0))
        return {f"{step}_done": done, f"{step}_on_time": ok}

    verify_sent = _task_dispatch(session, start, end, "request_verification",
                                 verify_dispatch_limit, rolled)
    check_sent = _task_dispatch(session, start, end, "request_check", check_dispatch_limit,
                                rolled)
    if rolled:
        reports = _flags_rolled(session, start, end, "report")
        openings = _flags_rolled(session, start, end, "opening")
        returned = _flags_rolled(session, start, end, "dispatched")
    else:
        later = aliased(WorkOrderEvent)
        opened = exists().where(later.order_id == e.order_id, later.action == "open")
        reports = _flagged(session, start, end, "create", opened, o.channel == FIELD_CHANNEL)
        voided = exists().where(later.order_id == e.order_id, later.seq > e.seq,
                                later.action == "void")
        openings = _flagged(session, start, end, "open", voided)
        following = (select(later.action)
                     .where(later.order_id == e.order_id, later.seq > e.seq,
                            later.action.in_(("dispatch", "return")))
                     .order_by(later.seq).limit(1).correlate(e).scalar_subquery())
        returned = _flagged(session, start, end, "dispatch", following == "return")
    missed = _missed_reports(session, start, end, members[workflow.SUPERVISOR],
                             patrol_areas or {}, rolled)

    out: dict[str, tuple[EvaluationRow, ...]] = {}
    busiest = max((intake[a] for a in members[workflow.OPERATOR]), default=0)
    rows = []
    for actor in members[workflow.OPERATOR]:
        sent_v, ok_v = verify_sent.get(actor, (0, 0))
        sent_c, ok_c = check_sent.get(actor, (0, 0))
        rows.append(_row("operator", actor, {
            "intake": intake[actor], "busiest_intake": busiest,
            "verify_dispatched": sent_v, "verify_dispatched_on_time": ok_v,
            "check_dispatched": sent_c, "check_dispatched_on_time": ok_c,
        }, {
            "count": _count_score(intake[actor], busiest),
            "on_time_verify_dispatch": _fraction(ok_v, sent_v),
            "on_time_check_dispatch": _fraction(ok_c, sent_c),
        }, OPERATOR_WEIGHTS))
    out[workflow.OPERATOR] = _ranked(rows)

    rows = []
    for actor in members[workflow.SUPERVISOR]:
        reported, valid = reports.get(actor, (0, 0))
        in_area, not_field = missed.get(actor, (0, 0))
        rows.append(_row("supervisor", actor, {
            "reports": reported, "valid_reports": valid,
            "opened_in_area": in_area, "missed": not_field,
            **step_figures("verify", actor), **step_figures("check", actor),
        }, {
            "valid_report": _fraction(valid, reported),
            "missed_report": None if not in_area else 1 - not_field / in_area,
            "on_time_verify": on_time("verify", actor),
            "on_time_check": on_time("check", actor),
        }, SUPERVISOR_WEIGHTS))
    out[workflow.SUPERVISOR] = _ranked(rows)

    rows = []
    for actor in members[workflow.SHIFT_CHIEF]:
        n_opened, n_voided = openings.get(actor, (0, 0))
        rows.append(_row("shift_chief", actor, {
            "opened": n_opened, "voided_after_opening": n_voided,
            **step_figures("open", actor), **step_figures("close", actor),
        }, {
            "on_time_open": on_time("open", actor),
            "accurate_open": _fraction(n_opened - n_voided, n_opened),
            "on_time_close": on_time("close", actor),
        }, SHIFT_CHIEF_WEIGHTS))
    out[workflow.SHIFT_CHIEF] = _ranked(rows)

    busiest = max((dispatches[a] for a in members[workflow.DISPATCHER]), default=0)
    rows = []
    for actor in members[workflow.DISPATCHER]:
        n_sent, n_returned = returned.get(actor, (0, 0))
        rows.append(_row("dispatcher", actor, {
            "dispatched": dispatches[actor], "busiest_dispatched": busiest,
            "returned": n_returned, **step_figures("dispatch", actor),
        }, {
            "count": _count_score(dispatches[actor], busiest),
            "on_time_dispatch": on_time("dispatch", actor),
            "accurate_dispatch": _fraction(n_sent - n_returned, n_sent),
        }, DISPATCHER_WEIGHTS))
    out[workflow.DISPATCHER] = _ranked(rows)
    return out


def _missed_reports(session: Session, start: datetime, end: datetime,
                    supervisors: Iterable[str], patrol_areas: Mapping[str, Sequence[str]],
                    rolled: bool = False) -> dict[str, tuple[int, int]]:
    """supervisor -> (orders opened in the window in their area, of them not from the
    field)."""
    o, e, first = WorkOrder, WorkOrderEvent, aliased(WorkOrderEvent)
    worked: dict[str, set[str]] = defaultdict(set)
    if rolled:
        r = OrderRollup
        for actor, grid, _n in _sums(session, "worked", start, end, r.k1, r.k2):
            worked[actor].add(grid)
        # per grid: opened, and of them not from the field (k4, the channel)
        rows = session.connection().execute(
            select(r.k2, func.sum(r.n), func.sum(case((r.k4 != FIELD_CHANNEL, r.n), else_=0)))
            .where(r.figure == "open", r.k3 == "1", _rows_of([(start, end)]))
            .group_by(r.k2))
        opened = [(grid, n, int(not_field)) for grid, n, not_field in rows if n]
        return _missed(supervisors, patrol_areas, worked, opened)
    field_reporter = and_(e.action == "create", o.channel == FIELD_CHANNEL)
    for actor, grid in session.execute(
            select(e.actor, o.grid_code).distinct().select_from(e).join(o, o.id == e.order_id)
            .where(_at_in(e.at, start, end), o.grid_code != "",
                   or_(and_(e.role == workflow.SUPERVISOR,
                            e.action.in_(SUPERVISOR_AREA_ACTIONS)), field_reporter))):
        worked[actor].add(grid)
    # the first opening only: an order is one report however its history runs
    again = exists().where(first.order_id == e.order_id, first.action == "open",
                           first.seq < e.seq)
    opened = session.execute(
        select(o.grid_code, func.count(), func.count(case((o.channel != FIELD_CHANNEL, 1))))
        .select_from(e).join(o, o.id == e.order_id)
        .where(e.action == "open", _at_in(e.at, start, end), ~again)
        .group_by(o.grid_code)).all()
    return _missed(supervisors, patrol_areas, worked, [tuple(row) for row in opened])


def _missed(supervisors: Iterable[str], patrol_areas: Mapping[str, Sequence[str]],
            worked: Mapping[str, set[str]], opened: Sequence[tuple[str, int, int]]
            ) -> dict[str, tuple[int, int]]:
    """`opened`: (grid, orders opened, of them not from the field)."""
    # each grid's (opened, of them not from the field), and the grids in order, so an area's
    # grids are found by bisecting for each of its prefixes: matching every opened row
    # against every grid a supervisor worked grew with supervisors x grids x rows
    by_grid: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for grid, n, not_field in opened:
        if grid:
            by_grid[grid][0] += n
            by_grid[grid][1] += not_field
    grids = sorted(by_grid)
    out = {}
    for actor in supervisors:
        area = tuple(patrol_areas.get(actor) or worked.get(actor) or ())
        if not area:
            continue
        mine: set[str] = set()
        for prefix in area:
            i = bisect_left(grids, prefix)
            while i < len(grids) and grids[i].startswith(prefix):
                mine.add(grids[i])
                i += 1
        out[actor] = (sum(by_grid[g][0] for g in mine), sum(by_grid[g][1] for g in mine))
    return out


def _area_figures_rolled(session: Session, column: Any, start: datetime, end: datetime,
                         cutoff: datetime) -> dict[str, Counter[str]]:
    r = OrderRollup
    key = _area_key(column, r.k1 if column is WorkOrder.department_code else r.k2)
    figures: dict[str, Counter[str]] = defaultdict(Counter)
    for value, n in _sums(session, "open", start, end, key):
        figures[value]["opened"] += n
    for value, n in _sums(session, "rework", start, end, key):
        figures[value]["reworks"] += n
    # summed per key in SQL: per key and flags, a month of a city's grids was ~40,000 rows
    done = r.k3 != "-"  # "-": a round abandoned in the window, counted nowhere

    def total(condition: Any) -> Any:
        return func.sum(case((condition, r.n), else_=0))
    for value, handled, on_time, closed, n in session.connection().execute(
            select(key, total(done), total(r.k3 == "1"), total(and_(done, r.k4 == "1")),
                   func.sum(r.n))
            .where(r.figure == "handle_done", _rows_of([(start, end)])).group_by(key)):
        if n:
            f = figures[value]
            f["handled"] += int(handled)
            f["on_time"] += int(on_time)
            f["closed"] += int(closed)
    for value, n in _overdue_rolled(session, "handle", start, end, cutoff, column).items():
        figures[value]["overdue_unhandled"] += n
    return figures


def _area_figures(session: Session, column: Any, start: datetime, end: datetime,
                  cutoff: datetime, rolled: bool = False) -> dict[str, Counter[str]]:
    """Per value of an order `column` (department, grid code cut to its street: _area_key):
    orders opened, handling rounds done / on time / overdue-unmet / done and then closed on
    their last round, reworks."""
    if rolled:
        return _area_figures_rolled(session, column, start, end, cutoff)
    o, d, e = WorkOrder, WorkOrderDeadline, WorkOrderEvent
    area = _area_key(column, column)
    figures: dict[str, Counter[str]] = defaultdict(Counter)
    for key, n in session.execute(
            select(area, func.count()).select_from(e).join(o, o.id == e.order_id)
            .where(e.action == "open", _at_in(e.at, start, end)).group_by(area)):
        figures[key]["opened"] += n
    for key, n in session.execute(
            select(area, func.count()).select_from(e).join(o, o.id == e.order_id)
            .where(e.action.in_(REWORK_ACTIONS), _at_in(e.at, start, end)).group_by(area)):
        figures[key]["reworks"] += n

    stopped, overdue = _deadline_due(start, end, cutoff)
    action, _actor = _stopped_by()
    later = aliased(WorkOrderDeadline)
    closed_after = exists().where(e.order_id == d.order_id, e.action == "close",
                                  e.at >= d.met_at)
    last_round = ~exists().where(later.order_id == d.order_id, later.step == d.step,
                                 later.round > d.round)
    clocks = (select(area.label("key"), d.due_at, d.met_at, action.label("action"),
                     overdue.label("overdue"), and_(closed_after, last_round).label("closed"))
              .select_from(d).join(o, o.id == d.order_id)
              .where(d.step == "handle", or_(stopped, overdue)).subquery())
    done = and_(clocks.c.met_at >= start, clocks.c.met_at < end,
                clocks.c.action.in_(DONE_ACTIONS["handle"]))
    for key, handled, on_time, late, closed in session.execute(
            select(clocks.c.key, func.count(case((done, 1))),
                   func.count(case((and_(done, clocks.c.met_at <= clocks.c.due_at), 1))),
                   func.count(case((clocks.c.overdue, 1))),
                   func.count(case((and_(done, clocks.c.closed), 1))))
            .group_by(clocks.c.key)):
        figures[key].update(handled=handled, on_time=on_time, overdue_unhandled=late,
                            closed=closed)
    return figures


def _area_rows(kind: str, figures: Mapping[str, Counter[str]]) -> tuple[EvaluationRow, ...]:
    busiest = max((f["opened"] for f in figures.values()), default=0)
    rows = []
    for key, f in figures.items():
        due = f["handled"] + f["overdue_unhandled"]
        rework_rate = _fraction(f["reworks"], due)
        rows.append(_row(kind, key, {
            "opened": f["opened"], "busiest_opened": busiest, "handled": f["handled"],
            "overdue_unhandled": f["overdue_unhandled"], "due_to_close": due,
            "closed": f["closed"], "on_time": f["on_time"], "reworks": f["reworks"],
        }, {
            "count": _count_score(f["opened"], busiest),
            "closing": _fraction(f["closed"], due),
            "on_time_handling": _fraction(f["on_time"], due),
            # more reworks than rounds due (old rounds reworked again) floors at zero
            "rework": None if rework_rate is None else max(0.0, 1 - rework_rate),
        }, AREA_WEIGHTS))
    return _ranked(rows)


@_settled
def evaluate_departments(session: Session, start: datetime, end: datetime, *,
                         now: datetime, raw: bool = False) -> tuple[EvaluationRow, ...]:
    """The department evaluation (专业部门考核) of [start, end): opened-count score 10 % +
    closing rate 30 % + on-time handling rate 30 % + (1 - rework rate) 30 %.

    A department answers for the orders now assigned to it (`department_code`), over their
    `handle` deadline rounds: due-to-close (应结案) = rounds handled (处置反馈) in the window
    + rounds overdue and unhandled at its end; closing rate (结案率) = rounds handled that were
    the order's last and were followed by the close (结案) / due-to-close; on-time handling
    rate = rounds handled by their due time / due-to-close; rework rate = `REWORK_ACTIONS`
    events in the window / due-to-close (the component floors at 0). Opened-count score:
    orders opened (立案) in the window relative to the busiest department."""
    start, end = check_window(start, end)
    cutoff = min(end, utc(now))
    figures = _area_figures(session, WorkOrder.department_code, start, end, cutoff,
                            _rolled(start, end, raw))
    return _area_rows("department", {k: v for k, v in figures.items() if k})


@_settled
def evaluate_regions(session: Session, start: datetime, end: datetime, *,
                     level: str = "county", now: datetime, raw: bool = False
                     ) -> tuple[EvaluationRow, ...]:
    """The regional evaluation (区域考核) of [start, end): the department measures over the
    orders whose grid code starts with the region's code, `level` "county" (the first 6
    digits) or "street" (the first 9). Orders without a grid code that long count nowhere."""
    if level not in REGION_LEVELS:
        raise MeasureError(f"level: one of {', '.join(REGION_LEVELS)}, got {level!r}")
    start, end = check_window(start, end)
    cutoff = min(end, utc(now))
    return _regions(level, _area_figures(session, WorkOrder.grid_code, start, end, cutoff,
                                         _rolled(start, end, raw)))


def _regions(level: str, by_street: Mapping[str, Counter[str]]
             ) -> tuple[EvaluationRow, ...]:
    """The rows of `level` from the figures of each street (grid codes cut to a street's
    width in SQL, a shorter code as it is), once for both levels."""
    width = REGION_LEVELS[level]
    regions: dict[str, Counter[str]] = defaultdict(Counter)
    for street, counts in by_street.items():
        if street and len(street) >= width:
            regions[street[:width]].update(counts)
    return _area_rows(level, regions)


@_settled
def evaluate(session: Session, start: datetime, end: datetime, *,
             now: datetime,
             verify_dispatch_limit: timedelta = VERIFY_DISPATCH_LIMIT,
             check_dispatch_limit: timedelta = CHECK_DISPATCH_LIMIT,
             patrol_areas: Mapping[str, Sequence[str]] | None = None,
             raw: bool = False) -> Evaluation:
    """The whole CJ/T 292 evaluation of [start, end): staff by role, departments, counties
    and streets, each ranked by score (best first, then by name)."""
    start, end = check_window(start, end)
    staff = evaluate_staff(session, start, end, verify_dispatch_limit=verify_dispatch_limit,
                           check_dispatch_limit=check_dispatch_limit,
                           patrol_areas=patrol_areas, raw=raw)
    by_street = _area_figures(session, WorkOrder.grid_code, start, end, min(end, utc(now)),
                              _rolled(start, end, raw))
    return Evaluation(
        start, end, staff[workflow.OPERATOR], staff[workflow.SUPERVISOR],
        staff[workflow.SHIFT_CHIEF], staff[workflow.DISPATCHER],
        evaluate_departments(session, start, end, now=now, raw=raw),
        _regions("county", by_street), _regions("street", by_street))


@_settled
def window_report(session: Session, settings: Settings, start: datetime, end: datetime,
                  bucket: str | None, now: datetime) -> dict[str, Any]:
    """The hotline report and the CJ/T 292 evaluation of a window, for the API and CLI."""
    report = hotline_report(
        session, start, end, bucket=bucket, timezone=settings.calendar.timezone,
        repeat_lookback=timedelta(hours=settings.hotline.repeat_window_hours), now=now)
    return {"report": report.as_dict(),
            "evaluation": evaluate(session, start, end, now=now).as_dict()}
