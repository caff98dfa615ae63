"""Rollups of the order figures (reports.kpis reads them): what each order adds to each
figure, kept in `order_rollups` per UTC hour. The transaction that changes an order (a move,
an extension, a survey's answer) marks it changed (`mark_changed`), so a crash leaves both
or neither; `fold` brings the marked orders' parts in, by batches, in the tickets worker and
before every report reads (`settle`), so reports read them exact. Folded move by move, the
rollups were six of a move's thirteen statements. `rebuild` recomputes them from the
orders, events, deadlines and surveys.

Each hour's rows are also added up per day and per month of China Standard Time (UTC+8,
TILE_ZONE), in the same statement (`grain` "h", "d", "m"): a year's report read hour by hour
read some ten million rows at city scale, by month it reads a few thousand. A window is
read as the months and days that lie whole inside it and the hours left at its ends
(`covering`), so a window of any whole-hour time zone is exact; one in Beijing time reads
the fewest rows. The day and month rows are the sums of the hour rows, always: a rebuild of
some hours sums them again for the months it touched (`_retile`).

Each order's part is a set of facts (figure, hour, k1..k4) -> count, worked out from the
order alone; its last part is kept beside it (`order_rollup_marks`), so a change takes the
old part out and puts the new one in: figures that hang on the order's present state (its
department, state, whether a later close followed a round) stay exact.

FIGURES names each figure's hour and keys. A deadline that is overdue at a window's end is
told by its due hour: `unmet` rounds (no clock stop yet) and `late` rounds (stopped after
their due time, with the hour they stopped, k4, as "YYYY-MM-DDTHH" so it compares as text).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from sqlalchemy import and_, bindparam, delete, or_, select, text
from sqlalchemy.orm import Session

from core.db import WRITE_TRANSACTION, insert_for
from tickets import workflow
from tickets.models import (
    OrderRollup,
    OrderRollupMark,
    OrderRollupPending,
    Survey,
    WorkOrder,
    WorkOrderDeadline,
    WorkOrderEvent,
)

# --- the rules of the figures (reports.kpis documents them) ----------------------------
DONE_ACTIONS: dict[str, tuple[str, ...]] = {
    "verify": ("verified",),
    "open": ("open",),
    "dispatch": ("dispatch",),
    "sign": ("sign",),
    "handle": ("feedback",),
    "check": ("check_passed", "rework"),  # a failed check is a check done
    "close": ("close",),
    "complete": ("close", "resolve_on_call"),  # 办结, a first-call answer included
}
REWORK_ACTIONS = ("rework", "reopen")
FIELD_CHANNEL = "field"
SUPERVISOR_AREA_ACTIONS = ("verified", "check_passed", "rework")
VERIFY_DISPATCH_LIMIT = timedelta(minutes=10)
CHECK_DISPATCH_LIMIT = timedelta(minutes=10)
TASK_LIMITS = {"request_verification": VERIFY_DISPATCH_LIMIT,
               "request_check": CHECK_DISPATCH_LIMIT}
STAFF_STEPS = ("verify", "open", "dispatch", "check", "close")
OVERDUE_STEPS = ("complete", "handle")

# figure: (its hour, k1, k2, k3, k4)
FIGURES = {
    "created": ("created_at", "state", "appeal_type", "channel", "first_call_resolved 1|0"),
    "complete_done": ("met_at", "on_time 1|0", "", "", ""),
    "unmet": ("due_at", "step", "department", "grid", ""),
    "late": ("due_at", "step", "department", "grid", "hour met"),
    "closed": ("closed_at", "callback_due 1|0", "reached 1|0", "", ""),
    "rating": ("answered_at", "rating", "", "", ""),
    "rework": ("event", "department", "grid", "", ""),
    "open": ("event", "department", "grid", "first opening 1|0", "channel"),
    "handle_done": ("met_at", "department", "grid", "on_time 1|0 (- abandoned)",
                    "closed after 1|0"),
    "act": ("event", "role", "actor", "action", "channel"),
    "step": ("met_at", "step", "actor", "on_time 1|0", ""),
    "task": ("event", "action", "actor", "within the limit 1|0", ""),
    "report": ("event", "actor", "opened 1|0", "", ""),
    "opening": ("event", "actor", "voided later 1|0", "", ""),
    "dispatched": ("event", "actor", "returned 1|0", "", ""),
    "worked": ("event", "actor", "grid", "", ""),
}

Fact = tuple[str, datetime, str, str, str, str]
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
BATCH = 2000
# the day and month rows' zone: China Standard Time, a fixed offset (no summer time since
# 1991), so a day is 24 hours and a month's start is a sum of them
TILE_ZONE = timezone(timedelta(hours=8))
GRAINS = ("h", "d", "m")
# a rebuild's open end: before any order, after any deadline (within datetime's range even
# once widened to whole months)
OPEN_START, OPEN_END = datetime(1970, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hour_key(moment: datetime) -> str:
    """The hour as text that sorts as time: 2026-11-24T05."""
    return hour_of(moment).strftime("%Y-%m-%dT%H")


def day_of(moment: datetime) -> datetime:
    """The start (UTC) of the TILE_ZONE day `moment` is in."""
    local = moment.astimezone(TILE_ZONE)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def month_of(moment: datetime) -> datetime:
    """The start (UTC) of the TILE_ZONE month `moment` is in."""
    local = moment.astimezone(TILE_ZONE)
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def _next_month(start: datetime) -> datetime:
    return month_of(start + timedelta(days=32))


def _tile_of(grain: str, hour: datetime) -> datetime:
    return hour if grain == "h" else day_of(hour) if grain == "d" else month_of(hour)


def covering(start: datetime, end: datetime) -> list[tuple[str, datetime, datetime]]:
    """[start, end) (whole UTC hours) as (grain, lo, hi): the rows of that grain starting
    in [lo, hi) add up to the window: the TILE_ZONE months whole inside it, the days whole
    inside the rest, the hours left at its ends. In time order, none empty."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    first_day = day_of(start) if day_of(start) == start else day_of(start) + DAY
    last_day = day_of(end)
    if first_day >= last_day:
        return [("h", start, end)] if start < end else []
    first_month = month_of(first_day)
    if first_month < first_day:
        first_month = _next_month(first_month)
    last_month = month_of(last_day)
    if first_month >= last_month:
        parts = [("h", start, first_day), ("d", first_day, last_day), ("h", last_day, end)]
    else:
        parts = [("h", start, first_day), ("d", first_day, first_month),
                 ("m", first_month, last_month), ("d", last_month, last_day),
                 ("h", last_day, end)]
    return [(g, lo, hi) for g, lo, hi in parts if lo < hi]


