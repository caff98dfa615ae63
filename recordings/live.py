"""Live transcription (实时转写): the caller's voice heard while the call is up.

How the audio gets here: when a citizen's call joins a queue, the telephony service places a
side channel, `AudioSocket/<host>:<port>/<stream uuid>`, into the dialplan's [hotline-live],
where ChanSpy (options u, o, q, E) listens to the caller's own channel only: what the caller
says, never what the agent says, and it ends when the caller's channel hangs up. Asterisk's
chan_audiosocket connects to the receiver here and sends that audio as 16-bit 8 kHz signed
linear frames (the AudioSocket protocol: one kind byte, a two-byte big-endian length, the
payload). The stream's uuid comes from its call's id (`stream_uuid`), and the telephony
service writes uuid -> call_id in Redis (`register_stream`) before it places the channel, so
the receiver knows the call of every stream it is sent.

Each stream gets one recogniser thread (vosk's KaldiRecognizer on the one loaded model), off
the receiver's loop, the AMI loop and the web server's threads. Each partial or final text
is published once on the bus as `speech.live` (`LiveTranscript`, masked), and each alert
keyword heard as `speech.keyword` (`transcripts.KeywordHeard`, live=True): one per call and
keyword, so the stored transcript's pass later adds no second alert.

Masked as it is said: a text is published once and never taken back, and what follows it may
make its digits part of a personal number (138123 growing to 13812345678, or an ID number read
in groups that endpointing cut into utterances). So a run of digits at the end of any text,
partial or final, is shown as stars only, and a text beginning with digits is masked with the
finals before it, as one number with the digits they end in (`privacy.find_each`).

Bounded: the frames a stream's recogniser has not taken yet wait in a queue of at most
BACKLOG_FRAMES (BACKLOG_SECONDS of audio), and it is fed at most FEED_LIMIT bytes at once.
When vosk falls that far behind (the CPU is short), the oldest waiting frames are dropped
(counted, warned once per stream): the live text is a help during the call, the transcript
that is kept is made from the recording afterwards, and a keyword missed live is alerted by
that pass. After a drop the stream's times run behind the call's by the audio dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import struct
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import redis
from sqlalchemy.orm import Session, sessionmaker

from core.background import BackgroundLoop
from core.clock import Clock
from core.config import Settings
from core.errors import HotlineError
from core.events import DomainEvent, EventBus
from core.metrics import LIVE_FRAMES_DROPPED, LIVE_FRAMES_WAITING, LIVE_STREAMS
from recordings import keywords, privacy
from recordings.speech import VoskEngine, join_words
from recordings.transcripts import KeywordHeard, _normal

log = logging.getLogger(__name__)

RATE = 8000  # AudioSocket's slin: 16-bit signed little-endian, mono, 8 kHz
CHUNK_BYTES = RATE * 2 // 10  # fed to the recogniser a tenth of a second at a time
FEED_LIMIT = RATE * 2  # and at most a second at a time, so the backlog waits in the queue
FRAME_SECONDS = 0.02  # chan_audiosocket sends 20 ms frames (320 bytes)
BACKLOG_SECONDS = 5.0  # audio a stream may hold unheard; past it, the oldest is dropped
BACKLOG_FRAMES = round(BACKLOG_SECONDS / FRAME_SECONDS)
KIND_HANGUP, KIND_UUID, KIND_DTMF, KIND_AUDIO, KIND_ERROR = 0x00, 0x01, 0x03, 0x10, 0xFF
CHANNEL_PREFIX = "AudioSocket/"  # the side channel's technology (chan_audiosocket)
STREAM_KEY = "hotline:live-audio:stream:"  # + stream uuid -> call_id
RECEIVER_KEY = "hotline:live-audio:receiver"  # host:port of the receiver that is up
STREAM_TTL = 12 * 3600
RECEIVER_TTL = 30  # refreshed every third of it while the receiver runs
_NAMESPACE = uuid.UUID("5f0c6a52-3b0e-4f5e-9a41-12319a000001")
# the finals a text is masked with: a number of 19 digits (a bank card, the longest judged by
# its kind) runs over 19 utterances at most; a run over more has 20 digits or more, all stars
RUN_ON_FINALS = 20


def stream_uuid(call_id: str) -> str:
    """The AudioSocket stream's uuid for a call: one name per call id, the same after a
    restart of the service that placed it."""
    return str(uuid.uuid5(_NAMESPACE, call_id))


def register_stream(client: redis.Redis, call_id: str) -> str:
    """Write stream uuid -> call id (before the stream is placed); the uuid."""
    stream = stream_uuid(call_id)
    client.set(STREAM_KEY + stream, call_id, ex=STREAM_TTL)
    return stream


def call_of_stream(client: redis.Redis, stream: str) -> str | None:
    found = client.get(STREAM_KEY + stream)
    return found.decode() if isinstance(found, bytes) else found


def receiver_address(client: redis.Redis) -> str | None:
    """host:port of a live receiver that is up, or None (then no stream is placed)."""
    found = client.get(RECEIVER_KEY)
    return found.decode() if isinstance(found, bytes) else found


@dataclass(frozen=True)
class LiveTranscript(DomainEvent):
    """What the caller is saying, as the recogniser hears it during the call (实时转写): a
    partial text of the utterance under way (it grows and may be revised) or the utterance's
    final text. Masked (recordings.privacy). Times are seconds of the caller's live stream."""

    type: ClassVar[str] = "speech.live"
    call_id: str = ""
    leg: str = "caller"
    utterance: int = 0  # its number in the stream, from 0
    final: bool = False
    text: str = ""
    start: float = 0.0
    end: float = 0.0

    def identity(self) -> tuple[object, ...]:
        return (self.call_id, self.leg, self.utterance, "final" if self.final else self.text)


