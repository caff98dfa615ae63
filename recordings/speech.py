"""Speech engines (语音识别引擎): a recording in, utterances with word timings out.

`Engine` is what the transcription worker needs; `VoskEngine` is the one shipped: vosk (Kaldi)
runs offline on a model directory the deployer places (`speech.model_path`; a Mandarin model
from the vosk project, see the README). No network is ever used: vosk's own download-by-language
is not called.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import tempfile
import threading
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from core.errors import HotlineError

log = logging.getLogger(__name__)

MAX_WORD_CHARS = 6  # the longest Chinese word looked for when cutting a phrase into words
CHUNK_FRAMES = 4000  # frames fed to the recogniser at a time (a quarter second at 16 kHz)


class SpeechError(HotlineError):
    pass


@dataclass(frozen=True)
class Word:
    text: str
    start: float  # seconds from the start of the recording
    end: float
    confidence: float  # 0..1, the engine's own


@dataclass(frozen=True)
class Utterance:
    """One stretch of speech between pauses, as the engine ended it."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...] = field(default_factory=tuple)

    @property
    def confidence(self) -> float:
        return (sum(w.confidence for w in self.words) / len(self.words)) if self.words else 0.0


class Engine(Protocol):
    name: str
    model: str  # which model, for the record

    def transcribe(self, audio: Path) -> list[Utterance]: ...


UNKNOWN = "[unk]"  # a word outside the grammar, as vosk's grammars spell it
# how models spell their unknown word in their own vocabulary ([unk] in vosk's own models,
# <UNK> or <unk> in others trained on Kaldi recipes)
_UNKNOWN_SPELLINGS = ("[unk]", "<UNK>", "<unk>")


class Recogniser(Protocol):
    """Short answers recognised against a grammar: what a spoken menu needs."""

    def recognise(self, audio: Path, phrases: list[str]) -> Utterance | None: ...


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]")


def join_words(words: list[str]) -> str:
    """Words as text: Chinese words run on without spaces (vosk's Mandarin models put a space
    between every word), words of other scripts keep theirs."""
    out = ""
    for word in words:
        if out and not (_CJK.search(out[-1]) and _CJK.match(word)):
            out += " "
        out += word
    return out


def _model_rate(model_dir: Path) -> int:
    """The sample rate the model was trained on (conf/mfcc.conf), 16 kHz if it does not say."""
    for conf in (model_dir / "conf" / "mfcc.conf", model_dir / "mfcc.conf"):
        if conf.is_file():
            found = re.search(r"--sample-frequency=(\d+)", conf.read_text())
            if found:
                return int(found.group(1))
    return 16000


