"""A bus consumer woken by a burst reads it in a few reads, not one a event, and loses
nothing: the desk relay's loop against a real Redis, a call's worth of events at a time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis

from agent_desk import feed
from agent_desk.relay import EVENTS_GROUP, DeskRelay
from core.events import EventBus
from telephony.events import AgentConnected
from tests.conftest import REDIS_SERVER_URL

AGENT = "7993"
BURST = 20


def test_a_burst_of_events_is_relayed_whole_in_a_few_reads() -> None:
    client = redis.Redis.from_url(REDIS_SERVER_URL)
    bus = EventBus(client, stream=f"test-burst-{time.monotonic_ns()}")
    relay = DeskRelay(bus)
    reads: list[int] = []
    consume = bus.consume

    def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(1)
        return consume(*args, **kwargs)

    bus.consume = counted  # type: ignore[method-assign]
    newest = client.xrevrange(feed.DESK_STREAM, count=1)
    start = newest[0][0].decode() if newest else "0-0"

    def relayed() -> list[str]:
        return [fields[b"data"].decode() for _id, fields in
                client.xrange(feed.DESK_STREAM, f"({start}", "+")
                if fields[b"agent"].decode() == AGENT]

    async def burst() -> None:
        stop = asyncio.Event()
        loop = asyncio.create_task(relay.run(stop))
        for n in range(BURST):  # 10 ms apart: one read each, were each read at once
            event = AgentConnected(at=1000.0 + n, call_id=f"burst-{n}", queue="intake",
                                   agent=AGENT, wait_seconds=1.0)
            bus.append(event.id, event.type, event.as_dict())
            await asyncio.sleep(0.01)
        deadline = time.monotonic() + 10
        while len(relayed()) < BURST:
            assert time.monotonic() < deadline, relayed()
            await asyncio.sleep(0.05)
        stop.set()
        await loop

    try:
        asyncio.run(burst())
        entries = relayed()
        assert len(entries) == BURST  # every one relayed, once
        assert all(f'"call_id": "burst-{n}"' in entry for n, entry in enumerate(entries))
        assert client.xpending(bus.stream, EVENTS_GROUP)["pending"] == 0  # all acknowledged
        # 20 events over 0.2 s, gathered 0.1 s after each read that found some: ~3 reads
        # for the burst, and the reads that waited for more after it
        assert len(reads) <= 8, len(reads)
    finally:
        client.delete(bus.stream, *client.keys(f"{bus.stream}:*"))
        client.close()
