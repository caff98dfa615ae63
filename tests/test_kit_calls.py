"""The SIP test kit's behaviours against the real PBX: refusing and silent agent phones,
concurrent calls at a rate, numbers that do not exist, and the `hotline sipcall` command."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import Settings
from sipkit.kit import Call, Hangup, SipKit, Wait, free_port
from telephony.ami import EventTap
from tests.conftest import AGENT_PORT, agent_ip, offered


def test_a_refusing_agent_is_skipped_and_the_next_one_answers(
        kit: SipKit, ami: EventTap) -> None:
    with kit.agent_phone("8101", agent_ip("8101"), port=AGENT_PORT, behaviour="refuse",
                         refuse_code=486) as busy, \
            kit.agent_phone("8102", agent_ip("8102"), port=AGENT_PORT, answer_after=0.5,
                            talk_seconds=1) as free:
        result = kit.call(Call(caller_id="13800138011", max_seconds=30))
    assert result.outcome == "answered" and result.hangup_by == "far_end"
    assert [(r.outcome, r.status) for r in offered(busy, "13800138011")][:1] == [
        ("refused", 486)]
    assert [r.outcome for r in offered(free, "13800138011")] == ["answered"]
    connect = ami.wait_for(lambda e: e.get("Event") == "AgentConnect")
    assert connect["MemberName"] == "8102"


def test_an_agent_phone_that_never_answers_is_cancelled_at_ring_timeout(
        kit: SipKit, ami: EventTap) -> None:
    with kit.agent_phone("8101", agent_ip("8101"), port=AGENT_PORT,
                         behaviour="never") as silent, \
            kit.agent_phone("8102", agent_ip("8102"), port=AGENT_PORT, answer_after=0.5,
                            talk_seconds=1) as free:
        result = kit.call(Call(caller_id="13800138012", max_seconds=40))
    assert result.outcome == "answered"
    rung = offered(silent, "13800138012")[0]
    assert rung.outcome == "cancelled"
    assert 4 <= rung.ended_at - rung.offered_at <= 7  # the queue's 5 s ring time
    assert [r.outcome for r in offered(free, "13800138012")] == ["answered"]
    assert ami.wait_for(lambda e: e.get("Event") == "AgentRingNoAnswer")["MemberName"] == "8101"


def test_concurrent_calls_at_a_rate_each_get_a_result(kit: SipKit, ami: EventTap) -> None:
    callers = [f"1390000000{i}" for i in range(5)]
    results = kit.calls(Call(script=(Wait(3), Hangup())), count=5, rate=5, concurrent=5,
                        caller_ids=callers)
    assert [r.caller_id for r in results] == callers
    assert all(r.outcome == "answered" and r.hangup_by == "caller" for r in results)
    starts = sorted(r.invite_at for r in results)  # type: ignore[type-var]
    assert starts[-1] - starts[0] < 2.5  # placed at about 5 per second, not one by one
    overlap = min(r.ended_at for r in results) > max(starts)  # type: ignore[type-var]
    assert overlap, "the five calls were up at the same time"
    seen = {e.get("CallerIDNum") for e in ami.snapshot() if e.get("Event") == "Newchannel"}
    assert set(callers) <= seen


def test_an_unknown_number_is_rejected_not_failed(kit: SipKit, ami: EventTap) -> None:
    result = kit.call(Call(to="99999", script=(Wait(1), Hangup())))
    assert result.outcome == "rejected" and result.status == 404
    assert result.answered_at is None


def test_sipcall_command_reports_json(pbx_settings: Settings, ami: EventTap) -> None:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(Path(__file__).parents[1]),
           "HOTLINE_STORAGE_DATA_DIR": str(pbx_settings.storage.data_dir),
           "HOTLINE_PBX_SIP_PORT": str(pbx_settings.pbx.sip_port)}
    proc = subprocess.run(
        [sys.executable, "-m", "hotline", "sipcall", "12319", "--from", "13800138013",
         "--dtmf", "9@0.5", "--hangup-after", "2", "--calls", "2", "--rate", "2", "--json"],
        capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["outcome"] for r in results] == ["answered", "answered"]
    assert all(r["hangup_by"] == "caller" and 1.5 < r["talk_seconds"] < 4 for r in results)
    digits = [e.get("Digit") for e in ami.snapshot()
              if e.get("Event") == "DTMFEnd" and e.get("Direction") == "Received"]
    assert digits == ["9", "9"]


def test_sipcall_bad_arguments_are_one_line(pbx_settings: Settings) -> None:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(Path(__file__).parents[1]),
           "HOTLINE_STORAGE_DATA_DIR": str(pbx_settings.storage.data_dir)}
    for args in (["--dtmf", "1x@1"], ["--play", "/nonexistent.wav@1"], ["--dtmf", "1@soon"]):
        proc = subprocess.run([sys.executable, "-m", "hotline", "sipcall", *args],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr




def test_a_media_port_taken_before_sipp_binds_it_is_replaced(
        kit: SipKit, ami: EventTap, monkeypatch: pytest.MonkeyPatch) -> None:
    """free_port probes a port and lets it go; something may take it before the caller's
    SIPp binds it (SIPp exits 254, "Unable to bind video RTP socket"): the kit starts it
    again on new ports and the call is placed once."""
    taken = free_port(kit.caller_ip, even=True)
    asked: list[int] = []

    def first_taken(ip: str, kind: int = socket.SOCK_DGRAM, even: bool = False) -> int:
        if even and ip == kit.caller_ip:
            asked.append(taken if not asked else free_port(ip, kind, even))
            return asked[-1]
        return free_port(ip, kind, even)

    monkeypatch.setattr("sipkit.kit.free_port", first_taken)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind((kit.caller_ip, taken + 2))  # the video port, taken meanwhile
        result = kit.call(Call(to="99999", script=(Wait(1), Hangup())))
    assert result.outcome == "rejected" and result.status == 404
    assert len(asked) == 2 and asked[1] != taken
