"""A report's call half read for all its periods at once (telephony.measures'
call_measures_tiled, telephony.surge's call_measures_tiled) gives, for each period and the
whole window, the figures of call_measures asked period by period and of the call records
(`raw=True`, the reference), in a few statements however many periods; on a hand-built
month of India's days (UTC+5:30: no day begins on a UTC hour, so every day has a half hour
at each end read from the call records), on SQLite and PostgreSQL.

All stored times are UTC. The Indian day D is [D-1 18:30Z, D 18:30Z); its whole UTC hours
are [D-1 19:00Z, D 18:00Z). The month is November 2026 in India,
[2026-10-31 18:30Z, 2026-11-30 18:30Z).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from core import phones
from core.db import make_engine, session_factory, transaction, upgrade
from reports import kpis
from telephony import rollups, surge
from telephony.measures import CallMeasures, MeasureError, call_measures, call_measures_tiled
from telephony.models import CallRecord, SeatInterval, SurgeMode

IN = ZoneInfo("Asia/Kolkata")
MONTH = (datetime(2026, 11, 1, tzinfo=IN), datetime(2026, 12, 1, tzinfo=IN))
NOW = datetime(2026, 12, 2, tzinfo=UTC)


def z(month: int, day: int, hour: int, minute: int = 0, second: float = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC) + timedelta(seconds=second)


HEARD, AGAIN = ("surge", "menu"), ("surge", "surge_repeat", "menu")
# (name, caller, started, queue, outcome, wait, short abandon, talk, hold, agent, IVR steps)
CALLS = [
    # 23:50 on 10-31 in India, before the month: only the history K10 is a repeat of
    ("K0", "13800000004", z(10, 31, 18, 20), None, "ivr", None, False, None, 0, None, ()),
    # 00:05 on 11-01, the month's first half hour; K0's caller 15 min later: a repeat
    ("K10", "13800000004", z(10, 31, 18, 35), "general", "answered", 8, False, 40, 0, "8101",
     ()),
    # 23:40 on 11-02, its last half hour
    ("K1", "13800000001", z(11, 2, 18, 10), "general", "answered", 5, False, 100, 3, "8101",
     HEARD),
    # 00:00 on 11-03 sharp, then 00:10: K1's caller again after 30 min, a repeat
    ("K3", "13800000002", z(11, 2, 18, 30), "complaints", "abandoned", 70, False, None, 0,
     None, AGAIN),
    ("K2", "+86 138 0000 0001", z(11, 2, 18, 40), "general", "answered", 25, False, 50, 0,
     "8102", HEARD),
    # 15:30 on 11-03, a whole hour; K3's caller after 15 h 30 min. Stored with a 12 h
    # repeat window (see _store): that hour's rollup row counts it no repeat, so 11-03's
    # repeat calls come from the records, where with 24 h it is one.
    ("K4", "13800000002", z(11, 3, 10), "general", "unanswered", 40, False, None, 0, None, ()),
    # 23:59:59 on 11-03: a short abandon, counted apart
    ("K5", "13800000003", z(11, 3, 18, 29, 59), "general", "abandoned", 2, True, None, 0,
     None, ()),
    # 00:15 on 11-05: withheld, the IVR only
    ("K6", "", z(11, 4, 18, 45), None, "ivr", None, False, None, 0, None, ()),
    # 23:50 on 11-30, the month's last half hour; K5's caller 27 days on: no repeat
    ("K8", "13800000003", z(11, 30, 18, 20), "complaints", "answered", 12, False, 31, 0,
     "8101", HEARD),
    # 00:00 on 12-01: after the month
    ("K9", "13800000001", z(11, 30, 18, 30), "general", "answered", 3, False, 20, 0, "8102",
     HEARD),
]
# a survey call the hotline placed at 00:20 on 11-05: counted apart
OUTBOUND = [("O1", "13800000004", z(11, 4, 18, 50), "answered")]
# (agent, state, started, seconds): wrap-up where the agent's call ends
SEATS = [
    ("8101", "ready", z(11, 2, 18), 600),  # 11-02
    ("8101", "talking", z(11, 2, 18, 10, 5), 100),  # K1
    ("8101", "wrap_up", z(11, 2, 18, 11, 45), 20),  # after K1 (inbound, general)
    ("8102", "ready", z(11, 2, 18, 35), 300),  # 11-03
    ("8102", "talking", z(11, 2, 18, 40, 25), 50),  # K2
    ("8102", "wrap_up", z(11, 2, 18, 41, 15), 15),  # after K2 (inbound, general)
    ("8102", "paused", z(11, 3, 9), 1000),  # not available time
]
# (title, on, off): the first across 11-03's midnight, the second still on
SURGES = [("停水", z(11, 2, 18), z(11, 2, 19)), ("暴雨", z(11, 30, 18), None)]


def _call(name: str, caller: str, started: datetime, queue: str | None, outcome: str,
          wait: float | None, short: bool, talk: float | None, hold: float,
          agent: str | None, steps: tuple[str, ...]) -> CallRecord:
    connected = started + timedelta(seconds=wait or 0) if agent else None
    return CallRecord(
        call_id=name, caller_number=caller, citizen_number=phones.normalise_or_empty(caller),
        started_at=started, outcome=outcome, queue=queue, wait_seconds=wait,
        short_abandon=short, agent=agent, connected_at=connected, talk_seconds=talk,
        hold_seconds=hold, ended_at=started + timedelta(minutes=5),
        details={"ivr_path": [{"at": 1.0 + i, "node": "node", "value": step}
                              for i, step in enumerate(steps)]})


def _store(sessions: sessionmaker[Session]) -> None:
    for row in CALLS:  # one transaction a call, as the service stores them
        with transaction(sessions) as session:
            if row[0] == "K4":
                session.info[rollups.REPEAT_WINDOW_KEY] = timedelta(hours=12)
            session.add(_call(*row))
    with transaction(sessions) as session:
        for name, citizen, started, outcome in OUTBOUND:
            session.add(CallRecord(
                call_id=name, direction="outbound", purpose="survey", caller_number="",
                citizen_number=phones.normalise(citizen), started_at=started,
                outcome=outcome, ended_at=started + timedelta(minutes=2), details={}))
        for agent, state, started, seconds in SEATS:
            session.add(SeatInterval(agent_number=agent, state=state, started_at=started,
                                     ended_at=started + timedelta(seconds=seconds),
                                     seconds=seconds))
        for title, on, off in SURGES:
            session.add(SurgeMode(title=title, text="", sound="surge-x", started_at=on,
                                  started_by="班长", ended_at=off,
                                  ended_by="班长" if off else ""))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    made = make_engine(database_url)
    upgrade(made)
    _store(session_factory(made))
    yield made
    made.dispose()


def _days(unit: str | timedelta = "day", timezone: str = "Asia/Kolkata",
          window: tuple[datetime, datetime] = MONTH) -> list[tuple[datetime, datetime]]:
    return [(b.start, b.end) for b in kpis.buckets(*window, unit, timezone)]


def _figures(m: CallMeasures) -> tuple[Any, ...]:
    return (m.calls, m.offered, m.answered, m.abandoned, m.unanswered, m.short_abandons,
            m.answered_within, m.answer_rate, m.service_level, m.asa_seconds, m.talk_seconds,
            m.hold_seconds, m.wrap_up_seconds, m.aht_seconds, m.longest_wait_seconds,
            m.known_number_calls, m.repeat_calls, m.repeat_call_rate, m.outbound_calls,
            m.outbound_answered, m.occupancy)


NOTHING = (0, 0, 0, 0, 0, 0, 0, None, None, None, 0.0, 0.0, 0.0, None, None, 0, 0, None, 0, 0,
           None)


def test_a_month_of_indian_days_worked_out_by_hand(engine: Engine) -> None:
    with session_factory(engine)() as session:
        report = kpis.hotline_report(session, *MONTH, bucket="day", timezone="Asia/Kolkata",
                                     now=NOW)
    days = {b.label: b for b in report.buckets}
    assert len(days) == 30 and report.buckets[0].start == z(10, 31, 18, 30)
    # 11-01: K10 (a repeat of K0, the day before)
    assert _figures(days["2026-11-01"].calls) == (
        1, 1, 1, 0, 0, 0, 1, 1.0, 1.0, 8.0, 40.0, 0.0, 0.0, 40.0, 8.0, 1, 1, 1.0, 0, 0, None)
    # 11-02: K1 and 8101's seat: busy 100 + 20 of available 600 + 100 + 20
    assert _figures(days["2026-11-02"].calls) == (
        1, 1, 1, 0, 0, 0, 1, 1.0, 1.0, 5.0, 100.0, 3.0, 20.0, 120.0, 5.0, 1, 0, 0.0, 0, 0,
        0.1667)
    # 11-03: K3 K2 (head), K4 (whole hours), K5 (tail). Offered K3 K2 K4; K2 answered
    # after 25 s (not within 15 s); repeats K2 (K1's caller) and K4 (K3's caller, 24 h
    # window); 8102's seat: busy 50 + 15 of 300 + 50 + 15 (the pause is not available)
    assert _figures(days["2026-11-03"].calls) == (
        4, 3, 1, 1, 1, 1, 0, 0.3333, 0.0, 25.0, 50.0, 0.0, 15.0, 65.0, 70.0, 4, 2, 0.5, 0, 0,
        0.1781)
    # 11-05: K6 withheld in the IVR, the survey call O1
    assert _figures(days["2026-11-05"].calls) == (
        1, 0, 0, 0, 0, 0, 0, None, None, None, 0.0, 0.0, 0.0, None, None, 0, 0, None, 1, 1,
        None)
    # 11-30: K8, not K9 (12-01)
    assert _figures(days["2026-11-30"].calls) == (
        1, 1, 1, 0, 0, 0, 1, 1.0, 1.0, 12.0, 31.0, 0.0, 0.0, 31.0, 12.0, 1, 0, 0.0, 0, 0, None)
    assert _figures(days["2026-11-15"].calls) == NOTHING
    # the month: K10 K1 K3 K2 K4 K5 K6 K8; waits 8 + 5 + 25 + 12 = 50 over 4 answered;
    # talk 40 + 100 + 50 + 31 = 221, with wrap-up 35: 256 / 4; known 7 (not K6), repeats
    # K10 K2 K4; seats busy 185 of 1085
    assert _figures(report.total.calls) == (
        8, 6, 4, 1, 1, 1, 3, 0.6667, 0.5, 12.5, 221.0, 3.0, 35.0, 64.0, 70.0, 7, 3, 0.4286,
        1, 1, 0.1705)
    # surge calls: K1 on 11-02; K3 (heard it again) and K2 on 11-03; K8 under the surge
    # still on; K9 after the month
    surges = {label: days[label].surge for label in ("2026-11-02", "2026-11-03",
                                                       "2026-11-30")}
    assert surges == {
        "2026-11-02": surge.SurgeCallMeasures(1, 0, 0, 1, 1, 0, 0, 0, 1.0, 0.0),
        "2026-11-03": surge.SurgeCallMeasures(2, 1, 0, 2, 1, 1, 0, 0, 0.5, 0.5),
        "2026-11-30": surge.SurgeCallMeasures(1, 0, 0, 1, 1, 0, 0, 0, 1.0, 0.0)}
    assert report.total.surge == surge.SurgeCallMeasures(4, 1, 0, 4, 3, 1, 0, 0, 0.75, 0.25)
    assert days["2026-11-01"].surge == surge.SurgeCallMeasures(0, 0, 0, 0, 0, 0, 0, 0, None,
                                                               None)


# Tilings: India's, Beijing's and UTC days of the month, weeks, hours across a midnight,
# 20 minutes (no tile holds a whole hour), and the month whole.
TILINGS = [
    _days(),
    _days("day", "Asia/Shanghai"),
    _days("day", "UTC"),
    _days("week"),
    _days(timedelta(hours=1), window=(z(11, 2, 16, 30), z(11, 2, 21, 30))),
    _days(timedelta(minutes=20), window=(z(11, 2, 17, 50), z(11, 2, 19, 10))),
    _days(None),
]


@pytest.mark.parametrize("options", [
    {}, {"queue": "general"}, {"queue": "complaints"}, {"service_seconds": 20},
    {"service_seconds": 17},  # not kept by the rollups: read period by period
    {"repeat_lookback": timedelta(hours=12)},  # repeat calls from the records
])
def test_tiles_give_the_figures_of_each_period_alone_and_of_the_records(
        engine: Engine, options: dict[str, Any]) -> None:
    with session_factory(engine)() as session:
        for tiles in TILINGS:
            whole, each = call_measures_tiled(session, tiles, **options)
            window = (tiles[0][0], tiles[-1][1])
            for (lo, hi), tiled in zip([window, *tiles], [whole, *each], strict=True):
                assert tiled == call_measures(session, lo, hi, **options), (lo, hi)
                assert tiled == call_measures(session, lo, hi, raw=True, **options), (lo, hi)
            if "service_seconds" in options or "repeat_lookback" in options:
                continue
            queue = options.get("queue")
            whole_surge, each_surge = surge.call_measures_tiled(session, tiles, queue=queue)
            assert [whole_surge, *each_surge] == [
                surge.call_measures(session, lo, hi, queue=queue)
                for lo, hi in [window, *tiles]]


class _Statements:
    """Counts the statements an engine sends."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.count = engine, 0

    def _seen(self, *_args: Any) -> None:
        self.count += 1

    def __enter__(self) -> _Statements:
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


