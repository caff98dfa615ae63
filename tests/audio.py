"""Tones for the kit and the browser's fake microphone, and how loud a recording is in a
band: each side of a call plays its own frequency, told apart in the mixed recording."""

from __future__ import annotations

import subprocess
from pathlib import Path

from recordings.audio import wav_stats


def tone(path: Path, hz: int, seconds: float, rate: int) -> Path:
    """A sine of `hz` as a 16-bit mono WAV at `rate` (sox)."""
    subprocess.run(["sox", "-n", "-r", str(rate), "-c", "1", "-b", "16", str(path),
                    "synth", str(seconds), "sine", str(hz), "vol", "0.5"], check=True)
    return path


def band_rms(recording: Path, low: int, high: int, tmp: Path) -> float:
    """The recording's loudness between `low` and `high` Hz (sox's band-pass filter)."""
    out = tmp / f"band-{low}-{high}.wav"
    subprocess.run(["sox", str(recording), "-b", "16", str(out), "sinc", f"{low}-{high}"],
                   check=True)
    return wav_stats(out).rms
