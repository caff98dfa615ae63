"""The hourly call rollups (telephony.rollups) give the figures the call records give: on a
hand-built fixture with calls across local midnight, a Beijing day that is not the UTC day,
the National Day holiday, repeat callers (one stored after a later call of the same caller)
and calls the hotline placed; on SQLite and PostgreSQL; again after `hotline reports
rebuild` repairs damaged rollups and flags; and after the process storing calls is killed.

All stored times are UTC; Beijing time (BJT) is UTC+8. 2026-09-30 is a workday, 2026-10-01
the first day of the National Day holiday.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from core import phones
from core.db import UtcDateTime, make_engine, session_factory, transaction, upgrade
from reports.kpis import hotline_report
from telephony import records
from telephony.measures import call_measures, call_measures_by_queue
from telephony.models import CallHourRollup, CallRecord

SH = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 10, 3, tzinfo=UTC)


def z(month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=UTC)


# (id, caller, started, queue, outcome, wait, short abandon, talk, hold), in the order
# stored; C10 began before C9 but, a long call, is stored after it.
CALLS = [
    ("C1", "13800000001", z(9, 30, 1), "general", "answered", 5, False, 100, 0),
    ("C2", "13800000002", z(9, 30, 1, 20), "general", "abandoned", 30, False, None, 0),
    # 23:59:30 BJT, across local midnight; C1's caller again after 14 h 59 min 30 s: repeat
    ("C3", "13800000001", z(9, 30, 15, 59, 30), "general", "answered", 12, False, 200, 10),
    # 00:00 BJT 10-01 sharp: the holiday's first call
    ("C4", "13800000003", z(9, 30, 16), "complaints", "answered", 20, False, 60, 0),
    # 07:30 BJT 10-01, still 09-30 in UTC; C2's caller after 22 h 10 min: repeat
    ("C5", "+86 138 0000 0002", z(9, 30, 23, 30), "general", "abandoned", 2, True, None, 0),
    ("C6", "", z(10, 1, 2), None, "ivr", None, False, None, 0),  # withheld, IVR only
    ("C7", "13800000004", z(10, 1, 3, 15, 20), "general", "unanswered", 60, False, None, 0),
    # 00:30 BJT 10-02; C3's caller after 24 h 30 min 30 s: not a repeat
    ("C8", "13800000001", z(10, 1, 16, 30), "general", "answered", 8, False, 50, 0),
    ("C9", "13800000005", z(10, 1, 10), "complaints", "answered", 15, False, 40, 5),
    ("C10", "13800000005", z(10, 1, 9, 50), "complaints", "answered", 4, False, 700, 0),
]
# (id, citizen, started, purpose, outcome): placed by the hotline, counted apart
OUTBOUND = [
    ("O1", "13800000004", z(10, 1, 4), "survey", "answered"),
    ("O2", "13800000003", z(10, 1, 5), "callback", "unanswered"),
]


def _record(call_id: str, caller: str, started: datetime, queue: str | None, outcome: str,
            wait: float | None, short: bool, talk: float | None, hold: float,
            direction: str = "inbound", purpose: str = "") -> dict[str, Any]:
    begin = started.timestamp()
    connected = begin + wait if outcome == "answered" and wait is not None else None
    return {
        "call_id": call_id, "direction": direction, "purpose": purpose,
        "caller_number": caller, "caller_name": "", "entry_number": "12319",
        "started_at": begin, "ended_at": begin + (wait or 0) + (talk or 0) + 1,
        "duration_seconds": (wait or 0) + (talk or 0) + 1, "outcome": outcome,
        "queue": queue, "queue_position": 1 if queue else None, "wait_seconds": wait,
        "short_abandon": short, "agent": "8101" if connected else None,
        "connected_at": connected, "talk_seconds": talk, "hold_seconds": hold,
        "hangup_by": "citizen", "hangup_cause": 16, "hangup_cause_text": "Normal Clearing",
        "incomplete": False, "ivr_path": [], "agent_attempts": [], "transfers": [],
        "legs": []}


def _store_fixture(sessions: sessionmaker[Session]) -> None:
    for call_id, caller, started, queue, outcome, wait, short, talk, hold in CALLS:
        with transaction(sessions) as session:  # one transaction a call, as the service
            assert records.store_call(session, _record(
                call_id, caller, started, queue, outcome, wait, short, talk, hold))
    for call_id, citizen, started, purpose, outcome in OUTBOUND:
        with transaction(sessions) as session:
            assert records.store_call(session, _record(
                call_id, citizen, started, None, outcome, None, False, None, 0,
                direction="outbound", purpose=purpose))


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    upgrade(engine)
    _store_fixture(session_factory(engine))
    yield session_factory(engine)
    engine.dispose()


def _local_days(first: datetime, count: int, zone: str) -> list[tuple[datetime, datetime]]:
    tz = ZoneInfo(zone)
    days = [datetime(first.year, first.month, first.day, tzinfo=tz) + timedelta(days=n)
            for n in range(count + 1)]
    return list(itertools.pairwise(days))


# Windows: Beijing days, UTC days, India's days (UTC+5:30: no day starts on a UTC hour),
# an hour, windows starting and ending inside hours, and everything.
WINDOWS = [
    *_local_days(datetime(2026, 9, 29), 4, "Asia/Shanghai"),
    *_local_days(datetime(2026, 9, 29), 4, "UTC"),
    *_local_days(datetime(2026, 9, 29), 4, "Asia/Kolkata"),
    (z(9, 30, 15), z(9, 30, 16)),
    (z(9, 30, 1, 10), z(10, 1, 9, 55)),
    (z(10, 1, 9, 59, 59), z(10, 1, 10, 0, 1)),
    (z(9, 1, 0), z(11, 1, 0)),
]


def _same(session: Session, start: datetime, end: datetime, **options: Any) -> None:
    rolled = call_measures(session, start, end, **options)
    raw = call_measures(session, start, end, raw=True, **options)
    assert rolled == raw, (start, end, options)


def _rollups_equal_raw(session: Session) -> None:
    for start, end in WINDOWS:
        for queue in (None, "general", "complaints"):
            for seconds in (15, 20, 17):  # 17 s is not kept: read from the records
                _same(session, start, end, queue=queue, service_seconds=seconds)
        _same(session, start, end, repeat_lookback=timedelta(hours=12))  # not kept either
        assert call_measures_by_queue(session, start, end) == \
            call_measures_by_queue(session, start, end, raw=True)


def test_the_figures_worked_out_by_hand(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        # the holiday, 2026-10-01 in Beijing = [09-30 16:00Z, 10-01 16:00Z): C4, C5, C6,
        # C7, C9, C10; C3 (a second before midnight) and C8 (00:30 on 10-02) are not in it
        day = call_measures(session, datetime(2026, 10, 1, tzinfo=SH),
                            datetime(2026, 10, 2, tzinfo=SH))
        assert (day.calls, day.offered, day.answered, day.abandoned, day.unanswered,
                day.short_abandons) == (6, 4, 3, 0, 1, 1)
        assert day.answered_within == 2  # C9 (15 s) and C10 (4 s); C4 waited 20 s
        assert (day.answer_rate, day.service_level) == (0.75, 0.5)
        assert day.asa_seconds == 13.0  # (20 + 15 + 4) / 3
        assert (day.talk_seconds, day.hold_seconds) == (800.0, 5.0)
        assert day.aht_seconds == 266.7  # 800 / 3, no wrap-up stored
        assert day.longest_wait_seconds == 60.0  # C7
        # known numbers C4, C5, C7, C9, C10; repeats C5 (C2's caller) and C9 (C10 began
        # before it, though stored after it)
        assert (day.known_number_calls, day.repeat_calls, day.repeat_call_rate) == \
            (5, 2, 0.4)
        assert (day.outbound_calls, day.outbound_answered) == (2, 1)
        # the UTC day 10-01 holds C6, C7, C10, C9 and C8, not C4 and C5
        utc_day = call_measures(session, z(10, 1, 0), z(10, 2, 0))
        assert (utc_day.calls, utc_day.offered, utc_day.answered) == (5, 4, 3)
        assert (utc_day.known_number_calls, utc_day.repeat_calls) == (4, 1)  # C8 no repeat
        # 09-30 in Beijing: C1, C2, C3; C3 a repeat
        eve = call_measures(session, datetime(2026, 9, 30, tzinfo=SH),
                            datetime(2026, 10, 1, tzinfo=SH))
        assert (eve.calls, eve.offered, eve.answered, eve.abandoned, eve.repeat_calls) == \
            (3, 3, 2, 1, 1)
        flagged = set(session.scalars(select(CallRecord.call_id).where(
            CallRecord.repeat_caller.is_(True))))
        assert flagged == {"C3", "C5", "C9"}
        # the hotline report by Beijing day: the holiday's bucket is the day above
        report = hotline_report(session, datetime(2026, 9, 30, tzinfo=SH),
                                datetime(2026, 10, 3, tzinfo=SH), bucket="day",
                                timezone="Asia/Shanghai", now=NOW)
        assert [(b.label, b.calls.calls) for b in report.buckets] == \
            [("2026-09-30", 3), ("2026-10-01", 6), ("2026-10-02", 1)]


def test_repeat_flags_whatever_order_the_calls_are_stored_in(database_url: str) -> None:
    """One caller's calls stored out of order, worked by hand (the window: 24 h). A call
    is a repeat when the caller's call just before it began at most 24 h earlier; a call
    stored late flags the caller's next call (the one just after it, not a later one)."""
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    caller, t0 = "13800000009", z(11, 2, 0)
    # stored in this order: A (0 h), B (40 h), C (100 h): each >24 h after the one before;
    # then X (30 h): 30 h after A (no repeat), 10 h before B (B becomes one; C, 60 h after
    # B, stays none); then Y (64 h): 24 h after B to the second, so a repeat
    for call_id, hours in (("A", 0), ("B", 40), ("C", 100), ("X", 30), ("Y", 64)):
        with transaction(sessions) as session:
            assert records.store_call(session, _record(
                call_id, caller, t0 + timedelta(hours=hours), "general", "answered", 5,
                False, 60, 0))
    with sessions() as session:
        flags = dict(session.execute(select(CallRecord.call_id, CallRecord.repeat_caller)
                                     ).all())
        repeats = dict(session.execute(select(CallHourRollup.hour,
                                              CallHourRollup.repeat_calls)).all())
    engine.dispose()
    assert flags == {"A": False, "B": True, "C": False, "X": False, "Y": True}
    hour = {name: t0 + timedelta(hours=h) for name, h in
            (("A", 0), ("B", 40), ("C", 100), ("X", 30), ("Y", 64))}
    assert {h.astimezone(UTC): n for h, n in repeats.items()} == {
        hour["A"]: 0, hour["B"]: 1, hour["C"]: 0, hour["X"]: 0, hour["Y"]: 1}