def covering_all(windows: Iterable[tuple[datetime, datetime]]
                 ) -> list[tuple[str, datetime, datetime]]:
    """The coverings of contiguous windows (a report's periods), each grain's touching
    ranges joined: a year by day is one range of days, not 365."""
    joined: dict[str, list[list[datetime]]] = {g: [] for g in GRAINS}
    for lo, hi in windows:
        for grain, a, b in covering(lo, hi):
            ranges = joined[grain]
            if ranges and ranges[-1][1] == a:
                ranges[-1][1] = b
            else:
                ranges.append([a, b])
    return [(g, a, b) for g in GRAINS for a, b in joined[g]]


def _flag(value: object) -> str:
    return "1" if value else "0"


def order_facts(order: Any, events: Sequence[Any], clocks: Sequence[Any],
                surveys: Sequence[Any]) -> Counter[Fact]:
    """What one order adds to the rollups, from its own rows alone: the order, its
    events, its deadline rounds and its surveys, as rows or objects with the columns of
    WorkOrder, WorkOrderEvent, WorkOrderDeadline and Survey (`_parts_of` names them)."""
    facts: Counter[Fact] = Counter()
    dept, grid, channel = order.department_code, order.grid_code, order.channel
    history = sorted(events, key=lambda e: e.seq)

    def add(figure: str, moment: datetime, *keys: str) -> None:
        k = (*keys, "", "", "", "")[:4]
        facts[(figure, hour_of(moment), k[0], k[1], k[2], k[3])] += 1

    add("created", order.created_at, order.state, order.appeal_type, channel,
        _flag(order.first_call_resolved))
    if order.closed_at is not None:
        callback_due = not order.first_call_resolved and order.citizen_phone != ""
        reached = any(s.answered_at is not None for s in surveys)
        add("closed", order.closed_at, _flag(callback_due), _flag(callback_due and reached))
    for s in surveys:
        if s.answered_at is not None and s.rating is not None:
            add("rating", s.answered_at, str(int(s.rating)))

    opened_ever = any(e.action == "open" for e in history)
    for i, e in enumerate(history):
        add("act", e.at, e.role, e.actor, e.action, channel)
        later = history[i + 1:]
        if e.action in REWORK_ACTIONS:
            add("rework", e.at, dept, grid)
        if e.action == "open":
            first = not any(x.action == "open" for x in history[:i])
            add("open", e.at, dept, grid, _flag(first), channel)
            add("opening", e.at, e.actor, _flag(any(x.action == "void" for x in later)))
        if e.action == "create" and channel == FIELD_CHANNEL:
            add("report", e.at, e.actor, _flag(opened_ever))
        if e.action == "dispatch":
            following = next((x.action for x in later if x.action in ("dispatch", "return")),
                             None)
            add("dispatched", e.at, e.actor, _flag(following == "return"))
        if e.action in TASK_LIMITS:
            since = next((x.at for x in reversed(history[:i])
                          if x.to_state == e.from_state and x.from_state != x.to_state), None)
            ok = since is not None and e.at - since <= TASK_LIMITS[e.action]
            add("task", e.at, e.action, e.actor, _flag(ok))
        if grid and ((e.role == workflow.SUPERVISOR and e.action in SUPERVISOR_AREA_ACTIONS)
                     or (e.action == "create" and channel == FIELD_CHANNEL)):
            add("worked", e.at, e.actor, grid)

    for d in clocks:
        met = d.met_at
        if d.step in OVERDUE_STEPS:
            if met is None:
                add("unmet", d.due_at, d.step, dept, grid)
            elif met > d.due_at:
                add("late", d.due_at, d.step, dept, grid, hour_key(met))
        if met is None:
            continue
        # the order's latest event at or before the clock stopped stopped it
        stopper = max((e for e in history if e.at <= met), key=lambda e: (e.at, e.seq),
                      default=None)
        if stopper is None or stopper.action not in DONE_ACTIONS.get(d.step, ()):
            if d.step == "handle":  # abandoned: counts nowhere, but names its department
                add("handle_done", met, dept, grid, "-", "0")
            continue
        on_time = _flag(met <= d.due_at)
        if d.step == "complete":
            add("complete_done", met, on_time)
        elif d.step == "handle":
            last_round = not any(x.step == d.step and x.round > d.round for x in clocks)
            closed = last_round and any(e.action == "close" and e.at >= met for e in history)
            add("handle_done", met, dept, grid, on_time, _flag(closed))
        if d.step in STAFF_STEPS:
            add("step", met, d.step, stopper.actor, on_time)
    return facts


