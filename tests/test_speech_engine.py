"""The vosk engine, real, on the model a registry ships (Korean), on espeak-ng speech that went
through the telephone's channel. Accuracy thresholds measured on this machine: the caller's
sentence was heard as 미나리 라디오 너 도 나 비 (8 of 10 syllables, 3 of 4 words) and as
미나리 라디오 너 A 나 B (7 of 10, 2 of 4)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from recordings.speech import SpeechError, VoskEngine, engine_for, join_words
from tests.speech_audio import (
    AGENT_TEXT,
    AGENT_WORDS,
    CALLER_TEXT,
    CALLER_WORDS,
    MODEL_DIR,
    accuracy,
    speak_korean,
    words_heard,
)

MIN_ACCURACY = 0.6  # measured 0.7 to 0.8 over runs
MIN_WORDS = 2  # of 4; measured 2 to 3 over runs


@pytest.fixture(scope="module")
def engine() -> VoskEngine:
    return VoskEngine(MODEL_DIR)


def test_the_engine_hears_the_words_with_timings_and_confidences(
        engine: VoskEngine, tmp_path: Path) -> None:
    audio = speak_korean(CALLER_TEXT, tmp_path / "caller.wav")
    heard = engine.transcribe(audio)
    text = " ".join(u.text for u in heard)
    assert accuracy(CALLER_TEXT, text) >= MIN_ACCURACY, text
    assert len(words_heard(CALLER_WORDS, text)) >= MIN_WORDS, text
    assert not words_heard(AGENT_WORDS, text)
    words = [w for u in heard for w in u.words]
    assert words and all(0 <= w.start < w.end <= 3.5 for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)
    assert all(0.0 < w.confidence <= 1.0 for w in words)
    assert engine.name == "vosk" and engine.model == "model" and engine.rate == 16000

    other = " ".join(u.text for u in engine.transcribe(
        speak_korean(AGENT_TEXT, tmp_path / "agent.wav")))
    assert words_heard(AGENT_WORDS, other) == ["여름"], other
    assert not words_heard(CALLER_WORDS, other), other


def test_silence_is_no_utterance_and_odd_files_are_refused(engine: VoskEngine,
                                                           tmp_path: Path) -> None:
    silence = tmp_path / "silence.wav"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(silence),
                    "trim", "0", "2"], check=True)
    assert engine.transcribe(silence) == []
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF nothing of the kind")
    with pytest.raises(SpeechError, match="cannot read"):
        engine.transcribe(garbage)
    with pytest.raises(SpeechError, match="is gone"):
        engine.transcribe(tmp_path / "none.wav")
    with pytest.raises(SpeechError, match="not a vosk model"):
        VoskEngine(tmp_path)
    assert engine_for(None) is None  # no model: transcripts off (the centre says so)


def test_chinese_words_run_on_and_other_words_keep_their_spaces() -> None:
    assert join_words(["我", "要", "投诉", "ok", "好"]) == "我要投诉 ok 好"
    assert join_words(["여름", "여름"]) == "여름 여름"