def test_a_month_by_day_is_read_in_a_few_statements(engine: Engine) -> None:
    tiles = _days()
    with session_factory(engine)() as session:
        session.execute(select(CallRecord.id).limit(1))  # connected before counting
        with _Statements(engine) as tiled:
            call_measures_tiled(session, tiles)
        with _Statements(engine) as by_period:
            for lo, hi in [(tiles[0][0], tiles[-1][1]), *tiles]:
                call_measures(session, lo, hi)
        with _Statements(engine) as surge_tiled:
            surge.call_measures_tiled(session, tiles)
        # the rollups, the seats, the days' half hours' figures and their repeat calls
        assert tiled.count <= 4 < 31 <= by_period.count
        assert surge_tiled.count == 1 + len(SURGES)  # the surges, then each one's calls
        # the whole report of a Beijing month by day (whole UTC hours: the order half from
        # its rollups too) reads no more statements than that of a week
        counts = []
        for window in ((z(10, 31, 16), z(11, 30, 16)), (z(11, 1, 16), z(11, 8, 16))):
            with _Statements(engine) as report:
                kpis.hotline_report(session, *window, bucket="day", now=NOW)
            counts.append(report.count)
        assert counts[0] == counts[1] <= 20, counts


def test_tiles_must_follow_each_other(engine: Engine) -> None:
    with session_factory(engine)() as session:
        for read in (call_measures_tiled, surge.call_measures_tiled):
            with pytest.raises(MeasureError, match="begins where the one before it ends"):
                read(session, [(z(11, 1, 0), z(11, 2, 0)), (z(11, 3, 0), z(11, 4, 0))])
            with pytest.raises(MeasureError, match="at least one window"):
                read(session, [])
