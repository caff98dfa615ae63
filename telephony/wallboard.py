"""The wallboard's door into the telephony room (监控大屏数据): live calls and window figures.

Two things a board is made of, both read here so the board's room (agent_desk) never touches
this room's tables or keys:

- Live calls now (实时话务): the telephony service keeps every inbound call that has joined
  a queue and not yet ended in the Redis hash LIVE_CALLS_KEY (call id -> JSON: queue, the
  caller's number, when it joined the queue, the agent and when they answered). It is
  rewritten from the service's own call tracker and Asterisk's QueueStatus whenever the AMI
  link is (re)established, so a restart of either leaves no stale caller and misses none.
  `live_calls(client)` reads it.
- Window figures (时段指标) from the stored call records, for sliding windows ending now:
  `window_figures(session, now, windows)` makes ONE aggregate query over the widest window
  (the started_at index bounds it), grouped by queue and by band (the windows all end now,
  so they nest: each call is in one band between two windows' starts), and one more for
  the wrap-up; a window is the sum of its bands, the centre the sum of its queues. It is
  what makes a 24-hour window of 20,000 calls cheap enough to recompute on every call or
  seat event (bench/wallboard.py).

Definitions are telephony.measures' (offered excludes short abandons, which are reported
apart; service level = answered within T s / offered; ASA = wait of answered / answered),
with one simplification for the board: AHT (平均处理时长) = (talk + wrap-up) / answered, where
the wrap-up is the centre's wrap-up seat intervals starting in the window; a queue's AHT is
its own talk per answered call plus the centre's wrap-up per answered call (seat intervals
carry no queue; telephony.measures attributes them per call, too slowly for a board).
Inbound calls only; the calls the hotline places itself are not the board's.
"""

from __future__ import annotations

import bisect
import json
from array import array
from dataclasses import dataclass
from datetime import datetime
from itertools import accumulate, islice
from typing import Any

import redis
from sqlalchemy import and_, bindparam, case, func, or_, select
from sqlalchemy.orm import Session

from telephony import seats
from telephony.measures import SECONDS_DIGITS, check_window, ratio, utc
from telephony.models import CallbackRequest, CallRecord, SeatInterval

LIVE_CALLS_KEY = "hotline:live-calls"  # Redis hash: call id -> live call (JSON)
CENTRE = ""  # the key of the whole centre's figures
PENDING_CALLBACKS = ("requested", "holding", "dialling", "failed")  # not yet reached


@dataclass(frozen=True)
class LiveCall:
    """A caller in a queue now: waiting (agent None) or talking to `agent`."""

    call_id: str
    queue: str
    caller: str  # the number as Asterisk gave it: mask it before showing it
    joined_at: float  # Unix seconds
    agent: str | None = None
    connected_at: float | None = None

    def as_json(self) -> str:
        return json.dumps({"queue": self.queue, "caller": self.caller,
                           "joined_at": self.joined_at, "agent": self.agent,
                           "connected_at": self.connected_at})


def live_calls(client: redis.Redis) -> list[LiveCall]:
    """Every call in a queue now, waiting or answered, oldest first."""
    found = []
    for key, raw in client.hgetall(LIVE_CALLS_KEY).items():
        try:
            data = json.loads(raw)
            found.append(LiveCall(
                key.decode() if isinstance(key, bytes) else str(key), str(data["queue"]),
                str(data.get("caller") or ""), float(data["joined_at"]),
                data.get("agent") or None,
                None if data.get("connected_at") is None else float(data["connected_at"])))
        except (ValueError, KeyError, TypeError):
            continue  # not one of ours
    return sorted(found, key=lambda call: (call.joined_at, call.call_id))


def put_live_call(client: redis.Redis, call: LiveCall) -> None:
    client.hset(LIVE_CALLS_KEY, call.call_id, call.as_json())


def drop_live_call(client: redis.Redis, call_id: str) -> None:
    client.hdel(LIVE_CALLS_KEY, call_id)


