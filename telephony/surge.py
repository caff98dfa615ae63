"""Surge mode (突发事件模式): for an incident (a water cut, a storm) a supervisor has every
caller hear an announcement before the menu, with a key to hear it again and a key to leave.

The mode lives in the database (`surge_modes`): the IVR reads it for each call, so every IVR
process sees it switched on or off at once. The announcement is a WAV under the prompts
folder's surge/ (which the PBX sees at `pbx.prompts_path_in_pbx`/surge): a recording a
supervisor uploaded (converted to 8 kHz 16-bit mono with sox) or typed text spoken by a
`speak(text, path)` the caller hands in (espeak-ng, ivr.prompts.speak). A call that heard it
carries the IVR step "surge" ("surge_repeat" for each repeat, "surge_leave" when the caller
left with the leave key), which is how its calls are counted apart.
"""

from __future__ import annotations

import io
import secrets
import shutil
import subprocess
import tempfile
import wave
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from core.errors import HotlineError, NotFound
from telephony.measures import check_tiles, ratio, utc
from telephony.models import CallRecord, SurgeMode

SURGE_DIR = "surge"
REPEAT_KEY, LEAVE_KEY = "*", "#"
MAX_SECONDS = 120  # an announcement longer than this is not an announcement
MAX_TITLE, MAX_TEXT = 100, 500
HEARD, REPEATED, LEFT = "surge", "surge_repeat", "surge_leave"


class SurgeError(HotlineError):
    """A surge announcement refused: the message says why."""


class SurgeConflict(HotlineError):
    status = 409


class SurgeUnavailable(HotlineError):
    status = 503


def _clean(text: str, limit: int, what: str) -> str:
    text = " ".join(text.split())
    if not text:
        raise SurgeError(f"{what}: required")
    if len(text) > limit:
        raise SurgeError(f"{what}: at most {limit} characters")
    if any(ord(c) < 32 or 0x202A <= ord(c) <= 0x202E or 0x2066 <= ord(c) <= 0x2069
           for c in text):
        raise SurgeError(f"{what}: no control characters")
    return text


def current(session: Session) -> SurgeMode | None:
    """The surge mode on now, if any."""
    return session.scalars(_ON).first()


# built once: the IVR asks at every call
_ON = select(SurgeMode).where(SurgeMode.ended_at.is_(None)).order_by(SurgeMode.id.desc()).limit(1)


def sound_in_pbx(mode: SurgeMode, prompts_path_in_pbx: str) -> str:
    """The announcement as Asterisk names it: its path inside the PBX, without extension."""
    return f"{prompts_path_in_pbx.rstrip('/')}/{SURGE_DIR}/{mode.sound}"


def _new_sound(prompts_dir: Path) -> tuple[str, Path]:
    folder = prompts_dir / SURGE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = f"surge-{secrets.token_hex(8)}"
    return name, folder / f"{name}.wav"


def announcement_of(session: Session, prompts_dir: Path, surge_id: int) -> tuple[str, str]:
    """(sound, text) of an earlier surge's announcement, to play it again; 404 when that
    surge or its file is gone."""
    earlier = session.get(SurgeMode, surge_id)
    if earlier is None:
        raise NotFound(f"reuse: no surge {surge_id}")
    if not (prompts_dir / SURGE_DIR / f"{earlier.sound}.wav").is_file():
        raise NotFound(f"reuse: the announcement of surge {surge_id} is no longer there")
    return earlier.sound, earlier.text


