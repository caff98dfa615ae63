"""Keyword hits become review samples (关键词命中 → 质检): a loop of the centre follows the
event bus through its own consumer group; each `speech.keyword` (a configured keyword heard
in a call, published by the speech side) flags its call (`service.flag_call`), and each
`call.ended` samples a call flagged while it was still up. Events published while the loop
is down wait for it in the group; one read but not handled is read again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from core.db import transaction
from core.events import EventBus
from quality import service

log = logging.getLogger(__name__)

EVENTS_GROUP = "quality-flags"
EVENT_TYPES = frozenset({"speech.keyword", "call.ended"})  # those `handle` acts on
POLL_SECONDS = 2.0  # not urgent: read without blocking a worker thread, then wait here


class KeywordFlags:
    def __init__(self, sessions: sessionmaker[Session], bus: EventBus, zone: str) -> None:
        self.sessions, self.bus, self.zone = sessions, bus, zone
        self.consumer = f"quality-{socket.gethostname()}"
        bus.ensure_group(EVENTS_GROUP)  # before anything is published for it to miss

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.follow)
            except Exception:  # Redis or the database away for a moment: events wait
                log.exception("quality flags failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_SECONDS)

    def follow(self, block_ms: int | None = None) -> list[str]:
        """Handle what the bus has (waiting up to `block_ms`); the call ids flagged or
        sampled. Each event is acknowledged once handled."""
        done: list[str] = []
        handled: list[str] = []
        try:
            for entry_id, event in self.bus.consume(EVENTS_GROUP, self.consumer,
                                                    block_ms=block_ms, types=EVENT_TYPES):
                call_id = self.handle(event)
                if call_id:
                    done.append(call_id)
                handled.append(entry_id)
        finally:  # what was handled, in one round trip (one that failed is read again)
            self.bus.ack(EVENTS_GROUP, *handled)
        return done

    def handle(self, event: dict[str, Any]) -> str | None:
        kind, call_id = event.get("type"), str(event.get("call_id") or "")
        if not call_id:
            return None
        if kind == "speech.keyword" and event.get("keyword"):
            with transaction(self.sessions) as session:
                service.flag_call(session, call_id, f"keyword:{event['keyword']}"[:200],
                                  zone=self.zone)
            return call_id
        if kind == "call.ended":
            with self.sessions() as session:  # a read: most calls were never flagged
                if not service.is_flagged(session, call_id):
                    return None
            with transaction(self.sessions) as session:
                sample = service.sample_flagged(session, call_id, zone=self.zone)
            return call_id if sample is not None else None
        return None
