"""Each branch of the IVR flow through the real Asterisk: a wrong key and silence, an
emergency transfer over the trunk, a blocked caller, a VIP caller, the calendar's closed
hours (a voice message that becomes a work order), and a case-progress query on a stored
work order. The flow is tests/data/flow.yaml."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from core import phones
from core.clock import FixedClock
from core.config import Settings
from core.db import make_engine, session_factory, transaction
from ivr.engine import estimated_wait_minutes, number_prompts
from ivr.fastagi import FastAgiServer
from ivr.prompts import speak
from ivr.server import IvrInBackground
from recordings.audio import wav_stats
from sipkit.kit import Call, Dtmf, Hangup, Say, SipKit, Wait
from telephony import screening, seats
from telephony.ami import EventTap, event_fields
from tests.conftest import TEST_AGENTS, offered, wait_until
from tickets import service as orders
from tickets import workflow
from tickets.models import CaseCounter, WorkOrder
from tickets.workcalendar import zone

BEIJING = zone("Asia/Shanghai")
TUESDAY_MORNING = datetime(2026, 11, 24, 10, 0, tzinfo=BEIJING)


@pytest.fixture
def ivr(pbx_settings: Settings, pbx: object) -> Iterator[FastAgiServer]:
    with IvrInBackground(pbx_settings) as server:
        yield server


def _caller_vars(tap: EventTap, caller: str, variable: str) -> list[str]:
    channel = tap.wait_for(lambda e: e.get("Event") == "Newchannel"
                           and e.get("CallerIDNum") == caller)["Channel"]
    return [e.get("Value", "") for e in tap.snapshot() if e.get("Event") == "VarSet"
            and e.get("Channel") == channel and e.get("Variable") == variable]


def _joined_queue(tap: EventTap, caller: str) -> bool:
    return any(e.get("Event") == "QueueCallerJoin" and e.get("CallerIDNum") == caller
               for e in tap.snapshot())


def test_a_wrong_key_then_silence_falls_back_to_an_agent(
        ivr: FastAgiServer, kit: SipKit, ami: EventTap) -> None:
    caller = "13800138021"
    result = kit.call(Call(caller_id=caller, script=(Wait(6), Dtmf("7"), Wait(24), Hangup())))
    assert result.outcome == "answered"
    assert _caller_vars(ami, caller, "HOTLINE_MENU_CHOICE") == ["7", "timeout"]
    assert _caller_vars(ami, caller, "HOTLINE_IVR_NODE") == [
        "hours", "welcome", "menu", "report"]
    assert _joined_queue(ami, caller)


def test_emergency_is_transferred_to_110_over_the_trunk(
        ivr: FastAgiServer, kit: SipKit, ami: EventTap, pbx_settings: Settings) -> None:
    caller = "13800138022"
    with kit.agent_phone("110", pbx_settings.pbx.trunk_host, port=pbx_settings.pbx.trunk_port,
                         answer_after=0.5, talk_seconds=2) as outside:
        result = kit.call(Call(caller_id=caller, script=(Wait(1), Dtmf("9"), Wait(1.5),
                                                         Dtmf("1")), max_seconds=30))
    assert result.outcome == "answered" and result.hangup_by == "far_end"
    assert [r.outcome for r in offered(outside, caller)] == ["answered"]
    assert _caller_vars(ami, caller, "HOTLINE_TRANSFERRED_TO") == ["110"]
    assert not _joined_queue(ami, caller)


@contextlib.contextmanager
def listed(settings: Settings, caller: str, kind: str, **options: object) -> Iterator[None]:
    """The caller is on a screening list for the duration of the block."""
    sessions = session_factory(make_engine(settings.storage.database_url))
    with transaction(sessions) as session:
        screening.add_entry(session, caller, kind, **options,  # type: ignore[arg-type]
                            now=TUESDAY_MORNING)
    try:
        yield
    finally:
        with transaction(sessions) as session:
            screening.remove_entry(session, caller, kind)


def test_a_blocked_caller_is_told_and_let_go(
        ivr: FastAgiServer, kit: SipKit, ami: EventTap, pbx_settings: Settings) -> None:
    caller = "13800138023"
    # blocked until a day no test run reaches: the IVR screens with the machine's clock
    with listed(pbx_settings, caller, "block", expires_at=datetime(2999, 1, 1, tzinfo=UTC)):
        result = kit.call(Call(caller_id=caller, max_seconds=20))
    assert result.hangup_by == "far_end" and result.talk_seconds < 10
    assert _caller_vars(ami, caller, "HOTLINE_ACTION") == ["hangup"]
    assert not _joined_queue(ami, caller)


def test_a_vip_caller_waits_with_priority(
        ivr: FastAgiServer, kit: SipKit, ami: EventTap, pbx_settings: Settings) -> None:
    caller = "13800138024"
    with listed(pbx_settings, caller, "vip", note="人大代表"):
        kit.call(Call(caller_id=caller, script=(Wait(1), Dtmf("1"), Wait(4), Hangup())))
    assert _caller_vars(ami, caller, "HOTLINE_PRIORITY") == ["10"]
    assert _joined_queue(ami, caller)


# The hours node at fixed instants in Beijing, on the calendar's own working time (the
# test line is otherwise staffed around the clock): the branch each must take, by hand.
HOURS_AT = [
    pytest.param(datetime(2026, 11, 29, 22, 0, tzinfo=BEIJING), "message", id="sunday-night"),
    pytest.param(datetime(2026, 2, 17, 10, 0, tzinfo=BEIJING), "message",
                 id="spring-festival"),
    pytest.param(datetime(2026, 2, 28, 10, 0, tzinfo=BEIJING), "welcome",
                 id="make-up-saturday"),
    pytest.param(datetime(2026, 11, 24, 8, 29, tzinfo=BEIJING), "message",
                 id="minute-before-opening"),
    pytest.param(datetime(2026, 11, 24, 8, 31, tzinfo=BEIJING), "welcome",
                 id="minute-after-opening"),
]


@pytest.fixture
def office_hours_ivr(pbx_settings: Settings, pbx: object) -> Iterator[FixedClock]:
    """The IVR answering on the calendar's working time, its clock pinned by the test."""
    settings = replace(pbx_settings, ivr=replace(pbx_settings.ivr, staffed_hours=""))
    clock = FixedClock(TUESDAY_MORNING)
    with IvrInBackground(settings, clock=clock):
        yield clock