# the columns order_facts reads, read as plain rows by Core statements built once: building
# ORM objects for them, or a statement each move, cost more than working out the facts
def _columns(model: Any, *names: str) -> list[Any]:
    return [model.__table__.c[name] for name in names]


_IDS = bindparam("ids", expanding=True)
_READS = tuple(select(*columns).where(columns[0].in_(_IDS)) for columns in (
    _columns(WorkOrderEvent, "order_id", "seq", "at", "role", "actor", "action", "from_state",
             "to_state"),
    _columns(WorkOrderDeadline, "order_id", "step", "round", "due_at", "met_at"),
    _columns(Survey, "order_id", "answered_at", "rating")))
_MARKS = OrderRollupMark.__table__
_PENDING = OrderRollupPending.__table__
_ANY_PENDING = select(_PENDING.c.order_id).limit(1)
_MARK_CHANGED = {dialect: insert_for(dialect, _PENDING).values(order_id=bindparam("order_id"))
                 .on_conflict_do_update(index_elements=["order_id"],
                                        set_={"changes": _PENDING.c.changes + 1})
                 for dialect in ("postgresql", "sqlite")}
# each order with its last part (None before its first), the mark read in the same statement
_READ_ORDERS = select(*_columns(
    WorkOrder, "id", "department_code", "grid_code", "channel", "created_at", "state",
    "appeal_type", "first_call_resolved", "closed_at", "citizen_phone"),
    _MARKS.c.facts.label("mark")).outerjoin(
    _MARKS, _MARKS.c.order_id == WorkOrder.__table__.c.id).where(
    WorkOrder.__table__.c.id.in_(_IDS))


