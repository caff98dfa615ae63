"""The AMI link's state (AMI 链路状态), kept in Redis by the telephony service for whoever
asks without holding the link (the web's `/readyz`): a key the service refreshes every
second while it runs, with whether it holds a live AMI connection and since when. When the
service stops the key is removed; when it dies the key expires, so "no key" means no
telephony service, and an old refresh never passes for a live one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis

log = logging.getLogger(__name__)

KEY = "hotline:telephony:link"
REFRESH_SECONDS = 1.0
TTL_SECONDS = 5  # a service silent this long is taken for gone


@dataclass(frozen=True)
class LinkState:
    connected: bool
    since: float  # Unix time the link came up, or went down


def read(client: redis.Redis) -> LinkState | None:
    """The state the telephony service last published; None when no service runs.
    Raises redis.RedisError when Redis cannot be reached."""
    raw = client.get(KEY)
    if raw is None:
        return None
    try:
        data: dict[str, Any] = json.loads(raw)
        return LinkState(bool(data["connected"]), float(data["since"]))
    except (ValueError, KeyError, TypeError):
        return None


async def keep(client: redis.Redis, connected: asyncio.Event, stop: asyncio.Event) -> None:
    """Publish `connected` every REFRESH_SECONDS until `stop`, then remove the key."""
    state: bool | None = None
    since = time.time()
    failing = False
    while not stop.is_set():
        if connected.is_set() != state:
            state, since = connected.is_set(), time.time()
        payload = json.dumps({"connected": state, "since": round(since, 3)})
        try:
            await asyncio.to_thread(client.set, KEY, payload, ex=TTL_SECONDS)
            failing = False
        except redis.RedisError as exc:  # Redis away: readiness says so by itself
            if not failing:
                log.warning("AMI link state not published: %s", exc)
            failing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), REFRESH_SECONDS)
    with contextlib.suppress(redis.RedisError):
        await asyncio.to_thread(client.delete, KEY)
