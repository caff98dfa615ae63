"""Surge mode (突发事件模式) proved by what the caller hears: the RTP the real Asterisk sends to
a kit caller, captured off the loopback interface (tests.test_spy.Heard) and decoded with
sox. The announcement uploaded for the surge is a 5 s tone of 1000 Hz; for this test the
menu prompt is a 4 s tone of 600 Hz (put back afterwards), so each is told in the caller's
audio by its own frequency, and the spoken prompts between them (how to hear it again or
leave, the welcome) by being neither.

- A caller who keys nothing hears the whole announcement first, then speech, then the menu.
- A caller who keys # during the announcement hears it cut short, then goodbye (speech),
  and is hung up on: no menu.
"""

from __future__ import annotations

import array
import math
import shutil
import subprocess
import wave
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.config import Settings
from core.db import make_engine, session_factory, transaction
from ivr.fastagi import FastAgiServer
from ivr.server import IvrInBackground
from sipkit.kit import Call, CallResult, Dtmf, Hangup, SipKit, Step, Wait
from telephony import surge
from telephony.ami import EventTap
from tests.audio import tone
from tests.test_spy import Heard, media_port

NOW = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
CALLER_IP = "127.0.0.2"  # SipKit's caller address
ANNOUNCEMENT_HZ, MENU_HZ = 1000, 600
ANNOUNCEMENT_SECONDS, MENU_SECONDS = 5, 4
SLICE = 25  # packets of 20 ms: half a second


@pytest.fixture
def ivr(pbx_settings: Settings, pbx: object) -> Iterator[FastAgiServer]:
    with IvrInBackground(pbx_settings) as server:
        yield server


@pytest.fixture
def known_audio(pbx_settings: Settings, pbx: object, ivr: FastAgiServer,
                tmp_path: Path) -> Iterator[None]:
    """Surge mode on with the 1000 Hz announcement, and the menu prompt a 600 Hz tone; both
    undone afterwards (the PBX and its prompts are shared by the session's other tests)."""
    prompts = pbx_settings.storage.prompts_dir
    menu = prompts / "menu.wav"
    kept = tmp_path / "menu-kept.wav"
    shutil.copy2(menu, kept)
    sessions = session_factory(make_engine(pbx_settings.storage.database_url))
    sound = surge.store_recording(prompts, tone(
        tmp_path / "announcement.wav", ANNOUNCEMENT_HZ, ANNOUNCEMENT_SECONDS, 16000
    ).read_bytes())
    tone(tmp_path / "menu.wav", MENU_HZ, MENU_SECONDS, 8000).replace(menu)
    with transaction(sessions) as session:
        surge.start(session, title="停水通告", sound=sound, actor="测试班长", now=NOW)
    try:
        yield
    finally:
        shutil.copy2(kept, menu)  # the same size as before: ivr.prompts leaves it alone
        with transaction(sessions) as session:
            if surge.current(session) is not None:
                surge.stop(session, actor="测试班长", now=NOW)
        surge.discard(prompts, sound)


@dataclass(frozen=True)
class Slice:
    at: float  # when its first packet arrived
    loudness: float  # RMS of the whole slice
    announcement: float  # RMS within 80 Hz of the announcement's tone
    menu: float  # RMS within 80 Hz of the menu's tone

    @property
    def kind(self) -> str:
        """What the caller heard: a tone is nearly all of the slice's energy in its band;
        speech is loud but in neither; anything else is quiet."""
        if self.loudness < 300:
            return "quiet"
        if self.announcement > 0.8 * self.loudness:
            return "announcement"
        if self.menu > 0.8 * self.loudness:
            return "menu"
        return "speech"


def _samples(path: Path) -> array.array[int]:
    with wave.open(str(path)) as wav:
        samples = array.array("h", wav.readframes(wav.getnframes()))
    return samples


def _rms(samples: array.array[int]) -> float:
    return math.sqrt(sum(s * s for s in samples) / len(samples)) if samples else 0.0


