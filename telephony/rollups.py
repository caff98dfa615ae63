"""Hourly call rollups (话务小时汇总): the sums every call measure needs, per UTC hour and queue,
kept in the transaction that stores each call record, so a report over a year reads some
thousand rows instead of millions of calls.

Why UTC hours: every time zone the centre may report in (Asia/Shanghai, and any zone whose
offset from UTC is whole hours) starts its days, weeks and months on a UTC hour, so a local
day is exactly 24 hour rows. A window that does not begin or end on a whole UTC hour (a zone
with a half-hour offset, a report from 09:30) is read from the rollups for its whole hours
and from the call records for the pieces at its ends (telephony.measures), so it stays exact.

What is kept: telephony.measures' counts and sums of calls (calls, offered, answered,
abandoned, unanswered, short abandons, answered within 10/15/20/30/60 s, waits, talk, hold,
the longest wait, calls from known numbers and repeat calls, outbound placed and answered).
Wrap-up and occupancy come from seat intervals, not calls, and are read from those.

The repeat-caller flag (`CallRecord.repeat_caller`) is set when the record is stored: the
caller's previous inbound call (by start, then id) began at most the repeat window before.
Records are stored when calls end, so a call can be stored after a later one of the same
caller; storing it then also flags that later call when it becomes a repeat.

Crash safety: `call_stored` runs when the record is inserted, on its connection, in the
transaction that stores it (telephony.records.store_call calls it; an ORM hook for whoever
else adds a CallRecord), so a record and its sums are committed together or not at all.
`rebuild` recomputes flags and rollups of a window from the records (`hotline reports
rebuild`), e.g. after rows were written around this module (a bulk load) or the repeat
window setting changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    case,
    delete,
    event,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session, object_session
from sqlalchemy.orm.attributes import set_committed_value

from core.config import Hotline
from core.db import insert_for
from telephony.models import CallHourRollup, CallRecord

HOUR = timedelta(hours=1)
DEFAULT_REPEAT_WINDOW = timedelta(hours=Hotline().repeat_window_hours)
# The service-level thresholds (seconds) kept; another threshold is read from the records.
SERVICE_THRESHOLDS = (10, 15, 20, 30, 60)
COUNTS = ("calls", "offered", "answered", "abandoned", "unanswered", "short_abandons",
          *(f"answered_within_{t}" for t in SERVICE_THRESHOLDS),
          "known_number_calls", "repeat_calls", "outbound_calls", "outbound_answered")
SUMS = ("wait_seconds", "talk_seconds", "hold_seconds")
MIXED_WINDOWS = -1
# session.info key: the repeat window the records stored in that session are flagged with
REPEAT_WINDOW_KEY = "telephony.repeat_window"
BATCH = 5000


def floor_hour(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: datetime) -> datetime:
    floor = floor_hour(moment)
    return floor if floor == moment else floor + HOUR


@dataclass
class Sums:
    """One rollup row's figures, or a sum of several."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SUMS, 0.0))
    longest_wait_seconds: float | None = None


def contribution(direction: str, queue: str | None, short_abandon: bool, outcome: str,
                 wait: float | None, talk: float | None, hold: float | None,
                 citizen_number: str, repeat_caller: bool) -> Sums:
    """What one call adds to its hour's row (telephony.measures' definitions)."""
    one = Sums()
    c = one.counts
    if direction == "outbound":
        c["outbound_calls"] = 1
        c["outbound_answered"] = int(outcome == "answered")
        return one
    if direction != "inbound":
        return one
    c["calls"] = 1
    if citizen_number:
        c["known_number_calls"] = 1
        c["repeat_calls"] = int(repeat_caller)
    if queue is None:
        return one
    if short_abandon:
        c["short_abandons"] = 1
        return one
    c["offered"] = 1
    one.longest_wait_seconds = wait
    if outcome in ("abandoned", "unanswered"):
        c[outcome] = 1
    elif outcome == "answered":
        c["answered"] = 1
        waited = wait or 0.0
        for threshold in SERVICE_THRESHOLDS:
            c[f"answered_within_{threshold}"] = int(waited <= threshold)
        one.sums.update(wait_seconds=waited, talk_seconds=talk or 0.0,
                        hold_seconds=hold or 0.0)
    return one


def _of(row: Any, repeat: bool) -> Sums:
    return contribution(row.direction, row.queue, row.short_abandon, row.outcome,
                        row.wait_seconds, row.talk_seconds, row.hold_seconds,
                        row.citizen_number, repeat)