def _parts_of(session: Session, order_ids: Sequence[int]
              ) -> dict[int, tuple[Counter[Fact], Counter[Fact]]]:
    """Each order's part from its rows as the database holds them (flushed changes
    included; no ORM object is built, so none can be stale), with its last part as marked
    (empty if none): (new, old)."""
    events: dict[int, list[Any]] = {i: [] for i in order_ids}
    clocks: dict[int, list[Any]] = {i: [] for i in order_ids}
    surveys: dict[int, list[Any]] = {i: [] for i in order_ids}
    ids, connection = {"ids": list(order_ids)}, session.connection()
    for read, into in zip(_READS, (events, clocks, surveys), strict=True):
        for row in connection.execute(read, ids):
            into[row.order_id].append(row)
    orders = connection.execute(_READ_ORDERS, ids)
    return {o.id: (order_facts(o, events[o.id], clocks[o.id], surveys[o.id]),
                   _from_json(o.mark) if o.mark is not None else Counter())
            for o in orders}


def _to_json(facts: Counter[Fact]) -> list[list[Any]]:
    return [[f, h.isoformat(), k1, k2, k3, k4, n]
            for (f, h, k1, k2, k3, k4), n in sorted(facts.items()) if n]


def _from_json(rows: Iterable[Sequence[Any]]) -> Counter[Fact]:
    return Counter({(f, datetime.fromisoformat(h), k1, k2, k3, k4): int(n)
                    for f, h, k1, k2, k3, k4, n in rows})


_ROW = ("figure", "grain", "hour", "k1", "k2", "k3", "k4", "n")
_KEY = ("figure", "grain", "hour", "k1", "k2", "k3", "k4")
COPY_FROM = 1000  # rows: from here PostgreSQL takes them by COPY


def _upsert(session: Session, table: Any, columns: Sequence[str], rows: list[tuple[Any, ...]],
            key: Sequence[str], *, add: str = "", replace: str = "") -> None:
    """INSERT `rows` into `table`; where a row's `key` is there already, its `add` column
    gets the new value added, or its `replace` column the new value. Rows are sent in key
    order, so two writers lock the same rows in the same order.

    PostgreSQL takes many rows by COPY into a scratch table and one INSERT ... SELECT: sent
    row by row (executemany), a rebuild's rows cost more than working out the facts; a
    move's few rows go row by row and create no table."""
    column = add or replace
    if not rows:  # executemany of nothing would run the INSERT once, without values
        return
    if session.get_bind().dialect.name == "postgresql" and len(rows) >= COPY_FROM:
        scratch, listed, keys = f"{table.name}_scratch", ", ".join(columns), ", ".join(key)
        session.execute(text(f"CREATE TEMP TABLE IF NOT EXISTS {scratch} "
                             f"(LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DROP"))
        cursor = session.connection().connection.driver_connection.cursor()
        with cursor.copy(f"COPY {scratch} ({listed}) FROM STDIN") as copy:
            for row in rows:  # a list is a JSON column's value
                copy.write_row([json.dumps(v) if isinstance(v, list) else v for v in row])
        new = f"{table.name}.{column} + excluded.{column}" if add else f"excluded.{column}"
        session.execute(text(
            f"INSERT INTO {table.name} ({listed}) SELECT {listed} FROM {scratch} "
            f"ORDER BY {keys} ON CONFLICT ({keys}) DO UPDATE SET {column} = {new}"))
        session.execute(text(f"TRUNCATE {scratch}"))
        return
    session.execute(_upsert_statement(session.get_bind().dialect.name, table, tuple(key),
                                      column, bool(add)),
                    [dict(zip(columns, row, strict=True)) for row in rows])