def _heard(heard: Heard, port: int, tmp: Path) -> list[Slice]:
    """What the caller at `port` received, in half-second slices, in arrival order."""
    packets = sorted((at, kind, payload) for at, to, kind, payload
                     in heard.packets[CALLER_IP] if to == port)
    assert len(packets) > 100, f"the caller received {len(packets)} RTP packets"
    kinds = {kind for _, kind, _ in packets}
    assert len(kinds) == 1, kinds  # one codec; a file's last packet may be short
    raw = tmp / f"caller-{port}.raw"
    raw.write_bytes(b"".join(payload for _, _, payload in packets))
    wav = raw.with_suffix(".wav")
    subprocess.run(["sox", "-t", "al" if kinds == {8} else "ul", "-r", "8000", "-c", "1",
                    str(raw), "-b", "16", str(wav)], check=True)
    bands = {}
    for name, hz in (("announcement", ANNOUNCEMENT_HZ), ("menu", MENU_HZ)):
        band = tmp / f"caller-{port}-{name}.wav"
        subprocess.run(["sox", str(wav), "-b", "16", str(band), "sinc",
                        f"{hz - 80}-{hz + 80}"], check=True)
        bands[name] = _samples(band)
    whole = _samples(wav)
    offsets = [0]  # where each packet's samples begin (G.711: a byte a sample)
    for _, _, payload in packets:
        offsets.append(offsets[-1] + len(payload))
    out = []
    for first in range(0, len(packets) - SLICE + 1, SLICE):
        lo, hi = offsets[first], offsets[first + SLICE]
        out.append(Slice(packets[first][0], _rms(whole[lo:hi]),
                         _rms(bands["announcement"][lo:hi]), _rms(bands["menu"][lo:hi])))
    return out


def _call(kit: SipKit, caller: str, script: tuple[Step, ...], pbx_settings: Settings,
          tmp: Path) -> tuple[CallResult, str]:
    heard = Heard(pbx_settings.pbx.bind_address, (CALLER_IP,))
    try:
        run = replace(kit, keep_files=True).start_calls(Call(
            caller_id=caller, script=script, max_seconds=45))
        [result] = run.wait()
    finally:
        heard.stop()
    slices = _heard(heard, media_port(run.workdir), tmp)
    # one letter a slice: A announcement, M menu, s speech, . quiet
    return result, "".join({"announcement": "A", "menu": "M", "speech": "s",
                            "quiet": "."}[s.kind] for s in slices)


def _split(heard: str, letter: str) -> list[str]:
    parts, current = [], ""
    for c in heard:
        if c == letter:
            current += c
        elif current:
            parts.append(current)
            current = ""
    return [*parts, current] if current else parts


def test_the_caller_hears_the_announcement_then_the_menu(
        known_audio: None, kit: SipKit, ami: EventTap, pbx_settings: Settings,
        tmp_path: Path) -> None:
    result, heard = _call(kit, "13800138071", (Wait(30), Hangup()), pbx_settings, tmp_path)
    assert result.outcome == "answered"
    sounds = heard.replace(".", "")
    # the announcement first and whole (5 s: ten slices, give or take the edges), then the
    # spoken prompts (how to hear it again or leave; the welcome), then the menu
    assert sounds.startswith("A"), heard
    assert _split(sounds, "A") and max(len(r) for r in _split(sounds, "A")) >= 8, heard
    assert "M" in sounds and sounds.index("M") > sounds.rindex("A"), heard
    assert "s" in sounds[sounds.rindex("A"):sounds.index("M")], heard
    assert max(len(r) for r in _split(sounds, "M")) >= 4, heard  # 2 s of the menu at least


def test_hash_cuts_the_announcement_short_and_leaves(
        known_audio: None, kit: SipKit, ami: EventTap, pbx_settings: Settings,
        tmp_path: Path) -> None:
    result, heard = _call(kit, "13800138072", (Wait(1.5), Dtmf("#"), Wait(15)), pbx_settings,
                            tmp_path)
    assert result.hangup_by == "far_end"
    sounds = heard.replace(".", "")
    assert sounds.startswith("A"), heard
    # keyed 1.5 s after the answer: at most 3 s of the 5 s announcement, then goodbye, no menu
    assert sum(len(r) for r in _split(sounds, "A")) <= 6, heard
    assert "s" in sounds[sounds.rindex("A"):], heard
    assert "M" not in sounds, heard
