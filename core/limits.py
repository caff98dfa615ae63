"""Rate limits (限流): one Flask-Limiter per web app, counting in the app's own Redis so that
every web process counts together (and a test's centre apart from another's).

An adapter checks a limit where it knows what to count by: an address, a phone number, an API
key. `enforce("5/minute", scope="portal-code", key=phone)` inside a view; over the limit the
request ends with 429 and `Retry-After`, before anything of it is stored.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from flask import Flask, current_app
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from werkzeug.exceptions import TooManyRequests

EXTENSION = "hotline.limiter"


def init_app(app: Flask, live: redis.Redis | None) -> Limiter:
    """Bind the app's limiter to `live`; an app with no Redis (one built only to write the
    OpenAPI document) counts in its own memory."""
    where: dict[str, Any] = (
        {"storage_uri": "memory://"} if live is None else
        {"storage_uri": "redis://", "storage_options": {"connection_pool": live.connection_pool}})
    # headers_enabled=False: Flask-Limiter would put its own Retry-After (the window's
    # reset) on every response whose request was counted, a 200 or a 503 too; enforce()
    # says Retry-After on the 429 alone.
    # swallow_errors: with Redis away the limits are not counted and requests go on (orders
    # are still taken, issue 15), never a 503 for the limiter's sake
    limiter = Limiter(get_remote_address, app=app, strategy="moving-window",
                      headers_enabled=False, key_prefix="hotline-limits", swallow_errors=True,
                      **where)
    app.extensions[EXTENSION] = limiter
    return limiter


def enforce(spec: str, *, scope: str, key: str | None = None) -> None:
    """Count this request against `spec` ("5/minute;20/hour") in `scope`, by `key` or, when
    none is given, by the client's address; raises 429 (Retry-After) when over."""
    limiter: Limiter = current_app.extensions[EXTENSION]
    try:
        with limiter.limit(spec, scope=scope, key_func=(lambda: key) if key else None):
            pass
    except RateLimitExceeded as exc:
        breached = limiter.current_limit
        wait = int(breached.reset_at - time.time()) if breached is not None else 1
        raise TooManyRequests(exc.description, retry_after=max(1, wait)) from None
