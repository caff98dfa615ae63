"""The IVR service: a FastAGI server running the entry flow and the keep-my-place callback
offer (`hotline ivr`)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from core import phones
from core.background import BackgroundLoop
from core.clock import SYSTEM_CLOCK, Clock
from core.config import Settings
from core.db import make_engine, session_factory, transaction, upgrade
from core.errors import HotlineError
from core.events import EventBus, publish_on_commit
from core.live import connect_redis
from ivr.engine import CallContext, key_pressed_while, run_flow
from ivr.fastagi import AgiSession, FastAgiServer
from ivr.flows import Flow, load_flow
from ivr.prompts import prompt_paths, prompt_texts
from ivr.spoken import CallEar, Ear
from recordings.catalogue import fingerprint
from telephony import callbacks, screening, surge
from tickets import service as orders
from tickets import surveys
from tickets.policy import Policy

log = logging.getLogger(__name__)
WAV_HEADER_BYTES = 44
SURVEY_TRIES = 2
IVR_THREADS = 16
T = TypeVar("T")
SURVEY_WAIT_MS = 6000


def flow_of(settings: Settings) -> Flow:
    path = Path(settings.ivr.flow_file) if settings.ivr.flow_file else None
    return load_flow(path, set(prompt_texts(settings)), settings.ivr.menu_timeout_seconds)


def build_server(settings: Settings, sessions: sessionmaker[Session],
                 clock: Clock = SYSTEM_CLOCK, policy: Policy | None = None) -> FastAgiServer:
    """The IVR's routes; every "now" they need (working hours, screening, surveys) is read
    from `clock`, and orders and surveys follow `policy` (by default the settings')."""
    flow = flow_of(settings)
    # The callers' lookups run on threads of their own: on the shared default pool they
    # queued behind back-office work (storing call records waits for recordings to
    # settle), and a welcome prompt late by a second loses the key a caller presses.
    pool = ThreadPoolExecutor(max_workers=IVR_THREADS, thread_name_prefix="ivr")

    async def off_loop(func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, partial(func, *args))

    ear = ear_of(settings, pool)
    prompts = prompt_paths(settings)
    repeat_window = timedelta(hours=settings.hotline.repeat_window_hours)
    policy = policy or Policy.from_settings(settings)

    def context_for(caller: str, unique_id: str) -> CallContext:
        now = clock.now()
        day = now.strftime("%Y/%m/%d")
        safe_id = re.sub(r"[^A-Za-z0-9_.-]", "_", unique_id)[:80] or "unknown"
        message_host = settings.storage.recordings_dir / "messages" / day / f"{safe_id}.wav"
        message_host.parent.mkdir(parents=True, exist_ok=True)
        message_pbx = (f"{settings.pbx.recordings_path_in_pbx.rstrip('/')}/messages/{day}/"
                       f"{safe_id}")

        async def message_left() -> None:
            await off_loop(order_from_message, caller, unique_id, message_host)

        call_ear = None if ear is None else CallEar(
            ear, settings.storage.recordings_dir / "answers" / day,
            f"{settings.pbx.recordings_path_in_pbx.rstrip('/')}/answers/{day}", safe_id)
        with sessions() as session:
            calendar = policy.calendar(session)  # the process's cache, not a read a call
            seen = screening.screen(session, caller, now, repeat_window,
                                    settings.hotline.repeat_threshold)
            on = surge.current(session)
        return CallContext(working_time=calendar.is_staffed(now, settings.ivr.staffed_hours),
                           blocked=seen.blocked,
                           priority_bonus=seen.priority_bonus, case_state=case_state,
                           message_path=message_pbx, message_left=message_left,
                           surge="" if on is None else surge.sound_in_pbx(
                               on, settings.pbx.prompts_path_in_pbx), ear=call_ear)

    def order_from_message(caller: str, unique_id: str, audio: Path) -> None:
        """A voice message left out of hours becomes a work order with the audio attached."""
        now = clock.now()
        recording = fingerprint(audio)
        if recording is None or recording.size <= WAV_HEADER_BYTES:
            log.info("call %s left no message", unique_id)
            return
        with transaction(sessions) as session:
            order = orders.open_order(
                session, appeal_type="report", channel="phone", actor="ivr",
                description="非工作时间语音留言，待听取录音后补录内容。(voice message)",
                citizen_phone=phones.normalise_or_empty(caller),
                call_id=unique_id, policy=policy, now=now)
            orders.attach(session, order.case_number, "audio", str(recording.path),
                          recording.sha256, recording.size, now=now)
        log.info("call %s: voice message became work order %s", unique_id, order.case_number)

    def state_of(case_number: str) -> str | None:
        with sessions() as session:
            found = orders.progress(session, case_number)
        return found.state if found else None

    async def case_state(case_number: str) -> str | None:
        return await off_loop(state_of, case_number)

    async def ivr_route(session: AgiSession) -> None:
        lookup = asyncio.ensure_future(
            off_loop(context_for, session.caller_id, session.unique_id))
        early_key = await key_pressed_while(session, lookup)
        context = await lookup
        try:
            decision = await run_flow(session, flow, context, prompts,
                                      settings.hotline.default_queue, early_key)
        finally:  # a spoken answer is heard, never kept
            if context.ear is not None:
                context.ear.discard()
        log.info("call %s from %s: %s %s", session.unique_id, session.caller_id,
                 decision.kind, decision.target)

    def request_callback(caller: str, queue: str, position: str, priority: str,
                         call_id: str) -> str:
        with transaction(sessions) as session:
            request = callbacks.create(session, caller, queue,
                                       int(position) if position.isdigit() else 1,
                                       int(priority) if priority.isdigit() else 0, call_id,
                                       now=clock.now())
            return request.id if request else ""

    async def callback_route(session: AgiSession) -> None:
        """A waiting caller pressed 1: be called back at the same place in the queue."""
        queue = await session.get_variable("HOTLINE_QUEUE")
        position = await session.get_variable("HOTLINE_QUEUE_LEFT_AT")
        priority = await session.get_variable("HOTLINE_PRIORITY")
        request_id = await off_loop(
            request_callback, session.caller_id, queue, position,
            priority, session.headers.get("agi_uniqueid", ""))
        if not request_id:  # no number to call back: the caller goes back to the queue
            return
        await session.set_variable("HOTLINE_CALLBACK_ID", request_id)
        await session.stream_file(prompts["callback_ok"])

    def settle_survey(attempt_id: str, rating: str) -> str:
        now = clock.now()
        with transaction(sessions) as session:
            if rating:
                return surveys.rate_call(session, attempt_id, int(rating), policy, now)
            surveys.call_failed(session, attempt_id, "answered without a rating", policy,
                                policy.calendar(session), now)
            return ""

    async def survey_route(session: AgiSession) -> None:
        """An answered survey call (回访): the citizen keys a rating 1-5."""
        attempt_id = await session.get_variable("HOTLINE_OUTBOUND")
        rating = ""
        try:
            for _ in range(SURVEY_TRIES):
                rating = await session.get_data(prompts["survey_ask"], SURVEY_WAIT_MS, 1)
                if rating in ("1", "2", "3", "4", "5"):
                    break
                rating = ""
                await session.stream_file(prompts["invalid"])
        finally:  # a hang-up mid-survey is settled too: retried later, never lost
            outcome = await off_loop(settle_survey, attempt_id, rating)
        log.info("survey %s: rating %s, %s", attempt_id, rating or "none", outcome or "retry")
        if rating:
            await session.stream_file(prompts["survey_thanks"])

    server = FastAgiServer({"ivr": ivr_route, "callback": callback_route,
                            "survey": survey_route},
                           on_close=lambda: pool.shutdown(wait=False, cancel_futures=True))
    server.loading = None if ear is None else ear.loading
    return server


_said: set[str] = set()


def ear_of(settings: Settings, pool: ThreadPoolExecutor) -> Ear | None:
    """The recogniser for spoken menu choices, loading on `pool`; None (noted once, at
    debug: the centre says what speech is off) when no speech model is set or spoken
    choices are switched off: keys only."""
    if not settings.ivr.spoken_choices or settings.speech.model_path is None:
        if "off" not in _said:
            _said.add("off")
            log.debug("ivr: spoken menu choices are off (%s); callers use keys",
                     "ivr.spoken_choices is false" if not settings.ivr.spoken_choices
                     else "speech.model_path is not set")
        return None
    return Ear(settings.speech.model_path, pool, settings.ivr.spoken_min_confidence,
               settings.ivr.spoken_pause_seconds)


async def start(settings: Settings, sessions: sessionmaker[Session], clock: Clock,
                policy: Policy) -> FastAgiServer:
    """The IVR listening on `ivr.fastagi_host:port`, on the parts the top composed
    (hotline.compose): sessions that publish their events, the clock, the policy."""
    server = build_server(settings, sessions, clock, policy)
    try:
        await server.start(settings.ivr.fastagi_host, settings.ivr.fastagi_port)
    except OSError as exc:
        raise HotlineError(
            f"ivr: cannot listen on {settings.ivr.fastagi_host}:{settings.ivr.fastagi_port} "
            f"(ivr.fastagi_port): {exc.strerror}") from None
    return server


class IvrInBackground:
    """The IVR server on a background loop, for the tests and benchmarks. A harness, not a
    process of the centre: given no sessions it opens the settings' database itself, its
    commits publishing on the settings' Redis as the centre's do (hotline.compose)."""

    def __init__(self, settings: Settings, clock: Clock = SYSTEM_CLOCK,
                 sessions: sessionmaker[Session] | None = None,
                 policy: Policy | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.sessions, self.policy = sessions, policy or Policy.from_settings(settings)
        self.server: FastAgiServer | None = None
        self._background: BackgroundLoop | None = None

    def __enter__(self) -> FastAgiServer:
        if self.sessions is None:
            engine = make_engine(self.settings.storage.database_url)
            upgrade(engine)
            self.sessions = session_factory(engine)
            publish_on_commit(self.sessions, EventBus(connect_redis(self.settings)))
        self._background = BackgroundLoop("fastagi")
        try:
            self.server = self._background.run(
                start(self.settings, self.sessions, self.clock, self.policy), 30)
        except BaseException:
            self._background.stop()
            raise
        return self.server

    def __exit__(self, *exc: object) -> None:
        if self._background is not None and self.server is not None:
            self._background.run(self.server.close(), 10)
        if self._background is not None:
            self._background.stop()
