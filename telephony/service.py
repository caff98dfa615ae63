"""The telephony service: the one process that holds the AMI connection.

It feeds every AMI event to the call model, publishes the domain events on the bus, and
stores each finished call once, with its recording's checksum. After every (re)connect it
asks Asterisk which channels exist (CoreShowChannels) so calls that ended while the link
was down are closed and none is left as a ghost. Reconnects back off up to 30 s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from hotline.config import Settings
from hotline.db import transaction
from hotline.events import EventBus
from recordings.catalogue import fingerprint, host_path
from telephony import records
from telephony.ami import AmiClient, AmiError
from telephony.calls import CallTracker
from telephony.events import CallEnded, DomainEvent

log = logging.getLogger(__name__)

BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0


class TelephonyService:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], bus: EventBus
                 ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.bus = bus
        self.tracker = CallTracker(settings.hotline.short_abandon_seconds)
        self.client: AmiClient | None = None
        self.connected = asyncio.Event()
        self.connections = 0
        self.stored = 0
        self._pending: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until `stop` is set."""
        backoff = BACKOFF_FIRST
        while not stop.is_set():
            lost = asyncio.Event()
            client = AmiClient(self.settings)
            try:
                await client.connect(timeout=5, on_disconnect=lost.set)
            except AmiError as exc:
                log.warning("%s; retrying in %.0f s", exc, backoff)
                await _wait_either(stop, asyncio.Event(), backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_FIRST
            self.client = client
            client.on_event("*", self._on_ami_event)
            try:
                await self._resync(client)
            except AmiError as exc:
                log.warning("resync failed: %s", exc)
                client.close()
                continue
            self.connections += 1
            self.connected.set()
            await _wait_either(stop, lost)
            self.connected.clear()
            client.close()
            self.client = None
        await self.drain()

    async def drain(self) -> None:
        """Wait for records still being written."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def live_calls(self) -> list[str]:
        return sorted(self.tracker.calls)

    async def _resync(self, client: AmiClient) -> None:
        answer = await client.action({"Action": "CoreShowChannels"}, timeout=10, as_list=True)
        channels = [dict(m) for m in answer if m.get("Event") == "CoreShowChannel"]
        for event in self.tracker.resync(channels, time.time()):
            self._emit(event)
        log.info("AMI resync: %d channels, %d live calls", len(channels),
                 len(self.tracker.calls))

    def _on_ami_event(self, _manager: Any, message: Any) -> None:
        event = {str(k): str(v) for k, v in message.items()}
        for domain_event in self.tracker.feed(event):
            self._emit(domain_event)

    def _emit(self, event: DomainEvent) -> None:
        if isinstance(event, CallEnded):
            # Storing waits for the recording to be closed: off the event loop.
            task = asyncio.get_running_loop().create_task(self._finish(event))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            return
        self.bus.publish(event)

    async def _finish(self, event: CallEnded) -> None:
        try:
            record = await asyncio.to_thread(self._store, event.record)
            self.bus.publish(CallEnded(call_id=event.call_id, at=event.at, record=record))
        except Exception:
            log.exception("could not store call %s", event.call_id)

    def _store(self, record: dict[str, Any]) -> dict[str, Any]:
        recording = None
        if record.get("recording"):
            path = host_path(self.settings, record["recording"])
            recording = fingerprint(path) if path is not None else None
        with transaction(self.sessions) as session:
            if records.store_call(session, record, recording):
                self.stored += 1
            stored = records.get_call(session, record["call_id"])
        return stored or record


async def _wait_either(stop: asyncio.Event, other: asyncio.Event,
                       timeout: float | None = None) -> None:
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(other.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
