"""The IVR service: a FastAGI server with the hotline's routes (`hotline ivr`)."""

from __future__ import annotations

import asyncio
import logging

from hotline.background import BackgroundLoop
from hotline.config import Settings
from hotline.errors import HotlineError
from ivr.entry import entry
from ivr.fastagi import AgiSession, FastAgiServer

log = logging.getLogger(__name__)


def build_server(settings: Settings) -> FastAgiServer:
    async def ivr_route(session: AgiSession) -> None:
        queue = await entry(session, settings)
        log.info("call %s from %s routed to %s", session.unique_id, session.caller_id, queue)

    return FastAgiServer({"ivr": ivr_route})


async def start(settings: Settings) -> FastAgiServer:
    server = build_server(settings)
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
    """The IVR server on a background loop, for the demo and the tests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server: FastAgiServer | None = None
        self._background: BackgroundLoop | None = None

    def __enter__(self) -> FastAgiServer:
        self._background = BackgroundLoop("fastagi")
        try:
            self.server = self._background.run(start(self.settings), 10)
        except BaseException:
            self._background.stop()
            raise
        return self.server

    def __exit__(self, *exc: object) -> None:
        if self._background is not None and self.server is not None:
            self._background.run(self.server.close(), 10)
        if self._background is not None:
            self._background.stop()