def _values(hour: datetime, queue: str, sums: Sums, window: timedelta) -> dict[str, Any]:
    return {"hour": hour, "queue": queue, **sums.counts, **sums.sums,
            "longest_wait_seconds": sums.longest_wait_seconds,
            "repeat_window_seconds": int(window.total_seconds())}


def _upsert(connection: Connection, hour: datetime, queue: str, sums: Sums,
            window: timedelta) -> None:
    """Add `sums` to the (hour, queue) row, creating it: one statement, so two writers of
    the same hour on PostgreSQL both count (the second waits on the first's row lock)."""
    connection.execute(_upsert_statement(connection.dialect.name),
                       _values(hour, queue, sums, window))


@lru_cache(maxsize=4)
def _upsert_statement(dialect: str) -> Any:
    """`_upsert`'s INSERT ... ON CONFLICT, built once per kind of database (its values are
    parameters): building it cost more than running it."""
    statement = insert_for(dialect, CallHourRollup.__table__)
    table, new = CallHourRollup.__table__.c, statement.excluded
    changes: dict[str, Any] = {name: table[name] + new[name] for name in (*COUNTS, *SUMS)}
    changes["longest_wait_seconds"] = case(
        (or_(table.longest_wait_seconds.is_(None),
             new.longest_wait_seconds > table.longest_wait_seconds),
         new.longest_wait_seconds), else_=table.longest_wait_seconds)
    changes["repeat_window_seconds"] = case(
        (table.repeat_window_seconds == new.repeat_window_seconds,
         table.repeat_window_seconds), else_=MIXED_WINDOWS)
    return statement.on_conflict_do_update(index_elements=["hour", "queue"], set_=changes)


# The caller's calls just before and just after a stored one (by start, then id), and the
# flag's update: built once, the row's values bound when run.
_c = CallRecord
_SAME_CALLER = and_(_c.citizen_number == bindparam("number"), _c.direction == "inbound",
                    _c.id != bindparam("row_id"))
_AT = bindparam("at")
_PREVIOUS_CALL = select(_c.started_at).where(
    _SAME_CALLER, or_(_c.started_at < _AT, and_(_c.started_at == _AT,
                                                 _c.id < bindparam("row_id")))
).order_by(_c.started_at.desc(), _c.id.desc()).limit(1)
_NEXT_CALL = select(_c.id, _c.started_at, _c.queue, _c.repeat_caller).where(
    _SAME_CALLER, or_(_c.started_at > _AT, and_(_c.started_at == _AT,
                                                 _c.id > bindparam("row_id")))
).order_by(_c.started_at, _c.id).limit(1)
_FLAG = update(_c).where(_c.id == bindparam("row_id")).values(repeat_caller=bindparam("flag"))


def call_stored(connection: Connection, row: Any, repeat_window: timedelta,
                stored_with: set[int], flagged: bool = False) -> bool:
    """A call record was just inserted (with every record of the same flush, `stored_with`
    their ids; `row` the inserted values by column name, with its id; `flagged` its
    repeat flag as inserted): set its repeat flag, flag the caller's next call stored
    before if this one makes it a repeat, and add both to their hours' rollups, on the
    inserting connection: in the transaction that stores the record. Its repeat flag."""
    row_hour, row_queue = floor_hour(row.started_at), row.queue or ""
    repeat = False
    if row.direction == "inbound" and row.citizen_number:
        around = {"number": row.citizen_number, "row_id": row.id, "at": row.started_at}
        previous = connection.scalar(_PREVIOUS_CALL, around)
        repeat = previous is not None and row.started_at - previous <= repeat_window
        if repeat != flagged:
            connection.execute(_FLAG, {"row_id": row.id, "flag": repeat})
        following = connection.execute(_NEXT_CALL, around).first()
        if (following is not None and following.id not in stored_with
                and not following.repeat_caller
                and following.started_at - row.started_at <= repeat_window):
            connection.execute(_FLAG, {"row_id": following.id, "flag": True})
            counted = Sums()
            counted.counts["repeat_calls"] = 1
            _upsert(connection, floor_hour(following.started_at), following.queue or "",
                    counted, repeat_window)
    _upsert(connection, row_hour, row_queue, _of(row, repeat), repeat_window)
    return repeat


