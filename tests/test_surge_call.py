"""Surge mode (突发事件模式) through the real Asterisk: with it on, a kit caller hears the
incident's announcement before the menu (the IVR path shows the surge step first, and
Asterisk streams the announcement's file), keys * to hear it again or # to leave; switched
off, the next caller goes straight to the menu. The announcement is a 1 kHz tone uploaded
as a WAV (44.1 kHz stereo, converted on the way in)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.config import Settings
from core.db import make_engine, session_factory, transaction
from ivr.fastagi import FastAgiServer
from ivr.server import IvrInBackground
from sipkit.kit import Call, Dtmf, Hangup, SipKit, Wait
from telephony import surge
from telephony.ami import EventTap

NOW = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)


@pytest.fixture
def ivr(pbx_settings: Settings, pbx: object) -> Iterator[FastAgiServer]:
    with IvrInBackground(pbx_settings) as server:
        yield server


@pytest.fixture
def surge_on(pbx_settings: Settings, pbx: object, tmp_path: Path) -> Iterator[str]:
    """Surge mode on with a 2 s tone as its announcement; always off again afterwards (the
    PBX's database is shared by the session's other call tests)."""
    tone = tmp_path / "tone.wav"
    subprocess.run(["sox", "-n", "-r", "44100", "-c", "2", "-b", "16", str(tone),
                    "synth", "2", "sine", "1000"], check=True)
    sessions = session_factory(make_engine(pbx_settings.storage.database_url))
    sound = surge.store_recording(pbx_settings.storage.prompts_dir, tone.read_bytes())
    with transaction(sessions) as session:
        surge.start(session, title="停水通告", sound=sound, actor="测试班长", now=NOW)
    try:
        yield sound
    finally:
        with transaction(sessions) as session:
            if surge.current(session) is not None:
                surge.stop(session, actor="测试班长", now=NOW)


def _nodes(tap: EventTap, caller: str) -> list[str]:
    channel = tap.wait_for(lambda e: e.get("Event") == "Newchannel"
                           and e.get("CallerIDNum") == caller)["Channel"]
    return [e.get("Value", "") for e in tap.snapshot() if e.get("Event") == "VarSet"
            and e.get("Channel") == channel and e.get("Variable") == "HOTLINE_IVR_NODE"]


def _streamed(tap: EventTap, caller: str, sound: str) -> int:
    """How many times Asterisk began streaming `sound` to the caller's channel."""
    channel = tap.wait_for(lambda e: e.get("Event") == "Newchannel"
                           and e.get("CallerIDNum") == caller)["Channel"]
    return sum(1 for e in tap.snapshot() if e.get("Event") == "AGIExecStart"
               and e.get("Channel") == channel
               and e.get("Command", "").startswith("STREAM FILE ")
               and f"/surge/{sound} " in e.get("Command", ""))


def test_the_announcement_comes_before_the_menu_and_star_repeats_it(
        ivr: FastAgiServer, surge_on: str, kit: SipKit, ami: EventTap) -> None:
    caller = "13800138061"
    result = kit.call(Call(caller_id=caller, script=(Wait(1), Dtmf("*"), Wait(20), Hangup()),
                           max_seconds=40))
    assert result.outcome == "answered"
    nodes = _nodes(ami, caller)
    assert nodes[:5] == ["surge", "surge_repeat", "hours", "welcome", "menu"]
    assert _streamed(ami, caller, surge_on) == 2  # once, then again after *


def test_hash_leaves_politely(ivr: FastAgiServer, surge_on: str, kit: SipKit,
                              ami: EventTap) -> None:
    caller = "13800138062"
    result = kit.call(Call(caller_id=caller, script=(Wait(1), Dtmf("#"), Wait(15)),
                           max_seconds=30))
    assert result.outcome == "answered" and result.hangup_by == "far_end"
    assert _nodes(ami, caller) == ["surge", "surge_leave"]
    assert not any(e.get("Event") == "QueueCallerJoin" and e.get("CallerIDNum") == caller
                   for e in ami.snapshot())


def test_switched_off_the_next_caller_goes_straight_to_the_menu(
        ivr: FastAgiServer, surge_on: str, kit: SipKit, ami: EventTap,
        pbx_settings: Settings) -> None:
    sessions = session_factory(make_engine(pbx_settings.storage.database_url))
    with transaction(sessions) as session:
        surge.stop(session, actor="测试班长", now=NOW)
    caller = "13800138063"
    kit.call(Call(caller_id=caller, script=(Wait(6), Hangup()), max_seconds=20))
    nodes = _nodes(ami, caller)
    assert nodes[:3] == ["hours", "welcome", "menu"] and "surge" not in nodes
    assert _streamed(ami, caller, surge_on) == 0
