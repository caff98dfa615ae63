"""The real telephony service fed a recorded AMI stream over TCP (tests/ami_replay.py): an
Asterisk that stamps its events and one that does not (timestampevents = no) give the same
call records, and a message cut off by a dropped link leaves no ghost call."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from core.clock import SYSTEM_CLOCK
from core.config import Settings
from core.db import make_engine, session_factory, upgrade
from core.events import EventBus
from core.live import connect_redis
from telephony import records
from telephony.service import TelephonyService
from tests.ami_replay import Replay, wire
from tests.conftest import make_settings

DATA = Path(__file__).with_name("data")
TIMES = ("started_at", "ended_at", "connected_at")
INTERVALS = ("duration_seconds", "wait_seconds", "talk_seconds")


def _transcript(name: str) -> list[dict[str, str]]:
    return json.loads((DATA / f"ami_{name}.json").read_text(encoding="utf-8"))


def _serve(settings: Settings, replay: Replay, calls: int = 1) -> tuple[list[dict[str, Any]],
                                                                         TelephonyService]:
    """Run the service against the replay until `calls` calls are stored."""
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    bus = EventBus(connect_redis(settings))

    async def main() -> TelephonyService:
        server = await replay.serve()
        service = TelephonyService(
            replace(settings, pbx=replace(settings.pbx, ami_port=replay.port)), sessions, bus,
            SYSTEM_CLOCK)
        stop = asyncio.Event()
        running = asyncio.create_task(service.run(stop))
        try:
            await asyncio.wait_for(replay.done.wait(), 60)
            async with asyncio.timeout(30):
                while service.stored < calls:
                    await asyncio.sleep(0.05)
        finally:
            stop.set()
            await running
            server.close()
        return service

    service = asyncio.run(main())
    with sessions() as session:
        _total, stored = records.find_calls(session, records.CallQuery())
    engine.dispose()
    return stored, service


@pytest.mark.parametrize("name", ["answered", "abandoned"])
def test_a_stream_without_timestamps_gives_the_same_call_record(tmp_path: Path,
                                                                name: str) -> None:
    events = _transcript(name)
    stamped = Replay(events, stamped=True)
    unstamped = Replay(events, stamped=False)
    [want], _ = _serve(make_settings(tmp_path / "stamped"), stamped)
    [got], _ = _serve(make_settings(tmp_path / "unstamped"), unstamped)
    for key in TIMES:  # each against its own replay's start
        if want[key] is None:
            assert got[key] is None, key
            continue
        assert got[key] - unstamped.sent_at[0] == pytest.approx(
            want[key] - stamped.sent_at[0], abs=0.05), key
    for key in INTERVALS:
        assert (want[key] is None) == (got[key] is None), key
        if want[key] is not None:
            assert got[key] == pytest.approx(want[key], abs=0.05), key
    for key in ("outcome", "short_abandon", "agent", "queue", "hangup_by", "citizen_number"):
        assert got[key] == want[key], key
    assert got["started_at"] > 1.7e9  # never a call dated 1970


def test_a_message_cut_off_by_a_dropped_link_leaves_no_ghost(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    events = _transcript("answered")
    last = max(i for i, e in enumerate(events) if e["Event"] != "Hangup")
    hangup = wire({k: v for k, v in events[last + 1].items() if k != "Timestamp"})
    replay = Replay(events[:last + 1], cut_off=hangup[:len(hangup) // 2])
    with caplog.at_level(logging.WARNING):
        [record], service = _serve(make_settings(tmp_path), replay)
    cut = [r for r in caplog.records if "middle of a message" in r.getMessage()]
    assert len(cut) == 1
    assert replay.connections == 2  # reconnected and resynced
    assert service.live_calls() == []  # Asterisk said the channels are gone
    assert record["incomplete"] and record["outcome"] == "answered"
    assert record["ended_at"] >= record["connected_at"] >= record["started_at"]


def test_an_asterisk_without_timestamps_is_named_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="telephony.service"):
        _serve(make_settings(tmp_path), Replay(_transcript("abandoned"), stamped=False))
    named = [r for r in caplog.records if "timestampevents" in r.getMessage()]
    assert len(named) == 1