@event.listens_for(CallRecord, "after_insert")
def _inserted(mapper: Any, connection: Connection, row: CallRecord) -> None:
    # Every record inserted through a session's ORM keeps its rollup, whoever adds it
    # (telephony.records.store_call inserts with a statement and calls `call_stored`
    # itself); a bulk load around both is followed by `rebuild`. The mapper calls this
    # once all records of the flush are in, so each sees the others.
    session = object_session(row)
    window = DEFAULT_REPEAT_WINDOW if session is None else session.info.get(
        REPEAT_WINDOW_KEY, DEFAULT_REPEAT_WINDOW)
    stored_with = set() if session is None else {
        other.id for other in session.new if isinstance(other, CallRecord)}
    # as inserted: given, or the column's default (read without a load mid-flush)
    repeat = call_stored(connection, row, window, stored_with,
                         bool(row.__dict__.get("repeat_caller", False)))
    set_committed_value(row, "repeat_caller", repeat)


def _sum_columns(seconds: int) -> list[Any]:
    """The summed figures of a set of rollup rows, the longest wait, and how many of the
    rows were made with another repeat window than `seconds`."""
    r = CallHourRollup
    return [*(func.sum(r.__table__.c[name]) for name in (*COUNTS, *SUMS)),
            func.max(r.longest_wait_seconds),
            func.count(case((r.repeat_window_seconds != seconds, 1)))]


def _summed(row: Sequence[Any]) -> tuple[Sums, bool]:
    """`_sum_columns`' values as Sums, and whether the repeat window was the one asked."""
    sums = Sums()
    for name, value in zip(COUNTS, row[:len(COUNTS)], strict=True):
        sums.counts[name] = int(value or 0)
    for name, value in zip(SUMS, row[len(COUNTS):len(COUNTS) + len(SUMS)], strict=True):
        sums.sums[name] = float(value or 0.0)
    longest = row[-2]
    sums.longest_wait_seconds = None if longest is None else float(longest)
    return sums, row[-1] == 0


def rollup_sums(session: Session, start: datetime, end: datetime, queue: str | None,
                repeat_window: timedelta, also: Sequence[Any] = ()
                ) -> tuple[Sums, bool, list[Any]]:
    """The summed rollups of the whole hours [start, end) (both on the hour), of `queue` or
    all; whether their repeat counts were made with `repeat_window`; and the values of the
    scalar subqueries `also`, read in the same statement."""
    r = CallHourRollup
    where = [r.hour >= start, r.hour < end]
    if queue is not None:
        where.append(r.queue == queue)
    row = session.execute(select(
        *_sum_columns(int(repeat_window.total_seconds())), *also).where(*where)).one()
    extra = list(row[len(row) - len(also):])
    sums, same_window = _summed(row[:len(row) - len(also)])
    return sums, same_window, extra


def rollup_sums_tiled(session: Session, spans: Sequence[tuple[datetime, datetime]],
                      queue: str | None, repeat_window: timedelta
                      ) -> list[tuple[Sums, bool]]:
    """`rollup_sums` (without `also`) of each of `spans` (whole hours, in order, not
    overlapping; an empty span gives empty sums), in one statement for them all (a
    report's periods): each hour row is put in its span by a CASE on its hour, the hours
    between spans (the hour a half-hour zone's midnight falls in) in none."""
    out = [(Sums(), True) for _ in spans]
    filled = [(i, lo, hi) for i, (lo, hi) in enumerate(spans) if lo < hi]
    if not filled:
        return out
    r = CallHourRollup
    whens: list[tuple[Any, int]] = []
    reached = filled[0][1]
    for i, lo, hi in filled:
        if reached < lo:
            whens.append((r.hour < lo, -1))
        whens.append((r.hour < hi, i))
        reached = hi
    span = case(*whens, else_=-1)
    where = [r.hour >= filled[0][1], r.hour < reached]
    if queue is not None:
        where.append(r.queue == queue)
    for row in session.execute(
            select(span, *_sum_columns(int(repeat_window.total_seconds())))
            .where(*where).group_by(span)):
        if int(row[0]) >= 0:
            out[int(row[0])] = _summed(row[1:])
    return out


def queues_between(session: Session, start: datetime, end: datetime) -> set[str]:
    """Queues with a rollup row in the whole hours [start, end)."""
    return {name for name in session.scalars(
        select(CallHourRollup.queue).distinct().where(
            CallHourRollup.hour >= start, CallHourRollup.hour < end,
            CallHourRollup.offered + CallHourRollup.short_abandons > 0)) if name}


def _span(session: Session) -> tuple[datetime, datetime] | None:
    first, last = session.execute(select(func.min(CallRecord.started_at),
                                         func.max(CallRecord.started_at))).one()
    if first is None:
        return None
    return floor_hour(first), floor_hour(last) + HOUR


