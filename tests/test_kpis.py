"""Call measures, order measures, the hotline report and the CJ/T 292 evaluation over a small
hand-built day, every figure worked out by hand below; on SQLite and PostgreSQL.

All stored times are UTC; Beijing time (BJT) is UTC+8. The day under test is Tuesday
2026-11-24 in Beijing, [2026-11-23 16:00Z, 2026-11-24 16:00Z). T0 = 2026-11-24 01:00Z
(09:00 BJT) and m(n) is n minutes after it, so the day ends at m(900).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core import phones
from core.db import make_engine, session_factory, transaction, upgrade
from reports import kpis
from reports.kpis import buckets, evaluate, grade, hotline_report, order_measures
from telephony import measures
from telephony.measures import MeasureError, call_measures, call_measures_by_queue
from telephony.models import CallRecord, SeatInterval
from tickets import rollups, workflow
from tickets.models import Survey, WorkOrder, WorkOrderDeadline, WorkOrderEvent

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
DAY_START = datetime(2026, 11, 24, tzinfo=SH)  # = 2026-11-23 16:00Z
DAY_END = datetime(2026, 11, 25, tzinfo=SH)  # = 2026-11-24 16:00Z
NOW = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)  # the report is run after the day


def m(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def z(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


# ------------------------------------------------------------------------------ calls
# (name, caller, started, queue, outcome, wait, short abandon, talk, hold, agent)
CALLS = [
    ("A0", "13800000006", z(11, 22, 5), None, "ivr", None, False, None, 0, None),
    ("B1", "13900000001", z(11, 22, 15, 30), "general", "answered", 4, False, 40, 0, "8101"),
    ("B2", "13900000002", z(11, 22, 23, 30), "general", "abandoned", 20, False, None, 0, None),
    ("A1", "13800000003", z(11, 23, 15, 30), "general", "answered", 8, False, 60, 0, "8101"),
    # --- the day: A2 .. A11
    ("A2", "13800000001", z(11, 23, 23, 30), "general", "answered", 5, False, 120, 20, "8101"),
    ("A3", "13800000002", z(11, 24, 1, 10), "general", "answered", 15, False, 200, 0, "8102"),
    ("A4", "13800000003", z(11, 24, 1, 20), "general", "answered", 30, False, 100, 10, "8101"),
    ("A5", "+8613800000001", z(11, 24, 4), "complaints", "answered", 10, False, 300, 0, "8102"),
    ("A6", "13800000004", z(11, 24, 5), "general", "abandoned", 40, False, None, 0, None),
    ("A7", "13800000005", z(11, 24, 5, 10), "general", "abandoned", 3, True, None, 0, None),
    ("A8", "13800000006", z(11, 24, 5, 20), "complaints", "abandoned", 2, True, None, 0, None),
    ("A9", "13800000007", z(11, 24, 6), "general", "unanswered", 60, False, None, 0, None),
    ("A10", "", z(11, 24, 6, 30), None, "ivr", None, False, None, 0, None),
    ("A11", "13800000004", z(11, 24, 15, 30), "general", "answered", 12, False, 90, 0, "8102"),
    # --- after the day
    ("A12", "13800000002", z(11, 24, 16, 30), "general", "answered", 20, False, 50, 0, "8101"),
    ("B3", "13900000003", z(11, 30, 16, 30), "general", "answered", 9, False, 45, 0, "8101"),
]

# Calls the hotline placed in the day, counted apart from every inbound figure: a survey
# answered, a keep-my-place callback (through the general queue, answered by 8101, with its
# wrap-up), a survey nobody answered. Each calls a number that also called in.
# (name, citizen, started, purpose, queue, outcome, wait, talk, agent)
OUTBOUND = [
    ("O1", "13800000003", z(11, 24, 2), "survey", None, "answered", None, None, None),
    ("O2", "13800000004", z(11, 24, 5, 30), "callback", "general", "answered", 20, 60, "8101"),
    ("O3", "13800000007", z(11, 24, 7), "survey", None, "unanswered", None, None, None),
]

# (agent, state, started, seconds). Wrap-up starts where the agent's call ends
# (connected = started + wait; ended = connected + talk).
SEATS = [
    ("8101", "wrap_up", z(11, 23, 15, 31) + timedelta(seconds=8), 10),  # after A1
    ("8101", "ready", z(11, 23, 23, 29), 95),
    ("8101", "ringing", z(11, 23, 23, 30), 5),
    ("8101", "talking", z(11, 23, 23, 30) + timedelta(seconds=5), 120),  # A2
    ("8101", "wrap_up", z(11, 23, 23, 32) + timedelta(seconds=5), 10),  # after A2: general
    ("8102", "talking", z(11, 24, 1, 10) + timedelta(seconds=15), 200),  # A3
    ("8102", "wrap_up", z(11, 24, 1, 13) + timedelta(seconds=35), 20),  # after A3: general
    ("8101", "talking", z(11, 24, 1, 20) + timedelta(seconds=30), 100),  # A4
    ("8101", "wrap_up", z(11, 24, 1, 22) + timedelta(seconds=10), 10),  # after A4: general
    ("8102", "talking", z(11, 24, 4) + timedelta(seconds=10), 300),  # A5
    ("8102", "wrap_up", z(11, 24, 4, 5) + timedelta(seconds=10), 30),  # after A5: complaints
    ("8102", "paused", z(11, 24, 5), 1000),  # lunch: not available time
    ("8102", "talking", z(11, 24, 15, 30) + timedelta(seconds=12), 90),  # A11
    ("8102", "wrap_up", z(11, 24, 15, 31) + timedelta(seconds=42), 20),  # after A11: general
    ("8101", "wrap_up", z(11, 24, 5, 31) + timedelta(seconds=20), 15),  # after O2: outbound
]


def _calls(session: Session) -> None:
    for name, caller, started, queue, outcome, wait, short, talk, hold, agent in CALLS:
        connected = started + timedelta(seconds=wait) if outcome == "answered" else None
        session.add(CallRecord(
            call_id=name, caller_number=caller, started_at=started, outcome=outcome,
            citizen_number=phones.normalise_or_empty(caller),  # as the record is stored
            queue=queue, wait_seconds=wait, short_abandon=short, agent=agent,
            connected_at=connected, talk_seconds=talk, hold_seconds=hold,
            ended_at=started + timedelta(minutes=10), details={}))
    for name, citizen, started, purpose, queue, outcome, wait, talk, agent in OUTBOUND:
        connected = started + timedelta(seconds=wait) if agent else None
        session.add(CallRecord(
            call_id=name, direction="outbound", purpose=purpose, caller_number="",
            citizen_number=phones.normalise(citizen), started_at=started, outcome=outcome,
            queue=queue, wait_seconds=wait, agent=agent, connected_at=connected,
            talk_seconds=talk, ended_at=started + timedelta(minutes=3), details={}))
    for agent, state, started, seconds in SEATS:
        session.add(SeatInterval(agent_number=agent, state=state, started_at=started,
                                 ended_at=started + timedelta(seconds=seconds),
                                 seconds=seconds))


# ----------------------------------------------------------------------------- orders
OP, SUP, CHIEF, DISP, DEPT, SYS = (workflow.OPERATOR, workflow.SUPERVISOR,
                                   workflow.SHIFT_CHIEF, workflow.DISPATCHER,
                                   workflow.DEPARTMENT, workflow.SYSTEM)
G1, G2, G3 = "31010100100101", "31010100200101", "31010400100101"
# county 310101 holds G1 (street 310101001) and G2 (street 310101002); county 310104 G3.


def _order(session: Session, number: str, *, appeal: str, channel: str,
           steps: list[tuple[datetime, str, str, str]], phone: str = "13800001111",
           grid: str = "", department: str = "",
           deadlines: tuple[tuple[str, int, datetime, datetime, datetime | None], ...] = (),
           surveys: tuple[tuple[str, int | None, datetime | None], ...] = ()) -> None:
    """steps: (at, action, role, actor), the first one the creation; states follow the
    workflow. deadlines: (step, round, started, due, met)."""
    created = steps[0][0]
    state, events, closed_at, reworks, fcr = "intake", [], None, 0, False
    for seq, (at, action, role, actor) in enumerate(steps, start=1):
        before = "" if seq == 1 else state
        if seq > 1:
            state = workflow.apply(state, action, role)
        events.append(WorkOrderEvent(seq=seq, action=action, from_state=before, to_state=state,
                                     actor=actor, role=role, at=at))
        closed_at = at if state == "closed" else closed_at
        reworks += action in ("rework", "reopen")
        fcr = fcr or action == "resolve_on_call"
    order = WorkOrder(case_number=number, appeal_type=appeal, description="…",
                      citizen_phone=phone, channel=channel, state=state,
                      rework_count=reworks, first_call_resolved=fcr, grid_code=grid,
                      department_code=department, closed_at=closed_at, created_at=created,
                      updated_at=steps[-1][0])
    session.add(order)
    session.flush()
    for event in events:
        event.order_id = order.id
        session.add(event)
    for step, rnd, started, due, met in deadlines:
        session.add(WorkOrderDeadline(order_id=order.id, step=step, round=rnd,
                                      clock="continuous", amount=1, started_at=started,
                                      yellow_at=due, due_at=due, met_at=met))
    for rnd, (state_, rating, answered) in enumerate(surveys, start=1):
        session.add(Survey(order_id=order.id, round=rnd, phone=phone, state=state_,
                           next_attempt_at=closed_at or created, rating=rating,
                           channel="phone" if rating else "", created_at=closed_at or created,
                           updated_at=answered or closed_at or created, answered_at=answered))
    session.flush()


def _orders(session: Session) -> None:
    # O1 enquiry answered on the call: the open clock ends abandoned, "complete" is done.
    _order(session, "O1", appeal="enquiry", channel="phone", steps=[
        (m(0), "create", OP, "op-li"), (m(5), "resolve_on_call", OP, "op-li")],
        deadlines=(("open", 1, m(0), m(30), m(5)), ("complete", 1, m(0), m(4320), m(5))))
    # O2 enquiry still in intake; its open clock is overdue but belongs to nobody.
    _order(session, "O2", appeal="enquiry", channel="phone", steps=[
        (m(10), "create", OP, "op-li")],
        deadlines=(("open", 1, m(10), m(40), None), ("complete", 1, m(10), m(4320), None)))
    # O3 complaint, the whole loop on time, department D01, grid G1.
    _order(session, "O3", appeal="complaint", channel="phone", grid=G1, department="D01",
           steps=[(m(20), "create", OP, "op-li"),
                  (m(25), "request_verification", OP, "op-li"),  # 5 min after intake
                  (m(50), "verified", SUP, "sup-zhao"), (m(55), "open", CHIEF, "chief-sun"),
                  (m(60), "dispatch", DISP, "disp-zhou"), (m(70), "sign", DEPT, "D01-li"),
                  (m(120), "feedback", DEPT, "D01-li"),
                  (m(125), "request_check", DISP, "disp-zhou"),
                  (m(150), "check_passed", SUP, "sup-zhao"),
                  (m(160), "close", CHIEF, "chief-sun"),
                  (m(300), "evaluate", SYS, "survey-line")],
           deadlines=(("open", 1, m(20), m(80), m(55)), ("complete", 1, m(20), m(600), m(160)),
                      ("verify", 1, m(25), m(55), m(50)),
                      ("dispatch", 1, m(55), m(85), m(60)),
                      ("handle", 1, m(70), m(240), m(120)),
                      ("check", 1, m(125), m(155), m(150)),
                      ("close", 1, m(150), m(170), m(160))),
           surveys=(("done", 1, m(300)),))
    # O4 report, late in places and reworked once, D01, G1.
    _order(session, "O4", appeal="report", channel="phone", grid=G1, department="D01",
           steps=[(m(30), "create", OP, "op-wang"),
                  (m(50), "request_verification", OP, "op-wang"),  # 20 min: late
                  (m(100), "verified", SUP, "sup-qian"), (m(110), "open", CHIEF, "chief-sun"),
                  (m(150), "dispatch", DISP, "disp-wu"), (m(160), "sign", DEPT, "D01-li"),
                  (m(200), "feedback", DEPT, "D01-li"),
                  (m(230), "request_check", DISP, "disp-wu"),
                  (m(240), "rework", SUP, "sup-zhao"), (m(300), "feedback", DEPT, "D01-li"),
                  (m(305), "request_check", DISP, "disp-wu"),
                  (m(320), "check_passed", SUP, "sup-zhao"),
                  (m(330), "close", CHIEF, "chief-sun"),
                  (m(400), "evaluate", SYS, "survey-line")],
           deadlines=(("open", 1, m(30), m(130), m(110)),
                      ("complete", 1, m(30), m(300), m(330)),  # late
                      ("verify", 1, m(50), m(80), m(100)),  # late
                      ("dispatch", 1, m(110), m(140), m(150)),  # late
                      ("handle", 1, m(160), m(220), m(200)),
                      ("check", 1, m(230), m(260), m(240)),  # done by the rework
                      ("handle", 2, m(240), m(280), m(300)),  # late
                      ("check", 2, m(305), m(335), m(320)),
                      ("close", 1, m(320), m(325), m(330))),  # late
           surveys=(("done", 3, m(400)),))
    # O5 a supervisor's field report, returned once by D02 and re-dispatched; its handling
    # is overdue at the end of the day. G2.
    _order(session, "O5", appeal="report", channel="field", grid=G2, department="D02",
           steps=[(m(40), "create", OP, "sup-zhao"), (m(45), "open", CHIEF, "chief-sun"),
                  (m(50), "dispatch", DISP, "disp-zhou"), (m(60), "sign", DEPT, "D02-chen"),
                  (m(70), "return", DEPT, "D02-chen"), (m(80), "dispatch", DISP, "disp-wu"),
                  (m(90), "sign", DEPT, "D02-chen")],
           deadlines=(("open", 1, m(40), m(70), m(45)), ("complete", 1, m(40), m(480), None),
                      ("dispatch", 1, m(45), m(75), m(50)),
                      ("handle", 1, m(60), m(180), m(70)),  # ended by the return: abandoned
                      ("dispatch", 2, m(70), m(100), m(80)),
                      ("handle", 2, m(90), m(200), None)))  # overdue, unhandled
    # O6 an invalid field report, voided before opening. G1.
    _order(session, "O6", appeal="report", channel="field", grid=G1,
           steps=[(m(60), "create", OP, "sup-qian"), (m(70), "void", CHIEF, "chief-sun")],
           deadlines=(("open", 1, m(60), m(90), m(70)), ("complete", 1, m(60), m(600), m(70))))
    # O7 opened late, then voided: a wrong opening. G3, no department.
    _order(session, "O7", appeal="complaint", channel="phone", grid=G3,
           steps=[(m(80), "create", OP, "op-li"), (m(90), "open", CHIEF, "chief-sun"),
                  (m(100), "void", CHIEF, "chief-sun")],
           deadlines=(("open", 1, m(80), m(85), m(90)),  # late
                      ("complete", 1, m(80), m(600), m(100)),  # abandoned by the void
                      ("dispatch", 1, m(90), m(120), m(100))))  # abandoned by the void
    # O8 a web order, handled late by D01, callback not reached yet. G3.
    _order(session, "O8", appeal="help", channel="web", grid=G3, department="D01",
           steps=[(m(100), "create", OP, "web"), (m(105), "open", CHIEF, "chief-sun"),
                  (m(110), "dispatch", DISP, "disp-zhou"), (m(120), "sign", DEPT, "D01-li"),
                  (m(180), "feedback", DEPT, "D01-li"),
                  (m(190), "request_check", DISP, "disp-zhou"),
                  (m(200), "check_passed", SUP, "sup-qian"),
                  (m(210), "close", CHIEF, "chief-sun")],
           deadlines=(("open", 1, m(100), m(130), m(105)),
                      ("complete", 1, m(100), m(1000), m(210)),  # due tomorrow, done today
                      ("dispatch", 1, m(105), m(135), m(110)),
                      ("handle", 1, m(120), m(170), m(180)),  # late
                      ("check", 1, m(190), m(220), m(200)),
                      ("close", 1, m(200), m(230), m(210))),
           surveys=(("agent", None, None),))
    # O9 a suggestion recorded on the call.
    _order(session, "O9", appeal="suggestion", channel="phone", steps=[
        (m(120), "create", OP, "op-wang"), (m(125), "resolve_on_call", OP, "op-wang")],
        deadlines=(("open", 1, m(120), m(150), m(125)),
                   ("complete", 1, m(120), m(4440), m(125))))
    # O10 closed on Nov 20, rated 5 today and reopened for D02. G2.
    _order(session, "O10", appeal="complaint", channel="phone", grid=G2, department="D02",
           steps=[(z(11, 20, 2), "create", OP, "op-li"),
                  (z(11, 20, 2, 10), "open", CHIEF, "chief-sun"),
                  (z(11, 20, 2, 20), "dispatch", DISP, "disp-zhou"),
                  (z(11, 20, 2, 30), "sign", DEPT, "D02-chen"),
                  (z(11, 20, 5), "feedback", DEPT, "D02-chen"),
                  (z(11, 20, 5, 5), "request_check", DISP, "disp-zhou"),
                  (z(11, 20, 6), "check_passed", SUP, "sup-zhao"),
                  (z(11, 20, 7), "close", CHIEF, "chief-sun"),
                  (m(30), "reopen", SYS, "survey-line")],
           deadlines=(("complete", 1, z(11, 20, 2), z(11, 23, 2), z(11, 20, 7)),
                      ("handle", 1, z(11, 20, 2, 30), z(11, 20, 8), z(11, 20, 5)),
                      ("handle", 2, m(30), m(1500), None),  # due tomorrow
                      ("complete", 2, m(30), m(4000), None)),
           surveys=(("done", 5, m(30)),))
    # O11 closed on Nov 21, rated 4 today (the reopen limit was reached).
    _order(session, "O11", appeal="complaint", channel="phone", grid=G3, department="D02",
           steps=[(z(11, 21, 1), "create", OP, "op-wang"),
                  (z(11, 21, 1, 10), "open", CHIEF, "chief-sun"),
                  (z(11, 21, 1, 20), "dispatch", DISP, "disp-zhou"),
                  (z(11, 21, 1, 30), "sign", DEPT, "D02-chen"),
                  (z(11, 21, 3), "feedback", DEPT, "D02-chen"),
                  (z(11, 21, 3, 5), "request_check", DISP, "disp-zhou"),
                  (z(11, 21, 4), "check_passed", SUP, "sup-qian"),
                  (z(11, 21, 5), "close", CHIEF, "chief-sun"),
                  (m(60), "evaluate", SYS, "survey-line")],
           surveys=(("done", 4, m(60)),))


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    upgrade(engine)
    factory = session_factory(engine)
    with transaction(factory) as session:
        _calls(session)
        _orders(session)
        rollups.rebuild(session)  # the rows above were stored without moves
    yield factory
    engine.dispose()


def _rows(rows: tuple[kpis.EvaluationRow, ...]) -> dict[str, dict[str, Any]]:
    return {r.who: {"components": r.components, "score": r.score, "grade": r.grade,
                    **r.figures} for r in rows}


# ------------------------------------------------------------------------------ tests


def test_call_measures_of_one_beijing_day(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions() as session:
        day = call_measures(session, DAY_START, DAY_END)
        general = call_measures(session, DAY_START, DAY_END, queue="general")
        by_queue = call_measures_by_queue(session, DAY_START, DAY_END)
        four_hours = call_measures(session, DAY_START, DAY_END,
                                   repeat_lookback=timedelta(hours=4))
        ten_hours = call_measures(session, DAY_START, DAY_END,
                                  repeat_lookback=timedelta(hours=10))
    # A2 (23:30Z the day before = 07:30 BJT) .. A11 (15:30Z = 23:30 BJT): 10 calls; A1 at
    # 23:30 BJT the evening before and A12 at 00:30 BJT the day after are not in it.
    # In a queue: 9 (A10 never left the IVR); A7, A8 short abandons -> 7 offered:
    # answered A2 A3 A4 A5 A11 = 5, abandoned A6 = 1, unanswered (timeout) A9 = 1.
    # Answered within 15 s: waits 5, 15, 30, 10, 12 -> 4 (15 counts) -> SL 4/7 = 0.5714.
    # ASA = (5 + 15 + 30 + 10 + 12) / 5 = 72/5 = 14.4.
    # Talk 120 + 200 + 100 + 300 + 90 = 810 (holds 20 + 10 = 30 are inside it);
    # wrap-up starting in the day 10 + 20 + 10 + 30 + 20 = 90 (not the 10 after A1);
    # AHT = (810 + 90) / 5 = 180.
    # Longest wait of an offered call: A9, 60 s.
    # Known numbers: all but A10 = 9. Repeats within 24 h: A4 (A1 9 h 50 min before, the
    # evening before), A5 (+86 13800000001 = A2's number, 4 h 30 min), A11 (A6, 10 h 30
    # min) = 3; A8 is not (A0 from the same number was 48 h before) -> 3/9 = 0.3333.
    # Occupancy is of seat time, whatever the call: (talking 810 + wrap-up 90 + 15 after
    # the callback O2) / (ready 95 + ringing 5 + 810 + 105) = 915 / 1015 = 0.9015; the
    # paused 1000 s are not available time. O1-O3 change no inbound figure (O2 waited in
    # the general queue; O3 called A9's number an hour after A9) and are counted apart:
    # 3 placed, 2 answered.
    assert day.as_dict() == {
        "start": "2026-11-23T16:00:00+00:00", "end": "2026-11-24T16:00:00+00:00",
        "queue": None, "service_seconds": 15.0, "repeat_lookback": 86400.0,
        "calls": 10, "offered": 7, "answered": 5, "abandoned": 1, "unanswered": 1,
        "short_abandons": 2, "answered_within": 4, "answer_rate": 0.7143,
        "service_level": 0.5714, "abandon_rate": 0.1429, "asa_seconds": 14.4,
        "aht_seconds": 180.0, "talk_seconds": 810.0, "hold_seconds": 30.0,
        "wrap_up_seconds": 90.0, "longest_wait_seconds": 60.0, "known_number_calls": 9,
        "repeat_calls": 3, "repeat_call_rate": 0.3333, "occupancy": 0.9015,
        "outbound_calls": 3, "outbound_answered": 2,
    }
    # general: A2 A3 A4 A6 A7 A9 A11 = 7 calls, A7 short -> 6 offered; answered A2 A3 A4
    # A11 = 4 -> 4/6; within 15 s A2 A3 A11 = 3 -> 3/6; abandoned A6 -> 1/6.
    # ASA (5 + 15 + 30 + 12) / 4 = 15.5. Wrap-up following a general call: after A2, A3, A4
    # and A11 (8102's latest answered call before it is A11, not A5) = 60;
    # AHT = (120 + 200 + 100 + 90 + 60) / 4 = 142.5. Known 7, repeats A4 and A11 -> 2/7.
    assert (general.offered, general.answered, general.abandoned, general.unanswered,
            general.short_abandons) == (6, 4, 1, 1, 1)
    assert (general.answer_rate, general.service_level, general.abandon_rate) == (
        0.6667, 0.5, 0.1667)
    assert (general.asa_seconds, general.wrap_up_seconds, general.aht_seconds) == (
        15.5, 60.0, 142.5)
    assert (general.repeat_calls, general.known_number_calls, general.repeat_call_rate) == (
        2, 7, 0.2857)
    assert general.occupancy is None  # seat intervals carry no queue
    # complaints: A5 and A8 (short) -> 1 offered, answered in 10 s; AHT (300 + 30) / 1;
    # A5 is a repeat (A2's call in the general queue counts), A8 not -> 1/2.
    complaints = by_queue["complaints"]
    assert list(by_queue) == ["complaints", "general"] and by_queue["general"] == general
    assert (complaints.offered, complaints.answered, complaints.service_level,
            complaints.abandon_rate, complaints.asa_seconds, complaints.aht_seconds,
            complaints.longest_wait_seconds, complaints.repeat_call_rate) == (
        1, 1, 1.0, 0.0, 10.0, 330.0, 10.0, 0.5)
    # The look-back is configurable: 4 h catches none of the three gaps (9:50, 4:30,
    # 10:30); 10 h catches A4 and A5 -> 2/9.
    assert (four_hours.repeat_calls, four_hours.repeat_call_rate) == (0, 0.0)
    assert (ten_hours.repeat_calls, ten_hours.repeat_call_rate) == (2, 0.2222)


def test_an_empty_window_divides_by_nothing(sessions) -> None:  # type: ignore[no-untyped-def]
    quiet_start, quiet_end = datetime(2026, 10, 1, tzinfo=SH), datetime(2026, 10, 2, tzinfo=SH)
    with sessions() as session:
        calls = call_measures(session, quiet_start, quiet_end)
        orders = order_measures(session, quiet_start, quiet_end, now=NOW)
        report = evaluate(session, quiet_start, quiet_end, now=NOW)
        instant = call_measures(session, DAY_START, DAY_START)  # zero length: empty too
    for measured in (calls, instant):
        assert (measured.calls, measured.offered, measured.answered) == (0, 0, 0)
        assert all(getattr(measured, name) is None for name in (
            "answer_rate", "service_level", "abandon_rate", "asa_seconds", "aht_seconds",
            "longest_wait_seconds", "repeat_call_rate", "occupancy"))
    assert orders.orders_created == 0 and orders.ratings == {1: 0, 2: 0, 3: 0, 4: 0, 5: 0}
    assert all(getattr(orders, name) is None for name in (
        "fcr_rate", "fcr_rate_all", "on_time_completion_rate", "callback_rate",
        "satisfaction_rate", "mean_rating"))
    assert all(rows == () for rows in (
        report.operators, report.supervisors, report.shift_chiefs, report.dispatchers,
        report.departments, report.counties, report.streets))


def test_order_measures_of_the_day(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions() as session:
        day = order_measures(session, DAY_START, DAY_END, now=NOW)
    # Created in the day: O1..O9 = 9 (O10 and O11 are older).
    # First-call resolution: phone orders O1 O2 O3 O4 O7 O9, less O7 (voided) = 5, resolved
    # on the call O1 O9 -> 2/5 = 0.4; answerable types (enquiry O1 O2, suggestion O9) = 3
    # -> 2/3 = 0.6667.
    # "complete" clocks: done in the day O1 (answered on the call) O3 O4 O8 (due tomorrow,
    # done today) O9 = 5, on time all but O4 = 4; O6 and O7 ended by a void (abandoned);
    # overdue and unmet at the end of the day O5 (due m480) = 1; O2 and O10 r2 are due
    # later -> 4 / (5 + 1) = 0.6667.
    # Closed in the day O1 O3 O4 O8 O9 = 5; callbacks due (not answered on the call, with a
    # phone) O3 O4 O8 = 3, reached O3 O4 -> 2/3.
    # Rated in the day: O3 1, O4 3, O10 5, O11 4 -> satisfied (1-3) 2/4 = 0.5, mean 13/4.
    # Reworks: O4's failed check and O10's reopen = 2.
    assert day.as_dict() == {
        "start": "2026-11-23T16:00:00+00:00", "end": "2026-11-24T16:00:00+00:00",
        "orders_created": 9,
        "by_state": {"closed": 3, "evaluated": 2, "handling": 1, "intake": 1, "voided": 2},
        "by_appeal_type": {"complaint": 2, "enquiry": 2, "help": 1, "report": 3,
                           "suggestion": 1},
        "by_channel": {"field": 2, "phone": 6, "web": 1},
        "phone_orders": 5, "phone_resolved_on_call": 2, "fcr_rate_all": 0.4,
        "fcr_answerable_orders": 3, "fcr_resolved_on_call": 2, "fcr_rate": 0.6667,
        "complete_done": 5, "complete_on_time": 4, "complete_overdue_unmet": 1,
        "complete_due": 6, "on_time_completion_rate": 0.6667,
        "orders_closed": 5, "callbacks_due": 3, "callbacks_reached": 2,
        "callback_rate": 0.6667,
        "rated": 4, "satisfied": 2, "satisfaction_rate": 0.5, "mean_rating": 3.25,
        "ratings": {1: 1, 2: 0, 3: 1, 4: 1, 5: 1}, "rework_count": 2,
    }


def test_buckets_follow_the_centres_day_week_and_month() -> None:
    # 2026-11-23 is a Monday: ISO week 48 runs Mon 23 00:00 BJT (Sun 22 16:00Z) to Mon 30.
    weeks = buckets(datetime(2026, 11, 18, 12, tzinfo=SH), datetime(2026, 12, 2, tzinfo=SH),
                    "week")
    assert [(b.label, b.start, b.end) for b in weeks] == [
        ("2026-W47", z(11, 18, 4), z(11, 22, 16)),  # clipped to the window's start
        ("2026-W48", z(11, 22, 16), z(11, 29, 16)),
        ("2026-W49", z(11, 29, 16), z(12, 1, 16)),  # clipped to its end
    ]
    months = buckets(datetime(2026, 11, 1, tzinfo=SH), datetime(2027, 1, 1, tzinfo=SH),
                     "month")
    assert [(b.label, b.start, b.end) for b in months] == [
        ("2026-11", z(10, 31, 16), z(11, 30, 16)), ("2026-12", z(11, 30, 16),
                                                     datetime(2026, 12, 31, 16, tzinfo=UTC))]
    hours = buckets(DAY_START, DAY_START + timedelta(hours=3), timedelta(hours=1))
    assert [b.label for b in hours] == ["2026-11-24T00:00+08:00", "2026-11-24T01:00+08:00",
                                        "2026-11-24T02:00+08:00"]
    whole = buckets(DAY_START, DAY_END, None)
    assert [(b.label, b.start, b.end) for b in whole] == [
        ("2026-11-24T00:00+08:00/2026-11-25T00:00+08:00", z(11, 23, 16), z(11, 24, 16))]
    # In UTC the same days cut elsewhere.
    assert [b.start for b in buckets(z(11, 23, 0), z(11, 25, 0), "day", "UTC")] == [
        z(11, 23, 0), z(11, 24, 0)]
    with pytest.raises(MeasureError):
        buckets(DAY_START, DAY_END, "fortnight")
    with pytest.raises(MeasureError):
        buckets(DAY_START.replace(tzinfo=None), DAY_END)
    with pytest.raises(MeasureError):
        buckets(DAY_END, DAY_START)
    with pytest.raises(MeasureError):
        buckets(DAY_START, DAY_END, "day", "Mars/Olympus")


def test_the_report_cuts_beijing_days_weeks_and_months(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions() as session:
        days = hotline_report(session, datetime(2026, 11, 23, tzinfo=SH),
                              datetime(2026, 11, 26, tzinfo=SH), bucket="day", now=NOW)
        weeks = hotline_report(session, datetime(2026, 11, 16, tzinfo=SH),
                               datetime(2026, 12, 7, tzinfo=SH), bucket="week", now=NOW)
        months = hotline_report(session, datetime(2026, 11, 1, tzinfo=SH),
                                datetime(2027, 1, 1, tzinfo=SH), bucket="month", now=NOW)
        one_day = hotline_report(session, DAY_START, DAY_END, now=NOW)
        day_calls = call_measures(session, DAY_START, DAY_END)
        day_orders = order_measures(session, DAY_START, DAY_END, now=NOW)

    def cut(report: kpis.HotlineReport) -> list[tuple[str, int, int, int]]:
        return [(b.label, b.calls.calls, b.calls.offered, b.calls.answered)
                for b in report.buckets]

    # Nov 23 BJT: B2 (23:30Z on the 22nd = 07:30 BJT on the 23rd) and A1 (15:30Z = 23:30
    # BJT on the 23rd). Nov 24: A2..A11 (A2 is 23:30Z on the 23rd in UTC). Nov 25: A12
    # (16:30Z on the 24th = 00:30 BJT on the 25th).
    assert cut(days) == [("2026-11-23", 2, 2, 1), ("2026-11-24", 10, 7, 5),
                         ("2026-11-25", 1, 1, 1)]
    assert (days.total.calls.calls, days.total.calls.offered) == (13, 10)
    # W47 (Nov 16-22 BJT): A0 (IVR only) and B1 (23:30 BJT on Sunday 22nd).
    # W48: B2 (Monday 07:30 BJT, a Sunday in UTC), A1, A2..A11, A12 = 13 calls; offered
    # 1 + 1 + 7 + 1 = 10; answered A1 + 5 + A12 = 7. W49: B3 (00:30 BJT on Tuesday Dec 1).
    assert cut(weeks) == [("2026-W47", 2, 1, 1), ("2026-W48", 13, 10, 7),
                          ("2026-W49", 1, 1, 1)]
    # November BJT: A0 B1 B2 A1 A2..A11 A12 = 15 calls, offered 1 + 1 + 1 + 7 + 1 = 11,
    # answered B1 A1 5 A12 = 8. December: B3, which is still November 30th in UTC.
    assert cut(months) == [("2026-11", 15, 11, 8), ("2026-12", 1, 1, 1)]
    # The single day: one bucket, the same figures as the measures on their own.
    assert [b.label for b in one_day.buckets] == ["2026-11-24"]
    assert one_day.buckets[0].calls == day_calls == one_day.total.calls
    assert one_day.total.orders == day_orders
    assert one_day.targets == {
        "answer_rate": {"target": 0.95, "value": 0.7143, "met": False},
        "service_level": {"target": 0.8, "value": 0.5714, "met": False},
        "satisfaction_rate": {"target": 0.85, "value": 0.5, "met": False}}
    assert one_day.as_dict()["total"]["calls"] == day_calls.as_dict()


def test_cjt292_evaluation_of_the_day(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions() as session:
        result = evaluate(session, DAY_START, DAY_END, now=NOW)
        patrolled = evaluate(session, DAY_START, DAY_END, now=NOW,
                             patrol_areas={"sup-qian": ["310104"]})
        lenient = evaluate(session, DAY_START, DAY_END, now=NOW,
                           verify_dispatch_limit=timedelta(minutes=30))
    # Operators (orders keyed in from calls; "web" created O8 but is not an operator):
    # op-li O1 O2 O3 O7 = 4, op-wang O4 O9 = 2 -> count 4/4 = 1, 2/4 = 0.5.
    # Verification dispatch: op-li O3 5 min after intake (on time), op-wang O4 20 min
    # (late). Check dispatch: dispatchers did all of it -> no figure, weight left out.
    # op-li (0.25 * 1 + 0.40 * 1) / 0.65 = 100 A; op-wang (0.25 * 0.5) / 0.65 = 19.23 E.
    assert _rows(result.operators) == {
        "op-li": {"components": {"count": 1.0, "on_time_verify_dispatch": 1.0,
                                 "on_time_check_dispatch": None},
                  "score": 100.0, "grade": "A", "intake": 4, "busiest_intake": 4,
                  "verify_dispatched": 1, "verify_dispatched_on_time": 1,
                  "check_dispatched": 0, "check_dispatched_on_time": 0},
        "op-wang": {"components": {"count": 0.5, "on_time_verify_dispatch": 0.0,
                                   "on_time_check_dispatch": None},
                    "score": 19.23, "grade": "E", "intake": 2, "busiest_intake": 4,
                    "verify_dispatched": 1, "verify_dispatched_on_time": 0,
                    "check_dispatched": 0, "check_dispatched_on_time": 0},
    }
    assert [r.who for r in result.operators] == ["op-li", "op-wang"]  # ranked
    # With 30 min allowed, op-wang's 20 min is on time: (0.125 + 0.40) / 0.65 = 80.77 B.
    assert [(r.who, r.score, r.grade) for r in lenient.operators] == [
        ("op-li", 100.0, "A"), ("op-wang", 80.77, "B")]
    # Supervisors. sup-zhao reported O5 (opened: valid 1/1); worked grids G2 (O5), G1 (O3
    # verified and checked, O4 reworked and checked). Opened today in G1+G2: O3 O4 (phone:
    # missed) and O5 (field) -> missed 2/3, component 1/3. Verify O3 on time 1/1; checks O3,
    # O4 round 1 (the rework) and round 2, all on time 3/3.
    # 0.40 * 1 + 0.20 / 3 + 0.20 + 0.20 = 86.67 B.
    # sup-qian reported O6 (voided, never opened: 0/1); worked G1 (O6, O4 verified) and G3
    # (O8 checked); opened there O3 O4 O7 O8, none from the field -> missed 4/4, component
    # 0. Verify O4 late 0/1; check O8 on time 1/1 -> 0.20 * 1 = 20 E.
    assert _rows(result.supervisors) == {
        "sup-zhao": {"components": {"valid_report": 1.0, "missed_report": 0.3333,
                                    "on_time_verify": 1.0, "on_time_check": 1.0},
                     "score": 86.67, "grade": "B", "reports": 1, "valid_reports": 1,
                     "opened_in_area": 3, "missed": 2, "verify_done": 1,
                     "verify_on_time": 1, "check_done": 3, "check_on_time": 3},
        "sup-qian": {"components": {"valid_report": 0.0, "missed_report": 0.0,
                                    "on_time_verify": 0.0, "on_time_check": 1.0},
                     "score": 20.0, "grade": "E", "reports": 1, "valid_reports": 0,
                     "opened_in_area": 4, "missed": 4, "verify_done": 1,
                     "verify_on_time": 0, "check_done": 1, "check_on_time": 1},
    }
    # Given sup-qian's patrol area as county 310104 (G3): opened there O7 O8, both missed.
    qian = {r.who: r for r in patrolled.supervisors}["sup-qian"]
    assert (qian.figures["opened_in_area"], qian.figures["missed"]) == (2, 2)
    # Shift chief: opening clocks done O3 O4 O5 O7 O8, O7 late -> 4/5 (O1 O9 answered on
    # the call and O6 voided ended theirs abandoned; O2's is still running). Opened O3 O4
    # O5 O7 O8, O7 voided after -> (5 - 1)/5. Closing clocks O3 O4 O8, O4 late -> 2/3.
    # 0.25 * 0.8 + 0.40 * 0.8 + 0.35 * 2/3 = 75.33 B.
    assert _rows(result.shift_chiefs) == {
        "chief-sun": {"components": {"on_time_open": 0.8, "accurate_open": 0.8,
                                     "on_time_close": 0.6667},
                      "score": 75.33, "grade": "B", "opened": 5, "voided_after_opening": 1,
                      "open_done": 5, "open_on_time": 4, "close_done": 3, "close_on_time": 2},
    }
    # Dispatchers: disp-zhou dispatched O3 O5 O8 = 3, disp-wu O4 O5 (again) = 2 -> 1 and
    # 2/3. Dispatch clocks: zhou O3 O5 O8 on time 3/3; wu O4 late, O5 round 2 on time 1/2
    # (O7's clock ended with the void, nobody's). Returned: zhou's O5 (D02 sent it back)
    # -> (3 - 1)/3; wu none -> 2/2.
    # zhou 0.20 + 0.40 + 0.40 * 2/3 = 86.67 B; wu 0.20 * 2/3 + 0.40 * 0.5 + 0.40 = 73.33 C.
    assert _rows(result.dispatchers) == {
        "disp-zhou": {"components": {"count": 1.0, "on_time_dispatch": 1.0,
                                     "accurate_dispatch": 0.6667},
                      "score": 86.67, "grade": "B", "dispatched": 3, "busiest_dispatched": 3,
                      "returned": 1, "dispatch_done": 3, "dispatch_on_time": 3},
        "disp-wu": {"components": {"count": 0.6667, "on_time_dispatch": 0.5,
                                   "accurate_dispatch": 1.0},
                    "score": 73.33, "grade": "C", "dispatched": 2, "busiest_dispatched": 3,
                    "returned": 0, "dispatch_done": 2, "dispatch_on_time": 1},
    }
    # Departments (handling clocks). D01: opened O3 O4 O8 = 3 (count 1). Handled today O3 r1
    # (on time), O4 r1 (on time), O4 r2 (late), O8 r1 (late) = 4, overdue 0 -> due 4;
    # closed on the last round: O3 r1, O4 r2, O8 r1 = 3 -> 3/4; on time 2/4; reworks O4 = 1
    # -> 1 - 1/4. 0.10 + 0.30 * 0.75 + 0.30 * 0.5 + 0.30 * 0.75 = 70 C.
    # D02: opened O5 = 1 -> 1/3; O5 r1 ended by the return (abandoned), r2 overdue -> due 1,
    # handled 0; reworks: O10's reopen = 1 -> 1 - 1/1 = 0. 0.10 / 3 = 3.33 E.
    assert _rows(result.departments) == {
        "D01": {"components": {"count": 1.0, "closing": 0.75, "on_time_handling": 0.5,
                               "rework": 0.75},
                "score": 70.0, "grade": "C", "opened": 3, "busiest_opened": 3, "handled": 4,
                "overdue_unhandled": 0, "due_to_close": 4, "closed": 3, "on_time": 2,
                "reworks": 1},
        "D02": {"components": {"count": 0.3333, "closing": 0.0, "on_time_handling": 0.0,
                               "rework": 0.0},
                "score": 3.33, "grade": "E", "opened": 1, "busiest_opened": 3, "handled": 0,
                "overdue_unhandled": 1, "due_to_close": 1, "closed": 0, "on_time": 0,
                "reworks": 1},
    }
    # Counties. 310101 (G1, G2): opened O3 O4 O5 = 3; handled O3 r1, O4 r1, O4 r2 = 3,
    # overdue O5 r2 = 1 -> due 4; closed O3 r1, O4 r2 = 2; on time 2; reworks O4 + O10 = 2.
    # 0.10 + 0.30 * 0.5 * 3 = 55 D. 310104 (G3): opened O7 O8 = 2 -> 2/3; O8 r1 handled
    # late and closed -> due 1, closed 1, on time 0, reworks 0.
    # 0.10 * 2/3 + 0.30 + 0 + 0.30 = 66.67 C.
    assert {r.who: (r.figures["opened"], r.figures["due_to_close"], r.figures["closed"],
                    r.figures["on_time"], r.figures["reworks"], r.score, r.grade)
            for r in result.counties} == {"310101": (3, 4, 2, 2, 2, 55.0, "D"),
                                          "310104": (2, 1, 1, 0, 0, 66.67, "C")}
    # Streets. 310101001 (G1): opened O3 O4 = 2 (count 1); due 3, closed 2, on time 2,
    # reworks 1 -> 0.10 + 0.30 * 2/3 * 3 = 70 C. 310101002 (G2): opened O5 -> 1/2; due 1
    # (O5 r2 overdue), reworks O10 = 1 -> 0.10 * 0.5 = 5 E. 310104001 (G3): opened O7 O8
    # = 2 (count 1), as its county otherwise -> 0.10 + 0.30 + 0.30 = 70 C.
    assert [(r.who, r.figures["opened"], r.figures["due_to_close"], r.score, r.grade)
            for r in result.streets] == [("310101001", 2, 3, 70.0, "C"),
                                         ("310104001", 2, 1, 70.0, "C"),
                                         ("310101002", 1, 1, 5.0, "E")]
    # The whole result is plain data: the same dict from either database.
    plain = result.as_dict()
    assert plain["start"] == "2026-11-23T16:00:00+00:00"
    assert plain["departments"][0] == {
        "kind": "department", "who": "D01", "score": 70.0, "grade": "C",
        "components": {"count": 1.0, "closing": 0.75, "on_time_handling": 0.5,
                       "rework": 0.75},
        "figures": {"opened": 3, "busiest_opened": 3, "handled": 4, "overdue_unhandled": 0,
                    "due_to_close": 4, "closed": 3, "on_time": 2, "reworks": 1}}


def test_grades_and_weighted_scores() -> None:
    assert [grade(s) for s in (100, 90, 89.99, 75, 74.99, 60, 59.99, 40, 39.99, 0)] == [
        "A", "A", "B", "B", "C", "C", "D", "D", "E", "E"]
    assert grade(None) is None
    weights = kpis.SUPERVISOR_WEIGHTS
    assert kpis.weighted_score({"valid_report": 1.0, "missed_report": 0.5,
                                "on_time_verify": 0.5, "on_time_check": 0.0}, weights) == 60.0
    # missing components are left out and the rest re-weighted: (0.4 * 1) / 0.6 = 66.67
    assert kpis.weighted_score({"valid_report": 1.0, "missed_report": None,
                                "on_time_verify": 0.0, "on_time_check": None}, weights) == 66.67
    assert kpis.weighted_score(dict.fromkeys(weights), weights) is None
    # 89.996 rounds to 90.0 and is graded by what is shown
    assert grade(kpis.weighted_score({"count": 0.89996}, {"count": 1.0})) == "A"
    for table in (kpis.OPERATOR_WEIGHTS, kpis.SUPERVISOR_WEIGHTS, kpis.SHIFT_CHIEF_WEIGHTS,
                  kpis.DISPATCHER_WEIGHTS, kpis.AREA_WEIGHTS):
        assert sum(table.values()) == pytest.approx(1.0)


def test_measures_refuse_a_naive_or_reversed_window(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions() as session:
        with pytest.raises(MeasureError):
            call_measures(session, DAY_START.replace(tzinfo=None), DAY_END)
        with pytest.raises(MeasureError):
            order_measures(session, DAY_END, DAY_START, now=NOW)
        with pytest.raises(MeasureError):
            call_measures(session, DAY_START, DAY_END, repeat_lookback=timedelta())
        with pytest.raises(MeasureError):
            kpis.evaluate_regions(session, DAY_START, DAY_END, level="province", now=NOW)
    assert measures.utc(datetime(2026, 1, 1)) == datetime(2026, 1, 1, tzinfo=UTC)
