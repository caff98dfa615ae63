"""Seat commands from the web: only an account may send one (the token checked before the
body is read); the wait for the telephony service is bounded and never holds the web
server's few threads for long; nobody answering is a 503 with the reason."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from waitress.server import create_server

from accounts.service import ROLES, add_user
from core.clock import FixedClock
from core.db import make_engine, session_factory, transaction, upgrade
from core.live import connect_redis
from hotline.web import create_app, stop_web_server
from telephony import commands
from tests import isolation
from tests.conftest import REDIS_SERVER_URL, make_settings, wait_until

NOW = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)


@pytest.fixture(params=["embedded", "server"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, redis.Redis]]:
    """The JSON API as the centre serves it (waitress, 4 threads), with no telephony
    service running: nobody will answer a seat command. A shift chief's token (may command
    any seat) is in SHIFT_CHIEF."""
    env = {} if request.param == "embedded" else {"REDIS_URL": REDIS_SERVER_URL}
    settings = make_settings(tmp_path, **env)
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    live = connect_redis(settings)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        token = add_user(session, "值班长", ["shift_chief"], False, ROLES, now=NOW)
    SHIFT_CHIEF["Authorization"] = f"Bearer {token}"
    app = create_app(settings, sessions, live, FixedClock(NOW))
    port = isolation.free_port()
    server = create_server(app, host="127.0.0.1", port=port, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", live
    finally:
        stop_web_server(server, thread)
        engine.dispose()


SHIFT_CHIEF: dict[str, str] = {}


def _post(url: str, headers: dict[str, str] | None = None, body: bytes = b"{}"
          ) -> tuple[int, dict[str, Any], dict[str, str], float]:
    started = time.monotonic()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", **(SHIFT_CHIEF if headers is None else headers)})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            status, body, headers = reply.status, json.loads(reply.read()), dict(reply.headers)
    except urllib.error.HTTPError as error:
        status, body, headers = error.code, json.loads(error.read()), dict(error.headers)
    return status, body, headers, time.monotonic() - started


def _commands_after(client: redis.Redis, after: str) -> int:
    """Commands appended to the telephony stream since the entry `after`."""
    answer = client.xread({commands.STREAM: after}, count=1000)
    return sum(len(entries) for _stream, entries in answer or [])


def test_nobody_answering_is_a_quick_503_and_the_api_keeps_answering(
        api: tuple[str, redis.Redis]) -> None:
    url, live = api
    last = live.xrevrange(commands.STREAM, count=1)
    after = last[0][0] if last else "0-0"
    with ThreadPoolExecutor(8) as pool:
        seats = [pool.submit(_post, f"{url}/api/v1/seats/8001/login") for _ in range(6)]
        # the seat requests hold every web thread (4) now: each has sent its command
        wait_until(lambda: _commands_after(live, after) >= 4, 5,
                   "the seat requests did not reach the telephony stream")
        started = time.monotonic()
        with urllib.request.urlopen(f"{url}/api/v1/openapi.json", timeout=30) as reply:
            assert reply.status == 200
        other = time.monotonic() - started
        answers = [f.result() for f in seats]
    for status, body, headers, took in answers:
        assert status == 503, body
        assert "no answer to seat.login" in body["detail"]
        assert headers.get("Retry-After") == "1"
        assert took < 8  # two rounds of 4 threads at most, each bounded at 3 s
    # another request waits for a free thread, never for a minute
    assert other < 7


def test_the_wait_stays_below_the_clients_socket_timeout() -> None:
    impatient = redis.Redis.from_url(REDIS_SERVER_URL, socket_timeout=2)
    started = time.monotonic()
    with pytest.raises(commands.Unavailable, match="no answer"):
        commands.send(impatient, "seat.login", {"agent": "8001"}, timeout=8)
    assert 0.9 < time.monotonic() - started < 2  # waited 1 s: below the 2 s socket timeout
    gone = redis.Redis(host="127.0.0.1", port=isolation.free_port(), socket_timeout=1,
                       socket_connect_timeout=1)
    with pytest.raises(commands.Unavailable, match="Redis cannot be reached"):
        commands.send(gone, "seat.login", {"agent": "8001"})


def test_a_seat_command_without_an_account_is_a_401_and_reaches_nobody(
        api: tuple[str, redis.Redis]) -> None:
    url, live = api
    last = live.xrevrange(commands.STREAM, count=1)
    after = last[0][0] if last else "0-0"
    for headers in ({}, {"Authorization": "Bearer nobody-holds-this"}):
        for action in ("login", "logout", "pause", "resume"):
            # bodies that would be a 400 if they were read: the token is checked first
            for sent in (b"[" * 100_000, b'{"reason": 5}'):
                status, body, answer_headers, _took = _post(
                    f"{url}/api/v1/seats/8001/{action}", headers, body=sent)
                assert status == 401, body
                named = {k.lower(): v for k, v in answer_headers.items()}
                assert named.get("www-authenticate", "").startswith("Bearer")
                assert body["error"] == "Unauthorized" and "Authorization" in body["detail"]
    assert _commands_after(live, after) == 0