def rebuild(session: Session, start: datetime | None = None, end: datetime | None = None,
            repeat_window: timedelta = DEFAULT_REPEAT_WINDOW) -> int:
    """Recompute, from the call records, the repeat flags of the calls that began in
    [start, end) (widened to whole UTC hours; None: from the first or to the last call)
    and the rollup rows of those hours. Returns the number of calls read."""
    span = _span(session)
    lo = floor_hour(start) if start is not None else (span[0] if span else None)
    hi = ceil_hour(end) if end is not None else (span[1] if span else None)
    if lo is None or hi is None or lo >= hi:
        return 0
    c = CallRecord
    # The flags first, in Python (interval arithmetic differs between the databases): one
    # caller's calls together, so only the caller's latest call need be held.
    rows = session.execute(
        select(c.id, c.citizen_number, c.started_at, c.repeat_caller)
        .where(c.started_at >= lo - repeat_window, c.started_at < hi,
               c.direction == "inbound", c.citizen_number != "")
        .order_by(c.citizen_number, c.started_at, c.id).execution_options(yield_per=BATCH))
    caller, last_call = "", cast(datetime | None, None)
    flips: dict[bool, list[int]] = {True: [], False: []}
    for row_id, number, started, flagged in rows:
        previous = last_call if number == caller else None
        caller, last_call = number, started
        repeat = previous is not None and started - previous <= repeat_window
        if started >= lo and repeat != flagged:
            flips[repeat].append(row_id)
    for value, ids in flips.items():
        for chunk in _chunks(ids):
            session.execute(update(CallRecord).where(CallRecord.id.in_(chunk))
                            .values(repeat_caller=value)
                            .execution_options(synchronize_session=False))
    # Then the hours' rows, summed by the database.
    session.execute(delete(CallHourRollup).where(CallHourRollup.hour >= lo,
                                                 CallHourRollup.hour < hi))
    hour = _hour_of(session.get_bind().dialect.name)
    figures = _sql_figures(int(repeat_window.total_seconds()))
    session.execute(insert(CallHourRollup).from_select(
        ["hour", "queue", *figures], select(
            hour.label("hour"), func.coalesce(c.queue, "").label("queue"),
            *figures.values()).where(c.started_at >= lo, c.started_at < hi)
        .group_by(text("1"), text("2"))))  # by position: the bound values differ
    return session.scalar(select(func.count()).select_from(c).where(
        c.started_at >= lo, c.started_at < hi)) or 0


def _hour_of(dialect: str) -> Any:
    """The UTC hour a call began in, as the rollups' `hour` column stores it."""
    started = CallRecord.started_at
    if dialect == "postgresql":
        return func.timezone("UTC", func.date_trunc("hour", func.timezone("UTC", started)))
    # SQLite: the UTC time as text, 2026-10-01 16:05:09.123000 (core.db.UtcDateTime)
    return func.substr(started, 1, 13).op("||")(":00:00.000000")


def _sql_figures(window_seconds: int) -> dict[str, Any]:
    """`contribution`'s figures summed by SQL over the calls of a group."""
    c = CallRecord
    inbound, outbound = c.direction == "inbound", c.direction == "outbound"
    known = and_(inbound, c.citizen_number != "")
    in_queue = and_(inbound, c.queue.is_not(None))
    offered = and_(in_queue, c.short_abandon.is_(False))
    answered = and_(offered, c.outcome == "answered")
    wait = func.coalesce(c.wait_seconds, 0.0)

    def count(condition: Any) -> Any:
        return func.count(case((condition, 1)))

    def total(value: Any) -> Any:
        return func.coalesce(func.sum(case((answered, value))), 0.0)

    return {
        "calls": count(inbound), "offered": count(offered), "answered": count(answered),
        "abandoned": count(and_(offered, c.outcome == "abandoned")),
        "unanswered": count(and_(offered, c.outcome == "unanswered")),
        "short_abandons": count(and_(in_queue, c.short_abandon.is_(True))),
        **{f"answered_within_{t}": count(and_(answered, wait <= t))
           for t in SERVICE_THRESHOLDS},
        "known_number_calls": count(known),
        "repeat_calls": count(and_(known, c.repeat_caller.is_(True))),
        "outbound_calls": count(outbound),
        "outbound_answered": count(and_(outbound, c.outcome == "answered")),
        "wait_seconds": total(wait), "talk_seconds": total(func.coalesce(c.talk_seconds, 0.0)),
        "hold_seconds": total(func.coalesce(c.hold_seconds, 0.0)),
        "longest_wait_seconds": func.max(case((offered, c.wait_seconds))),
        "repeat_window_seconds": literal(window_seconds),
    }


def _chunks(items: list[Any], size: int = BATCH) -> Iterable[list[Any]]:
    for at in range(0, len(items), size):
        yield items[at:at + size]
