"""core.live's pools (issue 15, the soak's open files): the failing-fast clients of one
client share one pool of their own, and a long-running process opens its connections at
its start, so that a shift's new peaks of use open none. Against a real Redis server; the
connection counts are the server's own (CLIENT LIST)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from core.live import failing_fast, keep_open
from tests.redis_server import RedisServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as running:
        yield running


def _connections(server: RedisServer) -> int:
    """Client connections the server has, not counting the one that asks."""
    with redis.Redis.from_url(server.url) as observer:
        return len(observer.client_list()) - 1


def _block_at_once(client: redis.Redis, users: int) -> None:
    """`users` threads each hold a connection of `client` at the same time (BLPOP)."""
    threads = [threading.Thread(target=client.blpop, args=(f"nothing-{n}", 0.5))
               for n in range(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


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


def test_connections_kept_open_serve_as_many_users_at_once_without_opening_more(
        server: RedisServer) -> None:
    client = redis.Redis.from_url(server.url)
    assert _connections(server) == 0
    keep_open(client, 4)
    assert _connections(server) == 4  # opened at once, and kept
    _block_at_once(client, 4)
    assert _connections(server) == 4
    _block_at_once(client, 5)  # a fifth user at once: one more
    assert _connections(server) == 5
