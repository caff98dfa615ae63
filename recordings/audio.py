"""Facts about a recording file that need no speech engine: length and loudness."""

from __future__ import annotations

import array
import math
import sys
import wave
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WavStats:
    seconds: float
    rms: float  # root mean square of the samples, 0..32767
    peak: int

    @property
    def silent(self) -> bool:
        """Digital silence or line hiss only (below about -50 dBFS)."""
        return self.rms < 100


def wav_stats(path: Path) -> WavStats:
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        frames = wav.readframes(wav.getnframes())
        rate, channels = wav.getframerate(), wav.getnchannels()
    samples = array.array("h")
    samples.frombytes(frames)
    if sys.byteorder == "big":
        samples.byteswap()
    if not samples:
        return WavStats(0.0, 0.0, 0)
    rms = math.sqrt(sum(s * s for s in samples) / len(samples))
    return WavStats(len(samples) / channels / rate, rms, max(abs(s) for s in samples))
