"""The work-order API (/api/v1/orders ...) on SQLite and PostgreSQL: who may do what, phone
masking, the location deriving grid and department, duplicates and merging, deadlines in the
order view, the platform's signed updates, and hostile input that must leave nothing half
written."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select, text

from core.clock import FixedClock
from core.db import make_engine, session_factory, transaction, upgrade
from core.live import connect_redis
from hotline.web import create_app
from tests.conftest import REDIS_SERVER_URL, make_settings
from tickets import catalogue, exchange, geo, service
from tickets.models import InboundUpdate, WorkOrder, WorkOrderEvent
from tickets.workflow import ROLES, SYSTEM

DEMO_GRIDS = Path(__file__).parents[1] / "tickets" / "demo_grids.geojson"
API_NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # the API's clock: 10:00 in Beijing
INSIDE_GRID_01 = (45.7504, 126.6306)  # in 23010300100101 (南岗区 demo street)


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[tuple[FlaskClient, Any]]:
    yield from _client(database_url, tmp_path)


@pytest.fixture
def impatient_client(database_url: str, tmp_path: Path) -> Iterator[tuple[FlaskClient, Any]]:
    """Its database waits 0.2 s for another writer's lock, not 30."""
    yield from _client(database_url, tmp_path, lock_wait_s=0.2)


def _client(database_url: str, tmp_path: Path,
            **engine_options: Any) -> Iterator[tuple[FlaskClient, Any]]:
    settings = make_settings(tmp_path, DATABASE_URL=database_url, REDIS_URL=REDIS_SERVER_URL)
    engine = make_engine(database_url, **engine_options)
    upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        catalogue.seed(session)
        geo.load_grids(session, geo.read_geojson(DEMO_GRIDS))
    app = create_app(settings, sessions, connect_redis(settings), FixedClock(API_NOW))
    yield app.test_client(), sessions
    engine.dispose()


def _user(sessions: Any, name: str, *roles: str, see_phone: bool = False) -> dict[str, str]:
    """A token for `roles`; a department handler works for sanitation, the department the
    orders these tests take in (category 0102) are dispatched to."""
    from accounts.service import ROLES as ACCOUNT_ROLES
    from accounts.service import add_user

    assert set(ROLES) - {SYSTEM} <= set(ACCOUNT_ROLES)
    department = "sanitation" if "department" in roles else None
    with transaction(sessions) as session:
        token = add_user(session, name, list(roles), see_phone, ACCOUNT_ROLES, now=API_NOW,
                         department=department)
    return {"Authorization": f"Bearer {token}"}


def _reader(sessions: Any) -> dict[str, str]:
    """An auditor: reads every order, acts on none, sees numbers masked."""
    return _user(sessions, "审计员", "auditor")


def _count(sessions: Any) -> tuple[int, int]:
    with sessions() as session:
        return (session.scalar(select(func.count(WorkOrder.id))),
                session.scalar(select(func.count(WorkOrderEvent.id))))


REPORT = {"appeal_type": "complaint", "description": "人民广场东侧暴露垃圾，气味很大",
          "channel": "phone", "citizen_phone": "138 0013 8000", "citizen_name": "李女士",
          "category_code": "0102", "address": "南岗区示范街1号",
          "latitude": INSIDE_GRID_01[0], "longitude": INSIDE_GRID_01[1]}