@lru_cache(maxsize=16)
def _upsert_statement(dialect: str, table: Any, key: tuple[str, ...], column: str,
                      add: bool) -> Any:
    """The INSERT ... ON CONFLICT of `_upsert`, built once per table and way: building it
    (its `excluded` columns above all) cost more than a move's whole rollup write."""
    stmt = insert_for(dialect, table)
    excluded = stmt.excluded[column]
    return stmt.on_conflict_do_update(
        index_elements=list(key), set_={column: table.c[column] + excluded if add else excluded})


def _apply(session: Session, deltas: Counter[Fact] | dict[Fact, int],
           grains: Sequence[str] = GRAINS) -> None:
    """Add each delta to its hour's row and to its day's and month's (created at 0 if
    missing), or to those of `grains`."""
    rows: Counter[tuple[Any, ...]] = Counter()
    for (figure, hour, *keys), n in deltas.items():
        if n:
            for grain in grains:
                rows[(figure, grain, _tile_of(grain, hour), *keys)] += n
    _upsert(session, OrderRollup.__table__, _ROW,
            [(*row, n) for row, n in sorted(rows.items()) if n], _KEY, add="n")


def _retile(session: Session, start: datetime, end: datetime) -> None:
    """The day and month rows of the months [start, end) touches, summed again from their
    hour rows."""
    lo, hi = month_of(start), end if month_of(end) == end else _next_month(month_of(end))
    r = OrderRollup
    session.execute(delete(r).where(r.grain != "h", r.hour >= lo, r.hour < hi))
    hours = session.execute(
        select(r.figure, r.hour, r.k1, r.k2, r.k3, r.k4, r.n)
        .where(r.grain == "h", r.hour >= lo, r.hour < hi, r.n != 0)
        .execution_options(yield_per=BATCH * 10))
    sums: Counter[Fact] = Counter()
    for figure, hour, k1, k2, k3, k4, n in hours:
        sums[(figure, hour, k1, k2, k3, k4)] += n
    _apply(session, sums, grains=("d", "m"))


def _write_marks(session: Session, parts: dict[int, Counter[Fact]]) -> None:
    _upsert(session, OrderRollupMark.__table__, ("order_id", "facts"),
            [(i, _to_json(f)) for i, f in sorted(parts.items())], ("order_id",),
            replace="facts")


def mark_changed(session: Session, order_id: int) -> None:
    """Mark the order changed, in the caller's transaction: its part is folded into the
    rollups later (`fold`), by the tickets worker or before a report reads. A mark already
    there is updated (its count of changes), not left alone: on PostgreSQL the update
    waits for a fold that has taken the mark but not yet deleted it, where DO NOTHING would
    pass it and the fold would then delete a mark over a change it did not read."""
    session.execute(_MARK_CHANGED[session.get_bind().dialect.name], {"order_id": order_id})


def follow_move(event: object, move: Any) -> None:
    """A follow-up of every move (tickets.follow_ups), wired after the step clocks and the
    survey so it sees what they stored."""
    mark_changed(move.session, move.order.id)


def fold(session: Session) -> int:
    """Bring the rollups in step with every order marked changed, in the caller's (write)
    transaction, by batches: one read of each table for a batch, the batch's deltas summed
    into one upsert. The marks are taken away before their orders are read: on PostgreSQL
    a move of one of them marking it meanwhile waits for the fold's commit (a unique key
    being deleted), then marks it anew, so no change goes unread; a second fold waits for
    the first. On SQLite the fold holds the write lock. Returns the orders folded."""
    taking = select(_PENDING.c.order_id).order_by(_PENDING.c.order_id).limit(BATCH)
    if session.get_bind().dialect.name == "postgresql":
        taking = taking.with_for_update()
    folded = 0
    while ids := list(session.scalars(taking)):
        session.execute(delete(_PENDING).where(_PENDING.c.order_id.in_(ids)))
        parts = _parts_of(session, ids)
        delta: Counter[Fact] = Counter()
        for new, old in parts.values():
            delta.update(new)
            delta.subtract(old)
        _apply(session, delta)
        _write_marks(session, {order_id: new for order_id, (new, old) in parts.items()
                               if new != old})
        folded += len(ids)
    return folded


