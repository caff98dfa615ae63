"""Surge calls (突发事件模式来电) in the KPIs: counted apart in the hotline report and the
/api/v1/kpis answer, while the ordinary call figures keep them, over a hand-built day whose
every figure is worked out by hand below; on SQLite and PostgreSQL.

Thursday 2026-11-26 in Beijing (UTC+8) is [2026-11-25 16:00Z, 2026-11-26 16:00Z).
T0 = 2026-11-26 02:00Z (10:00 BJT) and m(n) is n minutes after it. Surge A (a water cut) is on
from m(60) to m(120); surge B (a storm) from m(300) and still on when the report is run.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.db import transaction
from reports import kpis
from telephony import surge
from telephony.models import CallRecord, SurgeMode
from tests.api_world import World, build

T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)


def m(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


HEARD, AGAIN, LEAVE, MENU = (("surge",), ("surge", "surge_repeat"), ("surge", "surge_leave"),
                             ("hours", "welcome", "menu"))
# (name, started, direction, queue, outcome, short abandon, IVR steps)
CALLS = [
    ("C1", m(30), "inbound", "general", "answered", False, MENU),  # before the surge
    ("C2", m(61), "inbound", "general", "answered", False, HEARD + MENU),
    ("C3", m(70), "inbound", "general", "abandoned", False, AGAIN + MENU),
    ("C4", m(80), "inbound", None, "ivr", False, LEAVE),  # left with #: never queued
    ("C5", m(90), "inbound", "general", "abandoned", True, HEARD + MENU),  # short abandon
    # in surge A's span without the announcement (a blocked caller hears none): not a surge
    # call
    ("C6", m(100), "inbound", "complaints", "answered", False, ("blocked",)),
    ("C7", m(119.5), "inbound", "complaints", "unanswered", False, HEARD + MENU),
    ("C8", m(150), "inbound", "general", "answered", False, MENU),  # between the surges
    ("C9", m(310), "inbound", "general", "answered", False, HEARD + MENU),
    ("C10", m(320), "outbound", None, "answered", False, ()),  # a survey call placed
    # the next Beijing day (02:00Z + 900 min = 17:00Z = 01:00 BJT on Friday), surge B on
    ("C11", m(900), "inbound", "general", "answered", False, HEARD + MENU),
]
DAY = {"from": "2026-11-26T00:00:00+08:00", "to": "2026-11-27T00:00:00+08:00"}


def _store(world: World) -> None:
    with transaction(world.sessions) as session:
        session.add(SurgeMode(title="停水", text="", sound="surge-a", started_at=m(60),
                              started_by="班长", ended_at=m(120), ended_by="班长"))
        session.add(SurgeMode(title="暴雨", text="", sound="surge-b", started_at=m(300),
                              started_by="班长", ended_by=""))
        for name, started, direction, queue, outcome, short, steps in CALLS:
            path = [{"at": 1.0 + i, "node": "node", "value": step}
                    for i, step in enumerate(steps)]
            answered = outcome == "answered" and queue is not None
            session.add(CallRecord(
                call_id=name, direction=direction, caller_number="13800000001",
                citizen_number="+8613800000001", started_at=started, outcome=outcome,
                queue=queue, wait_seconds=5 if queue else None, short_abandon=short,
                agent="8101" if answered else None,
                connected_at=started + timedelta(seconds=5) if answered else None,
                talk_seconds=60 if answered else None, hold_seconds=0,
                ended_at=started + timedelta(minutes=3), details={"ivr_path": path},
                purpose="survey" if direction == "outbound" else ""))


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    built = build(database_url, tmp_path)  # its one call is on 2026-11-24: not in the day
    _store(built)
    yield built
    built.engine.dispose()


def test_surge_calls_are_counted_apart_and_kept_in_the_ordinary_figures(world: World) -> None:
    answer = world.client.get("/api/v1/kpis", query_string={**DAY, "bucket": "day"},
                              headers=world.tokens["supervisor"])
    assert answer.status_code == 200, answer.json
    total = answer.json["report"]["total"]
    # ordinary: inbound C1..C9 but C10 (outbound); offered: queued, not short: C1 C2 C3
    # C6 C7 C8 C9; answered C1 C2 C6 C8 C9; abandoned C3; unanswered C7; short C5
    calls = total["calls"]
    assert (calls["calls"], calls["offered"], calls["answered"], calls["abandoned"],
            calls["unanswered"], calls["short_abandons"]) == (9, 7, 5, 1, 1, 1)
    assert calls["answer_rate"] == 0.7143  # 5/7
    # surge: heard C2 C3 C4 C5 C7 C9 (not C6: no announcement, not C11: the next day);
    # again C3; left C4; offered C2 C3 C7 C9; answered C2 C9; abandoned C3; unanswered C7;
    # short C5
    assert total["surge"] == {
        "calls": 6, "repeated": 1, "left": 1, "offered": 4, "answered": 2, "abandoned": 1,
        "unanswered": 1, "short_abandons": 1, "answer_rate": 0.5, "abandon_rate": 0.25}
    [day] = answer.json["report"]["buckets"]
    assert day["label"] == "2026-11-26" and day["surge"] == total["surge"]
    # the API document says what the ordinary figures hold
    document = world.client.get("/api/v1/openapi.json").json
    said = document["paths"]["/api/v1/kpis"]["get"]["description"]
    assert "counted in the ordinary call figures" in said and "`surge`" in said


def test_a_window_cut_inside_a_surge_counts_only_its_calls(world: World) -> None:
    with world.sessions() as session:
        # [m(65), m(95)): C3 C4 C5
        cut = surge.call_measures(session, m(65), m(95))
        # surge B still on: [m(300), m(1000)) holds C9 and C11
        on = surge.call_measures(session, m(300), m(1000))
        # the complaints queue over the day: C7 only (C6 heard nothing)
        complaints = surge.call_measures(session, m(-600), m(840), queue="complaints")
        report = kpis.hotline_report(session, m(0), m(120), bucket=timedelta(hours=1),
                                     now=NOW)
    assert (cut.calls, cut.repeated, cut.left, cut.offered, cut.answered, cut.abandoned,
            cut.short_abandons, cut.answer_rate, cut.abandon_rate) == (
        3, 1, 1, 1, 0, 1, 1, 0.0, 1.0)
    assert (on.calls, on.offered, on.answered, on.answer_rate) == (2, 2, 2, 1.0)
    assert (complaints.calls, complaints.offered, complaints.unanswered) == (1, 1, 1)
    # hour buckets from 10:00 BJT: 10-11 holds C1 only, 11-12 C2 .. C7 (five heard)
    first, second = report.buckets
    assert (first.surge.calls, first.calls.calls) == (0, 1)
    assert (second.surge.calls, second.calls.calls) == (5, 6)
    assert first.surge.answer_rate is None  # nothing offered to divide by


def test_no_surge_no_surge_calls(world: World) -> None:
    with world.sessions() as session:
        quiet = surge.call_measures(session, m(-600), m(55))
    assert quiet == surge.SurgeCallMeasures(0, 0, 0, 0, 0, 0, 0, 0, None, None)