@dataclass(frozen=True)
class Heard:
    """One step of a recogniser: the utterance's text so far (or final), its words' times."""

    utterance: int
    final: bool
    text: str  # raw
    start: float
    end: float
    words: tuple[tuple[str, float, float], ...]


class Recogniser:
    """vosk's KaldiRecognizer on one stream: audio in, each new partial or final text out."""

    def __init__(self, engine: VoskEngine) -> None:
        self._rec = engine.recogniser(RATE)
        # word times in final results only: partial word times come from the incremental
        # lattice, which runs seconds behind the decoder (measured: 2 s against 0.5 s)
        self._rec.SetWords(True)
        self.utterance, self._partial, self.seconds, self._began = 0, "", 0.0, 0.0

    def feed(self, pcm: bytes) -> list[Heard]:
        self.seconds += len(pcm) / (2 * RATE)
        if self._rec.AcceptWaveform(pcm):
            return self._final(json.loads(self._rec.Result()))
        text = join_words(str(json.loads(self._rec.PartialResult()).get("partial", "")).split())
        if not text or text == self._partial:
            return []
        self._partial = text
        return [Heard(self.utterance, False, text, self._began, round(self.seconds, 2), ())]

    def finish(self) -> list[Heard]:
        return self._final(json.loads(self._rec.FinalResult()))

    def _final(self, result: dict[str, Any]) -> list[Heard]:
        words = _words(result.get("result", []))
        self._partial, self._began = "", round(self.seconds, 2)
        if not words:
            return []
        heard = Heard(self.utterance, True, join_words([w[0] for w in words]), words[0][1],
                      words[-1][2], tuple(words))
        self.utterance += 1
        return [heard]