def settle(session: Session) -> int:
    """Fold every order marked changed before a report reads the rollups, so it reads them
    exact. A session that has not begun folds in a transaction of its own, committed before
    the report's reads begin (on SQLite a read's snapshot is taken at its first statement,
    so they see the fold); one in the middle of a transaction folds in it. Returns the
    orders folded."""
    if session.in_transaction():
        return fold(session)
    if session.scalar(_ANY_PENDING) is None:
        return 0  # the report reads in the transaction this look began: nothing to fold
    session.rollback()  # the look's read only: nothing of the caller's is in it
    with session.begin():
        session.connection(execution_options={WRITE_TRANSACTION: True})
        return fold(session)


def _touching(session: Session, start: datetime, end: datetime) -> Iterator[int]:
    """Ids of the orders with a fact in [start, end): each fact's hour is one of these
    moments of the order's rows."""
    o, e, d, s = WorkOrder, WorkOrderEvent, WorkOrderDeadline, Survey

    def within(column: Any) -> Any:
        return and_(column >= start, column < end)
    ids: set[int] = set()
    ids.update(session.scalars(select(o.id).where(or_(within(o.created_at),
                                                      within(o.closed_at)))))
    ids.update(session.scalars(select(e.order_id).distinct().where(within(e.at))))
    ids.update(session.scalars(select(d.order_id).distinct().where(
        or_(within(d.due_at), within(d.met_at)))))
    ids.update(session.scalars(select(s.order_id).distinct().where(within(s.answered_at))))
    yield from sorted(ids)


def rebuild(session: Session, start: datetime | None = None,
            end: datetime | None = None) -> int:
    """Recompute the rollups from the orders' rows: all of them, or the hours in [start,
    end) (whole UTC hours, widened outwards). The orders with a fact in the window get
    their part recomputed; outside the window only the difference to their last part is
    applied, so the rollups stay the sum of the parts; the day and month rows of the months
    the window touches are summed again from their hours. One bound alone leaves the other
    end open. Returns the orders recomputed."""
    if start is not None or end is not None:
        start, end = start or OPEN_START, end or OPEN_END
    if start is None or end is None:
        # first: every order marked so far is recomputed below; one marked meanwhile stays
        # marked for the next fold
        session.execute(delete(_PENDING))
        session.execute(delete(OrderRollup))
        session.execute(delete(OrderRollupMark))
        ids = list(session.scalars(select(WorkOrder.id).order_by(WorkOrder.id)))
        lo = hi = None
    else:
        fold(session)  # the marks are the parts the window's rows hold
        lo = hour_of(start)
        hi = hour_of(end) + (HOUR if hour_of(end) != end.astimezone(UTC) else timedelta())
        session.execute(delete(OrderRollup).where(OrderRollup.grain == "h",
                                                  OrderRollup.hour >= lo,
                                                  OrderRollup.hour < hi))
        ids = list(_touching(session, lo, hi))
    for i in range(0, len(ids), BATCH):
        batch = ids[i:i + BATCH]
        parts = _parts_of(session, batch)
        delta: Counter[Fact] = Counter()
        old: Counter[Fact] = Counter()
        for new, marked in parts.values():
            delta.update(new)
            old.update(marked)  # none in a full rebuild: it emptied the marks
        delta.subtract(old)
        if lo is not None and hi is not None:
            for fact in list(delta):
                if lo <= fact[1] < hi:  # the window's rows were emptied: add the new part
                    delta[fact] += old[fact]
        _apply(session, delta)
        _write_marks(session, {order_id: new for order_id, (new, _) in parts.items()})
    if lo is not None and hi is not None:  # the window's day and month rows lost its hours
        _retile(session, lo, hi)
    return len(ids)