def replace_live_calls(client: redis.Redis, calls: list[LiveCall]) -> None:
    """The whole hash at once (after a resync): what is not here is gone."""
    pipe = client.pipeline(transaction=True)
    pipe.delete(LIVE_CALLS_KEY)
    if calls:
        pipe.hset(LIVE_CALLS_KEY, mapping={c.call_id: c.as_json() for c in calls})
    pipe.execute()


def seats_now(client: redis.Redis) -> list[dict[str, Any]]:
    """Every agent's live seat as the telephony service keeps it (seats.SEATS_KEY), not to
    be changed: a seat's text read before gives the same dict (a board a few times a
    second reads every seat, most of them as they were)."""
    found = []
    for raw in client.hvals(seats.SEATS_KEY):
        seat = _SEATS_READ.get(raw, _UNREAD)
        if seat is _UNREAD:
            try:
                seat = json.loads(raw)
            except ValueError:
                seat = None
            if not (isinstance(seat, dict) and seat.get("agent")):
                seat = None
            if len(_SEATS_READ) >= SEATS_READ_KEPT:
                _SEATS_READ.clear()
            _SEATS_READ[raw] = seat
        if seat is not None:
            found.append(seat)
    return sorted(found, key=lambda seat: str(seat["agent"]))


SEATS_READ_KEPT = 4_096  # seat texts whose dicts seats_now keeps
_SEATS_READ: dict[bytes | str, Any] = {}
_UNREAD = object()


@dataclass(frozen=True)
class Figures:
    """One window's figures for a queue or the centre (CENTRE)."""

    offered: int
    answered: int
    abandoned: int
    short_abandons: int
    answered_within: int
    wait_seconds: float  # total, of answered calls
    talk_seconds: float  # total, of answered calls
    wrap_up_seconds: float  # the centre's, in the window

    @property
    def answer_rate(self) -> float | None:
        return ratio(self.answered, self.offered)

    @property
    def abandon_rate(self) -> float | None:
        return ratio(self.abandoned, self.offered)

    @property
    def service_level(self) -> float | None:
        return ratio(self.answered_within, self.offered)

    @property
    def asa_seconds(self) -> float | None:
        return ratio(self.wait_seconds, self.answered, SECONDS_DIGITS)

    def as_dict(self) -> dict[str, Any]:
        return {"offered": self.offered, "answered": self.answered,
                "abandoned": self.abandoned, "short_abandons": self.short_abandons,
                "answered_within": self.answered_within, "answer_rate": self.answer_rate,
                "abandon_rate": self.abandon_rate, "service_level": self.service_level,
                "asa_seconds": self.asa_seconds}


_FIGURES = ("offered", "answered", "abandoned", "short_abandons", "answered_within",
            "wait_seconds", "talk_seconds")


def window_figures(session: Session, now: datetime, windows: dict[str, datetime], *,
                   service_seconds: float = 15.0) -> dict[str, dict[str, dict[str, Any]]]:
    """window name -> queue (CENTRE: all) -> figures, for each window [start, now).

    Every window ends now, so they nest: the widest is cut into bands at the other
    windows' starts, each call falls in one band (a CASE on started_at), the query sums
    each queue's calls per band (GROUP BY queue, band), and a window's figures are the sums
    of the bands inside it. A queue appears in every window once it had an offered or
    short-abandoned call in the widest one. Each figure dict also has aht_seconds."""
    checked = {name: check_window(start, now)[0] for name, start in windows.items()}
    _, now = check_window(now, now)
    if not checked:
        return {}
    starts = sorted(set(checked.values()), reverse=True)  # the narrowest window first
    widest = starts[-1]
    call = CallRecord

    def band(column: Any) -> Any:
        return case(*[(column >= start, index) for index, start in enumerate(starts[:-1])],
                    else_=len(starts) - 1)

    in_queue = and_(call.direction == "inbound", call.queue.is_not(None))
    offered = call.short_abandon.is_(False)  # within in_queue
    answered = and_(offered, call.outcome == "answered")
    wait = func.coalesce(call.wait_seconds, 0.0)
    call_band = band(call.started_at).label("band")
    rows = session.execute(
        select(call.queue, call_band,
               func.count(case((offered, 1))),
               func.count(case((answered, 1))),
               func.count(case((and_(offered, call.outcome == "abandoned"), 1))),
               func.count(case((call.short_abandon.is_(True), 1))),
               func.count(case((and_(answered, wait <= service_seconds), 1))),
               func.sum(case((answered, wait), else_=0.0)),
               func.sum(case((answered, func.coalesce(call.talk_seconds, 0.0)), else_=0.0)))
        .where(call.started_at >= widest, call.started_at < now, in_queue)
        .group_by(call.queue, call_band)).all()
    interval = SeatInterval
    wrap_band = band(interval.started_at).label("band")
    wraps = dict(session.execute(
        select(wrap_band, func.sum(interval.seconds)).where(
            interval.state == seats.WRAP_UP, interval.started_at >= widest,
            interval.started_at < now).group_by(wrap_band)).all())
    return _assemble(checked, starts, [(str(r[0]), int(r[1]), *r[2:]) for r in rows],
                     {int(b): float(v or 0.0) for b, v in wraps.items()})


