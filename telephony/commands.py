"""Telephony commands from other processes (the web desk, the CLI), over a Redis stream.

Only the telephony service writes to AMI. Others append a command to the stream and wait
for the reply on a list of their own; the service reads the stream in a consumer group, so
a command is handled once even if several service processes run.

The wait is bounded below the Redis client's socket timeout (a longer BLPOP would end in a
socket error, and redis-py's retries made a 5 s wait last a minute), and a command nobody
answered, or that the service could not carry out for now (the AMI link is down, Redis is
away), is `Unavailable`: try again later (HTTP 503), unlike a refusal (409).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import redis

from core.errors import HotlineError

STREAM = "hotline:telephony:commands"
MAXLEN = 10_000  # commands kept on the stream (capped on XADD)
GROUP = "telephony"
REPLY = "hotline:telephony:reply:{}"
REPLY_TTL = 60


class CommandError(HotlineError):
    """The command was refused (unknown agent, bad reason)."""

    status = 409


class Unavailable(CommandError):
    """Nobody could carry the command out now (no answer, the AMI link or Redis is down);
    the message says why. Worth trying again."""

    status = 503


MARGIN = 1.0  # seconds the wait stays below the client's socket timeout


def wait_bound(client: redis.Redis, wanted: float) -> float:
    """How long a blocking read on `client` may wait: `wanted`, kept below its socket
    timeout."""
    socket_timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
    if socket_timeout:
        wanted = min(wanted, float(socket_timeout) - MARGIN)
    return max(0.1, wanted)


def send(client: redis.Redis, name: str, args: dict[str, Any], timeout: float = 8
         ) -> dict[str, Any]:
    """Send a command and wait at most `timeout` (less when the client's socket timeout is
    shorter) for its reply; raises CommandError when refused, Unavailable when nobody could
    carry it out."""
    wait = wait_bound(client, timeout)
    request_id = uuid.uuid4().hex
    try:
        # past this moment the sender has given up: the service must not act on it any more
        # (a survey call placed after its attempt was written off would ring twice)
        client.xadd(STREAM, {"id": request_id, "name": name,
                             "args": json.dumps(args, ensure_ascii=False),
                             "expires": f"{time.time() + wait:.3f}"},
                    maxlen=MAXLEN, approximate=True)
        answer = client.blpop([REPLY.format(request_id)], timeout=wait)
    except redis.RedisError as exc:
        raise Unavailable(f"telephony: Redis cannot be reached ({type(exc).__name__}); "
                          "try again") from None
    if answer is None:
        raise Unavailable(f"telephony: no answer to {name} within {wait:.0f} s "
                          "(is the telephony service running? 'hotline serve')")
    reply = json.loads(answer[1])
    if not reply.get("ok"):
        error_class = Unavailable if reply.get("unavailable") else CommandError
        raise error_class(f"telephony: {name} refused: {reply.get('error')}")
    result: dict[str, Any] = reply.get("result") or {}
    return result


def ensure_group(client: redis.Redis) -> None:
    try:
        client.xgroup_create(STREAM, GROUP, id="$", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def receive(client: redis.Redis, consumer: str, block_ms: int = 1000
            ) -> list[tuple[str, str, str, dict[str, Any]]]:
    """[(entry id, request id, name, args)] not yet handled by this group; a command its
    sender has stopped waiting for comes with args {"__expired__": True}."""
    answer = client.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=20, block=block_ms)
    out = []
    for _stream, entries in answer or []:
        for entry_id, fields in entries:
            try:
                args = json.loads(fields.get(b"args", b"{}"))
            except ValueError:
                args = None
            if not isinstance(args, dict):
                args = {"__malformed__": True}
            try:
                if float(fields.get(b"expires", b"inf")) < time.time():
                    args = {"__expired__": True}
            except ValueError:
                args = {"__malformed__": True}
            out.append((_s(entry_id), _s(fields.get(b"id", b"")), _s(fields.get(b"name", b"")),
                        args))
    return out


def reply(client: redis.Redis, entry_id: str, request_id: str, *, ok: bool,
          result: dict[str, Any] | None = None, error: str = "",
          unavailable: bool = False) -> None:
    if request_id:
        key = REPLY.format(request_id)
        pipe = client.pipeline()
        pipe.rpush(key, json.dumps({"ok": ok, "result": result or {}, "error": error,
                                    "unavailable": unavailable}, ensure_ascii=False))
        pipe.expire(key, REPLY_TTL)
        pipe.execute()
    client.xack(STREAM, GROUP, entry_id)


def _s(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
