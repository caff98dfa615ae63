"""Spoken menu choices (智能语音导航): what a caller says at a menu or the case-number prompt,
recognised against the flow's own phrases only (a grammar), never the open language.

The recogniser (recordings.speech) is loaded once, off the AGI's event loop, and each answer
is recognised on the IVR's thread pool within a time bound; an answer not recognised for
sure (silence, [unk], a phrase outside the grammar, low confidence, too slow) is no answer,
and the caller's keys decide as before.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recordings.speech import UNKNOWN, Recogniser, SpeechError, Utterance, VoskEngine

log = logging.getLogger(__name__)

RECOGNISE_SECONDS = 5.0  # longer than this and the caller is better served by keys


def _plain(text: str) -> str:
    return re.sub(r"\s+", "", text)


def choice_of(heard: Utterance | None, say: dict[str, tuple[str, ...]],
              min_confidence: float) -> str | None:
    """The menu key whose phrase the caller said, alone and clearly; else None."""
    if heard is None or not heard.words:
        return None
    if any(w.text == UNKNOWN or w.confidence < min_confidence for w in heard.words):
        return None
    said = _plain(heard.text)
    found = {key for key, phrases in say.items() if any(_plain(p) == said for p in phrases)}
    return found.pop() if len(found) == 1 else None


def digits_of(heard: Utterance | None, spoken_digits: dict[str, tuple[str, ...]],
              min_confidence: float) -> str:
    """The digits the caller said, in order; "" when any word is not a digit's or the
    recogniser was unsure."""
    if heard is None or not heard.words or heard.confidence < min_confidence:
        return ""
    digit_of = {_plain(word): digit for digit, words in spoken_digits.items()
                for word in words}
    out = ""
    for word in heard.words:
        text = _plain(word.text)
        if text in digit_of:
            out += digit_of[text]
        elif text and all(ch in digit_of for ch in text):  # 二零 run together as one word
            out += "".join(digit_of[ch] for ch in text)
        else:
            return ""
    return out


class Ear:
    """The IVR's recogniser, loading in the background: until it is ready (or if it
    cannot load) callers are served with keys only."""

    def __init__(self, model_path: Path, pool: Executor, min_confidence: float,
                 silence_seconds: int,
                 load: Callable[[Path], Recogniser] = VoskEngine) -> None:
        self.pool, self.min_confidence = pool, min_confidence
        self.silence_seconds = silence_seconds
        self.loading: Future[Recogniser] = pool.submit(load, model_path)
        self.loading.add_done_callback(self._loaded)

    @staticmethod
    def _loaded(done: Future[Any]) -> None:
        if done.cancelled():
            return
        if done.exception() is not None:
            log.error("ivr: spoken menu choices are off: %s", done.exception())
        else:
            log.info("ivr: spoken menu choices are on")

    def ready(self) -> bool:
        return self.loading.done() and not self.loading.cancelled() \
            and self.loading.exception() is None

    async def hear(self, audio: Path, phrases: list[str]) -> Utterance | None:
        """What was said in `audio` among `phrases`; None when unsure or too slow. The
        audio is deleted either way: a spoken answer is not kept."""
        try:
            if not self.ready() or not phrases:
                return None
            engine = self.loading.result()
            work = self.pool.submit(engine.recognise, audio, phrases)
            heard = await asyncio.wait_for(asyncio.wrap_future(work), RECOGNISE_SECONDS)
            log.info("ivr: heard %r (confidence %.2f)", heard.text if heard else "",
                     heard.confidence if heard else 0.0)  # the grammar's words only
            return heard
        except TimeoutError:
            log.warning("ivr: a spoken answer took over %.0f s to recognise; keys decide",
                        RECOGNISE_SECONDS)
            return None
        except SpeechError as exc:
            log.warning("ivr: a spoken answer could not be read: %s", exc)
            return None
        finally:
            audio.unlink(missing_ok=True)


@dataclass
class CallEar:
    """The ear for one call: where its answers are recorded, inside the PBX and here."""

    ear: Ear
    host_dir: Path
    pbx_dir: str
    name: str  # the call's own, safe as a file name
    answers: int = 0

    @property
    def min_confidence(self) -> float:
        return self.ear.min_confidence

    @property
    def silence_seconds(self) -> int:
        return self.ear.silence_seconds

    def ready(self) -> bool:
        return self.ear.ready()

    def next_answer(self) -> str:
        """The PBX path (without extension) the next answer is recorded to."""
        self.answers += 1
        self.host_dir.mkdir(parents=True, exist_ok=True)
        return f"{self.pbx_dir}/{self.name}-{self.answers}"

    async def hear(self, phrases: list[str]) -> Utterance | None:
        return await self.ear.hear(self.host_dir / f"{self.name}-{self.answers}.wav",
                                   phrases)

    def discard(self) -> None:
        """Delete any answer left behind (a caller who hung up while being listened to)."""
        for n in range(1, self.answers + 1):
            (self.host_dir / f"{self.name}-{n}.wav").unlink(missing_ok=True)