def _assemble(checked: dict[str, datetime], starts: list[datetime], rows: list[Any],
              wraps: dict[int, float]) -> dict[str, dict[str, dict[str, Any]]]:
    """The windows' figures from per-(queue, band) sums and per-band wrap-up."""
    queues = sorted({str(row[0]) for row in rows})
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, start in checked.items():
        last = starts.index(start)  # this window is bands 0..last
        wrap = round(sum(float(wraps.get(b) or 0.0) for b in range(last + 1)), 3)
        sums = {queue: dict.fromkeys(_FIGURES, 0.0) for queue in (CENTRE, *queues)}
        for row in rows:
            if int(row[1]) > last:
                continue
            for key, value in zip(_FIGURES, row[2:], strict=True):
                sums[str(row[0])][key] += float(value or 0)
                sums[CENTRE][key] += float(value or 0)
        answered_all = int(sums[CENTRE]["answered"])
        wrap_each = wrap / answered_all if answered_all else 0.0
        figures: dict[str, dict[str, Any]] = {}
        for queue, values in sums.items():
            made = Figures(int(values["offered"]), int(values["answered"]),
                           int(values["abandoned"]), int(values["short_abandons"]),
                           int(values["answered_within"]),
                           round(values["wait_seconds"], 3), round(values["talk_seconds"], 3),
                           wrap)
            shown = made.as_dict()
            shown["aht_seconds"] = None if not made.answered else round(
                made.talk_seconds / made.answered + wrap_each, SECONDS_DIGITS)
            figures[queue] = shown
        out[name] = figures
    return out


# built once: every board asks
_PENDING_BY_QUEUE = select(CallbackRequest.queue, func.count()).where(
    CallbackRequest.state.in_(PENDING_CALLBACKS)).group_by(CallbackRequest.queue)


def callbacks_pending(session: Session) -> dict[str, int]:
    """Keep-my-place callbacks not yet reached, by queue (CENTRE: all of them)."""
    rows = session.connection().execute(_PENDING_BY_QUEUE).all()
    pending = {str(queue): int(count) for queue, count in rows}
    pending[CENTRE] = sum(pending.values())
    return pending


