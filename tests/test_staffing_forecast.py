"""The staffing forecast (排班预测): Erlang C against figures worked out by hand, and the
forecast of a day from a small hand-built history (SQLite and PostgreSQL).

Erlang C, with A = calls x AHT / 1800 s the traffic of a half-hour and N agents:
    C(N, A) = (A^N/N! * N/(N-A)) / (sum_{k<N} A^k/k! + A^N/N! * N/(N-A))
    SL      = 1 - C(N, A) * exp(-(N-A) * 15 / AHT)      (share answered within 15 s)
    ASA     = C(N, A) * AHT / (N - A)
Worked by hand (a pocket calculator, not this code):

(a) 30 calls, AHT 180 s: A = 30*180/1800 = 3.0 Erl.
    N=4: sum_{k<4} 3^k/k! = 1 + 3 + 4.5 + 4.5 = 13; 3^4/4! = 81/24 = 3.375, *4/1 = 13.5;
         C = 13.5/26.5 = 0.50943; SL = 1 - 0.50943*exp(-15/180) = 1 - 0.50943*0.92004
         = 0.53130 (below 80 %).
    N=5: sum_{k<5} = 13 + 3.375 = 16.375; 3^5/5! = 2.025, *5/2 = 5.0625;
         C = 5.0625/21.4375 = 0.23615; SL = 1 - 0.23615*exp(-30/180) = 1 - 0.23615*0.84648
         = 0.80010 -> 5 agents, 80.01 %; ASA = 0.23615*180/2 = 21.25 s.
(b) 100 calls, AHT 240 s: A = 100*240/1800 = 13.333 Erl. The same formula at N = 17 gives
    C = 0.2573, SL = 1 - 0.2573*exp(-3.667*15/240) = 1 - 0.2573*0.7951 = 0.7954 (short);
    at N = 18, C = 0.1657, SL = 1 - 0.1657*exp(-4.667*15/240) = 1 - 0.1657*0.7470 = 0.8762
    -> 18 agents, 87.6 %; ASA = 0.1657*240/4.667 = 8.5 s.
(c) 10 calls, AHT 300 s: A = 1.6667 Erl. N=3: C = 0.2998, SL = 1 - 0.2998*exp(-1.3333/20)
    = 1 - 0.2998*0.9355 = 0.7196 (short); N=4: C = 0.1025, SL = 1 - 0.1025*exp(-2.3333/20)
    = 1 - 0.1025*0.8899 = 0.9088 -> 4 agents.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, session_factory, transaction, upgrade
from core.errors import NotFound
from telephony import erlang, seats, surge
from telephony.forecast import StaffingError, forecast, parse_schedule
from telephony.models import CallRecord, SeatInterval, SurgeMode


def test_erlang_c_matches_the_hand_worked_figures() -> None:
    assert erlang.traffic(100, 240) == pytest.approx(13.3333, abs=1e-4)
    assert erlang.erlang_c(4, 3.0) == pytest.approx(0.50943, abs=1e-5)
    assert erlang.erlang_c(5, 3.0) == pytest.approx(0.23615, abs=1e-5)
    assert erlang.service_level(4, 3.0, 180) == pytest.approx(0.53130, abs=1e-4)
    assert erlang.service_level(5, 3.0, 180) == pytest.approx(0.80010, abs=1e-4)

    a = erlang.agents_needed(30, 180)
    assert (a.agents, round(a.service_level, 4), round(a.asa_seconds or 0, 1)) == (
        5, 0.8001, 21.3)
    b = erlang.agents_needed(100, 240)
    assert b.erlangs == pytest.approx(13.3333, abs=1e-4)
    assert (b.agents, round(b.service_level, 3), round(b.asa_seconds or 0, 1)) == (
        18, 0.876, 8.5)
    assert erlang.service_level(17, b.erlangs, 240) == pytest.approx(0.7954, abs=1e-4)
    c = erlang.agents_needed(10, 300)
    assert (c.agents, round(c.service_level, 4)) == (4, 0.9088)


def test_edges_of_erlang_c() -> None:
    assert erlang.agents_needed(0, 240).agents == 0  # no calls, nobody needed
    assert erlang.erlang_c(3, 3.0) == 1.0  # as many agents as Erlangs: the queue never empties
    assert erlang.service_level(3, 3.0, 180) == 0.0
    assert erlang.average_speed_of_answer(2, 3.0, 180) is None
    # large traffic neither overflows nor loops: 2000 calls of 300 s = 333.3 Erl
    big = erlang.agents_needed(2000, 300)
    assert 334 <= big.agents <= 360 and big.service_level >= 0.8
    for bad in (lambda: erlang.agents_needed(-1, 240), lambda: erlang.traffic(10, -5),
                lambda: erlang.agents_needed(10, 240, target=1.0)):
        with pytest.raises(erlang.ErlangError):
            bad()


# --------------------------------------------------------------------------- the forecast
# The day forecast: Tuesday 2026-12-01 (Beijing, UTC+8), from two weeks: Tuesdays 11-17 and
# 11-24. 09:00 BJT = 01:00Z.
#   09:00-09:30: 11-17 four offered calls (and one short abandon, one outbound: not
#                counted), 11-24 two -> 3 calls a half-hour on average.
#   10:00-10:30: 11-24 one call -> 0.5.
#   Wednesday 11-18 10:00 one call: not an arrival of a Tuesday, but its handle time counts.
# Every answered call talks 600 s, no wrap-up: AHT = 600 s.
#   09:00: A = 3*600/1800 = 1.0 Erl. N=2: C = (1/2!*2/1)/(1+1+1) = 1/3,
#          SL = 1 - (1/3)*exp(-15/600) = 1 - 0.33333*0.97531 = 0.67490 (short);
#          N=3: sum_{k<3} = 2.5, 1/3!*3/2 = 0.25, C = 0.25/2.75 = 0.090909,
#          SL = 1 - 0.090909*exp(-30/600) = 1 - 0.090909*0.95123 = 0.91352 -> 3 agents.
#   10:00: A = 0.5*600/1800 = 0.16667 Erl. N=1: C = A = 0.16667,
#          SL = 1 - 0.16667*exp(-0.83333*15/600) = 1 - 0.16667*0.97938 = 0.83677 -> 1 agent.
# Logged in (no schedule set): 11-17 8101 ready 09:00-09:30 (1800 s in slot 09:00), 8102
# ready 09:42-10:12 (1080 s in 09:30, 720 s in 10:00); 11-24 8101 ready 09:00-09:18
# (1080 s), 8102 paused 09:00-09:30 (1800 s).
#   09:00: (1800+1080+1800)/2 weeks/1800 = 1.3; 09:30: 1080/3600 = 0.3; 10:00: 720/3600 = 0.2.
def bj(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour - 8, minute, tzinfo=UTC)


def _call(session: Session, name: str, started: datetime, *, short: bool = False,
          direction: str = "inbound") -> None:
    answered = not short
    session.add(CallRecord(
        call_id=name, direction=direction, caller_number="13800000001", started_at=started,
        outcome="answered" if answered else "abandoned", queue="intake", wait_seconds=5,
        short_abandon=short, agent="8101" if answered else None,
        connected_at=started + timedelta(seconds=5) if answered else None,
        talk_seconds=600 if answered else None, ended_at=started + timedelta(minutes=11),
        details={}))


def _seat(session: Session, agent: str, state: str, began: datetime, ended: datetime) -> None:
    session.add(SeatInterval(agent_number=agent, state=state, started_at=began, ended_at=ended,
                             seconds=(ended - began).total_seconds()))


@pytest.fixture
def history(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    upgrade(engine)
    factory = session_factory(engine)
    with transaction(factory) as session:
        for n, minute in enumerate((1, 7, 15, 29)):
            _call(session, f"t17-{n}", bj(17, 9, minute))
        _call(session, "t17-short", bj(17, 9, 20), short=True)
        _call(session, "t17-out", bj(17, 9, 25), direction="outbound")
        _call(session, "t24-0", bj(24, 9, 3))
        _call(session, "t24-1", bj(24, 9, 29))
        _call(session, "t24-2", bj(24, 10, 10))
        _call(session, "w18", bj(18, 10, 0))
        _seat(session, "8101", seats.READY, bj(17, 9), bj(17, 9, 30))
        _seat(session, "8102", seats.READY, bj(17, 9, 42), bj(17, 10, 12))
        _seat(session, "8101", seats.READY, bj(24, 9), bj(24, 9, 18))
        _seat(session, "8102", seats.PAUSED, bj(24, 9), bj(24, 9, 30))
    yield factory
    engine.dispose()


def test_the_forecast_of_a_day_from_its_same_weekdays(
        history: sessionmaker[Session]) -> None:
    with history() as session:
        plan = forecast(session, date(2026, 12, 1), timezone="Asia/Shanghai", weeks=2)
    assert plan.history == [date(2026, 11, 17), date(2026, 11, 24)]
    assert plan.aht_seconds == 600.0 and plan.schedule_from == "logins"
    by = {s.start: s for s in plan.slots}
    assert len(plan.slots) == 48
    nine, half, ten = by["09:00"], by["09:30"], by["10:00"]
    assert (nine.calls, nine.erlangs, nine.needed, nine.service_level) == (3.0, 1.0, 3, 0.9135)
    assert (nine.scheduled, nine.short) == (1.3, 1.7)
    assert (half.calls, half.needed, half.scheduled) == (0.0, 0, 0.3)
    assert (ten.calls, ten.erlangs, ten.needed, ten.service_level) == (0.5, 0.17, 1, 0.8368)
    assert ten.scheduled == 0.2
    assert sum(s.calls for s in plan.slots) == 3.5


def test_a_schedule_setting_is_what_is_scheduled(history: sessionmaker[Session]) -> None:
    with history() as session:
        plan = forecast(session, date(2026, 12, 1), timezone="Asia/Shanghai", weeks=2,
                        schedule="08:30-10:00=2, 09:30-24:00=1")
    by = {s.start: s for s in plan.slots}
    assert plan.schedule_from == "setting"
    assert [by[t].scheduled for t in ("08:00", "08:30", "09:00", "09:30", "23:30")] == [
        0, 2, 2, 1, 1]
    assert by["09:00"].short == 1  # 3 needed, 2 scheduled


def test_no_history_needs_nobody_and_says_no_handle_time(
        history: sessionmaker[Session]) -> None:
    with history() as session:
        plan = forecast(session, date(2027, 3, 2), timezone="Asia/Shanghai", weeks=1)
    assert plan.aht_seconds is None
    assert {s.needed for s in plan.slots} == {0}


@pytest.mark.parametrize("text", ["09:00-10:00", "09:15-10:00=2", "10:00-09:00=2",
                                  "24:00-24:30=1", "09:00-10:00=x", "09:00-25:00=1"])
def test_a_wrong_schedule_is_refused_by_name(text: str) -> None:
    with pytest.raises(StaffingError, match="staffing schedule"):
        parse_schedule(text)


def test_schedule_covers_the_whole_day() -> None:
    assert parse_schedule("00:00-24:00=3") == [3] * 48
    assert parse_schedule("") is None


# ------------------------------------------------------------------- a surge's calls apart
# A surge on from 10:00 to 11:00 BJT on 11-24. Calls (their IVR steps, as calls.py records
# HOTLINE_IVR_NODE visits): c1 surge -> menu (heard); c2 surge, surge_repeat, menu (heard,
# heard again); c3 surge, surge_leave (heard, left); c4 before the surge began, c5 after it
# ended (both with a surge step from another surge: not this one's); c6 in the window
# without the step (an IVR that had not read the switch yet); c7 outbound. Heard 3, again 1,
# left 1.
def _path(*steps: str) -> list[dict[str, object]]:
    return [{"at": 0.0, "node": "node", "value": step} for step in steps]


def test_a_surges_calls_are_counted_apart(history: sessionmaker[Session]) -> None:
    calls = [("c1", bj(24, 10, 5), ("surge", "hours", "menu"), "inbound"),
             ("c2", bj(24, 10, 6), ("surge", "surge_repeat", "hours", "menu"), "inbound"),
             ("c3", bj(24, 10, 30), ("surge", "surge_leave"), "inbound"),
             ("c4", bj(24, 9, 59), ("surge", "hours"), "inbound"),
             ("c5", bj(24, 11, 0), ("surge", "hours"), "inbound"),
             ("c6", bj(24, 10, 1), ("hours", "menu"), "inbound"),
             ("c7", bj(24, 10, 2), ("surge",), "outbound")]
    with transaction(history) as session:
        for name, started, steps, direction in calls:
            session.add(CallRecord(call_id=name, direction=direction, caller_number="1",
                                   started_at=started, outcome="ivr",
                                   details={"ivr_path": _path(*steps)}))
        mode = surge.start(session, title="停水", sound="s", actor="班长", now=bj(24, 10, 0))
        surge.stop(session, actor="班长", now=bj(24, 11, 0))
        assert surge.calls_of(session, mode, bj(24, 12, 0)) == surge.SurgeCalls(3, 1, 1)


def test_switching_off_ends_every_surge_still_on(history: sessionmaker[Session]) -> None:
    with transaction(history) as session:  # two switched on at one instant, past the check
        for title in ("停水", "暴雨"):
            session.add(SurgeMode(title=title, sound="s", started_at=bj(24, 10, 0),
                                  started_by="班长", ended_by=""))
    with transaction(history) as session:
        assert surge.stop(session, actor="值班长", now=bj(24, 11, 0)).title == "暴雨"
        assert surge.current(session) is None
    with transaction(history) as session, pytest.raises(NotFound):
        surge.stop(session, actor="值班长", now=bj(24, 11, 5))
