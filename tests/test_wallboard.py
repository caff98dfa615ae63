"""The live wallboard (监控大屏, issue 11 item 1): its figures from hand-written call records
and live state, on both databases, with every expected figure worked out by hand below; the
shift window across midnight; the push server's board stream. Display tokens:
tests/test_display_tokens.py.

The clock is pinned: NOW is 10:00 in Beijing (02:00 UTC); shifts begin 08:00 and 20:00, so
this shift began at 00:00 UTC."""

from __future__ import annotations

import gc
import json
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from agent_desk import feed
from agent_desk.wallboard import (
    ALERTS_KEY,
    COVERS_KEY,
    LATEST_KEY,
    BoardLoop,
    compose,
    current_alerts,
    latest_board,
    shift_start,
)
from core.clock import FixedClock
from core.config import Settings
from core.db import make_engine, session_factory, transaction, upgrade
from core.events import EventBus
from core.live import connect_redis
from telephony import records, wallboard
from telephony.models import CallbackRequest, CallRecord, SeatInterval
from telephony.seats import SEATS_KEY
from tests.conftest import make_settings

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # 10:00 in Beijing


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> redis.Redis:
    """An embedded Redis of this module's own: the live keys' names are fixed."""
    return connect_redis(make_settings(tmp_path_factory.mktemp("board-redis")))


@pytest.fixture
def world(database_url: str, tmp_path: Path, client: redis.Redis
          ) -> Iterator[tuple[Settings, sessionmaker[Session]]]:
    settings = make_settings(tmp_path, DATABASE_URL=database_url)
    engine = make_engine(database_url)
    upgrade(engine)
    client.delete(wallboard.LIVE_CALLS_KEY, SEATS_KEY, feed.DESK_STREAM, ALERTS_KEY)
    try:
        yield settings, session_factory(engine)
    finally:
        engine.dispose()


def _call(session: Session, call_id: str, minutes_ago: float, outcome: str, *,
          queue: str | None = "intake", wait: float | None = None, talk: float | None = None,
          short: bool = False, direction: str = "inbound") -> None:
    started = (NOW - timedelta(minutes=minutes_ago)).timestamp()
    answered = outcome == "answered"
    records.store_call(session, {
        "call_id": call_id, "direction": direction, "caller_number": "13800138000",
        "caller_name": "", "entry_number": "12319", "started_at": started,
        "ended_at": started + 30 + (wait or 0) + (talk or 0), "duration_seconds": 30.0,
        "outcome": outcome,
        "queue": queue, "queue_position": 1, "wait_seconds": wait, "short_abandon": short,
        "agent": "8101" if answered else None,
        "connected_at": started + 3 + (wait or 0) if answered else None,
        "talk_seconds": talk, "hold_seconds": 0, "hangup_cause": 16,
        "hangup_cause_text": "", "ivr_path": [], "agent_attempts": [], "transfers": [],
        "legs": [], "incomplete": False}, None)


def _wrap_up(session: Session, minutes_ago: float, seconds: float) -> None:
    began = NOW - timedelta(minutes=minutes_ago)
    session.add(SeatInterval(agent_number="8101", state="wrap_up", reason="", started_at=began,
                             ended_at=began + timedelta(seconds=seconds), seconds=seconds))