class _Rows:
    """Rows sorted by start time, as columns of C doubles (`array`): each row's start and
    figures, and per figure the running totals (totals[k][i]: figure k of the rows before
    row i), so the sum over rows lo..hi-1 is totals[k][hi] - totals[k][lo]. About 120 bytes
    a row, where a tuple of Python floats and its running totals took ~1 KB; the totals are
    redone only from the first row that moved (a late record lands near the end), not for
    the whole window on every board."""

    def __init__(self, width: int) -> None:
        self.starts = array("d")
        self.values = [array("d") for _ in range(width)]
        self.totals = [array("d", [0.0]) for _ in range(width)]
        self._stale: int | None = None  # the first row whose running totals are out of date

    def __len__(self) -> int:
        return len(self.starts)

    def add(self, start: float, values: tuple[float, ...]) -> None:
        at = bisect.bisect_right(self.starts, start)
        self.starts.insert(at, start)
        for column, value in zip(self.values, values, strict=True):
            column.insert(at, value)
        self._stale = at if self._stale is None else min(self._stale, at)

    def drop_before(self, floor: float) -> bool:
        """Drop the rows that started before `floor` (totals settled); whether any went.
        The totals stay right: a sum is a difference of two, whatever the first one is."""
        cut = bisect.bisect_left(self.starts, floor)
        if not cut:
            return False
        assert self._stale is None, "settle the totals first"
        del self.starts[:cut]
        for column in (*self.values, *self.totals):
            del column[:cut]
        return True

    def settle(self) -> None:
        """Bring the running totals up to date from the first row added since."""
        at, self._stale = self._stale, None
        if at is None:
            return
        for column, totals in zip(self.values, self.totals, strict=True):
            del totals[at + 1:]
            totals.extend(islice(accumulate(column[at:], initial=totals[at]), 1, None))

    def sums(self, lo_start: float, hi_start: float) -> tuple[float, ...] | None:
        """Each figure's sum over the rows started in [lo_start, hi_start); None for none."""
        lo = bisect.bisect_left(self.starts, lo_start)
        hi = bisect.bisect_left(self.starts, hi_start)
        if hi <= lo:
            return None
        return tuple(totals[hi] - totals[lo] for totals in self.totals)


