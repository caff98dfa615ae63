"""Call measures (话务指标) for a window of calls, read from the telephony room's own tables.

A call belongs to the window [start, end) by its `started_at`. Every figure below is of
inbound calls (citizens calling the hotline); the calls the hotline places itself (survey
calls, keep-my-place callbacks) are counted apart, as `outbound_calls` placed and
`outbound_answered` by the citizen, and change no inbound figure. Definitions:

- calls (来电): every stored inbound call, IVR-only calls included.
- offered (进线排队): calls that reached a queue, less short abandons. A short abandon
  (短时放弃: the caller hung up within the tracker's short-abandon threshold, so the record
  says `short_abandon`) is a misdial or a changed mind, not a caller the centre failed: it
  counts in neither offered nor abandoned, and is reported on its own.
- answered (接通), abandoned (放弃: the caller left the queue), unanswered (left by queue
  timeout or with no agent): the three outcomes of an offered call; unanswered calls stay in
  the denominators, so answer rate + abandon rate can fall short of 100 %.
- answer rate (接通率) = answered / offered; abandon rate (放弃率) = abandoned / offered.
- service level (服务水平) = answered within T seconds (wait <= T, T = 15 by default) / offered.
- ASA (平均应答速度) = total wait of answered calls / answered.
- AHT (平均处理时长) = (talk + wrap-up) / answered. The stored talk time runs from connect to
  the agent's hang-up with the holds inside it (telephony.calls), so hold is already in it
  and is not added a second time; `hold_seconds` is reported on its own. Wrap-up (话后整理)
  is the total of `wrap_up` seat intervals starting in the window that follow an inbound
  call: the agent's latest answered call connected before the interval (for one queue,
  of that queue).
- longest wait (最长等待): the longest queue wait of an offered call.
- repeat-call rate (重复来电率) = calls whose caller (one number in any form, core.phones) had
  called before, at most `repeat_lookback` earlier (24 h by default; any queue or outcome,
  before the window too) / calls from known numbers (withheld or unreadable ones are not).
- occupancy (占用率) = (talking + wrap-up) / (ready + ringing + talking + wrap-up) seat time
  of intervals starting in the window; paused time is not available time. Centre-wide:
  seat intervals carry no queue, so it is None for a single queue.

The counts and sums of whole UTC hours are read from the hourly rollups kept as calls are
stored (telephony.rollups, which says why hours); `raw=True` reads them from the call
records, the reference. Counts and sums come from SQL aggregates (count, sum and max over
CASE), with no dialect functions; ratios are taken in Python from them and rounded the same
way, so SQLite and PostgreSQL give the same figures. Rates are fractions (0.8 = 80 %), None
when nothing was there to divide by. Timestamps are compared in UTC.
"""

from __future__ import annotations

import dataclasses
import itertools
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from core.config import Hotline
from core.errors import HotlineError
from telephony import rollups, seats
from telephony.models import CallRecord, SeatInterval

DEFAULT_SERVICE_SECONDS = 15.0  # GB/T 33358: a person answers within 15 s
DEFAULT_REPEAT_LOOKBACK = timedelta(hours=Hotline().repeat_window_hours)  # the setting's
RATE_DIGITS = 4  # 0.5714 = 57.14 %
SECONDS_DIGITS = 1
# The records keep milliseconds; sums rounded to them lose the float noise that depends on
# the order a database adds rows in.
SUM_DIGITS = 3
OCCUPIED_STATES = (seats.TALKING, seats.WRAP_UP)
AVAILABLE_STATES = (seats.READY, seats.RINGING, seats.TALKING, seats.WRAP_UP)


class MeasureError(HotlineError):
    """A window or an option a measure cannot be computed for; says which."""


def utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive value (as SQLite gives stored times back) is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def check_window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The window in UTC; MeasureError unless both ends are time-zone aware, in order."""
    for name, moment in (("start", start), ("end", end)):
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise MeasureError(f"{name}: a time-zone aware datetime is needed, got {moment!r}")
    if end < start:
        raise MeasureError(f"window: end {end.isoformat()} is before start {start.isoformat()}")
    return start.astimezone(UTC), end.astimezone(UTC)


def check_tiles(tiles: Sequence[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """`tiles` (a report's periods, in UTC) as a list; MeasureError unless there is one at
    least and each begins where the one before it ends (their whole is their sum)."""
    checked = list(tiles)
    if not checked:
        raise MeasureError("tiles: at least one window is needed")
    if not all(a[1] == b[0] for a, b in itertools.pairwise(checked)):
        raise MeasureError("tiles: each one begins where the one before it ends")
    return checked


def ratio(part: float, whole: float, digits: int = RATE_DIGITS) -> float | None:
    """part / whole rounded, or None when there is nothing to divide by."""
    return None if not whole else round(part / whole, digits)


def plain(value: Any) -> Any:
    """A result as JSON-ready values: datetimes in ISO 8601, durations in seconds."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def _seconds(total: Any) -> float:
    return round(float(total or 0.0), SUM_DIGITS)


@dataclass(frozen=True)
class CallMeasures:
    """Call measures of one window, for one queue or (queue None) all of them."""

    start: datetime
    end: datetime
    queue: str | None
    service_seconds: float
    repeat_lookback: timedelta
    calls: int
    offered: int
    answered: int
    abandoned: int
    unanswered: int
    short_abandons: int
    answered_within: int  # answered with wait <= service_seconds
    answer_rate: float | None
    service_level: float | None
    abandon_rate: float | None
    asa_seconds: float | None
    aht_seconds: float | None
    talk_seconds: float  # totals over answered calls; hold is inside talk
    hold_seconds: float
    wrap_up_seconds: float
    longest_wait_seconds: float | None
    known_number_calls: int
    repeat_calls: int
    repeat_call_rate: float | None
    outbound_calls: int  # placed by the hotline: survey calls, callbacks, agents' own calls
    outbound_answered: int
    occupancy: float | None

    def as_dict(self) -> dict[str, Any]:
        return plain(self)  # type: ignore[no-any-return]


def call_measures(session: Session, start: datetime, end: datetime, *,
                  queue: str | None = None,
                  service_seconds: float = DEFAULT_SERVICE_SECONDS,
                  repeat_lookback: timedelta = DEFAULT_REPEAT_LOOKBACK,
                  raw: bool = False) -> CallMeasures:
    """The call measures of [start, end), for `queue` or (None) every queue.

    The whole UTC hours of the window are read from the hourly rollups (telephony.rollups),
    the pieces before the first and after the last whole hour from the call records; `raw`
    reads every figure from the call records (the reference the rollups are tested
    against). A service-level threshold the rollups do not keep, or repeat counts made with
    another repeat window than `repeat_lookback`, are read from the records too."""
    start, end = check_window(start, end)
    _check_options(service_seconds, repeat_lookback)
    lo, hi = rollups.ceil_hour(start), rollups.floor_hour(end)
    kept = float(service_seconds) in rollups.SERVICE_THRESHOLDS
    if raw or not kept or lo >= hi:
        figures = _raw_figures(session, start, end, queue, service_seconds)
        known, repeats = _repeat_calls(session, start, end, queue, repeat_lookback)
        wrap_total = _wrap_up_seconds(session, start, end, queue)
        occupancy = None if queue is not None else _occupancy(session, start, end)
    else:
        # the seat figures ride along in the one statement (a report reads many windows)
        seat_figures = [_wrap_up_query(start, end, queue)]
        if queue is None:
            seat_figures.extend(_seat_queries(start, end))
        summed, same_window, seat_totals = rollups.rollup_sums(
            session, lo, hi, queue, repeat_lookback,
            [query.scalar_subquery() for query in seat_figures])
        figures = _rolled_figures(summed, int(service_seconds))
        edges = [(a, b) for a, b in ((start, lo), (hi, end)) if a < b]
        for a, b in edges:
            figures = _combined(figures, _raw_figures(session, a, b, queue, service_seconds))
        if same_window:
            known, repeats = summed.counts["known_number_calls"], summed.counts["repeat_calls"]
            for a, b in edges:
                edge_known, edge_repeats = _repeat_calls(session, a, b, queue,
                                                         repeat_lookback)
                known, repeats = known + edge_known, repeats + edge_repeats
        else:
            known, repeats = _repeat_calls(session, start, end, queue, repeat_lookback)
        wrap_total = _seconds(seat_totals[0])
        occupancy = None if queue is not None else ratio(_seconds(seat_totals[1]),
                                                          _seconds(seat_totals[2]))
    return _measures(start, end, queue, service_seconds, repeat_lookback, figures,
                     known, repeats, wrap_total, occupancy)


def _check_options(service_seconds: float, repeat_lookback: timedelta) -> None:
    if service_seconds < 0:
        raise MeasureError(f"service_seconds: not below zero, got {service_seconds!r}")
    if repeat_lookback <= timedelta():
        raise MeasureError(f"repeat_lookback: above zero, got {repeat_lookback!r}")


def _measures(start: datetime, end: datetime, queue: str | None, service_seconds: float,
              repeat_lookback: timedelta, figures: dict[str, Any], known: int, repeats: int,
              wrap_total: float, occupancy: float | None) -> CallMeasures:
    """The measures of a window from its counts and sums, the rates taken here."""
    n_offered, n_answered, within = (figures["offered"], figures["answered"],
                                     figures["within"])
    talk, hold = _seconds(figures["talk"]), _seconds(figures["hold"])
    longest = figures["longest"]
    return CallMeasures(
        start=start, end=end, queue=queue, service_seconds=float(service_seconds),
        repeat_lookback=repeat_lookback, calls=figures["calls"], offered=n_offered,
        answered=n_answered, abandoned=figures["abandoned"],
        unanswered=figures["unanswered"], short_abandons=figures["short_abandons"],
        answered_within=within,
        answer_rate=ratio(n_answered, n_offered),
        service_level=ratio(within, n_offered),
        abandon_rate=ratio(figures["abandoned"], n_offered),
        asa_seconds=ratio(_seconds(figures["wait"]), n_answered, SECONDS_DIGITS),
        aht_seconds=ratio(talk + wrap_total, n_answered, SECONDS_DIGITS),
        talk_seconds=talk, hold_seconds=hold, wrap_up_seconds=wrap_total,
        longest_wait_seconds=None if longest is None else round(float(longest), SUM_DIGITS),
        known_number_calls=known, repeat_calls=repeats, repeat_call_rate=ratio(repeats, known),
        outbound_calls=figures["outbound"], outbound_answered=figures["outbound_answered"],
        occupancy=occupancy,
    )


_FIGURES = ("calls", "offered", "answered", "abandoned", "unanswered", "short_abandons",
            "within", "wait", "talk", "hold", "longest", "outbound", "outbound_answered")


def _raw_figures(session: Session, start: datetime, end: datetime, queue: str | None,
                 service_seconds: float) -> dict[str, Any]:
    """The counts and sums of the calls of [start, end), read from the call records."""
    call = CallRecord
    where = [call.started_at >= start, call.started_at < end]
    if queue is not None:
        where.append(call.queue == queue)
    row = session.execute(select(*_figure_columns(service_seconds))
                          .select_from(call).where(*where)).one()
    return _figures_of(row)


def _figure_columns(service_seconds: float) -> list[Any]:
    """The aggregates of `_FIGURES` over a set of call records."""
    call = CallRecord
    outbound = call.direction == "outbound"
    in_queue = and_(call.direction == "inbound", call.queue.is_not(None))
    offered = and_(in_queue, call.short_abandon.is_(False))
    answered = and_(offered, call.outcome == "answered")
    wait = func.coalesce(call.wait_seconds, 0.0)
    return [
        func.count(case((call.direction == "inbound", 1))),
        func.count(case((offered, 1))),
        func.count(case((answered, 1))),
        func.count(case((and_(offered, call.outcome == "abandoned"), 1))),
        func.count(case((and_(offered, call.outcome == "unanswered"), 1))),
        func.count(case((and_(in_queue, call.short_abandon.is_(True)), 1))),
        func.count(case((and_(answered, wait <= service_seconds), 1))),
        func.sum(case((answered, wait))),
        func.sum(case((answered, func.coalesce(call.talk_seconds, 0.0)))),
        func.sum(case((answered, call.hold_seconds))),
        func.max(case((offered, call.wait_seconds))),
        func.count(case((outbound, 1))),
        func.count(case((and_(outbound, call.outcome == "answered"), 1))),
    ]


def _figures_of(row: Sequence[Any]) -> dict[str, Any]:
    figures = dict(zip(_FIGURES, row, strict=True))
    for name in ("wait", "talk", "hold"):
        figures[name] = float(figures[name] or 0.0)
    for name in _FIGURES:
        if name not in ("wait", "talk", "hold", "longest"):
            figures[name] = int(figures[name] or 0)
    return figures


def _rolled_figures(summed: rollups.Sums, service_seconds: int) -> dict[str, Any]:
    c = summed.counts
    return {"calls": c["calls"], "offered": c["offered"], "answered": c["answered"],
            "abandoned": c["abandoned"], "unanswered": c["unanswered"],
            "short_abandons": c["short_abandons"],
            "within": c[f"answered_within_{service_seconds}"],
            "wait": summed.sums["wait_seconds"], "talk": summed.sums["talk_seconds"],
            "hold": summed.sums["hold_seconds"], "longest": summed.longest_wait_seconds,
            "outbound": c["outbound_calls"], "outbound_answered": c["outbound_answered"]}


def _combined(one: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    longest = [value for value in (one["longest"], other["longest"]) if value is not None]
    return {**{name: one[name] + other[name] for name in _FIGURES if name != "longest"},
            "longest": max(longest) if longest else None}


def call_measures_by_queue(session: Session, start: datetime, end: datetime,
                           **options: Any) -> dict[str, CallMeasures]:
    """`call_measures` for each queue that had a call in [start, end), by queue name."""
    start, end = check_window(start, end)
    lo, hi = rollups.ceil_hour(start), rollups.floor_hour(end)
    if options.get("raw") or lo >= hi:
        names, pieces = set(), [(start, end)]
    else:  # the whole hours' queues from the rollups, the ends' from the records
        names = rollups.queues_between(session, lo, hi)
        pieces = [(a, b) for a, b in ((start, lo), (hi, end)) if a < b]
    for a, b in pieces:
        names.update(session.scalars(select(CallRecord.queue).distinct().where(
            CallRecord.started_at >= a, CallRecord.started_at < b,
            CallRecord.direction == "inbound", CallRecord.queue.is_not(None))))
    return {name: call_measures(session, start, end, queue=name, **options)
            for name in sorted(names)}


def call_measures_tiled(session: Session, tiles: Sequence[tuple[datetime, datetime]], *,
                        queue: str | None = None,
                        service_seconds: float = DEFAULT_SERVICE_SECONDS,
                        repeat_lookback: timedelta = DEFAULT_REPEAT_LOOKBACK
                        ) -> tuple[CallMeasures, list[CallMeasures]]:
    """`call_measures` of the whole of `tiles` (contiguous windows, in order: a report's
    periods) and of each tile, equal to asking for each one by one, in a few statements
    whatever the number of tiles (a report by day asked one tile at a time was a statement
    a day): the tiles' whole hours from the rollups grouped by tile, their seat figures
    grouped by tile, and the pieces the rollups cannot give (the ends of a tile that are
    not whole hours, a tile without a whole hour, the repeat calls of a tile whose rollups
    were made with another repeat window) from the records, grouped by piece. The whole's
    counts and sums are the tiles' added up: every figure is a count, a sum or a maximum
    of calls or seat intervals that each fall in one tile. With a service-level threshold
    the rollups do not keep, the tiles are read one by one."""
    tiles = check_tiles([check_window(lo, hi) for lo, hi in tiles])
    _check_options(service_seconds, repeat_lookback)
    options: dict[str, Any] = {"queue": queue, "service_seconds": service_seconds,
                               "repeat_lookback": repeat_lookback}
    if float(service_seconds) not in rollups.SERVICE_THRESHOLDS:
        return (call_measures(session, tiles[0][0], tiles[-1][1], **options),
                [call_measures(session, lo, hi, **options) for lo, hi in tiles])
    spans = [(rollups.ceil_hour(lo), rollups.floor_hour(hi)) for lo, hi in tiles]
    rolled = [lo < hi for lo, hi in spans]
    summed = rollups.rollup_sums_tiled(session, spans, queue, repeat_lookback)
    # What each tile reads from the records, as call_measures would: the figures of its
    # ends outside its whole hours (or of all of it, without a whole hour), and its repeat
    # calls there too (or in all of it, if its rollups counted them with another window).
    edges: list[list[tuple[datetime, datetime]]] = []
    repeat_pieces: list[list[tuple[datetime, datetime]]] = []
    for (lo, hi), (first, last), (_sums, same_window) in zip(tiles, spans, summed,
                                                             strict=True):
        all_of_it = [(lo, hi)] if lo < hi else []
        if first < last:
            ends = [(a, b) for a, b in ((lo, first), (last, hi)) if a < b]
            edges.append(ends)
            repeat_pieces.append(ends if same_window else all_of_it)
        else:
            edges.append(all_of_it)
            repeat_pieces.append(all_of_it)
    edge_figures = iter(_raw_figures_of_pieces(
        session, [piece for pieces in edges for piece in pieces], queue, service_seconds))
    edge_repeats = iter(_repeat_calls_of_pieces(
        session, [piece for pieces in repeat_pieces for piece in pieces], queue,
        repeat_lookback))
    seat_sums = _seat_sums_tiled(session, tiles, queue)
    each: list[CallMeasures] = []
    whole_figures, known_all, repeats_all = _no_figures(), 0, 0
    seat_all = [0.0, 0.0, 0.0]
    for i, (lo, hi) in enumerate(tiles):
        sums, same_window = summed[i]
        figures = _rolled_figures(sums, int(service_seconds)) if rolled[i] else _no_figures()
        for _piece in edges[i]:  # in call_measures' order: the float sums add up alike
            figures = _combined(figures, next(edge_figures))
        known = repeats = 0
        if rolled[i] and same_window:
            known, repeats = sums.counts["known_number_calls"], sums.counts["repeat_calls"]
        for _piece in repeat_pieces[i]:
            piece_known, piece_repeats = next(edge_repeats)
            known, repeats = known + piece_known, repeats + piece_repeats
        wrap, busy, available = seat_sums[i]
        each.append(_measures(
            lo, hi, queue, service_seconds, repeat_lookback, figures, known, repeats,
            _seconds(wrap), None if queue is not None else ratio(_seconds(busy),
                                                                  _seconds(available))))
        whole_figures = _combined(whole_figures, figures)
        known_all, repeats_all = known_all + known, repeats_all + repeats
        seat_all = [total + float(value or 0.0) for total, value in zip(
            seat_all, seat_sums[i], strict=True)]
    occupancy = None if queue is not None else ratio(_seconds(seat_all[1]),
                                                      _seconds(seat_all[2]))
    whole = _measures(tiles[0][0], tiles[-1][1], queue, service_seconds, repeat_lookback,
                      whole_figures, known_all, repeats_all, _seconds(seat_all[0]), occupancy)
    return whole, each


def _no_figures() -> dict[str, Any]:
    """The figures of no call, as `_raw_figures` gives them for an empty window."""
    return {**dict.fromkeys(_FIGURES, 0), "wait": 0.0, "talk": 0.0, "hold": 0.0,
            "longest": None}


def _in_pieces(column: Any, pieces: Sequence[tuple[datetime, datetime]]) -> tuple[Any, Any]:
    """(whether `column` falls in one of `pieces`, the index of the piece it falls in) for
    pieces in order of start: the condition takes touching or overlapping pieces as one
    range (an index range scan each); the index, a CASE on the pieces' ends, is meant for
    pieces that do not overlap."""
    ranges: list[list[datetime]] = []
    for lo, hi in pieces:
        if lo >= hi:
            continue
        if ranges and ranges[-1][1] >= lo:
            ranges[-1][1] = max(ranges[-1][1], hi)
        else:
            ranges.append([lo, hi])
    inside = or_(*(and_(column >= lo, column < hi) for lo, hi in ranges))
    # within `inside`, the first piece ending after the value holds it
    return inside, case(*((column < hi, i) for i, (lo, hi) in enumerate(pieces) if lo < hi),
                        else_=-1)


def _raw_figures_of_pieces(session: Session, pieces: Sequence[tuple[datetime, datetime]],
                           queue: str | None, service_seconds: float
                           ) -> list[dict[str, Any]]:
    """`_raw_figures` of each of `pieces` (in order, not overlapping), in one statement."""
    out = [_no_figures() for _ in pieces]
    if not any(lo < hi for lo, hi in pieces):
        return out
    inside, piece = _in_pieces(CallRecord.started_at, pieces)
    where = [inside] if queue is None else [inside, CallRecord.queue == queue]
    for row in session.execute(select(piece, *_figure_columns(service_seconds))
                               .select_from(CallRecord).where(*where).group_by(piece)):
        if int(row[0]) >= 0:
            out[int(row[0])] = _figures_of(row[1:])
    return out


def _repeat_calls_of_pieces(session: Session, pieces: Sequence[tuple[datetime, datetime]],
                            queue: str | None, lookback: timedelta) -> list[tuple[int, int]]:
    """`_repeat_calls` of each of `pieces` (in order, not overlapping), in one statement:
    the calls of the callers who called in a piece, from `lookback` before each piece.
    A call's previous call read here is its caller's previous call whenever that one is
    within `lookback`, as `_repeat_calls` finds it."""
    out = [(0, 0)] * len(pieces)
    if not any(lo < hi for lo, hi in pieces):
        return out
    call = CallRecord
    known_inbound = [call.direction == "inbound", call.citizen_number != ""]
    in_piece, _ = _in_pieces(call.started_at, pieces)
    # the same table inside: not correlated to the outer statement's rows
    callers = select(call.citizen_number).where(in_piece, *known_inbound).correlate(None)
    if queue is not None:
        callers = callers.where(call.queue == queue)
    history, _ = _in_pieces(call.started_at, [(lo - lookback, hi) for lo, hi in pieces
                                              if lo < hi])
    rows = session.execute(
        select(call.citizen_number, call.started_at, call.queue)
        .where(history, *known_inbound, call.citizen_number.in_(callers))
        .order_by(call.started_at, call.id)).all()
    starts = [lo for lo, _hi in pieces]
    counts = [[0, 0] for _ in pieces]
    last_call: dict[str, datetime] = {}
    for caller, started, call_queue in rows:
        started = utc(started)
        previous = last_call.get(caller)
        last_call[caller] = started
        i = bisect_right(starts, started) - 1
        if i < 0 or started >= pieces[i][1] or (queue is not None and call_queue != queue):
            continue  # history only
        counts[i][0] += 1
        if previous is not None and started - previous <= lookback:
            counts[i][1] += 1
    return [(known, repeats) for known, repeats in counts]


def _seat_sums_tiled(session: Session, tiles: Sequence[tuple[datetime, datetime]],
                     queue: str | None) -> list[tuple[Any, Any, Any]]:
    """(wrap-up, occupied, available) seat seconds of each of `tiles` (contiguous, in
    order), unrounded, in one statement: `_wrap_up_query` and `_seat_queries` grouped by
    the tile an interval starts in (occupied and available None for one queue)."""
    interval = SeatInterval
    tile = case(*((interval.started_at < hi, i) for i, (_lo, hi) in enumerate(tiles)),
                else_=-1)
    follows = _follows_wrap_up(queue)
    columns = [func.sum(case((interval.state == seats.WRAP_UP,
                              case((follows, interval.seconds))), else_=None))]
    if queue is None:
        columns += [func.sum(case((interval.state.in_(states), interval.seconds)))
                    for states in (OCCUPIED_STATES, AVAILABLE_STATES)]
    out: list[tuple[Any, Any, Any]] = [(None, None, None)] * len(tiles)
    for row in session.execute(
            select(tile, *columns).where(interval.started_at >= tiles[0][0],
                                         interval.started_at < tiles[-1][1])
            .group_by(tile)):
        if int(row[0]) >= 0:
            out[int(row[0])] = (row[1], *(row[2:] if queue is None else (None, None)))
    return out


def _follows_wrap_up(queue: str | None) -> Any:
    """Whether a wrap-up interval follows an inbound call (of `queue`): the latest answered
    call its agent had connected when it began (it starts at AgentComplete)."""
    interval = SeatInterval

    def follows(column: Any) -> Any:
        return (select(column)
                .where(CallRecord.agent == interval.agent_number,
                       CallRecord.outcome == "answered",
                       CallRecord.connected_at <= interval.started_at)
                .order_by(CallRecord.connected_at.desc(), CallRecord.id.desc())
                .limit(1).correlate(interval).scalar_subquery())

    inbound = follows(CallRecord.direction) == "inbound"
    return inbound if queue is None else and_(inbound, follows(CallRecord.queue) == queue)


def _wrap_up_query(start: datetime, end: datetime, queue: str | None) -> Any:
    interval = SeatInterval
    return select(func.sum(interval.seconds)).where(
        interval.state == seats.WRAP_UP, interval.started_at >= start,
        interval.started_at < end, _follows_wrap_up(queue))


def _seat_queries(start: datetime, end: datetime) -> tuple[Any, Any]:
    """(occupied, available) seat seconds of the intervals starting in [start, end)."""
    interval = SeatInterval
    return tuple(select(func.sum(interval.seconds)).where(  # type: ignore[return-value]
        interval.state.in_(states), interval.started_at >= start, interval.started_at < end)
        for states in (OCCUPIED_STATES, AVAILABLE_STATES))


def _wrap_up_seconds(session: Session, start: datetime, end: datetime,
                     queue: str | None) -> float:
    return _seconds(session.scalar(_wrap_up_query(start, end, queue)))


def _occupancy(session: Session, start: datetime, end: datetime) -> float | None:
    busy, available = (session.scalar(query) for query in _seat_queries(start, end))
    return ratio(_seconds(busy), _seconds(available))


def _repeat_calls(session: Session, start: datetime, end: datetime, queue: str | None,
                  lookback: timedelta) -> tuple[int, int]:
    """(calls from known numbers, of them repeats). The gap to the caller's previous call
    is taken in Python: interval arithmetic in SQL differs between SQLite and PostgreSQL.
    One caller is one stored number (core.phones), whatever form the network sent."""
    rows = session.execute(
        select(CallRecord.citizen_number, CallRecord.started_at, CallRecord.queue)
        .where(CallRecord.started_at >= start - lookback, CallRecord.started_at < end,
               CallRecord.direction == "inbound", CallRecord.citizen_number != "")
        .order_by(CallRecord.started_at, CallRecord.id)).all()
    last_call: dict[str, datetime] = {}
    known = repeats = 0
    for caller, started, call_queue in rows:
        started = utc(started)
        previous = last_call.get(caller)
        last_call[caller] = started
        if started < start or (queue is not None and call_queue != queue):
            continue  # history only
        known += 1
        if previous is not None and started - previous <= lookback:
            repeats += 1
    return known, repeats


@dataclass(frozen=True)
class AgentDay:
    """One agent's own figures in a window (坐席当日数据), for the agent's desk: citizens'
    calls answered (not the calls the hotline placed), their talk time, and time paused
    (stored pause intervals, clipped to the window; a pause still going is not stored yet)."""

    answered: int
    talk_seconds: float
    average_talk_seconds: float | None
    pause_seconds: float


def agent_day(session: Session, agent: str, start: datetime, end: datetime) -> AgentDay:
    start, end = check_window(start, end)
    answered, talk = session.execute(
        select(func.count(CallRecord.id), func.sum(CallRecord.talk_seconds)).where(
            CallRecord.agent == agent, CallRecord.outcome == "answered",
            CallRecord.direction == "inbound",
            CallRecord.connected_at >= start, CallRecord.connected_at < end)).one()
    paused = 0.0
    for began, ended in session.execute(
            select(SeatInterval.started_at, SeatInterval.ended_at).where(
                SeatInterval.agent_number == agent, SeatInterval.state == seats.PAUSED,
                SeatInterval.started_at < end, SeatInterval.ended_at > start)):
        paused += max(0.0, (min(utc(ended), end) - max(utc(began), start)).total_seconds())
    talk_seconds = _seconds(talk)
    return AgentDay(answered=int(answered or 0), talk_seconds=talk_seconds,
                    average_talk_seconds=None if not answered
                    else round(talk_seconds / answered, 1),
                    pause_seconds=_seconds(paused))


def offered_arrivals(session: Session, start: datetime, end: datetime) -> list[datetime]:
    """When each offered inbound call of [start, end) began (UTC), for staffing forecasts
    (排班预测): calls that reached a queue, short abandons apart."""
    start, end = check_window(start, end)
    return [utc(at) for at in session.scalars(
        select(CallRecord.started_at).where(
            CallRecord.started_at >= start, CallRecord.started_at < end,
            CallRecord.direction == "inbound", CallRecord.queue.is_not(None),
            CallRecord.short_abandon.is_(False)).order_by(CallRecord.started_at))]


def seat_stretches(session: Session, start: datetime, end: datetime
                   ) -> list[tuple[datetime, datetime]]:
    """(began, ended) of every stored seat interval overlapping [start, end), any state
    (paused too: a seat logged in), clipped to the window: who was logged in, when."""
    start, end = check_window(start, end)
    return [(max(utc(began), start), min(utc(ended), end)) for began, ended in session.execute(
        select(SeatInterval.started_at, SeatInterval.ended_at).where(
            SeatInterval.started_at < end, SeatInterval.ended_at > start))]
