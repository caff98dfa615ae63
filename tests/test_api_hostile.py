"""Every hostile request the review of issue 9 listed, on SQLite and PostgreSQL: a 4xx
whose detail names the field (a path that names nothing: 404), nothing written, and no
anonymous answer that holds a phone number, a citizen's name or a file path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests import api_world
from tests.api_world import CALLER, NAME, PHONE, TRANSFERRED_TO, TYPED_PHONE, World
from tickets.models import WorkOrder, WorkOrderEvent

DEEP = b"[" * 100_000 + b"]" * 100_000
HUGE_DIGITS = "9" * 5000


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    built = api_world.build(database_url, tmp_path)
    yield built
    built.engine.dispose()


def _written(world: World) -> tuple[int, int]:
    with world.sessions() as session:
        return (session.scalar(select(func.count(WorkOrder.id))) or 0,
                session.scalar(select(func.count(WorkOrderEvent.id))) or 0)


QUERIES = [  # (url, the field its detail must name)
    ("/api/v1/orders?limit=%C2%B2", "limit"),  # a superscript two
    (f"/api/v1/orders?limit={HUGE_DIGITS}", "limit"),
    (f"/api/v1/orders?offset={HUGE_DIGITS}", "offset"),
    ("/api/v1/orders?limit=-1", "limit"),
    ("/api/v1/calls?limit=%C2%B2", "limit"),
    (f"/api/v1/calls?offset={HUGE_DIGITS}", "offset"),
    ("/api/v1/orders?since=Infinity", "since"),
    ("/api/v1/orders?since=0001-01-01T00:00:00Z", "since"),
    ("/api/v1/orders?until=9999-12-31T23:59:59Z", "until"),
    ("/api/v1/calls?since=Infinity", "since"),
    ("/api/v1/calls?since=0001-01-01T00:00:00%2B08:00", "since"),
    ("/api/v1/calls?since=1700000000", "since"),  # no Unix seconds anywhere
    ("/api/v1/orders?since=1700000000", "since"),
    ("/api/v1/calls?until=2026-11-24T08:00:00", "until"),  # no zone
    ("/api/v1/kpis?from=0001-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
    ("/api/v1/kpis?from=2026-01-01T00:00:00Z&to=9999-01-01T00:00:00Z", "to"),
    ("/api/v1/kpis?from=2026-01-01T00:00:00Z", "to"),
    ("/api/v1/orders?q=%00", "q"),
    ("/api/v1/orders?grid_prefix=23%00", "grid_prefix"),
    ("/api/v1/orders?department_code=%00", "department_code"),
    ("/api/v1/orders?q=%E2%80%AEtxt.exe", "q"),  # U+202E, a bidi override
    ("/api/v1/calls?caller_number=138%0013800", "caller_number"),
    ("/api/v1/calls?agent=80%0001", "agent"),
    ("/api/v1/orders?state=lost", "state"),
]


@pytest.mark.parametrize("url, field", QUERIES)
def test_a_hostile_query_is_a_400_naming_the_parameter(world, url: str, field: str) -> None:
    reply = world.client.get(url, headers=world.tokens["supervisor"])
    assert reply.status_code == 400, reply.json
    assert set(reply.json) == {"error", "detail"}
    assert reply.json["detail"].startswith(f"{field}"), reply.json


def _with_nul(text: str) -> str:
    return text[:2] + "\x00" + text[2:]


BODIES: list[tuple[dict[str, Any] | bytes, str]] = [
    (DEEP, "body"),  # 100,000 deep: a 400, never a RecursionError
    (b'{"appeal_type": "complaint", "description": "x", "latitude": 1' + b"0" * 400 + b"}",
     "latitude"),  # an integer of 10^400
    (b'{"appeal_type": "complaint", "description": "x", "latitude": NaN}', "body"),
    ({"appeal_type": "complaint", "description": "x", "longitude": 1e308}, "longitude"),
    ({"appeal_type": "complaint", "description": _with_nul("垃圾成堆")}, "description"),
    ({"appeal_type": "complaint", "description": "x", "citizen_name": _with_nul(NAME)},
     "citizen_name"),
    ({"appeal_type": "complaint", "description": "x", "address": _with_nul("南岗区")},
     "address"),
    ({"appeal_type": "complaint", "description": "x", "citizen_phone": "138\x0013800138000"},
     "citizen_phone"),
    ({"appeal_type": "complaint", "description": "\u202egnp.exe"}, "description"),
    ({"appeal_type": "complaint", "description": "\u2066垃圾\u2069"}, "description"),
    ({"appeal_type": "complaint", "description": "\u200b\u200c\u2060\u3164 "}, "description"),
    ({"appeal_type": "complaint", "description": "x", "urgency": ["urgent"]}, "urgency"),
    ({"appeal_type": "complaint", "description": "x", "surprise": 1}, "surprise"),
    ({"appeal_type": "complaint"}, "description"),
]


@pytest.mark.parametrize("body, field", BODIES)
def test_a_hostile_new_order_is_a_400_naming_the_field_and_writes_nothing(
        world, body: Any, field: str) -> None:
    before = _written(world)
    headers = world.tokens["operator"]
    if isinstance(body, bytes):
        reply = world.client.post("/api/v1/orders", data=body,
                                  headers={**headers, "Content-Type": "application/json"})
    else:
        reply = world.client.post("/api/v1/orders", json=body, headers=headers)
    assert reply.status_code == 400, reply.json
    assert reply.json["detail"].startswith(field), reply.json
    assert _written(world) == before


def test_hostile_actions_surveys_and_paths_are_4xx_naming_the_field(world) -> None:
    chief, operator = world.tokens["shift_chief"], world.tokens["operator"]
    before = _written(world)
    act = f"/api/v1/orders/{world.case}/actions/open"
    for body, field in (({"note": _with_nul("立案")}, "note"),
                        ({"note": "\u202e案立"}, "note"),
                        ({"expected_version": "5"}, "expected_version"),
                        ({"expected_version": True}, "expected_version"),
                        ({"expected_version": 10**40}, "expected_version"),
                        ({"role": ["shift_chief"]}, "role"),
                        ({"amount": [2]}, "amount")):
        reply = world.client.post(act, json=body, headers=chief)
        assert reply.status_code == 400 and reply.json["detail"].startswith(field), reply.json
    for body, field in (({"rating": [1]}, "rating"), ({"rating": "1"}, "rating"),
                        ({"rating": True}, "rating"), ({"rating": 6}, "rating"),
                        ({"note": _with_nul("回访")}, "note")):
        reply = world.client.post("/api/v1/surveys/1/result", json=body, headers=operator)
        assert reply.status_code == 400 and reply.json["detail"].startswith(field), reply.json
    for url, field in ((f"/api/v1/orders/{world.case}%00", "case_number"),
                       ("/api/v1/orders/" + "9" * 5000, "case_number"),
                       ("/api/v1/calls/x%00y", "call_id"),
                       ("/api/v1/calls/" + "x" * 500, "call_id")):
        reply = world.client.get(url, headers=chief)
        assert reply.status_code == 404 and reply.json["detail"].startswith(field), reply.json
    for url, field, who in (("/api/v1/seats/80%0001/login", "agent", chief),
                            ("/api/v1/seats/8001/dance", "action", chief),
                            ("/api/v1/surveys/1%00/result", "survey_id", operator),
                            (f"/api/v1/orders/{world.case}/actions/fly", "action", chief)):
        reply = world.client.post(url, json={}, headers=who)
        assert reply.status_code == 404 and reply.json["detail"].startswith(field), reply.json
    assert _written(world) == before


def test_error_answers_keep_their_headers(world) -> None:
    refused = world.client.delete("/api/v1/orders", headers=world.tokens["admin"])
    assert refused.status_code == 405 and set(refused.json) == {"error", "detail"}
    assert set(refused.headers["Allow"].split(", ")) >= {"GET", "POST"}
    anonymous = world.client.post("/api/v1/orders", data=DEEP,
                                  headers={"Content-Type": "application/json"})
    assert anonymous.status_code == 401  # the token is checked before the body is read
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    unknown = world.client.get("/api/v1/orders", headers={"Authorization": "Bearer forged"})
    assert unknown.status_code == 401 and unknown.headers["WWW-Authenticate"]
    forged = world.client.post("/api/v1/exchange/updates", data=b"{}", headers={
        "Content-Type": "application/json", "Idempotency-Key": "hostile-0001",
        "X-Hotline-Timestamp": "1", "X-Hotline-Signature": "sha256=" + "0" * 64})
    assert forged.status_code == 401 and forged.headers["WWW-Authenticate"]
    assert forged.json["error"] == "Unauthorized" and "signature" in forged.json["detail"]


def _secrets(world: World) -> list[str]:
    return [PHONE, TYPED_PHONE, CALLER, TRANSFERRED_TO, NAME, str(world.recording),
            str(world.recording.parent.parent)]


def test_no_anonymous_answer_holds_a_number_a_name_or_a_path(world) -> None:
    for rule in world.app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        url = (rule.rule.replace("<case_number>", world.case)
               .replace("<call_id>", world.call_id).replace("<agent>", "8001")
               .replace("<survey_id>", "1").replace("<action>", "login"))
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            reply = world.client.open(url, method=method, json={})
            text = reply.get_data(as_text=True)
            assert not [s for s in _secrets(world) if s in text], (method, url, text[:300])


def test_staff_without_the_privilege_see_no_full_number_nor_a_path(world) -> None:
    auditor = world.tokens["auditor"]
    for url in (f"/api/v1/orders/{world.case}", "/api/v1/orders", "/api/v1/calls",
                f"/api/v1/calls/{world.call_id}"):
        reply = world.client.get(url, headers=auditor)
        assert reply.status_code == 200, reply.json
        text = reply.get_data(as_text=True)
        assert not [s for s in (PHONE, TYPED_PHONE, CALLER, TRANSFERRED_TO,
                                str(world.recording)) if s in text], text
    order = world.client.get(f"/api/v1/orders/{world.case}", headers=auditor).json
    assert order["citizen_phone"] == "138****5678"
    assert order["description"] == "垃圾没人清，请回电 139****4321"
    call = world.client.get(f"/api/v1/calls/{world.call_id}", headers=auditor).json
    assert (call["caller_number"], call["citizen_number"]) == ("135****7777", "135****7777")
    assert call["caller_name"] == NAME  # an account may know who called, not their number
    assert [leg["number"] for leg in call["legs"]] == ["135****7777"]
    assert [t["to"] for t in call["transfers"]] == ["045*****6666"]
    seeing = world.client.get(f"/api/v1/orders/{world.case}",
                              headers=world.tokens["sees_phone"]).json
    assert (seeing["citizen_phone"], seeing["description"]) == (
        PHONE, f"垃圾没人清，请回电 {TYPED_PHONE}")