def test_an_order_is_taken_in_with_grid_department_and_clocks_and_phones_are_masked(
        client) -> None:
    http, sessions = client
    operator = _user(sessions, "受理员小王", "operator", see_phone=True)
    reply = http.post("/api/v1/orders", json=REPORT, headers=operator)
    assert reply.status_code == 201, reply.json
    order = reply.json
    assert order["grid_code"] == "23010300100101"
    assert order["department_code"] == "sanitation"  # 0102 暴露垃圾 -> 市容环卫局
    assert order["citizen_phone"] == "13800138000"
    steps = {d["step"]: d for d in order["deadlines"]}
    assert set(steps) == {"open", "complete"}  # 立案 and the appeal's own limit
    assert steps["complete"]["clock"] == "working_days" and steps["complete"]["amount"] == 13
    # nobody reads an order anonymously; users without the privilege see a masked number
    case = order["case_number"]
    anonymous = http.get(f"/api/v1/orders/{case}")
    assert anonymous.status_code == 401 and "13800138000" not in anonymous.text
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    clerk = _user(sessions, "派遣员老张", "dispatcher")
    assert http.get(f"/api/v1/orders/{case}",
                    headers=clerk).json["citizen_phone"] == "138****8000"
    listed = http.get("/api/v1/orders?state=intake", headers=clerk).json
    assert [o["citizen_phone"] for o in listed["items"]] == ["138****8000"]
    assert http.get("/api/v1/orders?citizen_phone=13800138000",
                    headers=clerk).status_code == 403
    found = http.get("/api/v1/orders?citizen_phone=13800138000", headers=operator).json
    assert found["total"] == 1
    # any form of the number finds it; what is not a number is refused, never "no number"
    plus = http.get("/api/v1/orders?citizen_phone=%2B86%20138-0013-8000", headers=operator)
    assert plus.json["total"] == 1
    junk = http.get("/api/v1/orders?citizen_phone=anonymous", headers=operator)
    assert junk.status_code == 400 and "citizen_phone" in junk.json["detail"]


def test_roles_are_enforced_and_the_whole_loop_runs_through_the_api(client) -> None:
    http, sessions = client
    operator = _user(sessions, "受理员", "operator")
    chief = _user(sessions, "值班长", "shift_chief")
    dispatcher = _user(sessions, "派遣员", "dispatcher")
    department = _user(sessions, "环卫局", "department")
    supervisor = _user(sessions, "监督员", "supervisor")
    assert http.post("/api/v1/orders", json=REPORT).status_code == 401
    assert http.post("/api/v1/orders", json=REPORT,
                     headers={"Authorization": "Bearer nobody"}).status_code == 401
    assert http.post("/api/v1/orders", json=REPORT, headers=chief).status_code == 403
    case = http.post("/api/v1/orders", json=REPORT, headers=operator).json["case_number"]

    def act(action: str, who: dict[str, str], **body: Any) -> Any:
        return http.post(f"/api/v1/orders/{case}/actions/{action}", json=body, headers=who)

    refused = act("dispatch", dispatcher)  # not opened yet
    assert refused.status_code == 409 and "only from opened" in refused.json["detail"]
    assert act("open", dispatcher).status_code == 403  # a dispatcher cannot open
    assert act("open", chief).json["state"] == "opened"
    assert act("dispatch", dispatcher).json["state"] == "dispatched"
    signed = act("sign", department).json
    assert "feedback" in signed["allowed_actions"]
    stale = act("feedback", department, expected_version=1)
    assert stale.status_code == 409 and "changed since version 1" in stale.json["detail"]
    assert act("grant_extension", chief, amount=2).status_code == 200
    seen = http.get(f"/api/v1/orders/{case}", headers=_reader(sessions)).json
    handle = [d for d in seen["deadlines"] if d["step"] == "handle"]
    assert handle[0]["amount"] == 6 and handle[0]["extensions"] == 1  # 4 h + 2 h
    for action, who in (("feedback", department), ("request_check", dispatcher),
                        ("check_passed", supervisor), ("close", chief)):
        assert act(action, who).status_code == 200, action
    final = http.get(f"/api/v1/orders/{case}", headers=_reader(sessions)).json
    assert final["state"] == "closed" and final["closed_at"]
    assert [s["state"] for s in final["surveys"]] == ["scheduled"]  # the callback survey
    assert [h["action"] for h in final["history"]][-1] == "close"


