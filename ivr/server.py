"""The IVR service: a FastAGI server running the entry flow and the keep-my-place callback
offer (`hotline ivr`)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from hotline.background import BackgroundLoop
from hotline.config import Settings
from hotline.db import make_engine, session_factory, transaction, upgrade
from hotline.errors import HotlineError
from ivr.engine import CallContext, run_flow
from ivr.fastagi import AgiSession, FastAgiServer
from ivr.flows import Flow, load_flow
from ivr.prompts import PROMPTS, prompt_paths
from telephony import callbacks, screening
from tickets import service as orders
from tickets.workcalendar import load_calendar

log = logging.getLogger(__name__)


def flow_of(settings: Settings) -> Flow:
    path = Path(settings.ivr.flow_file) if settings.ivr.flow_file else None
    return load_flow(path, set(PROMPTS), settings.ivr.menu_timeout_seconds)


def build_server(settings: Settings, sessions: sessionmaker[Session]) -> FastAgiServer:
    flow = flow_of(settings)
    prompts = prompt_paths(settings)
    repeat_window = timedelta(hours=settings.hotline.repeat_window_hours)

    def context_for(caller: str) -> CallContext:
        now = datetime.now(UTC)
        with sessions() as session:
            calendar = load_calendar(session, settings.calendar.timezone,
                                     settings.calendar.working_hours)
            seen = screening.screen(session, caller, now, repeat_window,
                                    settings.hotline.repeat_threshold)
        return CallContext(working_time=calendar.is_working_time(now), blocked=seen.blocked,
                           priority_bonus=seen.priority_bonus, case_state=case_state)

    def state_of(case_number: str) -> str | None:
        with sessions() as session:
            found = orders.progress(session, case_number)
        return found.state if found else None

    async def case_state(case_number: str) -> str | None:
        return await asyncio.to_thread(state_of, case_number)

    async def ivr_route(session: AgiSession) -> None:
        context = await asyncio.to_thread(context_for, session.caller_id)
        decision = await run_flow(session, flow, context, prompts,
                                  settings.hotline.default_queue)
        log.info("call %s from %s: %s %s", session.unique_id, session.caller_id,
                 decision.kind, decision.target)

    def request_callback(caller: str, queue: str, position: str, priority: str,
                         call_id: str) -> str:
        with transaction(sessions) as session:
            request = callbacks.create(session, caller, queue,
                                       int(position) if position.isdigit() else 1,
                                       int(priority) if priority.isdigit() else 0, call_id)
            return request.id if request else ""

    async def callback_route(session: AgiSession) -> None:
        """A waiting caller pressed 1: be called back at the same place in the queue."""
        queue = await session.get_variable("HOTLINE_QUEUE")
        position = await session.get_variable("HOTLINE_QUEUE_LEFT_AT")
        priority = await session.get_variable("HOTLINE_PRIORITY")
        request_id = await asyncio.to_thread(
            request_callback, screening.normalise(session.caller_id), queue, position,
            priority, session.headers.get("agi_uniqueid", ""))
        if not request_id:  # no number to call back: the caller goes back to the queue
            return
        await session.set_variable("HOTLINE_CALLBACK_ID", request_id)
        await session.stream_file(prompts["callback_ok"])

    return FastAgiServer({"ivr": ivr_route, "callback": callback_route})


async def start(settings: Settings, sessions: sessionmaker[Session] | None = None
                ) -> FastAgiServer:
    if sessions is None:
        engine = make_engine(settings.storage.database_url)
        await asyncio.to_thread(upgrade, engine)
        sessions = session_factory(engine)
    server = build_server(settings, sessions)
    try:
        await server.start(settings.ivr.fastagi_host, settings.ivr.fastagi_port)
    except OSError as exc:
        raise HotlineError(
            f"ivr: cannot listen on {settings.ivr.fastagi_host}:{settings.ivr.fastagi_port} "
            f"(ivr.fastagi_port): {exc.strerror}") from None
    return server


async def serve_forever(settings: Settings) -> None:
    server = await start(settings)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


class IvrInBackground:
    """The IVR server on a background loop, for the tests and benchmarks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server: FastAgiServer | None = None
        self._background: BackgroundLoop | None = None

    def __enter__(self) -> FastAgiServer:
        self._background = BackgroundLoop("fastagi")
        try:
            self.server = self._background.run(start(self.settings), 30)
        except BaseException:
            self._background.stop()
            raise
        return self.server

    def __exit__(self, *exc: object) -> None:
        if self._background is not None and self.server is not None:
            self._background.run(self.server.close(), 10)
        if self._background is not None:
            self._background.stop()
