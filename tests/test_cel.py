"""Asterisk's channel event log read back (telephony.cel), without Asterisk: the rows are
what the sandbox's Asterisk 22 wrote for two kit calls (tests/data/cel_two_calls.json: the
agent 8101 hung up the first after 4 s of talk, the citizen the second after about 3 s).
The expected figures are worked out by hand from the rows' times."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from asterisk_conf.render import render
from core.clock import FixedClock
from core.db import transaction
from hotline.compose import build
from telephony import cel, directory, records
from telephony.calls import CallTracker
from telephony.events import CallEnded
from telephony.service import CEL_MARK_KEY, TelephonyService
from tests.conftest import make_settings

ROWS = json.loads((Path(__file__).with_name("data") / "cel_two_calls.json").read_text())
FIRST, SECOND = "hotline12319-1796015822.0", "hotline12319-1796015829.2"
# the table as cel_sqlite3_custom created it in the sandbox
CREATE = ("CREATE TABLE cel (AcctId INTEGER PRIMARY KEY, eventtype,eventtime,cidname,cidnum,"
          "exten,context,channame,appname,appdata,accountcode,uniqueid,linkedid,userfield,"
          "peer,userdeftype,eventextra)")


def _rows(linkedid: str, drop: tuple[int, ...] = ()) -> list[cel.CelRow]:
    found = [cel.row_from([r[c] for c in cel.COLUMNS]) for r in ROWS
             if r["linkedid"] == linkedid and r["acctid"] not in drop]
    return [row for row in found if row is not None]


def test_an_answered_call_the_agent_ended_is_rebuilt_with_its_true_times() -> None:
    call = cel.rebuild(_rows(FIRST))
    assert call is not None
    record = call.record(short_abandon_seconds=5)
    assert record["call_id"] == FIRST and record["caller_number"] == "13700000555"
    assert record["entry_number"] == "12319" and record["direction"] == "inbound"
    assert record["started_at"] == 1796015822.600930  # the caller's CHAN_START
    assert record["queue"] == "intake" and record["outcome"] == "answered"
    assert record["agent"] == "8101"
    assert record["connected_at"] == 1796015824.260684  # the agent's BRIDGE_ENTER
    assert record["wait_seconds"] == 0.514  # 824.260684 - 823.747019 (Queue's APP_START)
    assert record["talk_seconds"] == 4.004  # 828.264463 (BRIDGE_EXIT) - 824.260684
    assert record["ended_at"] == 1796015828.265684  # the caller's HANGUP, the last leg's
    assert record["duration_seconds"] == 5.665
    assert record["hangup_by"] == "agent"  # hangupsource: PJSIP/8101-00000001
    assert (record["hangup_cause"], record["hangup_cause_text"]) == (16, "Normal Clearing")
    assert record["recording"] == ("/var/spool/hotline/recordings/2026/11/30/"
                                   "hotline12319-1796015822.0.wav")
    assert record["agent_attempts"] == [{
        "agent": "8101", "queue": "intake", "rang_at": 1796015823.747733,
        "outcome": "connected", "ended_at": 1796015824.260684,
        "uniqueid": "hotline12319-1796015823.1"}]
    assert [leg["role"] for leg in record["legs"]] == ["caller", "agent"]
    assert record["incomplete"] is False


def test_a_call_the_citizen_ended_says_so() -> None:
    call = cel.rebuild(_rows(SECOND))
    assert call is not None
    record = call.record(short_abandon_seconds=5)
    assert record["hangup_by"] == "citizen"  # hangupsource: the caller's own channel
    assert record["talk_seconds"] == 2.877  # 833.904824 - 831.027946
    assert record["wait_seconds"] == 0.509  # 831.027946 - 830.519016
    assert record["ended_at"] == 1796015833.907347  # the agent's leg went last
    assert record["agent"] == "8101" and record["outcome"] == "answered"


def test_a_caller_who_leaves_the_queue_before_an_agent_answers_abandoned() -> None:
    # the second call up to the agent's ring, then the citizen hangs up (made by hand)
    rows = [row for row in _rows(SECOND) if row.at < 1796015830.6]
    leaving = 1796015834.0
    caller = rows[0]
    rows += [replace(caller, event="APP_END", at=leaving, app="Queue"),
             replace(caller, event="HANGUP", at=leaving, extra=json.dumps(
                 {"hangupcause": 16, "hangupsource": "PJSIP/citizens-00000002",
                  "dialstatus": ""})),
             replace(rows[-1], event="HANGUP", at=leaving, extra=json.dumps(
                 {"hangupcause": 16, "hangupsource": "", "dialstatus": ""})),
             replace(caller, event="CHAN_END", at=leaving),
             replace(caller, event="LINKEDID_END", at=leaving)]
    call = cel.rebuild(rows)
    assert call is not None
    record = call.record(short_abandon_seconds=5)
    assert record["outcome"] == "abandoned" and record["agent"] is None
    assert record["wait_seconds"] == 3.481  # 834.0 - 830.519016
    assert record["short_abandon"] is True  # under 5 s
    assert record["agent_attempts"][0]["outcome"] == "no_answer"
    assert record["hangup_by"] == "citizen"


def test_a_call_the_log_does_not_show_over_is_not_rebuilt() -> None:
    assert cel.rebuild(_rows(FIRST, drop=(17,))) is None  # no LINKEDID_END
    assert cel.rebuild(_rows(FIRST, drop=(1,))) is None  # no caller's CHAN_START
    assert cel.rebuild([]) is None
    placed = [replace(r, context="hotline-survey") if r.event == "CHAN_START" else r
              for r in _rows(FIRST)]
    assert cel.rebuild(placed) is None  # a call the hotline placed: not a citizen's


def test_unreadable_rows_are_skipped() -> None:
    good = [ROWS[0][c] for c in cel.COLUMNS]
    assert cel.row_from(good) is not None
    assert cel.row_from([*good[:1], "soon", *good[2:]]) is None
    assert cel.row_from(good[:-1]) is None
    assert cel.row_from([*good[:10], "", *good[11:]]) is None


def _store(path: Path) -> cel.CelStore:
    with sqlite3.connect(path) as conn:
        conn.execute(CREATE)
        conn.executemany(f"INSERT INTO cel ({', '.join(cel.COLUMNS)}) VALUES "
                         f"({', '.join('?' * len(cel.COLUMNS))})",
                         [[r[c] for c in cel.COLUMNS] for r in ROWS])
    return cel.CelStore(path)


def test_the_store_lists_ended_calls_reads_their_rows_and_trims(tmp_path: Path) -> None:
    store = _store(tmp_path / "hotline-cel.db")
    assert store.ended_between(0) == [FIRST, SECOND]
    assert store.ended_between(1796015830.0) == [SECOND]  # ended 833.9
    assert store.ended_between(0, 1796015830.0) == [FIRST]  # ended 828.3
    assert len(store.rows(FIRST)) == 17 and len(store.rows(SECOND)) == 17
    assert cel.rebuild(store.rows(SECOND)) is not None
    # older than 1796015825.0: the first call's first 9 rows; the stored second call's 17
    assert store.trim(before=1796015825.0, stored=[SECOND]) == 9 + 17
    assert store.ended_between(0) == [FIRST] and len(store.rows(FIRST)) == 8
    assert store.rows(SECOND) == []


def test_no_store_yet_is_an_empty_one(tmp_path: Path) -> None:
    missing = cel.CelStore(tmp_path / "none.db")
    assert missing.ended_between(0) == [] and missing.rows(FIRST) == []
    assert missing.trim(before=2e9) == 0
    sqlite3.connect(tmp_path / "empty.db").close()  # Asterisk made no table yet
    assert cel.CelStore(tmp_path / "empty.db").ended_between(0) == []


def test_render_logs_the_events_needed_to_sqlite(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    files = render(settings, directory.Directory(queues=(), agents=()))
    assert "enable = yes" in files["cel.conf"]
    for event in ("CHAN_START", "ANSWER", "HANGUP", "CHAN_END", "BRIDGE_ENTER",
                  "BRIDGE_EXIT", "APP_START", "APP_END", "LINKEDID_END"):
        assert event in files["cel.conf"]
    assert "apps = queue,mixmonitor" in files["cel.conf"]
    custom = files["cel_sqlite3_custom.conf"]
    assert "[hotline-cel]" in custom and "eventtime(float)" in custom
    assert "load = cel_sqlite3_custom.so" in files["modules.conf"]
    assert cel.store_path(settings) == tmp_path / "pbx" / "log" / "hotline-cel.db"


@pytest.mark.parametrize("value", ["0", "3651"])
def test_cel_keep_days_is_bounded(tmp_path: Path, value: str) -> None:
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"pbx\.cel_keep_days"):
        make_settings(tmp_path, HOTLINE_PBX_CEL_KEEP_DAYS=value)


def _service(tmp_path: Path) -> TelephonyService:
    store = _store(tmp_path / "asterisk-cel.db")
    settings = make_settings(tmp_path / "data", HOTLINE_PBX_CEL_FILE=str(store.path))
    parts = build(settings)
    at = datetime.fromtimestamp(1796015900, UTC)
    return TelephonyService(settings, parts.sessions, parts.bus, FixedClock(at))


def test_the_gap_is_the_calls_ended_since_the_mark_not_stored_and_not_up(
        tmp_path: Path) -> None:
    service = _service(tmp_path)
    assert service._ended_in_gap(set(), 1796015900.0) == []  # no mark yet: a fresh install
    service.redis.set(CEL_MARK_KEY, "1796015822.5")  # before both calls
    assert [c.call_id for c in service._ended_in_gap(set(), 0)] == [FIRST, SECOND]
    assert [c.call_id for c in service._ended_in_gap({SECOND}, 0)] == [FIRST]  # still up
    first = cel.rebuild(_rows(FIRST))
    assert first is not None
    with transaction(service.sessions) as session:
        records.store_call(session, first.record(5))
    assert [c.call_id for c in service._ended_in_gap(set(), 0)] == [SECOND]
    # a mark after the first call ended (828.3) and more than the margin (60 s) later
    service.redis.set(CEL_MARK_KEY, "1796015890.0")
    assert [c.call_id for c in service._ended_in_gap(set(), 0)] == [SECOND]  # 833.9 + 60
    service.redis.set(CEL_MARK_KEY, "1796015895.0")
    assert service._ended_in_gap(set(), 0) == []


def test_the_log_keeps_neither_stored_calls_nor_old_rows(tmp_path: Path) -> None:
    service = _service(tmp_path)
    first = cel.rebuild(_rows(FIRST))
    assert first is not None
    with transaction(service.sessions) as session:
        records.store_call(session, first.record(5))
    service.redis.set(CEL_MARK_KEY, "1796015900.0")
    assert service.trim_cel(1796015900.0) == 17  # the stored first call's rows
    assert service.cel.ended_between(0) == [SECOND]  # not stored: kept for its rebuild
    assert service.trim_cel(1796015900.0 + 13 * 86400) == 0  # 14 days kept (the default)
    assert service.trim_cel(1796015900.0 + 15 * 86400) == 17
    assert service.cel.ended_between(0) == []


def test_a_call_the_log_ends_leaves_the_tracker_without_an_event() -> None:
    """In a service that lived through the gap, the call it had open is taken over by the
    log's rebuild: the tracker forgets it (its IVR path kept), closes nothing as
    incomplete at the resync, and the missed events arriving late record nothing."""
    events = json.loads((Path(__file__).with_name("data") / "ami_answered.json").read_text())
    cut = next(i for i, e in enumerate(events) if e["Event"] == "AgentConnect") + 1
    tracker = CallTracker()
    for event in events[:cut]:
        tracker.feed(event, 1795492100.0)
    [call_id] = list(tracker.calls)
    known = tracker.forget(call_id)
    assert known is not None and known.call_id == call_id and known.ivr_path
    assert tracker.calls == {} and tracker.resync([], at=1795492200.0) == []
    late = [out for event in events[cut:] for out in tracker.feed(event, 1795492100.0)]
    assert not [e for e in late if isinstance(e, CallEnded)]