def test_a_repeat_report_nearby_is_flagged_and_merged_into_the_first(client) -> None:
    http, sessions = client
    operator = _user(sessions, "受理员", "operator")
    chief = _user(sessions, "值班长", "shift_chief")
    first = http.post("/api/v1/orders", json=REPORT, headers=operator).json
    assert first["duplicate_of"] == "" and not first["repeat_caller"]
    nearby = {**REPORT, "latitude": INSIDE_GRID_01[0] + 0.0003}  # about 33 m north
    second = http.post("/api/v1/orders", json=nearby, headers=operator).json
    assert second["duplicate_of"] == first["case_number"]
    assert second["repeat_caller"]  # the same citizen again within the window
    far = {**REPORT, "latitude": INSIDE_GRID_01[0] + 0.01, "citizen_phone": "13900000000"}
    third = http.post("/api/v1/orders", json=far, headers=operator).json
    assert third["duplicate_of"] == "" and not third["repeat_caller"]
    into_self = http.post(f"/api/v1/orders/{second['case_number']}/actions/merge",
                          json={"into": second["case_number"]}, headers=chief)
    assert into_self.status_code == 400
    merged = http.post(f"/api/v1/orders/{second['case_number']}/actions/merge",
                       json={"into": first["case_number"]}, headers=chief).json
    assert (merged["state"], merged["merged_into"]) == ("merged", first["case_number"])


@pytest.mark.parametrize("change, detail", [
    ({"description": "垃圾" * 2001}, "description: at most 4000"),
    ({"description": " \x00\x01 "}, "description: no NUL"),
    ({"description": " \x01\u200b "}, "description: only invisible characters"),
    ({"description": "\u202egnp.exe"}, "description: no bidi override"),
    ({"latitude": 200}, "latitude: at most 90"),
    ({"latitude": "45.75"}, "latitude: a number"),
    ({"latitude": True}, "latitude: a number"),
    ({"longitude": None}, "latitude and longitude"),
    ({"category_code": "9999"}, "category_code: no active event category '9999'"),
    ({"category_code": "<script>"}, "category_code"),
    ({"appeal_type": "insult"}, "appeal_type: one of"),
    ({"urgency": 3}, "urgency: one of normal or urgent"),
    ({"citizen_name": ["李"]}, "citizen_name: text"),
    ({"citizen_phone": "call me maybe"}, "citizen_phone"),
])
def test_hostile_input_gets_a_clear_400_and_nothing_is_written(client, change, detail
                                                              ) -> None:
    http, sessions = client
    operator = _user(sessions, "受理员", "operator")
    before = _count(sessions)
    reply = http.post("/api/v1/orders", json={**REPORT, **change}, headers=operator)
    assert reply.status_code == 400, reply.json
    assert detail in reply.json["detail"]
    assert _count(sessions) == before


def test_markup_is_kept_as_text_and_bodies_that_are_not_objects_or_too_big_are_refused(
        client) -> None:
    http, sessions = client
    operator = _user(sessions, "受理员", "operator")
    markup = {**REPORT, "description": "<img src=x onerror=alert(1)>垃圾\x07"}
    kept = http.post("/api/v1/orders", json=markup, headers=operator).json
    assert kept["description"] == "<img src=x onerror=alert(1)>垃圾"  # data, not HTML
    before = _count(sessions)
    assert http.post("/api/v1/orders", json=[REPORT], headers=operator).status_code == 400
    assert http.post("/api/v1/orders", data=b"{not json", headers={
        **operator, "Content-Type": "application/json"}).status_code == 400
    huge = http.post("/api/v1/orders", data=b"{" + b" " * (2 << 20) + b"}",
                     headers={**operator, "Content-Type": "application/json"})
    assert huge.status_code == 413
    assert http.get("/api/v1/orders/9999", headers=operator).status_code == 404
    assert http.get("/api/v1/orders?state=lost", headers=operator).status_code == 400
    assert http.get("/api/v1/orders?since=2026-11-01T00:00:00",
                    headers=operator).status_code == 400  # no zone
    assert _count(sessions) == before