def store_recording(prompts_dir: Path, data: bytes) -> str:
    """An uploaded WAV as an announcement (8 kHz 16-bit mono); returns its sound name."""
    try:
        with wave.open(io.BytesIO(data)) as wav:
            frames, rate = wav.getnframes(), wav.getframerate()
    except (wave.Error, EOFError, ValueError) as exc:
        raise SurgeError(f"recording: not a WAV file ({exc})") from None
    if rate <= 0 or frames <= 0:
        raise SurgeError("recording: the WAV holds no sound")
    if frames / rate > MAX_SECONDS:
        raise SurgeError(f"recording: at most {MAX_SECONDS} seconds")
    if shutil.which("sox") is None:
        raise SurgeUnavailable("recording: sox is needed to convert it (apt-get install sox)")
    name, target = _new_sound(prompts_dir)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "upload.wav"
        source.write_bytes(data)
        partial = target.with_suffix(".partial.wav")
        proc = subprocess.run(["sox", str(source), "-r", "8000", "-c", "1", "-b", "16",
                               "-e", "signed-integer", str(partial)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            partial.unlink(missing_ok=True)
            raise SurgeError(f"recording: cannot be converted: {proc.stderr.strip()[:200]}")
        partial.replace(target)
    return name


def store_spoken(prompts_dir: Path, text: str, speak: Callable[[str, Path], Path]) -> str:
    """Typed text spoken offline as an announcement; returns its sound name."""
    text = _clean(text, MAX_TEXT, "text")
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        raise SurgeUnavailable("text: espeak-ng and sox are needed to speak typed text; "
                               "upload a recording instead")
    name, target = _new_sound(prompts_dir)
    try:
        speak(text, target)
    except HotlineError as exc:
        raise SurgeUnavailable(f"text: cannot be spoken: {exc}") from None
    return name


def start(session: Session, *, title: str, sound: str, text: str = "", actor: str,
          now: datetime) -> SurgeMode:
    """Switch surge mode on; refused (409) while one is on."""
    title = _clean(title, MAX_TITLE, "title")
    if text:
        text = _clean(text, MAX_TEXT, "text")
    on = current(session)
    if on is not None:
        raise SurgeConflict(f"surge mode is already on ({on.title}); switch it off first")
    mode = SurgeMode(title=title, text=text, sound=sound, started_at=now, started_by=actor,
                     ended_by="")
    session.add(mode)
    session.flush()
    return mode


def stop(session: Session, *, actor: str, now: datetime) -> SurgeMode:
    """Switch surge mode off (every row still on: two switched on at the same instant
    leave no second one behind); returns the latest; 404 when it is not on."""
    on = list(session.scalars(select(SurgeMode).where(SurgeMode.ended_at.is_(None))
                              .order_by(SurgeMode.id.desc())))
    if not on:
        raise NotFound("surge mode is not on")
    for mode in on:
        mode.ended_at, mode.ended_by = now, actor
    session.flush()
    return on[0]


@dataclass(frozen=True)
class SurgeCalls:
    """A surge's calls, counted apart: callers who heard the announcement, of them those
    who heard it again and those who left with the leave key."""

    heard: int
    repeated: int
    left: int


def _steps(record: CallRecord) -> set[str]:
    return _path_steps(record.details)


def _path_steps(details: dict[str, Any] | None) -> set[str]:
    return {str(step.get("value")) for step in (details or {}).get("ivr_path", [])
            if step.get("node") == "node"}


def _spans(session: Session, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The parts of [start, end) (UTC) that a surge was on in, one a surge (they may
    overlap), empty ones left out."""
    spans = [(max(start, utc(mode.started_at)), min(end, utc(mode.ended_at or end)))
             for mode in session.scalars(select(SurgeMode).where(
                 SurgeMode.started_at < end,
                 or_(SurgeMode.ended_at.is_(None), SurgeMode.ended_at > start)))]
    return [(lo, hi) for lo, hi in spans if lo < hi]


def calls_of(session: Session, mode: SurgeMode, now: datetime) -> SurgeCalls:
    """Inbound calls stored from the surge's start to its end (or `now`) that heard it."""
    end = mode.ended_at or now
    heard = repeated = left = 0
    for record in session.scalars(select(CallRecord).where(
            CallRecord.direction == "inbound", CallRecord.started_at >= utc(mode.started_at),
            CallRecord.started_at < utc(end))):
        steps = _steps(record)
        if HEARD in steps:
            heard += 1
            repeated += REPEATED in steps
            left += LEFT in steps
    return SurgeCalls(heard, repeated, left)


@dataclass(frozen=True)
class SurgeCallMeasures:
    """The inbound calls of a window that heard a surge announcement (突发事件模式来电),
    counted apart for the KPIs; the window's ordinary call measures (telephony.measures)
    include them. As there: offered reached a queue (short abandons apart); answered,
    abandoned and unanswered are an offered call's outcomes; rates are fractions of offered
    (None with none offered). `left` keyed the leave key and never reached a queue;
    `repeated` heard the announcement again."""

    calls: int
    repeated: int
    left: int
    offered: int
    answered: int
    abandoned: int
    unanswered: int
    short_abandons: int
    answer_rate: float | None
    abandon_rate: float | None


def call_measures(session: Session, start: datetime, end: datetime, *,
                  queue: str | None = None) -> SurgeCallMeasures:
    """Surge calls of [start, end) (by `started_at`, as every call measure), of `queue` or
    all: inbound calls that began while a surge was on and whose IVR path shows the
    announcement heard. Only the calls of the surges' spans are read."""
    return call_measures_tiled(session, [(utc(start), utc(end))], queue=queue)[0]


def call_measures_tiled(session: Session, tiles: Sequence[tuple[datetime, datetime]], *,
                        queue: str | None = None
                        ) -> tuple[SurgeCallMeasures, list[SurgeCallMeasures]]:
    """`call_measures` of the whole of `tiles` (contiguous windows, in order: a report's
    periods) and of each tile, reading the surges and their calls once for the whole
    window (one statement for the surges and one a surge, not so many a tile): a call
    counts in the tile it began in, and the whole's counts are the tiles' added up."""
    tiles = check_tiles([(utc(lo), utc(hi)) for lo, hi in tiles])
    start, end = tiles[0][0], tiles[-1][1]
    starts = [lo for lo, _hi in tiles]
    counts = [_SurgeCounts() for _ in tiles]
    seen: set[int] = set()
    c = CallRecord
    for lo, hi in _spans(session, start, end):
        where = [c.direction == "inbound", c.started_at >= lo, c.started_at < hi]
        if queue is not None:
            where.append(c.queue == queue)
        for call_id, started, details, call_queue, short, outcome in session.execute(
                select(c.id, c.started_at, c.details, c.queue, c.short_abandon, c.outcome)
                .where(*where)):
            steps = _path_steps(details)
            if call_id in seen or HEARD not in steps:
                continue
            seen.add(call_id)
            counts[bisect_right(starts, utc(started)) - 1].add(steps, call_queue, short,
                                                               outcome)
    whole = _SurgeCounts()
    for one in counts:
        whole.merge(one)
    return whole.measures(), [one.measures() for one in counts]


class _SurgeCounts:
    """The counts of `call_measures`, a call at a time."""

    def __init__(self) -> None:
        self.n = dict.fromkeys(("heard", "repeated", "left", "offered", "answered",
                                "abandoned", "unanswered", "shorts"), 0)

    def add(self, steps: set[str], queue: str | None, short_abandon: bool,
            outcome: str) -> None:
        n = self.n
        n["heard"] += 1
        n["repeated"] += REPEATED in steps
        n["left"] += LEFT in steps
        if queue is None:
            return
        if short_abandon:
            n["shorts"] += 1
            return
        n["offered"] += 1
        for name in ("answered", "abandoned", "unanswered"):
            n[name] += outcome == name

    def merge(self, other: _SurgeCounts) -> None:
        for name, value in other.n.items():
            self.n[name] += value

    def measures(self) -> SurgeCallMeasures:
        n = self.n
        return SurgeCallMeasures(n["heard"], n["repeated"], n["left"], n["offered"],
                                 n["answered"], n["abandoned"], n["unanswered"], n["shorts"],
                                 ratio(n["answered"], n["offered"]),
                                 ratio(n["abandoned"], n["offered"]))


def recent(session: Session, limit: int = 10) -> list[SurgeMode]:
    return list(session.scalars(select(SurgeMode).order_by(SurgeMode.id.desc()).limit(limit)))


def discard(prompts_dir: Path, sound: str) -> None:
    """Remove an announcement stored for a surge that was then refused."""
    (prompts_dir / SURGE_DIR / f"{sound}.wav").unlink(missing_ok=True)