@pytest.mark.parametrize(("moment", "branch"), HOURS_AT)
def test_the_hours_node_follows_the_work_calendar(
        office_hours_ivr: FixedClock, kit: SipKit, ami: EventTap, moment: datetime,
        branch: str) -> None:
    caller = f"1380013{int(moment.timestamp()) % 10_000:04d}"
    office_hours_ivr.set(moment)
    kit.call(Call(caller_id=caller, script=(Wait(3), Hangup())))
    assert _caller_vars(ami, caller, "HOTLINE_IVR_NODE")[:2] == ["hours", branch]
    assert not _joined_queue(ami, caller)


def test_out_of_hours_a_voice_message_becomes_a_work_order_with_the_audio(
        office_hours_ivr: FixedClock, kit: SipKit, ami: EventTap, pbx_settings: Settings,
        tmp_path: Path) -> None:
    caller = "13800138025"
    voice = speak("路灯坏了，在解放路和中山路路口。", tmp_path / "message.wav")
    sunday_night = datetime(2026, 11, 29, 22, 0, tzinfo=BEIJING)
    office_hours_ivr.set(sunday_night)
    sessions = session_factory(make_engine(pbx_settings.storage.database_url))
    kit.call(Call(caller_id=caller, script=(Wait(6), Say(voice), Wait(1), Hangup())))
    assert _caller_vars(ami, caller, "HOTLINE_IVR_NODE") == ["hours", "message"]
    assert not _joined_queue(ami, caller)
    order, files = None, []

    def stored() -> bool:
        nonlocal order, files
        with sessions() as session:
            order = session.scalar(select(WorkOrder).where(
                WorkOrder.citizen_phone == phones.normalise(caller)))
            files = orders.attachments(session, order.case_number) if order else []
        return bool(files)

    wait_until(stored, 10, "the voice message became no work order with its audio")
    assert order is not None and order.state == "intake" and order.channel == "phone"
    assert order.created_at == sunday_night  # stamped with the IVR's own clock
    assert order.case_number.startswith("20261129")
    [audio] = files
    data = Path(audio.path).read_bytes()
    assert audio.kind == "audio" and hashlib.sha256(data).hexdigest() == audio.sha256
    stats = wav_stats(Path(audio.path))
    assert stats.seconds > 2 and not stats.silent


def test_a_case_progress_query_reads_back_a_stored_order(
        ivr: FastAgiServer, kit: SipKit, ami: EventTap, pbx_settings: Settings) -> None:
    caller = "13800138026"
    sessions = session_factory(make_engine(pbx_settings.storage.database_url))
    with transaction(sessions) as session:
        number = orders.open_order(session, appeal_type="complaint", channel="phone",
                                   description="路灯不亮", actor="受理员",
                                   now=TUESDAY_MORNING).case_number
    for action, role in (("open", workflow.SHIFT_CHIEF), ("dispatch", workflow.DISPATCHER),
                         ("sign", workflow.DEPARTMENT)):
        with transaction(sessions) as session:
            orders.transition(session, number, action, actor="t", role=role,
                              now=TUESDAY_MORNING)
    kit.call(Call(caller_id=caller, script=(Wait(1), Dtmf("4"), Wait(1.5),
                                            Dtmf(number, gap=0.15), Wait(6), Hangup())))
    assert _caller_vars(ami, caller, "HOTLINE_CASE_QUERY") == [number]
    assert _caller_vars(ami, caller, "HOTLINE_CASE_STATE") == ["handling"]
    assert any(e.get("Event") == "AGIExecStart" and "case_handling" in e.get("Command", "")
               for e in ami.snapshot())


