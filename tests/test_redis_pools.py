"""core.live's pools (issue 15, the soak's open files): the failing-fast clients of one
client share one pool of their own (a pool keeps as many connections as were ever used at
once: one per user kept one such peak each). Against a real Redis server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from core.live import failing_fast
from tests.redis_server import RedisServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as running:
        yield running


def test_the_failing_fast_clients_of_a_client_share_one_pool_that_never_retries(
        server: RedisServer) -> None:
    client = redis.Redis.from_url(server.url, socket_connect_timeout=1)
    relay, live_state = failing_fast(client), failing_fast(client)
    assert relay.connection_pool is live_state.connection_pool
    assert relay.connection_pool is not client.connection_pool
    assert failing_fast(redis.Redis.from_url(server.url)).connection_pool \
        is not relay.connection_pool  # another client's: a pool of its own
    relay.set("k", "v")
    assert live_state.get("k") == b"v"
    server.stop()
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        live_state.get("k")
    # redis-py's default (3 retries with back-off) would hold the caller here
    assert time.monotonic() - started < 1.0