def _seed(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        _call(session, "A", 5, "answered", wait=10, talk=100)
        _call(session, "B", 10, "abandoned", wait=40)
        _call(session, "C", 12, "abandoned", wait=3, short=True)  # a short abandon
        _call(session, "I", 40, "unanswered", wait=600)  # left by the queue's timeout
        _call(session, "D", 90, "answered", queue="complaints", wait=20, talk=200)
        _call(session, "E", 180, "answered", wait=5, talk=60)  # 07:00 Beijing: last shift
        _call(session, "F", 25 * 60, "answered", wait=5, talk=60)  # more than a day ago
        _call(session, "G", 5, "answered", direction="outbound", talk=50)  # our own call
        _call(session, "H", 5, "ivr_only", queue=None)  # never reached a queue
        _wrap_up(session, 4, 30)  # after A
        _wrap_up(session, 88, 20)  # after D
        _wrap_up(session, 177, 15)  # after E
        for state, queue in (("requested", "intake"), ("failed", "intake"),
                             ("connected", "intake"), ("holding", "complaints")):
            session.add(CallbackRequest(id=f"cb-{state}", caller_number="+8613800138000",
                                        queue=queue, state=state, requested_at=NOW,
                                        updated_at=NOW))


def _figures(offered: int, answered: int, abandoned: int, shorts: int, within: int,
             answer: float | None, abandon: float | None, level: float | None,
             asa: float | None, aht: float | None) -> dict[str, object]:
    return {"offered": offered, "answered": answered, "abandoned": abandoned,
            "short_abandons": shorts, "answered_within": within, "answer_rate": answer,
            "abandon_rate": abandon, "service_level": level, "asa_seconds": asa,
            "aht_seconds": aht}


NOTHING = _figures(0, 0, 0, 0, 0, None, None, None, None, None)
# Worked by hand from _seed. Windows end at NOW: 15 min (A, B, C), 1 h (+ I), this shift
# since 00:00 UTC (+ D), 24 h (+ E). Offered leaves out C (short) and G, H; answered within
# 15 s: A (10 s) and E (5 s), not D (20 s). AHT = (talk + the window's wrap-up) / answered;
# a queue's = its talk per answered call + the centre's wrap-up per answered call.
EXPECTED = {
    "15m": {"": _figures(2, 1, 1, 1, 1, 0.5, 0.5, 0.5, 10.0, 130.0),  # (100 + 30) / 1
            "complaints": NOTHING,  # its call was earlier: there, but with nothing
            "intake": _figures(2, 1, 1, 1, 1, 0.5, 0.5, 0.5, 10.0, 130.0)},
    "1h": {"": _figures(3, 1, 1, 1, 1, 0.3333, 0.3333, 0.3333, 10.0, 130.0),
           "complaints": NOTHING,
           "intake": _figures(3, 1, 1, 1, 1, 0.3333, 0.3333, 0.3333, 10.0, 130.0)},
    "shift": {"": _figures(4, 2, 1, 1, 1, 0.5, 0.25, 0.25, 15.0, 175.0),  # (300 + 50) / 2
              "complaints": _figures(1, 1, 0, 0, 0, 1.0, 0.0, 0.0, 20.0, 225.0),  # 200 + 25
              "intake": _figures(3, 1, 1, 1, 1, 0.3333, 0.3333, 0.3333, 10.0, 125.0)},
    "24h": {"": _figures(5, 3, 1, 1, 2, 0.6, 0.2, 0.4, 11.7, 141.7),  # 35/3, (360 + 65)/3
            "complaints": _figures(1, 1, 0, 0, 0, 1.0, 0.0, 0.0, 20.0, 221.7),  # 200 + 65/3
            "intake": _figures(4, 2, 1, 1, 2, 0.5, 0.25, 0.5, 7.5, 101.7)},  # 160/2 + 65/3
}


def test_window_figures_per_queue_and_centre(world) -> None:
    _settings, sessions = world
    _seed(sessions)
    starts = {"15m": NOW - timedelta(minutes=15), "1h": NOW - timedelta(hours=1),
              "shift": datetime(2026, 11, 24, 0, 0, tzinfo=UTC),
              "24h": NOW - timedelta(hours=24)}
    with sessions() as session:
        got = wallboard.window_figures(session, NOW, starts, service_seconds=15)
        pending = wallboard.callbacks_pending(session)
    assert got == EXPECTED
    assert pending == {"": 3, "intake": 2, "complaints": 1}  # not the connected one


def test_the_loops_cache_gives_the_same_figures_and_counts_each_record_once(world) -> None:
    _settings, sessions = world
    _seed(sessions)
    starts = {"15m": NOW - timedelta(minutes=15), "1h": NOW - timedelta(hours=1),
              "shift": datetime(2026, 11, 24, 0, 0, tzinfo=UTC),
              "24h": NOW - timedelta(hours=24)}
    cache = wallboard.FigureCache()
    with sessions() as session:
        assert cache.figures(session, NOW, starts) == EXPECTED
        assert cache.figures(session, NOW, starts) == EXPECTED  # nothing new: nothing added
    with transaction(sessions) as session:  # a call stored now that began 2 minutes ago
        _call(session, "J", 2, "answered", wait=14, talk=40)
    with sessions() as session:
        got = cache.figures(session, NOW, starts)
    # 15 min: A and J answered, both within 15 s, of 3 offered; talk 140 + wrap-up 30
    assert got["15m"][""] == _figures(3, 2, 1, 1, 2, 0.6667, 0.3333, 0.6667, 12.0, 85.0)
    assert got["24h"][""]["offered"] == 6
    # 9 minutes later: B and C have left the 15 minutes (A at -5 min, J at -2 are in);
    # I (-40 min) is still in the hour, D (-90 min) is not
    later = NOW + timedelta(minutes=9)
    moved = {"15m": later - timedelta(minutes=15), "1h": later - timedelta(hours=1),
             "24h": later - timedelta(hours=24)}
    with sessions() as session:
        got = cache.figures(session, later, moved)
        fresh = wallboard.window_figures(session, later, moved)
    assert got == fresh
    assert got["15m"][""] == _figures(2, 2, 0, 0, 2, 1.0, 0.0, 1.0, 12.0, 85.0)
    assert got["1h"][""] == _figures(4, 2, 1, 1, 2, 0.5, 0.25, 0.5, 12.0, 85.0)
    assert got["24h"][""]["offered"] == 6



def _renumber(session: Session, call_id: str, new_id: int) -> None:
    session.execute(update(CallRecord).where(CallRecord.call_id == call_id)
                    .values(id=new_id))


def test_the_cache_counts_a_record_committed_after_a_higher_id_once(world) -> None:
    _settings, sessions = world
    _seed(sessions)
    starts = {"24h": NOW - timedelta(hours=24)}
    cache = wallboard.FigureCache()
    with sessions() as session:
        assert cache.figures(session, NOW, starts)["24h"][""]["offered"] == 5
        top = session.scalar(select(func.max(CallRecord.id)))
    # two calls stored by two transactions: the later one (L, top + 5) commits first
    with transaction(sessions) as session:
        _call(session, "L", 2, "answered", wait=5, talk=30)
        _renumber(session, "L", top + 5)
    with sessions() as session:
        got = cache.figures(session, NOW, starts)["24h"][""]
    assert (got["offered"], got["abandoned"]) == (6, 1)
    with transaction(sessions) as session:  # the earlier one (K, top + 2) commits now
        _call(session, "K", 3, "abandoned", wait=30)
        _renumber(session, "K", top + 2)
    with sessions() as session:
        got = cache.figures(session, NOW, starts)["24h"][""]
        assert (got["offered"], got["abandoned"]) == (7, 2)
        again = cache.figures(session, NOW, starts)["24h"][""]  # each counted once
    assert (again["offered"], again["abandoned"]) == (7, 2)


def test_the_board_with_live_calls_seats_and_alerts(world, client: redis.Redis) -> None:
    settings, sessions = world
    _seed(sessions)
    now = NOW.timestamp()
    wallboard.replace_live_calls(client, [
        wallboard.LiveCall("w1", "intake", "13900139000", now - 30),
        wallboard.LiveCall("w2", "intake", "13700137000", now - 75),
        wallboard.LiveCall("t1", "complaints", "13800138000", now - 100, "8101", now - 60)])
    client.hset(SEATS_KEY, mapping={
        "8101": json.dumps({"agent": "8101", "state": "talking", "reason": "",
                            "since": now - 60, "queues": ["complaints", "intake"]}),
        "8102": json.dumps({"agent": "8102", "state": "paused", "reason": "meal",
                            "since": now - 1200, "queues": ["intake"]}),
        "8103": json.dumps({"agent": "8103", "state": "ready", "reason": "",
                            "since": now - 600, "queues": ["intake"]})})
    with sessions() as session:
        board = compose(session, client, settings, NOW)
    assert board["shift_start"] == "2026-11-24T08:00:00+08:00"  # in the centre's time
    assert board["at"] == "2026-11-24T10:00:00+08:00"
    assert board["windows"] == ["15m", "1h", "24h", "shift"]
    assert board["queues"] == ["complaints", "intake"]
    assert board["figures"] == EXPECTED
    assert board["live"] == {
        "": {"waiting": 2, "talking": 1, "longest_since": now - 75,
             "longest_wait_seconds": 75.0, "callbacks_pending": 3},
        "complaints": {"waiting": 0, "talking": 1, "longest_since": None,
                       "longest_wait_seconds": None, "callbacks_pending": 1},
        "intake": {"waiting": 2, "talking": 0, "longest_since": now - 75,
                   "longest_wait_seconds": 75.0, "callbacks_pending": 2}}
    assert board["agents"] == [
        {"agent": "8101", "state": "talking", "reason": "", "since": now - 60,
         "seconds_in_state": 60.0, "queues": ["complaints", "intake"],
         "caller": "138****8000", "queue": "complaints"},
        {"agent": "8102", "state": "paused", "reason": "meal", "since": now - 1200,
         "seconds_in_state": 1200.0, "queues": ["intake"], "caller": "", "queue": ""},
        {"agent": "8103", "state": "ready", "reason": "", "since": now - 600,
         "seconds_in_state": 600.0, "queues": ["intake"], "caller": "", "queue": ""}]
    # defaults: service level under 80 % in the last hour, a wait over 60 s, a pause over
    # 15 min; complaints had no call in the last hour: no level to judge
    assert board["alerts"] == [
        {"key": "service_level:", "kind": "service_level", "queue": "", "value": 0.3333,
         "threshold": 0.8},
        {"key": "service_level:intake", "kind": "service_level", "queue": "intake",
         "value": 0.3333, "threshold": 0.8},
        {"key": "waiting:intake", "kind": "waiting", "queue": "intake", "value": 75.0,
         "threshold": 60},
        {"key": "paused:8102", "kind": "paused", "agent": "8102", "reason": "meal",
         "value": 1200.0, "threshold": 900}]


def test_seats_read_again_are_parsed_only_when_their_text_changed(
        client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """A board a few times a second reads every seat; a seat's text read before is not
    parsed again, one that changed is, and bad text is skipped every time."""
    parsed: list[str] = []
    real_loads = json.loads

    def counted(text: Any) -> Any:
        parsed.append(text.decode() if isinstance(text, bytes) else text)
        return real_loads(text)
    monkeypatch.setattr(wallboard.json, "loads", counted)
    monkeypatch.setattr(wallboard, "_SEATS_READ", {})
    ready = json.dumps({"agent": "8201", "state": "ready", "since": 1.0, "queues": []})
    client.delete(SEATS_KEY)
    client.hset(SEATS_KEY, mapping={"8201": ready, "8202": "{not json",
                                    "8203": json.dumps({"state": "ready"})})  # no agent
    first = wallboard.seats_now(client)
    again = wallboard.seats_now(client)
    assert [s["state"] for s in first] == ["ready"] and again == first
    assert sorted(parsed) == sorted([ready, "{not json", '{"state": "ready"}'])
    client.hset(SEATS_KEY, "8201", json.dumps({"agent": "8201", "state": "talking",
                                               "since": 2.0, "queues": []}))
    assert [s["state"] for s in wallboard.seats_now(client)] == ["talking"]
    assert len(parsed) == 4  # the changed seat only
    client.delete(SEATS_KEY)


def test_the_loop_publishes_the_board_and_each_new_alert_once(world, client: redis.Redis
                                                               ) -> None:
    settings, sessions = world
    bus = EventBus(client, stream=f"test:board:{uuid.uuid4().hex}")
    loop = BoardLoop(settings, sessions, bus, FixedClock(NOW))
    now = NOW.timestamp()
    wallboard.replace_live_calls(client, [
        wallboard.LiveCall("w1", "intake", "13900139000", now - 90)])
    assert loop.follow() is False  # nothing on the bus yet
    loop.publish()
    loop.publish()  # the same alert still: not sent again
    entries = [(f[b"agent"].decode(), f[b"kind"].decode(), json.loads(f[b"data"]))
               for _id, f in client.xrange(feed.DESK_STREAM)]
    assert [(agent, kind) for agent, kind, _ in entries] == [
        ("board", "board"), ("supervisors", "notice"), ("board", "board")]
    assert entries[0][2]["live"][""]["waiting"] == 1
    assert entries[1][2]["alert"]["key"] == "waiting:intake"
    # a loop started again (a restart) knows the alert stands: it does not send it twice,
    # and when the caller has gone it sends the alert's clearing
    again = BoardLoop(settings, sessions, bus, FixedClock(NOW))
    again.publish()
    wallboard.replace_live_calls(client, [])
    again.publish()
    entries = [(f[b"agent"].decode(), f[b"kind"].decode(), json.loads(f[b"data"]))
               for _id, f in client.xrange(feed.DESK_STREAM)][3:]
    assert [(agent, kind) for agent, kind, _ in entries] == [
        ("board", "board"), ("board", "board"), ("supervisors", "notice")]
    assert (entries[2][2]["alert"]["key"], entries[2][2]["cleared"]) == ("waiting:intake", True)
    assert current_alerts(client)["alerts"] == []


@pytest.mark.parametrize(("local", "began"), [
    ("2026-11-24 10:00", "2026-11-24 08:00"),
    ("2026-11-24 08:00", "2026-11-24 08:00"),  # a shift begins on its minute
    ("2026-11-24 21:30", "2026-11-24 20:00"),
    ("2026-11-25 00:30", "2026-11-24 20:00"),  # the night shift runs past midnight
    ("2026-11-25 07:59", "2026-11-24 20:00"),
])
def test_the_shift_began_at_its_last_start_not_at_midnight(local: str, began: str) -> None:
    from zoneinfo import ZoneInfo

    zone = ZoneInfo("Asia/Shanghai")
    now = datetime.strptime(local, "%Y-%m-%d %H:%M").replace(tzinfo=zone).astimezone(UTC)
    want = datetime.strptime(began, "%Y-%m-%d %H:%M").replace(tzinfo=zone)
    assert shift_start(now, ("08:00", "20:00"), "Asia/Shanghai") == want


def test_a_pages_first_board_is_the_loops_last_while_it_covers_every_event(
        world, client: redis.Redis) -> None:
    settings, sessions = world
    bus = EventBus(client, stream=f"test:board:{uuid.uuid4().hex}")
    client.delete(LATEST_KEY, COVERS_KEY)
    loop = BoardLoop(settings, sessions, bus, FixedClock(NOW))
    assert latest_board(client, NOW) is None  # no board published yet: compose one
    published = loop.publish()
    assert latest_board(client, NOW) == published
    assert latest_board(client, NOW + timedelta(seconds=15)) == published  # 3 ticks old
    assert latest_board(client, NOW + timedelta(seconds=16)) is None  # the loop stopped
    # an event the loop has not read yet: the board may not show it, so the page composes
    client.xadd(bus.stream, {"data": json.dumps({"type": "call.queue_joined"})})
    assert latest_board(client, NOW) is None
    assert loop.follow() is True
    assert latest_board(client, NOW) is None  # read, but not in a board yet
    loop.publish()
    assert latest_board(client, NOW) is not None
    # an event that does not move the board: once read, the same board covers it
    client.xadd(bus.stream, {"data": json.dumps({"type": "order.opened"})})
    assert latest_board(client, NOW) is None
    assert loop.follow() is False
    loop._cover(loop._read_up_to)  # what the loop's run does after such a read
    assert latest_board(client, NOW) is not None
    # a loop started again begins where its group was: the board it publishes covers all
    again = BoardLoop(settings, sessions, bus, FixedClock(NOW))
    again.publish()
    assert latest_board(client, NOW) is not None


def test_the_cache_holds_its_window_compactly_and_lets_it_go(world) -> None:
    """The loop's cache holds every call of the widest window (24 h: ~170,000 calls at 2
    calls/s): a row must cost little (it took ~670 bytes as Python tuples and float lists:
    ~115 MB for a day), and rows leave with the window, while the ids kept to count each
    row once stay at RESCAN."""
    _settings, sessions = world
    with transaction(sessions) as session:  # 3,600 calls: one every 2 s for 2 hours
        session.add_all(CallRecord(
            call_id=f"steady-{n}", direction="inbound", caller_number="13800138000",
            started_at=NOW - timedelta(hours=2) + timedelta(seconds=2 * n), outcome="answered",
            queue="intake", wait_seconds=4.0, talk_seconds=60.0, short_abandon=False)
            for n in range(3600))
    starts = {"1h": NOW - timedelta(hours=1), "24h": NOW - timedelta(hours=24)}
    with sessions() as session:  # statements compiled, drivers warmed: not counted below
        wallboard.FigureCache().figures(session, NOW, starts)
    cache = wallboard.FigureCache()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with sessions() as session:
            got = cache.figures(session, NOW, starts)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert (got["1h"][""]["offered"], got["24h"][""]["offered"]) == (1800, 3600)
    assert len(cache.calls["intake"]) == 3600
    # 15 doubles a row (start, 7 figures, 7 running totals: 120 bytes), the ids of the last
    # RESCAN rows, the arrays' spare room: under 300 bytes a row (was ~670)
    assert held < 3600 * 300, f"{held / 3600:.0f} bytes a row"
    assert len(cache._counted["call"]) == 1000  # the ids a gap could bring again
    a_day_later = NOW + timedelta(hours=24, seconds=1)
    moved = {"1h": a_day_later - timedelta(hours=1), "24h": a_day_later - timedelta(hours=24)}
    with sessions() as session:
        got = cache.figures(session, a_day_later, moved)
    assert got["24h"][""]["offered"] == 0
    assert len(cache.calls["intake"]) == 0  # back to nothing held
    assert len(cache._counted["call"]) == 1000