class FigureCache:
    """The same figures as `window_figures`, kept up to date instead of recomputed: for the
    board's loop, which asks on every call or seat event.

    It holds the few columns of each queued inbound call (and each wrap-up interval) that
    started inside the widest window, per queue and sorted by start, with running totals
    (prefix sums) of each figure (`_Rows`); `refresh` adds the rows stored since (by id:
    those above the highest seen, and the ids at most RESCAN below it that were missing
    when it was seen, so a row whose transaction committed after a higher id was seen is
    not missed, and none is read or counted twice) and drops those the widest window has
    left. A window's sum is then two bisections and a subtraction per queue and figure,
    with no scan of the table.

    What it holds grows with the calls of the widest window (24 hours: ~170,000 calls at
    2 calls/s, ~20 MB as `_Rows`), and nothing else grows: the ids kept to count each row
    once are only those that can be read again (within RESCAN of the highest)."""

    RESCAN = 1_000

    def __init__(self) -> None:
        self.calls: dict[str, _Rows] = {}
        self.wraps = _Rows(1)
        # per table ("call", "wrap"): the highest id read, the ids below it (within RESCAN)
        # that were missing when it was read (a transaction not committed yet, or rolled
        # back), and the ids counted that a gap could bring again (within RESCAN too)
        self._top: dict[str, int] = {}
        self._gaps: dict[str, set[int]] = {}
        self._counted: dict[str, set[int]] = {}
        self._reads: dict[str, tuple[Any, Any]] = {}  # per table: rows after top (, or gaps)

    def _unread(self, session: Session, table: str, columns: tuple[Any, ...],
                in_window: Any) -> list[Any]:
        """The rows of `table` (columns[0] its id) not read before, each once: those above
        the highest id read, and those that were missing below it. The first time, the
        rows `in_window` only (the window's rows; older ones are of no use)."""
        row_id = columns[0]
        top, rows = self._top.get(table), []
        if top is None:  # first: the window, and the ids missing below the newest
            top = session.scalar(select(func.max(row_id))) or 0
            present = set(session.scalars(select(row_id).where(row_id > top - self.RESCAN)))
            self._gaps[table] = set(range(max(1, top - self.RESCAN + 1), top + 1)) - present
            rows = list(session.execute(select(*columns).where(in_window, row_id <= top)))
        gaps = self._gaps.setdefault(table, set())
        gaps.intersection_update(range(top - self.RESCAN + 1, top + 1))
        reads = self._reads.get(table)
        if reads is None:  # built once: a board asks at every burst of events
            new = row_id > bindparam("top")
            reads = self._reads[table] = (
                select(*columns).where(new).order_by(row_id),
                select(*columns).where(or_(new, row_id.in_(bindparam("gaps", expanding=True))))
                .order_by(row_id))
        for row in session.connection().execute(
                reads[1] if gaps else reads[0],
                {"top": top, "gaps": sorted(gaps)} if gaps else {"top": top}):
            rows.append(row)
            gaps.discard(row[0])
            if row[0] > top:
                gaps.update(range(max(top + 1, row[0] - self.RESCAN + 1), row[0]))
                top = row[0]
        self._top[table] = top
        return rows

    def _first_count(self, table: str, row_id: int) -> bool:
        """Whether the row is counted now for the first time (it then is)."""
        counted = self._counted.setdefault(table, set())
        if row_id in counted:
            return False
        counted.add(row_id)
        return True

    def _forget_counted(self) -> None:
        """Only a gap (within RESCAN below the highest id) can bring a row again: the ids
        below are let go, at most once per RESCAN ids read."""
        for table, counted in self._counted.items():
            if len(counted) > 2 * self.RESCAN:
                floor = self._top.get(table, 0) - self.RESCAN
                self._counted[table] = {row_id for row_id in counted if row_id > floor}

    def refresh(self, session: Session, now: datetime, widest: datetime,
                service_seconds: float) -> None:
        _, now = check_window(now, now)
        widest, _ = check_window(widest, now)
        call = CallRecord
        # every row is read once (see `_unread`), whatever it holds; the filters are here
        for row_id, started, queue, short, outcome, wait, talk, direction in self._unread(
                session, "call", (call.id, call.started_at, call.queue, call.short_abandon,
                                  call.outcome, call.wait_seconds, call.talk_seconds,
                                  call.direction), call.started_at >= widest):
            if (direction != "inbound" or queue is None or started is None
                    or utc(started) < widest or not self._first_count("call", row_id)):
                continue
            answered = not short and outcome == "answered"
            waited = float(wait or 0.0)
            rows = self.calls.get(str(queue))
            if rows is None:
                rows = self.calls[str(queue)] = _Rows(len(_FIGURES))
            rows.add(utc(started).timestamp(), (
                float(not short), float(answered), float(not short and outcome == "abandoned"),
                float(bool(short)), float(answered and waited <= service_seconds),
                waited if answered else 0.0, float(talk or 0.0) if answered else 0.0))
        interval = SeatInterval
        for row_id, started, seconds, state in self._unread(
                session, "wrap", (interval.id, interval.started_at, interval.seconds,
                                  interval.state), interval.started_at >= widest):
            if (state != seats.WRAP_UP or started is None or utc(started) < widest
                    or not self._first_count("wrap", row_id)):
                continue
            self.wraps.add(utc(started).timestamp(), (float(seconds),))
        self._forget_counted()
        floor = widest.timestamp()
        for rows in (*self.calls.values(), self.wraps):
            rows.settle()
            rows.drop_before(floor)

    def figures(self, session: Session, now: datetime, windows: dict[str, datetime], *,
                service_seconds: float = 15.0) -> dict[str, dict[str, dict[str, Any]]]:
        """`window_figures`, from the held rows once refreshed."""
        checked = {name: check_window(start, now)[0] for name, start in windows.items()}
        _, now = check_window(now, now)
        if not checked:
            return {}
        starts = sorted(set(checked.values()), reverse=True)
        self.refresh(session, now, starts[-1], service_seconds)
        # band i runs from starts[i] to starts[i - 1] (band 0: to now)
        edges = [now.timestamp(), *(start.timestamp() for start in starts)]
        rows: list[Any] = []
        for queue, held in self.calls.items():
            for band in range(len(starts)):
                sums = held.sums(edges[band + 1], edges[band])
                if sums is not None:
                    rows.append((queue, band, *sums))
        wraps: dict[int, float] = {}
        for band in range(len(starts)):
            wrapped = self.wraps.sums(edges[band + 1], edges[band])
            wraps[band] = wrapped[0] if wrapped is not None else 0.0
        return _assemble(checked, starts, rows, wraps)
