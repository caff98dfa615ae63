"""/healthz and /readyz against a real centre on its own Asterisk sandbox: all parts up,
then the PBX stopped (the AMI link down: 503 naming it, with Retry-After, while /healthz
stays 200), then the PBX back (ready again); and Redis, the IVR and the push server away.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import redis

from asterisk_conf.render import render
from asterisk_conf.sandbox import Sandbox
from core.clock import SYSTEM_CLOCK
from core.db import make_engine, session_factory, transaction, upgrade
from hotline.centre import Centre
from hotline.web import create_app
from telephony import directory
from tests import isolation
from tests.conftest import make_settings


def _get(port: int, path: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, json.loads(reply.read()), dict(reply.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


def _until(port: int, wanted: int, seconds: float) -> tuple[int, dict[str, Any], dict[str, str]]:
    deadline = time.monotonic() + seconds
    while True:
        answer = _get(port, "/readyz")
        if answer[0] == wanted or time.monotonic() > deadline:
            return answer
        time.sleep(0.5)


def test_readyz_names_the_ami_link_when_the_pbx_stops_and_healthz_stays_up(
        pbx, tmp_path: Path) -> None:
    rtp = isolation.rtp_range(100)
    web_port = isolation.free_port()
    settings = make_settings(
        tmp_path / "centre",
        HOTLINE_PBX_SIP_PORT=str(isolation.free_port(socket.SOCK_DGRAM)),
        HOTLINE_PBX_AMI_PORT=str(isolation.free_port()),
        HOTLINE_PBX_WEBRTC_PORT=str(isolation.free_port()),
        HOTLINE_PBX_RTP_PORT_START=str(rtp[0]), HOTLINE_PBX_RTP_PORT_END=str(rtp[1]),
        HOTLINE_IVR_FASTAGI_PORT=str(isolation.free_port()),
        HOTLINE_WEB_PORT=str(web_port), HOTLINE_WEB_PUSH_PORT=str(isolation.free_port()))
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    with transaction(session_factory(engine)) as session:
        snapshot = directory.snapshot(session)
    sandbox = Sandbox(settings)
    sandbox.up(render(settings, snapshot))
    try:
        with Centre(settings):
            status, body, _headers = _until(web_port, 200, 10)
            assert status == 200, body
            assert body["ready"] is True and body["down"] == []
            assert sorted(body["parts"]) == ["ami", "database", "ivr", "push", "redis"]
            assert body["parts"]["ami"]["detail"].startswith("connected since ")

            sandbox.down()  # the PBX goes away: the telephony service loses its link
            status, body, headers = _until(web_port, 503, 10)
            assert status == 503, body
            assert body["ready"] is False and body["down"] == ["ami"]
            assert "no AMI connection" in body["parts"]["ami"]["detail"]
            assert headers["Retry-After"] == "5"
            assert all(body["parts"][p]["ok"] for p in ("database", "redis", "ivr", "push"))
            assert _get(web_port, "/healthz")[:2] == (200, {"status": "ok"})

            sandbox.up(render(settings, snapshot))  # back: the service reconnects itself
            status, body, _headers = _until(web_port, 200, 40)
            assert status == 200 and body["down"] == [], body
    finally:
        sandbox.down()


def test_readyz_without_redis_ivr_and_push_names_each(tmp_path: Path) -> None:
    """An app whose Redis, FastAGI and push ports have nothing listening (closed ports)."""
    closed = [isolation.free_port() for _ in range(3)]
    settings = make_settings(tmp_path / "lonely", HOTLINE_IVR_FASTAGI_PORT=str(closed[0]),
                             HOTLINE_WEB_PUSH_PORT=str(closed[1]))
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    away = redis.Redis(port=closed[2], socket_timeout=1, socket_connect_timeout=1)
    app = create_app(settings, session_factory(engine), away, SYSTEM_CLOCK)
    client = app.test_client()
    began = time.monotonic()
    reply = client.get("/readyz")
    assert time.monotonic() - began < 5  # no retry back-off on the way
    assert reply.status_code == 503
    assert reply.headers["Retry-After"] == "5"
    body = reply.get_json()
    assert body["down"] == ["redis", "ami", "ivr", "push"]
    assert body["parts"]["database"] == {"ok": True, "detail": "answering"}
    assert body["parts"]["ami"]["detail"].startswith("unknown: Redis")
    assert "connection refused" in body["parts"]["ivr"]["detail"]
    assert client.get("/healthz").status_code == 200
    document = client.get("/api/v1/openapi.json").get_json()
    for path in ("/healthz", "/readyz"):  # documented, and open to anyone
        assert "security" not in document["paths"][path]["get"]