def test_a_call_stored_twice_at_once_is_stored_and_rolled_up_once(
        sessions: sessionmaker[Session]) -> None:
    """Two writers store the same call's end at once (a replay while the first is still
    committing): the second waits for the first's commit and stores nothing, so the
    call is in its hour's rollup once; the first's record and flag stand."""
    record = _record("D1", "13800000001", z(10, 1, 11), "intake", "answered", 5, False,
                     60, 0)
    first = sessions()
    first.begin()
    assert records.store_call(first, record)  # not committed yet
    second: list[bool] = []

    def store_again() -> None:
        with transaction(sessions) as session:
            second.append(records.store_call(session, record))
    thread = threading.Thread(target=store_again)
    thread.start()
    thread.join(1.0)
    assert thread.is_alive() and second == []  # waits for the first writer
    first.commit()
    first.close()
    thread.join(30)
    assert second == [False]
    hour = z(10, 1, 11)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(CallRecord).where(
            CallRecord.call_id == "D1")) == 1
        row = session.scalar(select(CallHourRollup).where(  # no fixture call in it
            CallHourRollup.hour == hour, CallHourRollup.queue == "intake"))
        assert row is not None and (row.calls, row.answered) == (1, 1)


def test_rollups_give_the_raw_figures_for_every_window(
        sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        _rollups_equal_raw(session)
        for timezone in ("Asia/Shanghai", "Asia/Kolkata", "UTC"):
            for unit in ("day", "week", "month", timedelta(hours=1)):
                report = hotline_report(session, z(9, 28, 0), z(10, 5, 0), bucket=unit,
                                        timezone=timezone, now=NOW)
                for part in (report.total, *report.buckets):
                    assert part.calls == call_measures(session, part.start, part.end,
                                                       raw=True), (timezone, part.label)


def _hotline(database_url: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HOTLINE_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(HOTLINE_STORAGE_DATA_DIR=str(data_dir),
               HOTLINE_STORAGE_DATABASE_URL=database_url)
    return subprocess.run([sys.executable, "-m", "hotline", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_reports_rebuild_repairs_damaged_rollups_and_flags(
        sessions: sessionmaker[Session], database_url: str, tmp_path: Path) -> None:
    with transaction(sessions) as session:
        session.execute(delete(CallHourRollup).where(CallHourRollup.hour < z(9, 30, 20)))
        session.execute(update(CallHourRollup).values(answered=CallHourRollup.answered + 7,
                                                      talk_seconds=1.5))
        session.execute(update(CallRecord).where(CallRecord.call_id.in_(["C5", "C8"]))
                        .values(repeat_caller=CallRecord.call_id == "C8"))
    with sessions() as session:
        assert call_measures(session, z(9, 29, 16), z(10, 2, 16)) != \
            call_measures(session, z(9, 29, 16), z(10, 2, 16), raw=True)
        # a report asked raw reads the records, not the damaged rollups: Sep 30 in Beijing
        # is C1, C2, C3, two answered (worked out by hand above); its rollups are gone
        eve = (datetime(2026, 9, 30, tzinfo=SH), datetime(2026, 10, 1, tzinfo=SH))
        for raw, figures in ((True, (3, 2)), (False, (0, 0))):
            report = hotline_report(session, *eve, bucket="day", timezone="Asia/Shanghai",
                                    now=NOW, raw=raw)
            assert [(p.calls.calls, p.calls.answered) for p in (report.total, *report.buckets)
                    ] == [figures] * 2, raw
    refused = _hotline(database_url, tmp_path, "reports", "rebuild", "--from", "2026-10-02",
                       "--to", "2026-10-01")
    assert refused.returncode == 2 and "--to must be after --from" in refused.stderr
    # one window first: the damage outside it stays
    done = _hotline(database_url, tmp_path, "reports", "rebuild", "--from", "2026-10-01",
                    "--to", "2026-10-02")
    assert done.returncode == 0, done.stderr
    assert "8 calls rolled up" in done.stdout.splitlines()  # C4 .. C7, C9, C10 and O1, O2
    with sessions() as session:
        assert call_measures(session, datetime(2026, 10, 1, tzinfo=SH),
                             datetime(2026, 10, 2, tzinfo=SH)) == \
            call_measures(session, datetime(2026, 10, 1, tzinfo=SH),
                          datetime(2026, 10, 2, tzinfo=SH), raw=True)
        assert call_measures(session, z(9, 29, 16), z(9, 30, 16)).answered == 0  # deleted
    done = _hotline(database_url, tmp_path, "reports", "rebuild")
    assert done.returncode == 0, done.stderr
    assert "12 calls rolled up" in done.stdout.splitlines()
    with sessions() as session:
        flagged = set(session.scalars(select(CallRecord.call_id).where(
            CallRecord.repeat_caller.is_(True))))
        assert flagged == {"C3", "C5", "C9"}
        _rollups_equal_raw(session)


# The child stores calls in a loop, one transaction each, until it is killed.
_CHILD = """
import sys
from datetime import UTC, datetime, timedelta
from core.db import make_engine, session_factory, transaction
from telephony import records
from tests.test_call_rollups import _record
sessions = session_factory(make_engine(sys.argv[1]))
start = datetime(2026, 10, 1, tzinfo=UTC)
n = 0
while True:
    n += 1
    at = start + timedelta(seconds=97 * n)
    with transaction(sessions) as session:
        records.store_call(session, _record(
            f"K{sys.argv[2]}-{n}", f"1390000{n % 40:04d}", at, ("general", "complaints")[n % 2],
            ("answered", "abandoned", "unanswered")[n % 3], n % 40, n % 11 == 0,
            (n % 300) or None, n % 7))
    print(n, flush=True)
"""


def test_a_kill_while_storing_leaves_no_call_without_its_rollup(
        database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    for round_, pause in enumerate((0.05, 0.137, 0.29, 0.011)):  # killed at four moments
        child = subprocess.Popen([sys.executable, "-c", _CHILD, database_url, str(round_)],
                                 stdout=subprocess.PIPE, text=True,
                                 cwd=Path(__file__).resolve().parent.parent)
        try:
            assert child.stdout is not None
            for line in child.stdout:  # let it store some, then kill it mid-loop
                if int(line) >= 20:
                    break
            time.sleep(pause)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
    with sessions() as session:
        stored = session.scalar(select(func.count()).select_from(CallRecord))
        assert stored is not None and stored >= 80
        rolled = session.scalar(select(func.sum(CallHourRollup.calls)))
        assert rolled == stored  # every stored call is in its hour, none twice
        whole = (z(9, 30, 0), z(10, 10, 0))
        assert call_measures(session, *whole) == call_measures(session, *whole, raw=True)
        for queue in ("general", "complaints"):
            assert call_measures(session, *whole, queue=queue) == \
                call_measures(session, *whole, queue=queue, raw=True)
    engine.dispose()


def test_the_migration_rolls_up_the_calls_stored_before_it(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine, "0026")
    types = {"started_at": UtcDateTime(), "stored_at": UtcDateTime(), "details": sa.JSON()}
    table = sa.table("call_records", *(sa.column(name, types.get(name)) for name in (
        "call_id", "direction", "purpose", "caller_number", "citizen_number", "caller_name",
        "entry_number", "started_at", "outcome", "queue", "wait_seconds", "short_abandon",
        "talk_seconds", "hold_seconds", "hangup_by", "hangup_cause_text", "incomplete",
        "details", "disposition_by", "stored_at")))
    with engine.begin() as conn:  # the rows as the service stored them before 0028
        conn.execute(table.insert(), [{
            "call_id": call_id, "direction": "inbound", "purpose": "", "caller_number": caller,
            "citizen_number": phones.normalise_or_empty(caller), "caller_name": "",
            "entry_number": "12319", "started_at": started, "outcome": outcome,
            "queue": queue, "wait_seconds": wait, "short_abandon": short,
            "talk_seconds": talk, "hold_seconds": hold, "hangup_by": "", "incomplete": False,
            "hangup_cause_text": "", "details": {}, "disposition_by": "",
            "stored_at": started} for call_id, caller, started, queue, outcome, wait, short,
            talk, hold in CALLS])
    upgrade(engine)
    sessions = session_factory(engine)
    with sessions() as session:
        assert set(session.scalars(select(CallRecord.call_id).where(
            CallRecord.repeat_caller.is_(True)))) == {"C3", "C5", "C9"}
        day = call_measures(session, datetime(2026, 10, 1, tzinfo=SH),
                            datetime(2026, 10, 2, tzinfo=SH))
        assert (day.calls, day.answered, day.repeat_calls) == (6, 3, 2)
        for start, end in WINDOWS:
            _same(session, start, end)
    engine.dispose()