def test_a_case_number_past_the_days_9999th_is_keyed_on_and_found(
        ivr: FastAgiServer, kit: SipKit, ami: EventTap, pbx_settings: Settings) -> None:
    """On a day of more than 9,999 orders (a storm, a water cut) numbers get a fifth digit:
    the caller keys all 13 and the IVR waits for them, and a 12-digit number keyed and
    followed by a pause is looked up as it is."""
    caller = "13800138027"
    storm = datetime(2026, 11, 25, 10, 0, tzinfo=BEIJING)
    sessions = session_factory(make_engine(pbx_settings.storage.database_url))
    with transaction(sessions) as session:
        session.merge(CaseCounter(day=storm.date(), last_number=9999))
    with transaction(sessions) as session:
        number = orders.open_order(session, appeal_type="complaint", channel="phone",
                                   description="停水", actor="受理员", now=storm).case_number
    assert number == "2026112510000"
    kit.call(Call(caller_id=caller, script=(Wait(1), Dtmf("4"), Wait(1.5),
                                            Dtmf(number, gap=0.15), Wait(6), Hangup())))
    assert _caller_vars(ami, caller, "HOTLINE_CASE_QUERY") == [number]
    assert _caller_vars(ami, caller, "HOTLINE_CASE_STATE") == ["intake"]


def test_a_caller_hears_how_many_wait_ahead_and_about_how_long(
        ivr: FastAgiServer, kit: SipKit, ami: EventTap) -> None:
    first, second = "13800138031", "13800138032"
    for agent in TEST_AGENTS:  # nobody answers: the first caller keeps waiting
        assert ami.action(seats.pause_action(agent, True, "test"))["Response"] == "Success"
    try:
        waiting = kit.start_calls(Call(caller_id=first, script=(
            Wait(1), Dtmf("1"), Wait(22), Hangup())))
        ami.wait_for(lambda e: e.get("Event") == "QueueCallerJoin"
                     and e.get("CallerIDNum") == first, timeout=25)
        heard = kit.call(Call(caller_id=second, script=(Wait(1), Dtmf("3"), Wait(12),
                                                        Hangup())))
        waiting.wait()
    finally:
        for agent in TEST_AGENTS:
            ami.action(seats.pause_action(agent, False))
    assert heard.outcome == "answered"
    assert _caller_vars(ami, second, "HOTLINE_IVR_NODE")[-1] == "announced"
    assert _caller_vars(ami, second, "HOTLINE_QUEUE_AHEAD") == ["1"]
    # the estimate is the queue's own average hold time, shared by the two agents: as
    # Asterisk reports it (no call completed since the IVR read it, the agents paused)
    [params] = [m for m in ami.action({"Action": "QueueStatus", "Queue": "intake"},
                                      as_list=True) if m.get("Event") == "QueueParams"]
    [minutes] = _caller_vars(ami, second, "HOTLINE_WAIT_MINUTES")
    assert int(minutes) == estimated_wait_minutes(1, int(event_fields(params)["Holdtime"]),
                                                  len(TEST_AGENTS))
    joined = [e for e in ami.snapshot() if e.get("Event") == "QueueCallerJoin"
              and e.get("CallerIDNum") == second]
    assert [e["Position"] for e in joined] == ["2"]  # behind the first, as announced


def test_mandarin_numbers_and_wait_estimates() -> None:
    assert number_prompts(0) == ["num_0"]
    assert number_prompts(2) == ["num_liang"]  # 两位
    assert number_prompts(10) == ["num_10"]
    assert number_prompts(12) == ["num_10", "num_2"]  # 十二
    assert number_prompts(40) == ["num_4", "num_10"]
    assert number_prompts(99) == number_prompts(250) == ["num_9", "num_10", "num_9"]
    assert estimated_wait_minutes(3, 0, 2) == 0  # no history: nothing said
    assert estimated_wait_minutes(0, 50, 1) == 1
    assert estimated_wait_minutes(3, 90, 2) == 3  # 4 callers x 90 s / 2 agents = 3 min
    assert estimated_wait_minutes(5, 61, 0) == 7  # no agent logged in counts as one
