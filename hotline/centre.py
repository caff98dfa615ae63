"""The hotline's own processes on one machine: FastAGI IVR, telephony service, JSON API,
the tickets worker, the SMS outbox worker, the desks' screen pop, the desk relay and the desk
push server.

`Centre` runs them on one background event loop (and the web server in its own thread, the
desk push server on a loop of its own: an open desk holds its stream all shift, which the
web server's few threads must not), for `hotline serve`, `hotline up` and the tests.
Asterisk itself is the sandbox's business.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from agent_desk.pop import ScreenPop
from agent_desk.push import PushServer
from agent_desk.relay import DeskRelay
from agent_desk.wallboard import BoardLoop
from channels.outbound.worker import OutboundWorker
from core.background import BackgroundLoop
from core.clock import SYSTEM_CLOCK, Clock
from core.config import Settings
from core.errors import HotlineError
from core.live import failing_fast
from core.memory import limit_malloc_arenas
from hotline.compose import build
from hotline.retention import RetentionLoop
from hotline.web import create_app
from hotline.webserver import WebServer
from ivr.fastagi import FastAgiServer
from ivr.server import start as start_ivr
from quality.keywords import KeywordFlags
from recordings.live import LiveSpeech
from telephony.service import TelephonyService
from tickets.worker import TicketsWorker

log = logging.getLogger(__name__)

# Seconds the centre's parts have to stop, together; with the Asterisk sandbox's and the
# embedded Redis's stop it stays within hotline.stopping.STOP_BOUND.
STOP_SECONDS = 5.0


def speech_off(settings: Settings) -> str | None:
    """The one line the centre says at its start about the speech it does not do, and the
    setting that turns each on; None when it does all. The parts that need a model say
    so only at debug level, so a centre without one says it once, not once per part."""
    speech = settings.speech
    if speech.model_path is None:
        return ("speech: transcripts, live transcription and spoken menu choices are off: "
                "speech.model_path is not set (a vosk model directory turns them on; "
                "README, 'Transcripts')")
    off = [(what, setting) for what, setting, on in (
        ("live transcription", "speech.live", speech.live),
        ("spoken menu choices", "ivr.spoken_choices", settings.ivr.spoken_choices)) if not on]
    if not off:
        return None
    return (f"speech: {' and '.join(what for what, _ in off)} "
            f"{'is' if len(off) == 1 else 'are'} off: "
            + ", ".join(f"{setting} is false" for _, setting in off))


class Centre:
    def __init__(self, settings: Settings, *, web: bool = True, worker: bool = True,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self.clock = clock  # every "now" of the centre's processes
        self.parts = build(settings, clock, seed_catalogue=True)
        self.sessions, self.bus = self.parts.sessions, self.parts.bus
        self.telephony = TelephonyService(settings, self.sessions, self.bus, clock)
        self.tickets = TicketsWorker(settings, self.sessions, self.bus, clock,
                                     policy=self.parts.policy)
        # the screen pop (来电弹屏): rings on the bus -> pops on the desks' feed
        self.pop = ScreenPop(settings, self.sessions, self.bus, clock)
        self.desk_relay = DeskRelay(self.bus)
        # the live wallboard (监控大屏): recomputed on call and seat events, pushed
        self.board = BoardLoop(settings, self.sessions, self.bus, clock)
        self._board_run: Any = None
        # the SMS outbox worker (短信下发), when sms.provider names a gateway
        self.sms_out: OutboundWorker | None = None
        self._sms_run: Any = None
        # daily: recordings past retention deleted, last week's quality sample; the disk
        self.retention = RetentionLoop(settings, self.sessions, self.bus, clock)
        self._retention_run: Any = None
        # keyword hits (speech.keyword) flag their calls for quality review (质检)
        self.quality_flags = KeywordFlags(self.sessions, self.bus, settings.calendar.timezone)
        self._flags_run: Any = None
        # live transcription (实时转写) of callers, when a speech model is set
        self.live_speech = (LiveSpeech(settings, self.sessions, self.bus, clock)
                            if LiveSpeech.wanted(settings) else None)
        self.with_web, self.with_worker = web, worker
        self.push: PushServer | None = None
        self._push_loop: BackgroundLoop | None = None
        self._relay_run: Any = None
        self.ivr: FastAgiServer | None = None
        self._loop: BackgroundLoop | None = None
        self._ivr_loop: BackgroundLoop | None = None
        self._stop: asyncio.Event | None = None
        self._telephony_run: Any = None
        self._tickets_run: Any = None
        self._pop_run: Any = None
        self._web: Any = None
        self._web_thread: threading.Thread | None = None

    def start(self, connect_timeout: float = 15) -> Centre:
        limit_malloc_arenas()  # before our threads: the soak's memory growth (core/memory)
        if (off := speech_off(self.settings)) is not None:
            log.warning(off)
        self._loop = BackgroundLoop("centre")
        # Callers' IVR sessions get a loop of their own: on the telephony service's loop they
        # waited behind bursts of AMI events, and a late prompt loses a caller's key.
        self._ivr_loop = BackgroundLoop("ivr")
        try:
            self.ivr = self._ivr_loop.run(
                start_ivr(self.settings, self.sessions, self.clock, self.parts.policy), 30)
            if self.live_speech is not None:  # up before the first call is tapped
                self.live_speech.start()
            self._stop = self._loop.run(_new_event())
            if self.parts.relay is not None:  # the outbox: what commits left while Redis was away
                self.parts.relay.start()
            self._telephony_run = asyncio.run_coroutine_threadsafe(
                self.telephony.run(self._stop), self._loop.loop)
            self._pop_run = asyncio.run_coroutine_threadsafe(
                self.pop.run(self._stop), self._loop.loop)
            if self.with_worker:
                self._tickets_run = asyncio.run_coroutine_threadsafe(
                    self.tickets.run(self._stop), self._loop.loop)
            self._relay_run = asyncio.run_coroutine_threadsafe(
                self.desk_relay.run(self._stop), self._loop.loop)
            self._board_run = asyncio.run_coroutine_threadsafe(
                self.board.run(self._stop), self._loop.loop)
            if self.with_worker and self.settings.sms.provider != "none":
                self.sms_out = OutboundWorker(self.settings, self.sessions, self.bus.client,
                                              self.clock).start()
                self._sms_run = asyncio.run_coroutine_threadsafe(
                    self.sms_out.run(self._stop), self._loop.loop)
            if self.with_worker:
                self._retention_run = asyncio.run_coroutine_threadsafe(
                    self.retention.run(self._stop), self._loop.loop)
                self._flags_run = asyncio.run_coroutine_threadsafe(
                    self.quality_flags.run(self._stop), self._loop.loop)
            if self.with_web:
                self._start_web()
                self._start_push()
            self._loop.run(asyncio.wait_for(self.telephony.connected.wait(), connect_timeout))
        except TimeoutError:
            self.stop()
            raise HotlineError(
                f"telephony: no AMI connection to {self.settings.pbx.bind_address}:"
                f"{self.settings.pbx.ami_port} within {connect_timeout:.0f} s "
                "(is the PBX up? 'hotline pbx up')") from None
        except BaseException:
            self.stop()
            raise
        return self

    def _start_web(self) -> None:
        app = create_app(self.settings, self.sessions, self.bus.client, self.clock,
                         self.parts.policy)
        # waitress, or cheroot with TLS when web.tls is on (hotline.webserver)
        self._web = WebServer(app, self.settings).start()

    def _start_push(self) -> None:
        self._push_loop = BackgroundLoop("desk-push")
        self.push = PushServer(self.settings, self.sessions, self.bus.client, self.clock)
        self._push_loop.run(self.push.start(), 15)

    def stop(self) -> None:
        """Stop every part within STOP_SECONDS together: the loops are told first and wind
        down while the servers close, each wait takes only what is left of the bound, and a
        part that overruns is named in the log and left to the process's end (the loops'
        threads are daemons). Safe to call twice and after a failed start."""
        deadline = time.monotonic() + STOP_SECONDS
        slow: list[str] = []

        def left() -> float:
            return max(0.1, deadline - time.monotonic())

        def wait(what: str, step: Any) -> None:
            began = time.monotonic()
            try:
                step()
            except Exception as exc:  # one part's failure never keeps the others running
                slow.append(f"{what} ({type(exc).__name__})")
            if time.monotonic() - began > 1:
                log.info("stopping %s took %.1f s", what, time.monotonic() - began)

        if self._loop is not None and self._stop is not None:
            self._loop.loop.call_soon_threadsafe(self._stop.set)
        if self._web is not None:
            wait("web", self._web.stop)
        self._web = self._web_thread = None
        if self._push_loop is not None:
            push, push_loop = self.push, self._push_loop
            if push is not None:
                wait("push", lambda: push_loop.run(push.close(), left()))
            self._push_loop.stop(left())
        self._push_loop = self.push = None
        if self._loop is None:
            return
        for what, run in (("telephony", self._telephony_run), ("tickets", self._tickets_run),
                          ("pop", self._pop_run), ("relay", self._relay_run),
                          ("board", self._board_run), ("sms", self._sms_run),
                          ("retention", self._retention_run), ("flags", self._flags_run)):
            if run is not None:
                wait(what, lambda run=run: run.result(left()))
        if self.live_speech is not None:
            live_speech = self.live_speech
            wait("live speech", lambda: live_speech.stop(min(2.0, left())))
        if self.sms_out is not None:
            wait("sms", self.sms_out.stop)
            self.sms_out = None
        if self.ivr is not None and self._ivr_loop is not None:
            ivr, ivr_loop = self.ivr, self._ivr_loop
            wait("ivr", lambda: ivr_loop.run(ivr.close(), left()))
        self.ivr = None
        if self._ivr_loop is not None:
            self._ivr_loop.stop(left())
            self._ivr_loop = None
        self._loop.stop(left())
        self._loop = None
        if self.parts.relay is not None:
            wait("event relay", lambda: self.parts.relay.stop(left()))  # type: ignore[union-attr]
        for client in (self.bus.client, failing_fast(self.bus.client)):
            client.connection_pool.disconnect()  # the pools' sockets now, not at collection
        taken = STOP_SECONDS - (deadline - time.monotonic())
        if slow:
            log.warning("centre stopped in %.1f s; did not stop cleanly: %s", taken,
                        ", ".join(slow))
        else:
            log.info("centre stopped in %.1f s", taken)

    def __enter__(self) -> Centre:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _new_event() -> asyncio.Event:
    return asyncio.Event()  # bound to the centre's loop
