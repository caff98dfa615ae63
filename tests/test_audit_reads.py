"""Every citizen's number shown unmasked through the API leaves a row in the audit log,
written with the read: who, from where, which order or call. Callers who see numbers masked
leave none (nothing of theirs was shown)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from accounts.audit import AuditEntry
from tests import api_world
from tests.api_world import PHONE, World


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    built = api_world.build(database_url, tmp_path)
    yield built
    built.engine.dispose()


def _shown(world: World) -> list[tuple[str, str, str]]:
    with world.sessions() as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.action == "phone_shown")
                               .order_by(AuditEntry.id)).all()
        return [(r.actor, r.target, json.loads(r.detail)["what"]) for r in rows]


def test_unmasked_reads_are_audited_and_masked_reads_are_not(world: World) -> None:
    seeing = world.tokens["sees_phone"]
    order = world.client.get(f"/api/v1/orders/{world.case}", headers=seeing)
    assert order.status_code == 200 and order.json["citizen_phone"] == PHONE
    assert world.client.get("/api/v1/calls", headers=seeing).status_code == 200
    assert world.client.get(f"/api/v1/calls/{world.call_id}", headers=seeing).status_code == 200
    listed = world.client.get("/api/v1/orders", headers=seeing).json
    assert listed["total"] == 2
    newest_first = [world.other_case, world.case]
    assert _shown(world) == [
        ("sees-phones", world.case, "order"),
        ("sees-phones", world.call_id, "call"),
        ("sees-phones", world.call_id, "call"),
        *(("sees-phones", case, "order") for case in newest_first)]

    before = _shown(world)
    for role in ("dispatcher", "supervisor", "auditor"):
        masked = world.client.get(f"/api/v1/orders/{world.case}", headers=world.tokens[role])
        assert masked.status_code == 200 and masked.json["citizen_phone"] != PHONE
    assert _shown(world) == before