def _words(items: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    return [(str(w["word"]), round(float(w.get("start", 0.0)), 2),
             round(float(w.get("end", 0.0)), 2))
            for w in items if str(w.get("word", "")).strip()]


class KeywordWatch:
    """Which alert keywords a stream's text holds, each said once per call."""

    def __init__(self, keywords: Callable[[], tuple[str, ...]]) -> None:
        self.keywords, self.said = keywords, set()  # type: ignore[var-annotated]

    def new_in(self, text: str) -> list[str]:
        spoken = join_words(_normal(text).split())
        found = [k for k in self.keywords() if k not in self.said and _normal(k) in spoken]
        self.said.update(found)
        return found


def _keyword_at(keyword: str, heard: Heard) -> float:
    """Where the keyword is in the stream: its first word's start in a final text, else
    the moment of the stream it was heard in a partial one."""
    for word, start, _end in heard.words:
        if word and (word in keyword or keyword in word):
            return start
    return heard.end


_open: set[LiveStream] = set()  # the streams whose thread runs, read by the gauges
_open_lock = threading.Lock()
LIVE_STREAMS.set_function(lambda: len(_open))
LIVE_FRAMES_WAITING.set_function(
    lambda: sum(stream.frames.qsize() for stream in _streams_open()))


def _streams_open() -> list[LiveStream]:
    with _open_lock:
        return list(_open)


class LiveStream:
    """One caller's stream: frames queued by the receiver (at most BACKLOG_FRAMES), heard on
    this stream's thread, published on the bus."""

    def __init__(self, call_id: str, recogniser: Recogniser, bus: EventBus,
                 keywords: Callable[[], tuple[str, ...]], clock: Callable[[], float],
                 backlog: int = BACKLOG_FRAMES) -> None:
        self.call_id, self.recogniser, self.bus, self.clock = call_id, recogniser, bus, clock
        self.watch = KeywordWatch(keywords)
        self.backlog = backlog
        self.frames: queue.Queue[bytes | None] = queue.Queue(backlog + 1)  # + the end
        self.published = self.dropped = 0
        self.finals: list[Heard] = []  # the last RUN_ON_FINALS, which a number may run on from
        self.ended = False
        self.failed = False  # its recogniser broke: what comes is not queued
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"live-{call_id}")

    def start(self) -> LiveStream:
        with _open_lock:
            _open.add(self)
        self.thread.start()
        return self

    def hear(self, frame: bytes) -> None:
        """Queue a frame from the receiver (its loop is the only producer); never blocks.
        A recogniser BACKLOG_SECONDS behind loses the oldest frame waiting."""
        if self.ended or self.failed:
            return
        while self.frames.qsize() >= self.backlog:
            try:
                self.frames.get_nowait()
            except queue.Empty:  # the recogniser took them meanwhile
                break
            if not self.dropped:
                log.warning("live speech: the recogniser of call %s fell %.0f s behind; its "
                            "oldest audio is dropped (the stored transcript comes from the "
                            "recording)", self.call_id, BACKLOG_SECONDS)
            self.dropped += 1
            LIVE_FRAMES_DROPPED.inc()
        self.frames.put_nowait(frame)

    def end(self) -> None:
        """The stream ended: what is queued is heard, then the recogniser's last words."""
        if not self.ended:
            self.ended = True
            self.frames.put_nowait(None)  # its own place, past the backlog's

    def _run(self) -> None:
        buffered = bytearray()
        try:
            while True:
                frame = self.frames.get()
                if frame is None:
                    if buffered:
                        self._publish(self.recogniser.feed(bytes(buffered)))
                    self._publish(self.recogniser.finish())
                    return
                buffered += frame
                # what waits stays in the bounded queue: a chunk is at most FEED_LIMIT
                if len(buffered) >= CHUNK_BYTES and (self.frames.empty()
                                                     or len(buffered) >= FEED_LIMIT):
                    chunk, buffered = bytes(buffered), bytearray()
                    self._publish(self.recogniser.feed(chunk))
        except Exception:  # one stream's failure never stops the receiver or the others
            self.failed = True
            log.exception("live speech: the stream of call %s failed", self.call_id)
        finally:
            with _open_lock:
                _open.discard(self)

    def _masked(self, step: Heard) -> str:
        """The step's text masked with the finals before it; the digits at its end, which
        the next words may still make a number, all stars. A partial has no word times (its
        start is where the last final was heard): it runs on from that final whatever the
        pause, the final decides by its first word's time."""
        before = self.finals[-1].end if self.finals else step.start
        said = replace(step, start=before if not step.final else max(step.start, before))
        if step.final:
            self.finals = [*self.finals, said][-RUN_ON_FINALS:]
            return privacy.mask_each(self.finals, growing=True)[-1]
        return privacy.mask_each([*self.finals, said], growing=True)[-1]

    def _publish(self, heard: list[Heard]) -> None:
        for step in heard:
            masked = self._masked(step)
            if self.bus.publish(LiveTranscript(
                    at=self.clock(), call_id=self.call_id, utterance=step.utterance,
                    final=step.final, text=masked, start=step.start, end=step.end)):
                self.published += 1
            for keyword in self.watch.new_in(step.text):
                self.bus.publish(KeywordHeard(
                    at=self.clock(), call_id=self.call_id, leg="caller", keyword=keyword,
                    offset_seconds=_keyword_at(keyword, step), excerpt=masked[:200],
                    live=True))


