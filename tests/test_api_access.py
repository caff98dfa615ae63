"""Every route declares who may use it, and this test walks the app's own url_map: every
route x every role x anonymous, against the table below written by hand. A new route fails
here until it declares its access and is added to the table. Then the rules finer than a
role: an agent commands only their own seat, a department handler sees only its orders."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from accounts.access import PUBLIC
from accounts.service import ROLES, Identity
from channels import open311, sms_signature
from core.db import transaction
from telephony import http as telephony_http
from tests import api_world
from tests.api_world import World
from tickets import exchange

EVERYONE = frozenset(ROLES)
STAFF = frozenset({"operator", "supervisor", "shift_chief", "dispatcher", "admin", "auditor"})
WORKFLOW = frozenset({"operator", "supervisor", "shift_chief", "dispatcher", "department"})
# (method, route) -> roles that may call it; PUBLIC: anyone, without an account
EXPECTED: dict[tuple[str, str], frozenset[str] | str] = {
    ("GET", "/api/v1/openapi.json"): PUBLIC,
    ("GET", "/api/v1/catalogue"): PUBLIC,
    ("POST", "/api/v1/exchange/updates"): PUBLIC,  # signed by the platform instead
    ("POST", "/api/v1/sms/status"): PUBLIC,  # signed by the SMS gateway instead
    ("POST", "/api/v1/sms/inbound"): PUBLIC,  # signed by the SMS gateway instead
    ("GET", "/api/v1/calls"): STAFF,
    ("GET", "/api/v1/calls/<call_id>"): STAFF,
    ("GET", "/api/v1/seats"): STAFF,
    # an operator only on a call they took as its agent (tests/test_call_dispositions.py)
    ("POST", "/api/v1/calls/<call_id>/disposition"): frozenset({"supervisor", "shift_chief",
                                                                "admin"}),
    # another agent's seat: an operator may command only their own (below)
    ("POST", "/api/v1/seats/<agent>/<action>"): frozenset({"supervisor", "shift_chief",
                                                           "admin"}),
    # listen / whisper / barge on an agent's call (监听 / 耳语 / 强插), and its page
    ("POST", "/api/v1/seats/<agent>/spy"): frozenset({"supervisor", "shift_chief"}),
    ("GET", "/supervise/seats"): frozenset({"supervisor", "shift_chief"}),
    ("GET", "/api/v1/orders"): EVERYONE,
    ("POST", "/api/v1/orders"): frozenset({"operator"}),
    ("GET", "/api/v1/orders/<case_number>"): EVERYONE,
    ("POST", "/api/v1/orders/<case_number>/actions/<action>"): WORKFLOW,
    ("POST", "/api/v1/orders/<case_number>/photos"): WORKFLOW,
    ("POST", "/api/v1/orders/<case_number>/calls"): frozenset({"operator"}),
    ("GET", "/api/v1/knowledge"): STAFF,
    # transcripts (通话转写): not the dispatchers' or departments'; the queue: supervisors
    ("GET", "/api/v1/transcripts/search"): STAFF - {"dispatcher"},
    ("GET", "/api/v1/transcripts/<call_id>"): STAFF - {"dispatcher"},
    ("GET", "/transcripts"): STAFF - {"dispatcher"},  # their search page, the same check
    ("GET", "/api/v1/speech/status"): frozenset({"supervisor", "shift_chief", "admin"}),
    # the alert keywords (告警关键词): edited by supervisors and administrators
    ("GET", "/api/v1/speech/keywords"): frozenset({"supervisor", "shift_chief", "admin"}),
    ("POST", "/api/v1/speech/keywords"): frozenset({"supervisor", "admin"}),
    ("DELETE", "/api/v1/speech/keywords/<word>"): frozenset({"supervisor", "admin"}),
    ("POST", "/api/v1/knowledge"): frozenset({"admin"}),
    ("GET", "/api/v1/knowledge/<article_id>"): STAFF,
    ("POST", "/api/v1/knowledge/<article_id>/answers"): frozenset({"operator"}),
    ("GET", "/api/v1/surveys/callback-list"): frozenset({"operator", "supervisor",
                                                         "shift_chief", "admin", "auditor"}),
    ("POST", "/api/v1/surveys/<survey_id>/result"): frozenset({"operator"}),
    ("GET", "/api/v1/kpis"): frozenset({"supervisor", "shift_chief", "admin", "auditor"}),
    ("GET", "/api/v1/audit"): frozenset({"auditor"}),
    ("GET", "/api/v1/docs"): PUBLIC,
    ("GET", "/healthz"): PUBLIC,  # the process is up (hotline.health)
    ("GET", "/readyz"): PUBLIC,  # every part up, or 503 naming those down
    ("GET", "/metrics"): PUBLIC,  # from observability.metrics_networks only (test_metrics)
    # the pages: signing in and out, the shell's files and language switch
    ("GET", "/"): PUBLIC,  # a redirect: to /login, or to the person's home
    ("GET", "/home"): PUBLIC,
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("POST", "/logout"): PUBLIC,
    ("GET", "/static/<path:filename>"): PUBLIC,
    ("GET", "/lang/<choice>"): PUBLIC,
    # the agent desk and its softphone's own SIP credentials
    ("GET", "/desk"): frozenset({"operator", "supervisor"}),
    ("GET", "/desk/softphone"): frozenset({"operator", "supervisor"}),
    # the desk's order form: the operator takes orders in (orders.open)
    ("GET", "/desk/orders/categories"): frozenset({"operator"}),
    ("GET", "/desk/orders/place"): frozenset({"operator"}),
    ("GET", "/desk/orders/duplicate"): frozenset({"operator"}),
    ("GET", "/desk/orders/grids"): frozenset({"operator"}),
    ("POST", "/desk/orders"): frozenset({"operator"}),
    # the agent's own lists: surveys to call back (and the call), returned orders, today
    ("GET", "/desk/lists/surveys"): frozenset({"operator", "supervisor"}),
    ("POST", "/desk/lists/surveys/<survey_id>/call"): frozenset({"operator", "supervisor"}),
    ("GET", "/desk/lists/callbacks"): frozenset({"operator", "supervisor"}),
    ("POST", "/desk/lists/callbacks/<request_id>/call"): frozenset({"operator", "supervisor"}),
    ("POST", "/desk/lists/callbacks/<request_id>/done"): frozenset({"operator", "supervisor"}),
    ("GET", "/desk/lists/returned"): frozenset({"operator", "supervisor"}),
    ("GET", "/desk/lists/today"): frozenset({"operator", "supervisor"}),
    # the staffing forecast; surge mode switched by supervisors only
    ("GET", "/staffing"): frozenset({"supervisor", "shift_chief", "admin"}),
    ("POST", "/staffing/surge"): frozenset({"supervisor"}),
    ("POST", "/staffing/surge/off"): frozenset({"supervisor"}),
    ("GET", "/desk/push-ticket"): frozenset({"operator", "supervisor"}),  # the push stream's
    # the reports page and its exports (kpis.read: the evaluation grades staff by name)
    ("GET", "/reports"): frozenset({"supervisor", "shift_chief", "admin", "auditor"}),
    ("GET", "/reports/export.xlsx"): frozenset({"supervisor", "shift_chief", "admin",
                                                "auditor"}),
    ("GET", "/reports/export.csv"): frozenset({"supervisor", "shift_chief", "admin",
                                               "auditor"}),
    # the case map (案件地图): a department handler sees their own department's orders only
    **{("GET", route): frozenset({"shift_chief", "dispatcher", "supervisor", "admin",
                                  "department"})
       for route in ("/map", "/map/orders", "/map/hotspots", "/map/grids",
                     "/map/push-ticket")},
    # the case workspaces: the back office's queues; an order's page, its recordings and
    # photos (orders.read), its actions (orders.act). This world's department account is
    # bound to no department, so it sees no order at all (403 on every order's page).
    ("GET", "/work"): frozenset({"shift_chief", "dispatcher", "department", "supervisor"}),
    ("GET", "/orders/<case_number>"): STAFF,
    ("POST", "/orders/<case_number>/act"): WORKFLOW - {"department"},
    ("GET", "/orders/<case_number>/calls/<call_id>/recording"): STAFF,
    ("GET", "/orders/<case_number>/attachments/<sha256>"): STAFF,
    # the live wallboard (监控大屏): supervisors, shift chiefs, admins; the display wall's
    # page and its ticket renewal check a display token of their own (no account)
    ("GET", "/board"): frozenset({"supervisor", "shift_chief", "admin"}),
    ("GET", "/board/push-ticket"): frozenset({"supervisor", "shift_chief", "admin"}),
    ("GET", "/board/wall"): PUBLIC,
    ("GET", "/board/wall/push-ticket"): PUBLIC,
    # the display tokens (大屏令牌): listed, issued and revoked by admins
    ("GET", "/board/displays"): frozenset({"admin"}),
    ("POST", "/board/displays"): frozenset({"admin"}),
    ("POST", "/board/displays/revoke"): frozenset({"admin"}),
    # quality review (质检): forms by administrators, scoring by supervisors and shift
    # chiefs, one's own scores by agents, the report like the KPIs; legal holds on
    # recordings by administrators, the holds and the deletion log for auditors too
    ("GET", "/api/v1/quality/forms"): frozenset({"supervisor", "shift_chief", "admin",
                                                 "auditor"}),
    ("POST", "/api/v1/quality/forms"): frozenset({"admin"}),
    ("GET", "/api/v1/quality/samples"): frozenset({"supervisor", "shift_chief"}),
    ("POST", "/api/v1/quality/samples"): frozenset({"supervisor", "shift_chief"}),
    ("POST", "/api/v1/quality/samples/<sample_id>/review"): frozenset({"supervisor",
                                                                      "shift_chief"}),
    ("GET", "/api/v1/quality/mine"): frozenset({"operator", "supervisor"}),
    ("GET", "/api/v1/quality/report"): frozenset({"supervisor", "shift_chief", "admin",
                                                  "auditor"}),
    ("GET", "/quality"): frozenset({"supervisor", "shift_chief"}),
    ("POST", "/quality/draw"): frozenset({"supervisor", "shift_chief"}),
    ("GET", "/quality/samples/<int:sample_id>"): frozenset({"supervisor", "shift_chief"}),
    ("POST", "/quality/samples/<int:sample_id>"): frozenset({"supervisor", "shift_chief"}),
    ("GET", "/quality/samples/<int:sample_id>/recording"): frozenset({"supervisor",
                                                                      "shift_chief"}),
    ("GET", "/quality/forms"): frozenset({"admin"}),
    ("POST", "/quality/forms"): frozenset({"admin"}),
    ("GET", "/quality/mine"): frozenset({"operator", "supervisor"}),
    ("GET", "/quality/report"): frozenset({"supervisor", "shift_chief", "admin", "auditor"}),
    ("POST", "/api/v1/recordings/<call_id>/hold"): frozenset({"admin"}),
    ("POST", "/api/v1/recordings/<call_id>/release"): frozenset({"admin"}),
    ("GET", "/api/v1/recordings/holds"): frozenset({"admin", "auditor"}),
    ("GET", "/api/v1/recordings/deletions"): frozenset({"admin", "auditor"}),
    # the citizens' portal (公众服务门户): no account; a report is confirmed by an SMS code,
    # an order reached by its private tracking link
    ("GET", "/portal"): PUBLIC,
    ("GET", "/portal/confirm/<token>"): PUBLIC,
    ("GET", "/portal/track/<token>"): PUBLIC,
    ("GET", "/portal/track/<token>/photos/<sha256>"): PUBLIC,  # the link's holder's own
    ("POST", "/api/v1/portal/reports"): PUBLIC,
    ("POST", "/api/v1/portal/reports/<token>/code"): PUBLIC,
    ("POST", "/api/v1/portal/reports/<token>/resend"): PUBLIC,
    ("GET", "/api/v1/portal/track/<token>"): PUBLIC,
    ("POST", "/api/v1/portal/track/<token>/info"): PUBLIC,
    ("POST", "/api/v1/portal/track/<token>/rating"): PUBLIC,
    ("GET", "/api/v1/portal/grids"): PUBLIC,
    ("GET", "/api/v1/portal/place"): PUBLIC,
    # each role's home page: that role only
    **{("GET", f"/home/{role}"): frozenset({role}) for role in ROLES},
    # Open311 GeoReport v2: open to anyone; posting is guarded by the spec's api_key instead
    ("GET", "/open311/discovery.<format>"): PUBLIC,
    ("GET", "/open311/v2/services.<format>"): PUBLIC,
    ("GET", "/open311/v2/services/<service_code>.<format>"): PUBLIC,
    ("POST", "/open311/v2/requests.<format>"): PUBLIC,
    ("GET", "/open311/v2/requests.<format>"): PUBLIC,
    ("GET", "/open311/v2/requests/<service_request_id>.<format>"): PUBLIC,
    ("GET", "/open311/v2/tokens/<token>.<format>"): PUBLIC,
}


@pytest.fixture
def world(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[World]:
    monkeypatch.setattr(telephony_http, "WEB_COMMAND_SECONDS", 0.2)  # nobody answers
    built = api_world.build(database_url, tmp_path)
    yield built
    built.engine.dispose()


def _routes(world: World) -> dict[tuple[str, str], Any]:
    return {(method, rule.rule): world.app.view_functions[rule.endpoint]
            for rule in world.app.url_map.iter_rules() if rule.endpoint != "static"
            for method in rule.methods - {"HEAD", "OPTIONS"}}


def _call(world: World, method: str, route: str, headers: dict[str, str]) -> Any:
    """One request to `route` that a caller allowed in would get past the access check
    with: real path values, a body of the right shape."""
    path = (route.replace("<call_id>", world.call_id).replace("<agent>", "8001")
            .replace("<case_number>", world.case).replace("<survey_id>", "77")
            .replace("<article_id>", "1").replace("<sample_id>", "1")
            .replace("<int:sample_id>", "1")
            .replace("<action>", "login" if "/seats/" in route else "open")
            .replace("<path:filename>", "shell.css").replace("<choice>", "en")
            .replace("<word>", "火"))
    if route.startswith("/open311/"):
        path = (path.replace("<format>", "json").replace("<service_code>", "0102")
                .replace("<service_request_id>", world.case).replace("<token>", "0" * 32))
        if method == "POST":  # the spec's guard: a client's api_key
            with transaction(world.sessions) as session:
                key = open311.issue_key(session, "matrix", now=api_world.NOW)
            return world.client.post(path, data={
                "api_key": key, "service_code": "0102", "address_string": "示范街1号"},
                headers=headers)
    if route in ("/api/v1/kpis", "/api/v1/quality/report"):
        path += "?from=2026-11-01T00:00:00%2B08:00&to=2026-11-24T00:00:00%2B08:00"
    if route.endswith("/photos"):
        return world.client.post(path, data=b"\xff\xd8\xff\xe0 not quite a photo",
                                 headers={**headers, "Content-Type": "image/jpeg"})
    if route == "/api/v1/exchange/updates":
        body = json.dumps({"case_number": world.case, "action": "sign",
                           "actor": "平台"}).encode()
        stamp = str(int(api_world.NOW.timestamp()))
        secret = world.app.extensions["hotline.settings"].exchange.webhook_secret
        return world.client.post(path, data=body, headers={
            **headers, "Content-Type": "application/json", "Idempotency-Key": "matrix-0001",
            "X-Hotline-Timestamp": stamp,
            "X-Hotline-Signature": exchange.sign(secret, stamp, body)})
    if route == "/api/v1/sms/inbound":
        form = {"From": "13812345678", "Body": "井盖缺失", "MessageSid": "SMmatrix0001"}
        return world.client.post(path, data=form, headers={
            **headers, "X-Twilio-Signature": sms_signature.compute(
                api_world.SMS_TOKEN, f"http://localhost{path}", list(form.items()))})
    if method == "POST":
        body = ({"appeal_type": "enquiry", "description": "井盖缺失"}
                if route == "/api/v1/orders" else
                {"code": "answered"} if route.endswith("/disposition") else
                {"mode": "listen"} if route.endswith("/spy") else
                {"word": "坍塌"} if route.endswith("/speech/keywords") else {})
        return world.client.post(path, json=body, headers=headers)
    if method == "DELETE":
        return world.client.delete(path, headers=headers)
    return world.client.get(path, headers=headers)


def test_every_route_declares_its_access_and_the_table_names_every_route(world) -> None:
    routes = _routes(world)
    undeclared = sorted(key for key, view in routes.items() if not hasattr(view, "access"))
    assert undeclared == []
    assert set(routes) == set(EXPECTED)


def test_every_route_times_every_role_and_anonymous(world) -> None:
    wrong = []
    for (method, route), view in sorted(_routes(world).items()):
        allowed = EXPECTED[(method, route)]
        anonymous = _call(world, method, route, {})
        if allowed == PUBLIC:
            if anonymous.status_code in (401, 403):
                wrong.append((method, route, "anonymous", anonymous.status_code))
            continue
        page = not route.startswith("/api/")
        if page:  # a page sends the anonymous to sign in first
            if anonymous.status_code != 302 or not anonymous.headers.get(
                    "Location", "").startswith("/login"):
                wrong.append((method, route, "anonymous", anonymous.status_code))
        elif anonymous.status_code != 401 or not anonymous.headers.get(
                "WWW-Authenticate", "").startswith("Bearer"):
            wrong.append((method, route, "anonymous", anonymous.status_code))
        for role in ROLES:
            reply = _call(world, method, route, world.tokens[role])
            # refused by the route's access (or the own-seat rule), not by the workflow
            if page:
                denied = reply.status_code == 403
            else:
                detail = reply.json["detail"] if reply.status_code == 403 else ""
                denied = (detail.endswith(f"may not {view.access}")
                          or detail.startswith("agent:"))
            if (role in allowed) == denied or reply.status_code == 401:
                wrong.append((method, route, role, reply.status_code, reply.json))
    assert wrong == []


def test_an_agent_commands_only_their_own_seat(world) -> None:
    own = api_world.as_identity(world, Identity("坐席8001", ("operator",), False, agent="8001"))
    nobody = api_world.as_identity(world, Identity("无坐席", ("operator",), False))
    for action in ("login", "logout", "resume"):
        mine = world.client.post(f"/api/v1/seats/8001/{action}", json={}, headers=own)
        assert mine.status_code == 503, mine.json  # let through; no telephony service here
        for headers, agent in ((own, "8002"), (nobody, "8001")):
            other = world.client.post(f"/api/v1/seats/{agent}/{action}", json={},
                                      headers=headers)
            assert other.status_code == 403, other.json
            assert other.json["detail"].startswith("agent:")


def test_a_department_sees_and_acts_on_only_its_own_orders(world) -> None:
    sanitation = api_world.as_identity(
        world, Identity("环卫局小李", ("department",), False, department="sanitation"))
    parks = api_world.as_identity(
        world, Identity("园林局小赵", ("department",), False, department="parks"))
    assert world.client.get(f"/api/v1/orders/{world.case}",
                            headers=sanitation).status_code == 200
    for headers, case in ((sanitation, world.other_case), (parks, world.case)):
        read = world.client.get(f"/api/v1/orders/{case}", headers=headers)
        assert read.status_code == 403 and "case_number" in read.json["detail"]
        acted = world.client.post(f"/api/v1/orders/{case}/actions/sign", json={},
                                  headers=headers)
        assert acted.status_code == 403
    listed = world.client.get("/api/v1/orders", headers=sanitation).json
    assert [o["case_number"] for o in listed["items"]] == [world.case]
    assert world.client.get("/api/v1/orders", headers=parks).json["items"] == []
    asked = world.client.get("/api/v1/orders?department_code=parks", headers=sanitation)
    assert asked.status_code == 403 and "department_code" in asked.json["detail"]
    # a department handler bound to no department sees no order, not every order
    unbound = world.tokens["department"]
    for path in ("/api/v1/orders", f"/api/v1/orders/{world.case}",
                 f"/api/v1/orders/{world.other_case}"):
        refused = world.client.get(path, headers=unbound)
        assert refused.status_code == 403, (path, refused.json)
        assert refused.json["detail"].startswith("department:")
    # everyone else reads every order
    everyone = world.client.get("/api/v1/orders", headers=world.tokens["dispatcher"]).json
    assert everyone["total"] == 2
