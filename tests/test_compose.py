"""The one composition (hotline.compose.build): a migrated database, sessions whose commits
publish their domain events on the bus, the settings' policy; Redis only when asked for."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from core.db import transaction
from hotline.compose import build
from tests.conftest import make_settings
from tickets import service

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


def test_reading_the_database_never_starts_redis(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, HOTLINE_TICKETS_YELLOW_PERCENT="60",
                             HOTLINE_TICKETS_REOPEN_RATINGS="5")
    parts = build(settings, publish=False, seed_catalogue=True)
    assert (parts.policy.yellow_percent, parts.policy.reopen_ratings) == (60, (5,))
    with transaction(parts.sessions) as session:
        number = service.open_order(session, appeal_type="enquiry", channel="phone",
                                    description="垃圾清运时间", actor="受理员",
                                    category_code="0102", policy=parts.policy,
                                    now=NOW).case_number
    assert number == "202611240001"
    assert "redis" not in vars(parts)  # never connected
    assert not (tmp_path / "redis.db").exists()  # the embedded server was never started


def test_committed_moves_are_published_on_the_bus(tmp_path: Path) -> None:
    parts = build(make_settings(tmp_path))  # its own embedded Redis: no other run's events

    after = parts.bus.last_id()
    with transaction(parts.sessions) as session:
        number = service.open_order(session, appeal_type="complaint", channel="web",
                                    description="井盖缺失", actor="受理员",
                                    policy=parts.policy, now=NOW).case_number
    published = [event for _id, event in parts.bus.read(after, 100)
                 if event.get("case_number") == number]
    assert [e["type"] for e in published] == ["work_order.opened"]
    assert json.dumps(published[0], ensure_ascii=False).count(number) == 2  # id and field
