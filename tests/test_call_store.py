"""A finished call is stored in one transaction: its record, its CallEnded, and the
catalogue rows of its recordings (the mixed file and each leg found beside it). Filing the
recordings may fail; the record and its announcement must survive that. Checksums are
computed here from the bytes written, not by the code under test."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from core.clock import FixedClock
from core.db import make_engine, session_factory, upgrade
from core.events import EventBus, publish_on_commit
from core.live import connect_redis
from recordings.catalogue import CallFile
from telephony import records
from telephony import service as telephony_service
from telephony.events import CallEnded
from telephony.service import TelephonyService
from tests.conftest import REDIS_SERVER_URL, make_settings

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
MIXED = b"RIFF mixed audio " * 64
CALLER = b"RIFF caller leg " * 32


def _record(call_id: str, recording: str) -> dict[str, Any]:
    epoch = NOW.timestamp() - 120
    return {
        "call_id": call_id, "caller_number": "13566667777", "caller_name": "",
        "entry_number": "12319", "started_at": epoch, "ended_at": epoch + 60,
        "duration_seconds": 60, "outcome": "answered", "queue": "intake",
        "queue_position": 1, "wait_seconds": 3, "short_abandon": False, "agent": "8001",
        "connected_at": epoch + 3, "talk_seconds": 57, "hold_seconds": 0,
        "hangup_cause": 16, "hangup_cause_text": "", "ivr_path": [], "agent_attempts": [],
        "transfers": [], "legs": [], "recording": recording, "incomplete": False}


@pytest.fixture
def centre(database_url: str, tmp_path: Path) -> Any:
    settings = make_settings(tmp_path, DATABASE_URL=database_url,
                             REDIS_URL=REDIS_SERVER_URL)
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    bus = EventBus(connect_redis(settings), stream=f"store-{uuid.uuid4().hex}")
    publish_on_commit(sessions, bus)
    service = TelephonyService(settings, sessions, bus, FixedClock(NOW))
    try:
        yield settings, sessions, bus, service
    finally:
        bus.client.delete(bus.stream, *bus.client.keys(f"{bus.stream}:*"))
        engine.dispose()


def _recorded_call(settings: Any, call_id: str) -> dict[str, Any]:
    """A call whose mixed recording and caller's leg (no agent's leg) are on disk."""
    folder = settings.storage.recordings_dir / "2026" / "11"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{call_id}.wav").write_bytes(MIXED)
    (folder / f"{call_id}-caller.wav").write_bytes(CALLER)
    return _record(call_id, f"{settings.pbx.recordings_path_in_pbx}/2026/11/{call_id}.wav")


def _call_id() -> str:
    """A call id of this run alone: the bus takes an event id once, across runs."""
    return f"1764{uuid.uuid4().int % 10**6:06d}.{uuid.uuid4().int % 1000}"


def _announced(bus: EventBus) -> list[str]:
    return [e["call_id"] for _id, e in bus.read() if e.get("type") == "call.ended"]


def test_a_call_its_recordings_and_its_end_are_stored_together(centre: Any) -> None:
    settings, sessions, bus, service = centre
    call_id = _call_id()
    record = _recorded_call(settings, call_id)
    asyncio.run(service._finish(CallEnded(call_id=call_id, at=NOW.timestamp(), record=record)))
    assert service.stored == 1
    folder = settings.storage.recordings_dir.resolve() / "2026" / "11"
    with sessions() as session:
        stored = records.get_call(session, call_id)
        assert stored["recording"]["sha256"] == hashlib.sha256(MIXED).hexdigest()
        assert stored["recording"]["bytes"] == len(MIXED)
        files = session.scalars(select(CallFile).where(CallFile.call_id == call_id)
                                .order_by(CallFile.leg)).all()
    assert [(f.leg, f.path, f.sha256, f.bytes) for f in files] == [
        ("caller", str(folder / f"{call_id}-caller.wav"), hashlib.sha256(CALLER).hexdigest(),
         len(CALLER)),
        ("mixed", str(folder / f"{call_id}.wav"), hashlib.sha256(MIXED).hexdigest(),
         len(MIXED))]
    assert _announced(bus) == [call_id]

    # the same end seen again (a replay): nothing stored, filed or announced twice
    asyncio.run(service._finish(CallEnded(call_id=call_id, at=NOW.timestamp(), record=record)))
    with sessions() as session:
        assert len(session.scalars(select(CallFile).where(
            CallFile.call_id == call_id)).all()) == 2
    assert service.stored == 1 and _announced(bus) == [call_id]


def test_a_call_whose_recordings_cannot_be_filed_keeps_its_record_and_end(
        centre: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """What must survive a failure while filing (here queueing the legs for transcription,
    after their catalogue rows were written): the record (with its recording's checksum),
    the call's announcement, and the next call's filing; the half-filed rows must not."""
    settings, sessions, bus, service = centre

    def broken(*_args: Any) -> None:
        raise ConnectionError("Redis went away while the legs were queued")

    monkeypatch.setattr(telephony_service.transcribe_worker, "queue_call", broken)
    call_id = _call_id()
    record = _recorded_call(settings, call_id)
    with caplog.at_level(logging.ERROR, logger="telephony.service"):
        asyncio.run(service._finish(CallEnded(call_id=call_id, at=NOW.timestamp(),
                                              record=record)))
    assert f"could not file the recordings of call {call_id}" in caplog.text
    assert service.stored == 1
    with sessions() as session:
        assert records.get_call(session, call_id)["recording"]["sha256"] == hashlib.sha256(
            MIXED).hexdigest()
        assert session.scalars(select(CallFile)).all() == []
    assert _announced(bus) == [call_id]

    monkeypatch.undo()  # the next call is filed as usual
    following = _call_id()
    asyncio.run(service._finish(CallEnded(call_id=following, at=NOW.timestamp(),
                                          record=_recorded_call(settings, following))))
    with sessions() as session:
        assert sorted(f.leg for f in session.scalars(select(CallFile).where(
            CallFile.call_id == following))) == ["caller", "mixed"]
    assert _announced(bus) == [call_id, following]