class VoskEngine:
    name = "vosk"

    def __init__(self, model_dir: Path) -> None:
        model_dir = Path(model_dir)
        if not (model_dir / "am").is_dir() and not (model_dir / "final.mdl").is_file():
            raise SpeechError(f"speech: {model_dir} is not a vosk model directory "
                              "(no am/ in it); set speech.model_path to an unpacked model")
        try:
            import vosk
        except ImportError:
            raise SpeechError("speech: the vosk package is not installed "
                              "(pip install vosk)") from None
        vosk.SetLogLevel(-1)
        self.model = model_dir.name
        self.rate = _model_rate(model_dir)
        self._vosk = vosk
        self._model = vosk.Model(str(model_dir))
        self._lock = threading.Lock()  # one model, recognisers made one at a time

    def recogniser(self, rate: int) -> Any:
        """A new KaldiRecognizer on the loaded model for audio at `rate` (recordings.live
        makes one per live stream)."""
        with self._lock:
            return self._vosk.KaldiRecognizer(self._model, rate)

    def transcribe(self, audio: Path) -> list[Utterance]:
        with _as_pcm(audio, self.rate) as pcm, wave.open(str(pcm), "rb") as wav:
            recogniser = self.recogniser(wav.getframerate())
            recogniser.SetWords(True)
            out = []
            while True:
                data = wav.readframes(CHUNK_FRAMES)
                if not data:
                    break
                if recogniser.AcceptWaveform(data):
                    out.extend(_utterance(json.loads(recogniser.Result())))
            out.extend(_utterance(json.loads(recogniser.FinalResult())))
            return out

    def grammar(self, phrases: list[str]) -> list[str]:
        """`phrases` as vosk's grammar in this model's words, plus the unknown word.

        A phrase whose words are all in the vocabulary is kept as it is; Chinese written
        without spaces is cut into the longest words the vocabulary has (我要投诉 -> 我 要
        投诉); a phrase with a word the model does not know is left out (said once)."""
        out: list[str] = []
        for phrase in phrases:
            words = self._words_of(phrase)
            if words is None:
                if phrase not in _said:
                    _said.add(phrase)
                    log.warning("speech: %s does not know the words of %r; left out of the "
                                "grammar", self.model, phrase)
            elif " ".join(words) not in out:
                out.append(" ".join(words))
        unknown = next((w for w in _UNKNOWN_SPELLINGS if self._known(w)), None)
        return out + ([unknown] if unknown else [])

    def recognise(self, audio: Path, phrases: list[str]) -> Utterance | None:
        """One short answer recognised against `phrases` only (a grammar): its words, with
        the model's unknown word as [unk]; None when nothing was heard."""
        grammar = self.grammar(phrases)
        if not grammar:
            return None
        with _as_pcm(audio, self.rate) as pcm, wave.open(str(pcm), "rb") as wav:
            with self._lock:
                recogniser = self._vosk.KaldiRecognizer(
                    self._model, wav.getframerate(), json.dumps(grammar, ensure_ascii=False))
            recogniser.SetWords(True)
            while True:
                data = wav.readframes(CHUNK_FRAMES)
                if not data:
                    break
                recogniser.AcceptWaveform(data)
            result = json.loads(recogniser.FinalResult())
        for word in result.get("result", []):
            if word.get("word") in _UNKNOWN_SPELLINGS:
                word["word"] = UNKNOWN
        return next(_utterance(result), None)

    def _known(self, word: str) -> bool:
        return bool(self._model.vosk_model_find_word(word) >= 0)

    def _words_of(self, phrase: str) -> list[str] | None:
        words: list[str] = []
        for part in phrase.split():
            if self._known(part):
                words.append(part)
                continue
            if not _CJK.search(part):
                return None
            at = 0
            while at < len(part):  # the longest word the vocabulary has, from the left
                size = next((n for n in range(min(len(part) - at, MAX_WORD_CHARS), 0, -1)
                             if self._known(part[at:at + n])), 0)
                if not size:
                    return None
                words.append(part[at:at + size])
                at += size
        return words or None


def _utterance(result: dict[str, Any]) -> Iterator[Utterance]:
    words = tuple(Word(str(w["word"]), round(float(w["start"]), 2), round(float(w["end"]), 2),
                       round(float(w.get("conf", 1.0)), 3))
                  for w in result.get("result", []) if str(w.get("word", "")).strip())
    if words:
        yield Utterance(words[0].start, words[-1].end, join_words([w.text for w in words]),
                        words)


class _as_pcm:
    """The audio as a 16-bit mono WAV at `rate`: the file itself when it is one, else a
    temporary one that sox made."""

    def __init__(self, audio: Path, rate: int) -> None:
        self.audio, self.rate, self.temp = Path(audio), rate, None

    def __enter__(self) -> Path:
        try:
            with wave.open(str(self.audio), "rb") as wav:
                if (wav.getsampwidth(), wav.getnchannels(), wav.getframerate()) == (
                        2, 1, self.rate):
                    return self.audio
        except (wave.Error, EOFError):
            pass
        except FileNotFoundError:
            raise SpeechError(f"speech: {self.audio} is gone") from None
        if shutil.which("sox") is None:
            raise SpeechError("speech: sox is needed to convert recordings "
                              "(apt-get install sox)")
        handle = tempfile.NamedTemporaryFile(suffix=".wav", delete=False)
        handle.close()
        self.temp = Path(handle.name)
        done = subprocess.run(["sox", str(self.audio), "-r", str(self.rate), "-c", "1",
                               "-b", "16", "-e", "signed-integer", str(self.temp)],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise SpeechError(f"speech: cannot read {self.audio.name}: "
                              f"{done.stderr.strip()[:200]}")
        return self.temp

    def __exit__(self, *exc: object) -> None:
        if self.temp is not None:
            self.temp.unlink(missing_ok=True)


_said: set[str] = set()


def engine_for(model_path: Path | None) -> Engine | None:
    """The configured engine, or None (noted once per process, at debug: the centre says
    what speech is off) when no model is set."""
    if model_path is None:
        if "off" not in _said:
            _said.add("off")
            log.debug("speech: transcripts are off (speech.model_path is not set; "
                        "see the README, 'Transcripts')")
        return None
    return VoskEngine(model_path)