class Receiver:
    """The AudioSocket server: each connection one caller's stream."""

    def __init__(self, engine: VoskEngine, bus: EventBus,
                 keywords: Callable[[], tuple[str, ...]], clock: Callable[[], float],
                 host: str, port: int) -> None:
        self.engine, self.bus, self.keywords, self.clock = engine, bus, keywords, clock
        self.host, self.port = host, port
        self.streams: dict[str, LiveStream] = {}
        self._server: asyncio.Server | None = None
        self._beat: asyncio.Task[None] | None = None

    async def start(self) -> Receiver:
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
        except OSError as exc:
            raise HotlineError(f"live speech: cannot listen on {self.host}:{self.port} "
                               f"(speech.live_port): {exc.strerror}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        await asyncio.to_thread(self._announce)
        self._beat = asyncio.create_task(self._heartbeat())
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _announce(self) -> None:
        self.bus.client.set(RECEIVER_KEY, self.address, ex=RECEIVER_TTL)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(RECEIVER_TTL / 3)
            try:
                await asyncio.to_thread(self._announce)
            except redis.RedisError as exc:
                log.warning("live speech: cannot announce the receiver: %s", exc)

    async def close(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        try:
            if await asyncio.to_thread(self.bus.client.get, RECEIVER_KEY) == \
                    self.address.encode():
                await asyncio.to_thread(self.bus.client.delete, RECEIVER_KEY)
        except redis.RedisError:
            pass
        for stream in list(self.streams.values()):
            stream.end()

    def open_stream(self, call_id: str) -> LiveStream:
        return LiveStream(call_id, Recogniser(self.engine), self.bus, self.keywords,
                          self.clock).start()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream: LiveStream | None = None
        try:
            kind, payload = await _message(reader)
            if kind != KIND_UUID or len(payload) != 16:
                log.warning("live speech: a connection that did not start with its uuid")
                return
            name = str(uuid.UUID(bytes=payload))
            call_id = await asyncio.to_thread(call_of_stream, self.bus.client, name)
            if not call_id:
                log.warning("live speech: stream %s names no call; closed", name)
                return
            stream = self.open_stream(call_id)
            self.streams[name] = stream
            while True:
                kind, payload = await _message(reader)
                if kind == KIND_AUDIO:
                    stream.hear(payload)
                elif kind in (KIND_HANGUP, KIND_ERROR):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # Asterisk hung the side channel up
        finally:
            if stream is not None:
                stream.end()
                self.streams = {k: s for k, s in self.streams.items() if s is not stream}
            writer.close()


async def _message(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    kind, length = struct.unpack("!BH", await reader.readexactly(3))
    return kind, (await reader.readexactly(length) if length else b"")


_said_off = False


class LiveSpeech:
    """The live receiver as a part of the centre: the model loaded once, the AudioSocket
    server on a loop of its own; off (said once) without a model or with speech.live off."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], bus: EventBus,
                 clock: Clock, engine: VoskEngine | None = None) -> None:
        self.settings, self.sessions, self.bus, self.clock = settings, sessions, bus, clock
        self.engine = engine
        self.receiver: Receiver | None = None
        self._loop: BackgroundLoop | None = None

    @staticmethod
    def wanted(settings: Settings) -> bool:
        global _said_off
        if settings.speech.model_path is not None and settings.speech.live:
            return True
        if not _said_off:
            _said_off = True
            # at debug: the centre says what speech is off (hotline.centre.speech_off)
            log.debug("speech: live transcription is off (%s)",
                        "speech.live is false" if settings.speech.model_path
                        else "speech.model_path is not set")
        return False

    def start(self) -> LiveSpeech:
        speech = self.settings.speech
        if self.engine is None:
            assert speech.model_path is not None
            self.engine = VoskEngine(speech.model_path)
        cache = keywords.KeywordCache(self.sessions, self.bus.client, speech.alert_keywords,
                                      self.clock.now)
        self._loop = BackgroundLoop("live-speech")
        self.receiver = Receiver(self.engine, self.bus, cache, self.clock.time,
                                 speech.live_host, speech.live_port)
        try:
            self._loop.run(self.receiver.start(), 15)
        except BaseException:
            self._loop.stop(2)
            self._loop = self.receiver = None
            raise
        log.info("speech: live transcription listening on %s", self.receiver.address)
        return self

    def stop(self, timeout: float = 3.0) -> None:
        if self._loop is not None and self.receiver is not None:
            try:
                self._loop.run(self.receiver.close(), timeout)
            finally:
                self._loop.stop(timeout)
        self._loop = self.receiver = None
