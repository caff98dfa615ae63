"""The telephony service stores finished seat intervals in batches: those that finish while
a batch is being written go together in the next, in the order they finished; a batch the
database refuses is logged and the later ones are still stored."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from core.clock import FixedClock
from core.db import make_engine, session_factory, upgrade
from core.events import EventBus
from core.live import connect_redis
from telephony.models import SeatInterval
from telephony.seats import Interval
from telephony.service import TelephonyService
from tests.conftest import make_settings

NOW = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)


def _interval(agent: str, n: int) -> Interval:
    start = NOW.timestamp() + 10 * n
    return Interval(agent=agent, state="ready", reason="", started_at=start,
                    ended_at=start + 7.5)


def test_intervals_finished_during_a_write_go_together_in_the_next(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path)
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    service = TelephonyService(settings, sessions, EventBus(connect_redis(settings)),
                               FixedClock(NOW))
    store = service._store_intervals
    batches: list[list[str]] = []
    writing, release = threading.Event(), threading.Event()

    def observed(finished: list[Interval]) -> None:  # in a worker thread, as in the service
        batches.append([i.agent for i in finished])
        if len(batches) == 1:
            writing.set()
            assert release.wait(10)
        if len(batches) == 2:
            raise OSError("disk full")
        store(finished)

    service._store_intervals = observed  # type: ignore[method-assign]

    def finish(*intervals: Interval) -> None:
        service.board.intervals = list(intervals)
        service._intervals_finished()

    async def main() -> None:
        finish(_interval("8001", 0))
        assert await asyncio.to_thread(writing.wait, 10)
        finish(_interval("8002", 1), _interval("8003", 2))  # while 8001's batch is written
        await asyncio.sleep(0.1)  # they wait for it: no second write meanwhile
        finish(_interval("8004", 3))
        release.set()
        while service._pending:
            await asyncio.gather(*service._pending)
        finish(_interval("8005", 4))  # after the refused batch: stored again
        while service._pending:
            await asyncio.gather(*service._pending)

    with caplog.at_level(logging.ERROR, logger="telephony.service"):
        asyncio.run(main())
    assert batches == [["8001"], ["8002", "8003", "8004"], ["8005"]]
    assert [r.getMessage() for r in caplog.records] == ["could not store 3 seat intervals"]
    with sessions() as session:
        stored = session.execute(select(SeatInterval.agent_number, SeatInterval.started_at,
                                        SeatInterval.seconds)
                                 .order_by(SeatInterval.id)).all()
    engine.dispose()
    assert [(a, s.astimezone(UTC), n) for a, s, n in stored] == [
        ("8001", NOW, 7.5),
        ("8005", datetime(2026, 11, 29, 14, 0, 40, tzinfo=UTC), 7.5)]
