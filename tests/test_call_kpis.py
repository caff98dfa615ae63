"""From the AMI transcript to the KPI figures: recorded AMI events (tests/data/ami_*.json)
fed to the call tracker, its call records stored, and the call measures read back, with
every figure worked out by hand; on SQLite and PostgreSQL.

The two recorded calls are copied with their times stretched so the queue wait is exactly
what the test needs: answered after 3 s, 5.000 s and 20 s, abandoned after 3 s, 5.000 s and
8 s. The short-abandon threshold is 5 s: only the call abandoned after 3 s is a short
abandon; an answered call is never one, however soon it was answered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, session_factory, transaction, upgrade
from telephony import records
from telephony.calls import CallTracker
from telephony.events import CallEnded
from telephony.measures import call_measures
from telephony.models import CallRecord

DATA = Path(__file__).with_name("data")
# The recorded calls began 2026-11-24 03:47:29Z; every copy starts within this day.
DAY_START = datetime(2026, 11, 24, tzinfo=UTC)
DAY_END = DAY_START + timedelta(days=1)
# The legs of the recorded calls: every copy gets its own.
LEG_IDS = {"answered": ("hotline12319-1795492049.0", "hotline12319-1795492055.1"),
           "abandoned": ("hotline12319-1795492058.2", "hotline12319-1795492064.3")}


def _transcript(name: str) -> list[dict[str, str]]:
    return json.loads((DATA / f"ami_{name}.json").read_text(encoding="utf-8"))


def _index(events: list[dict[str, str]], name: str, **fields: str) -> int:
    return next(i for i, e in enumerate(events)
                if e["Event"] == name and all(e.get(k) == v for k, v in fields.items()))


def _copy(name: str, copy: int, wait: int) -> list[dict[str, str]]:
    """The recorded call `name` as call number `copy` of the test, `copy` minutes after the
    recording, with fresh Uniqueid/Linkedid values and a queue wait of exactly `wait` s.

    The wait ends when the agent answers (answered) or the caller hangs up (abandoned):
    that event and every later one move by the difference, in exact decimal arithmetic, and
    the whole-second figures Asterisk would then report (HoldTime, RingTime) say so too."""
    text = json.dumps(_transcript(name), ensure_ascii=False)
    caller, agent = LEG_IDS[name]
    text = text.replace(caller, f"kpi-{copy}-caller").replace(agent, f"kpi-{copy}-agent")
    events: list[dict[str, str]] = json.loads(text)
    joined = Decimal(events[_index(events, "QueueCallerJoin")]["Timestamp"])
    if name == "answered":
        ends = _index(events, "AgentConnect")
        moved_from = _index(events, "Newstate", Uniqueid=f"kpi-{copy}-agent", ChannelState="6")
    else:
        ends = _index(events, "QueueCallerAbandon")
        moved_from = _index(events, "HangupRequest")
    shift = Decimal(wait) - (Decimal(events[ends]["Timestamp"]) - joined)
    started = Decimal(60 * copy)
    for n, event in enumerate(events):
        at = Decimal(event["Timestamp"]) + started + (shift if n >= moved_from else 0)
        event["Timestamp"] = f"{at:.6f}"
    for event in events:
        if event["Event"] in ("AgentConnect", "AgentComplete", "QueueCallerAbandon"):
            event["HoldTime"] = str(wait)
        if event["Event"] == "AgentConnect":
            rang = Decimal(event["Timestamp"]) - Decimal(
                events[_index(events, "AgentCalled")]["Timestamp"])
            event["RingTime"] = str(int(rang))
    return events


# (transcript, queue wait in seconds); copy n starts n minutes after the recording
CALLS = [("answered", 3), ("answered", 5), ("answered", 20),
         ("abandoned", 3), ("abandoned", 5), ("abandoned", 8)]


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


def _track_and_store(sessions: sessionmaker[Session]) -> list[str]:
    tracker = CallTracker(short_abandon_seconds=5)
    ended: list[CallEnded] = []
    for copy, (name, wait) in enumerate(CALLS):
        for event in _copy(name, copy, wait):
            ended += [e for e in tracker.feed(event, float(event["Timestamp"]))
                      if isinstance(e, CallEnded)]
    with transaction(sessions) as session:
        return [e.call_id for e in ended if records.store_call(session, e.record)]


def test_each_recorded_call_is_stored_once_with_its_wait_and_short_abandon_flag(
        sessions: sessionmaker[Session]) -> None:
    assert _track_and_store(sessions) == [f"kpi-{n}-caller" for n in range(6)]
    with sessions() as session:
        rows = session.execute(select(CallRecord.call_id, CallRecord.outcome,
                                      CallRecord.wait_seconds, CallRecord.short_abandon)
                               .order_by(CallRecord.call_id)).all()
    assert [tuple(r) for r in rows] == [
        ("kpi-0-caller", "answered", 3.0, False),  # answered after under 5 s: not short
        ("kpi-1-caller", "answered", 5.0, False),
        ("kpi-2-caller", "answered", 20.0, False),
        ("kpi-3-caller", "abandoned", 3.0, True),  # the only short abandon
        ("kpi-4-caller", "abandoned", 5.0, False),  # exactly 5.000 s is not under 5 s
        ("kpi-5-caller", "abandoned", 8.0, False)]


def test_the_call_measures_of_the_recorded_calls_are_the_hand_worked_figures(
        sessions: sessionmaker[Session]) -> None:
    _track_and_store(sessions)
    with sessions() as session:
        figures = call_measures(session, DAY_START, DAY_END)
    # six calls queued; the short abandon is neither offered nor abandoned, and the call
    # answered after 3 s is answered like any other
    assert (figures.calls, figures.short_abandons, figures.offered) == (6, 1, 5)
    assert (figures.answered, figures.abandoned, figures.unanswered) == (3, 2, 0)
    assert figures.answer_rate == 0.6  # 3 / 5
    assert figures.abandon_rate == 0.4  # 2 / 5
    assert figures.answered_within == 2  # waited <= 15 s: the 3 s and 5 s calls
    assert figures.service_level == 0.4  # 2 / 5
    assert figures.asa_seconds == 9.3  # (3 + 5 + 20) / 3 = 9.33
    assert figures.longest_wait_seconds == 20.0
    # each copy talks as the recording did: 056.095774 to 056.699573, 0.604 s
    assert figures.talk_seconds == 1.812
