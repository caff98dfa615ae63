"""Is the centre up, and is it ready to take calls (健康检查)? For load balancers, systemd
watchers and the operator's monitoring, without an account.

`/healthz` answers 200 whenever this process serves HTTP at all: it checks nothing else, so a
restart is never triggered by a part that is down for reasons a restart cannot cure.
`/readyz` asks each part the centre needs, as a client of it would, and says which is down:

- database: a `SELECT 1` through the centre's own sessions;
- redis: a PING on a client that does not retry (the app's retries with back-off);
- ami: the AMI link as the telephony service last published it (`telephony.link`): up,
  down since when, or no telephony service at all;
- ivr: the FastAGI server accepts a connection at `ivr.fastagi_host:fastagi_port`;
- push: the desk push server accepts a connection at `web.host:push_port`.

All up: 200. One down: 503 with `Retry-After` and the parts that are down named in `down`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import redis
from flask import current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import Field
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from accounts.access import PUBLIC, requires
from core import outbox
from core.config import Settings
from core.schemas import Out
from telephony import link

PROBE_SECONDS = 1.0  # each part must answer within this
RETRY_AFTER_SECONDS = 5
PARTS = ("database", "redis", "ami", "ivr", "push")

health_api = APIBlueprint("health", __name__, abp_tags=[Tag(name="health")])


class Alive(Out):
    status: str = Field(description="always ok: this process serves HTTP")


class Part(Out):
    ok: bool
    detail: str = Field(description="what was seen, or why the part is down")


class Readiness(Out):
    ready: bool
    down: list[str] = Field(description="the parts that are down (database, redis, ami, "
                                        "ivr, push)")
    parts: dict[str, Part]


@health_api.get("/healthz", summary="The process is up (always 200 while it serves)",
                responses={200: Alive})
@requires(PUBLIC)
def healthz() -> Any:
    return {"status": "ok"}


@health_api.get("/readyz", summary="Every part the centre needs is up; 503 names those down",
                responses={200: Readiness, 503: Readiness})
@requires(PUBLIC)
def readyz() -> Any:
    settings: Settings = current_app.extensions["hotline.settings"]
    probes: dict[str, Callable[[], str]] = {
        "database": lambda: _database(current_app.extensions["hotline.sessions"]),
        "redis": lambda: _redis(_probe_client()),
        "ami": lambda: _ami(_probe_client()),
        "ivr": lambda: _listening(settings.ivr.fastagi_host, settings.ivr.fastagi_port),
        "push": lambda: _listening(settings.web.host, settings.web.push_port),
    }
    parts: dict[str, dict[str, Any]] = {}
    for name, probe in probes.items():
        try:
            parts[name] = {"ok": True, "detail": probe()}
        except Exception as exc:  # whatever it is, the part is down and says why
            parts[name] = {"ok": False, "detail": _reason(exc)}
    down = [name for name in PARTS if not parts[name]["ok"]]
    body = Readiness.model_validate({"ready": not down, "down": down, "parts": parts})
    response = jsonify(body.model_dump(mode="json"))
    if down:
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class PartDown(Exception):
    """The part answered, and said it is not working."""


def _database(sessions: sessionmaker[Session]) -> str:
    with sessions() as session:
        session.execute(text("SELECT 1"))
        waiting = outbox.backlog(session)  # the outbox's queue: grows while Redis is away
    return f"answering; {waiting} events wait in the outbox" if waiting else "answering"


def _probe_client() -> redis.Redis:
    """A client of the app's Redis that gives up at once: a readiness answer must be quick,
    and the app's own client retries with back-off for seconds."""
    probe: redis.Redis | None = current_app.extensions.get("hotline.health.redis")
    if probe is None:
        live: redis.Redis = current_app.extensions["hotline.redis"]
        kwargs = dict(live.connection_pool.connection_kwargs)
        kwargs.update(socket_timeout=PROBE_SECONDS, socket_connect_timeout=PROBE_SECONDS,
                      retry=Retry(NoBackoff(), 0))
        probe = redis.Redis(connection_pool=live.connection_pool.__class__(
            connection_class=live.connection_pool.connection_class, **kwargs))
        current_app.extensions["hotline.health.redis"] = probe
    return probe


def _redis(client: redis.Redis) -> str:
    client.ping()
    return "answering"


def _ami(client: redis.Redis) -> str:
    try:
        state = link.read(client)
    except redis.RedisError:
        raise PartDown("unknown: Redis, where the telephony service says it, cannot be "
                       "reached") from None
    if state is None:
        raise PartDown("no telephony service running ('hotline serve')")
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.since))
    if not state.connected:
        raise PartDown(f"the telephony service has no AMI connection (down since {since})")
    return f"connected since {since}"


def _listening(host: str, port: int) -> str:
    with socket.create_connection((host, port), timeout=PROBE_SECONDS):
        pass
    return f"listening on {host}:{port}"


def _reason(exc: Exception) -> str:
    if isinstance(exc, PartDown):
        return str(exc)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: nothing listens there"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"no answer within {PROBE_SECONDS:.0f} s"
    words = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {words}" if words else type(exc).__name__