def test_the_platform_signs_an_update_and_a_replay_changes_nothing(client, tmp_path) -> None:
    http, sessions = client
    settings = make_settings(tmp_path)  # the same data dir: the same generated secret
    operator = _user(sessions, "受理员", "operator")
    chief = _user(sessions, "值班长", "shift_chief")
    dispatcher = _user(sessions, "派遣员", "dispatcher")
    case = http.post("/api/v1/orders", json=REPORT, headers=operator).json["case_number"]
    for action, who in (("open", chief), ("dispatch", dispatcher)):
        http.post(f"/api/v1/orders/{case}/actions/{action}", json={}, headers=who)
    body = json.dumps({"case_number": case, "action": "sign", "actor": "平台:环卫局"}).encode()
    stamp = str(int(API_NOW.timestamp()))  # signed as of the API's own clock
    headers = {"Idempotency-Key": "platform-000001", "X-Hotline-Timestamp": stamp,
               "X-Hotline-Signature": exchange.sign(settings.exchange.webhook_secret, stamp,
                                                    body),
               "Content-Type": "application/json"}
    forged = http.post("/api/v1/exchange/updates", data=body,
                       headers={**headers, "X-Hotline-Signature": "sha256=" + "0" * 64})
    assert forged.status_code == 401
    first = http.post("/api/v1/exchange/updates", data=body, headers=headers)
    again = http.post("/api/v1/exchange/updates", data=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json == again.json
    history = http.get(f"/api/v1/orders/{case}", headers=_reader(sessions)).json["history"]
    assert [h["action"] for h in history].count("sign") == 1


def test_the_openapi_document_describes_the_order_routes(client) -> None:
    http, _ = client
    document = http.get("/api/v1/openapi.json").json
    for path in ("/api/v1/orders", "/api/v1/orders/{case_number}",
                 "/api/v1/orders/{case_number}/actions/{action}", "/api/v1/kpis",
                 "/api/v1/exchange/updates", "/api/v1/surveys/callback-list"):
        assert path in document["paths"], path
    assert "WorkOrder" in document["components"]["schemas"]
    assert "bearer" in document["components"]["securitySchemes"]
    # one vocabulary: pages are whole numbers, times ISO 8601, on orders and calls alike
    for path in ("/api/v1/orders", "/api/v1/calls"):
        declared = {p["name"]: p["schema"] for p in document["paths"][path]["get"]["parameters"]}
        assert {k: declared["limit"].get(k) for k in ("type", "minimum", "maximum")} == {
            "type": "integer", "minimum": 1, "maximum": 500}, path
        assert (declared["offset"]["type"], declared["offset"]["minimum"]) == ("integer", 0)
        assert {"format": "date-time", "type": "string"} in declared["since"]["anyOf"]


def test_an_agent_finishes_a_survey_from_the_callback_list(client) -> None:
    from datetime import timedelta

    from tickets import surveys
    from tickets.models import Survey
    from tickets.service import Policy

    http, sessions = client
    operator = _user(sessions, "受理员", "operator")
    roles = {r: _user(sessions, r, r) for r in ("shift_chief", "dispatcher", "department",
                                                "supervisor")}
    case = http.post("/api/v1/orders", json=REPORT, headers=operator).json["case_number"]
    for action, role in (("open", "shift_chief"), ("dispatch", "dispatcher"),
                         ("sign", "department"), ("feedback", "department"),
                         ("request_check", "dispatcher"), ("check_passed", "supervisor"),
                         ("close", "shift_chief")):
        assert http.post(f"/api/v1/orders/{case}/actions/{action}", json={},
                         headers=roles[role]).status_code == 200
    once = Policy(survey_call_attempts=1, survey_sms_wait_hours=1)
    with transaction(sessions) as session:  # the line and the SMS got no answer
        survey = session.scalar(select(Survey))
        due = survey.next_attempt_at
        attempt = surveys.claim_call(session, survey.id, due)
        surveys.call_failed(session, attempt.attempt_id, "no answer", once,
                            once.calendar(session), due)
        surveys.expire_sms(session, once, due + timedelta(hours=2))
    assert http.get("/api/v1/surveys/callback-list").status_code == 401
    [listed] = http.get("/api/v1/surveys/callback-list", headers=operator).json["items"]
    assert listed["case_number"] == case and listed["phone"] == "138****8000"
    path = f"/api/v1/surveys/{listed['survey_id']}/result"
    assert http.post(path, json={"rating": 5}).status_code == 401
    assert http.post(path, json={"rating": 9}, headers=operator).status_code == 400
    done = http.post(path, json={"rating": 5, "note": "仍有异味"}, headers=operator)
    assert done.json == {"survey_id": listed["survey_id"], "outcome": "reopened"}
    assert http.post(path, json={"rating": 1}, headers=operator).status_code == 409
    assert http.post("/api/v1/surveys/77/result", json={"rating": 1},
                     headers=operator).status_code == 404
    assert http.get(f"/api/v1/orders/{case}", headers=_reader(sessions)).json["state"] == "handling"


def _handling(http: FlaskClient, sessions: Any) -> str:
    """An order signed for by the department, so the department may act on it."""
    operator = _user(sessions, "受理员", "operator")
    case = http.post("/api/v1/orders", json=REPORT, headers=operator).json["case_number"]
    for action, role in (("open", "shift_chief"), ("dispatch", "dispatcher"),
                         ("sign", "department")):
        assert http.post(f"/api/v1/orders/{case}/actions/{action}", json={},
                         headers=_user(sessions, role, role)).status_code == 200
    return case


PHOTO = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40  # a JPEG's start, then bytes


def test_a_department_adds_a_photo_once_and_junk_or_huge_uploads_are_refused(client) -> None:
    http, sessions = client
    department = {**_user(sessions, "环卫局", "department"), "Content-Type": "image/jpeg"}
    case = _handling(http, sessions)
    photo = PHOTO
    path = f"/api/v1/orders/{case}/photos"
    first = http.post(path, data=photo, headers=department)
    assert first.status_code == 201 and first.json["bytes"] == len(photo)
    again = http.post(path, data=photo, headers=department)  # the same bytes: kept already
    assert again.status_code == 200 and again.json == first.json
    assert http.post(path, data=photo, headers={
        "Content-Type": "image/jpeg"}).status_code == 401
    assert http.post(path, data=b"<svg onload=alert(1)>", headers={
        **department, "Content-Type": "image/svg+xml"}).status_code == 415
    junk = http.post(path, data=b"MZ\x90\x00 not an image", headers=department)
    assert junk.status_code == 400 and "JPEG, PNG or WebP" in junk.json["detail"]
    huge = http.post(path, data=b"\xff\xd8\xff" + b"\0" * (9 << 20), headers=department)
    assert huge.status_code == 413
    assert http.post("/api/v1/orders/000000000000/photos", data=photo,
                     headers=department).status_code == 404
    kept = http.get(f"/api/v1/orders/{case}", headers=_reader(sessions)).json["attachments"]
    assert [(a["kind"], a["bytes"]) for a in kept] == [("photo", len(photo))]


def test_a_busy_database_is_a_503_to_retry_and_changes_nothing(
        impatient_client, database_url: str, tmp_path: Path) -> None:
    """Another writer holds the locks longer than the app waits (SQLite: the database's
    write lock; PostgreSQL: the order's and the day counter's rows). Intake, a move and
    the platform's update are answered 503 with Retry-After, not "changed by someone
    else"; nothing is written; readers still read; once the locks go, the same requests
    go through."""
    http, sessions = impatient_client
    settings = make_settings(tmp_path)  # the same data dir: the same generated secret
    operator = _user(sessions, "受理员", "operator")
    department = _user(sessions, "环卫局", "department")
    case = http.post("/api/v1/orders", json=REPORT, headers=operator).json["case_number"]
    for action, role in (("open", "shift_chief"), ("dispatch", "dispatcher")):
        assert http.post(f"/api/v1/orders/{case}/actions/{action}", json={},
                         headers=_user(sessions, role, role)).status_code == 200
    body = json.dumps({"case_number": case, "action": "sign", "actor": "平台:环卫局"}).encode()
    stamp = str(int(API_NOW.timestamp()))
    signed = {"Idempotency-Key": "platform-busy-01", "X-Hotline-Timestamp": stamp,
              "X-Hotline-Signature": exchange.sign(settings.exchange.webhook_secret, stamp,
                                                   body),
              "Content-Type": "application/json"}
    reader = _reader(sessions)
    before = _count(sessions)
    if database_url.startswith("sqlite"):
        holder: Any = sqlite3.connect(database_url.removeprefix("sqlite:///"),
                                      isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
    else:
        holder = make_engine(database_url).connect()
        holder.execute(text("SELECT 1 FROM work_orders WHERE case_number = :c FOR UPDATE"),
                       {"c": case})
        holder.execute(text("SELECT 1 FROM case_counters FOR UPDATE"))
    try:
        for reply in (http.post("/api/v1/orders", json=REPORT, headers=operator),
                      http.post(f"/api/v1/orders/{case}/actions/sign", json={},
                                headers=department),
                      http.post("/api/v1/exchange/updates", data=body, headers=signed)):
            assert reply.status_code == 503, reply.json
            assert reply.headers["Retry-After"] == "1"
            assert "busy" in reply.json["detail"] and "again" in reply.json["detail"]
        seen = http.get(f"/api/v1/orders/{case}", headers=reader)  # a reader does not wait
        assert seen.status_code == 200 and seen.json["state"] == "dispatched"
    finally:
        holder.rollback()
        holder.close()
    assert _count(sessions) == before
    with sessions() as session:
        assert session.scalar(select(func.count(InboundUpdate.id))) == 0
    again = http.post("/api/v1/exchange/updates", data=body, headers=signed)
    assert again.status_code == 200 and again.json["state"] == "handling"
    assert http.post("/api/v1/orders", json=REPORT, headers=operator).status_code == 201


def test_merge_and_extension_honour_expected_version_like_every_action(client) -> None:
    """A merge or an extension decided on an old version of the order is refused with 409
    and changes nothing; on the current version it goes through."""
    http, sessions = client
    operator = _user(sessions, "受理员", "operator")
    chief = _user(sessions, "值班长", "shift_chief")
    first = http.post("/api/v1/orders", json=REPORT, headers=operator).json["case_number"]
    second = http.post("/api/v1/orders", json=REPORT, headers=operator).json["case_number"]
    assert http.post(f"/api/v1/orders/{second}/actions/request_verification", json={},
                     headers=operator).json["version"] == 2

    def order(case: str) -> dict[str, Any]:
        return http.get(f"/api/v1/orders/{case}", headers=_reader(sessions)).json

    kept = order(second)
    stale = http.post(f"/api/v1/orders/{second}/actions/merge",
                      json={"into": first, "expected_version": 1}, headers=chief)
    assert stale.status_code == 409 and "changed since version 1" in stale.json["detail"]
    assert order(second) == kept  # still verifying, version 2, the same history
    merged = http.post(f"/api/v1/orders/{second}/actions/merge",
                       json={"into": first, "expected_version": 2}, headers=chief)
    assert merged.status_code == 200 and merged.json["state"] == "merged"

    for action, role in (("open", "shift_chief"), ("dispatch", "dispatcher"),
                         ("sign", "department")):
        assert http.post(f"/api/v1/orders/{first}/actions/{action}", json={},
                         headers=_user(sessions, role, role)).status_code == 200
    kept = order(first)
    assert kept["version"] == 4
    stale = http.post(f"/api/v1/orders/{first}/actions/grant_extension",
                      json={"amount": 2, "expected_version": 3}, headers=chief)
    assert stale.status_code == 409 and "changed since version 3" in stale.json["detail"]
    assert order(first) == kept  # the handling clock was not extended
    granted = http.post(f"/api/v1/orders/{first}/actions/grant_extension",
                        json={"amount": 2, "expected_version": 4}, headers=chief)
    assert granted.status_code == 200
    handle = [d for d in granted.json["deadlines"] if d["step"] == "handle"]
    assert handle[0]["extensions"] == 1
    assert http.post(f"/api/v1/orders/{first}/actions/grant_extension",
                     json={"amount": 2, "expected_version": "5"},
                     headers=chief).status_code == 400


def test_only_who_may_act_now_adds_photos_and_none_once_the_order_is_finished(
        client, tmp_path: Path) -> None:
    """403 for a user none of whose roles may act on the order in its present state
    (workflow.allowed), 409 on a voided, merged, closed or evaluated order whoever asks;
    a refused photo leaves no attachment and no file."""
    http, sessions = client
    operator = _user(sessions, "受理员", "operator")
    department = _user(sessions, "环卫局", "department")
    both = _user(sessions, "派遣兼部门", "dispatcher", "department")
    chief = _user(sessions, "值班长", "shift_chief")

    def photo(number: str, content: bytes, who: dict[str, str]) -> Any:
        return http.post(f"/api/v1/orders/{number}/photos", data=content,
                         headers={**who, "Content-Type": "image/jpeg"})

    case = http.post("/api/v1/orders", json=REPORT, headers=operator).json["case_number"]
    for who in (department, both):  # nothing a dispatcher or a department does in intake
        refused = photo(case, PHOTO, who)
        assert refused.status_code == 403 and "while it is intake" in refused.json["detail"]
    assert http.get(f"/api/v1/orders/{case}", headers=_reader(sessions)).json["attachments"] == []
    assert not (tmp_path / "attachments").exists()
    assert photo(case, PHOTO, operator).status_code == 201  # may send it for verification
    http.post(f"/api/v1/orders/{case}/actions/open", json={}, headers=chief)
    http.post(f"/api/v1/orders/{case}/actions/dispatch", json={}, headers=both)
    other = PHOTO + b"\x01"
    assert photo(case, other, operator).status_code == 403  # nothing to do when dispatched
    assert photo(case, other, both).status_code == 201  # may sign for it as the department

    def finished(how: list[tuple[str, str]], into: str = "") -> str:
        number = http.post("/api/v1/orders", json=REPORT,
                           headers=operator).json["case_number"]
        for action, role in how:
            reply = http.post(f"/api/v1/orders/{number}/actions/{action}",
                              json={"into": into} if into else {},
                              headers=_user(sessions, role, role))
            assert reply.status_code == 200, reply.json
        return number

    loop = [("open", "shift_chief"), ("dispatch", "dispatcher"), ("sign", "department"),
            ("feedback", "department"), ("request_check", "dispatcher"),
            ("check_passed", "supervisor"), ("close", "shift_chief")]
    ends = {"voided": finished([("void", "shift_chief")]),
            "merged": finished([("merge", "shift_chief")], into=case),
            "closed": finished(loop),
            "evaluated": finished([*loop, ("evaluate", "operator")])}
    for state, number in ends.items():
        for who in (chief, operator, department):  # the chief may still reopen a closed one
            refused = photo(number, PHOTO + b"\x02", who)
            assert refused.status_code == 409, (state, refused.json)
            assert f"is {state}" in refused.json["detail"]
        seen = http.get(f"/api/v1/orders/{number}", headers=_reader(sessions)).json
        assert seen["attachments"] == []
    files = [p.name for p in (tmp_path / "attachments").rglob("*") if p.is_file()]
    assert len(files) == 2 and not any(name.endswith(".part") for name in files)


def test_the_same_photo_sent_twice_at_once_is_one_attachment(client, tmp_path: Path) -> None:
    """Two uploads of the same bytes at the same moment (each its own transaction), five
    rounds with a new photo each: one adds it, the other gets the one kept."""
    http, sessions = client
    case = _handling(http, sessions)
    photos = [PHOTO + bytes([n]) for n in range(5)]
    for content in photos:
        barrier = threading.Barrier(2)
        added: list[object] = []

        def upload(content: bytes = content, barrier: threading.Barrier = barrier,
                   added: list[object] = added) -> None:
            try:
                barrier.wait(5)
                with transaction(sessions) as session:
                    _, fresh = service.store_photo(session, case, content,
                                                   tmp_path / "attachments",
                                                   roles=["department"], now=API_NOW)
                added.append(fresh)
            except BaseException as exc:  # reported below, not lost in the thread
                added.append(repr(exc))

        threads = [threading.Thread(target=upload) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(added, key=str) == [False, True], added
    kept = http.get(f"/api/v1/orders/{case}", headers=_reader(sessions)).json["attachments"]
    assert [a["bytes"] for a in kept] == [len(PHOTO) + 1] * 5
    assert len({a["sha256"] for a in kept}) == 5
