"""HTTP adapter of the tickets room: work orders (/api/v1/orders), the survey callback list
(/api/v1/surveys), the catalogue (/api/v1/catalogue), KPIs (/api/v1/kpis) and the city
platform's inbound status updates (/api/v1/exchange/updates).

Who is asking comes from the bearer token (accounts.service); a workflow action is taken in one
of the caller's roles, and phone numbers are masked unless the caller may see them.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from flask import Blueprint, abort, current_app, jsonify, request
from sqlalchemy.orm import Session, sessionmaker

from accounts.service import Identity
from accounts.web import current_identity
from core import phones
from core.db import transaction
from core.errors import HotlineError
from tickets import catalogue, deadlines, exchange, service, surveys, workflow
from tickets.service import APPEAL_TYPES, OrderQuery, Policy

orders_api = Blueprint("orders", __name__, url_prefix="/api/v1/orders")
surveys_api = Blueprint("surveys", __name__, url_prefix="/api/v1/surveys")
catalogue_api = Blueprint("catalogue", __name__, url_prefix="/api/v1/catalogue")
exchange_api = Blueprint("exchange", __name__, url_prefix="/api/v1/exchange")
BLUEPRINTS = (orders_api, surveys_api, catalogue_api, exchange_api)


def _sessions() -> sessionmaker[Session]:
    return current_app.extensions["hotline.sessions"]  # type: ignore[no-any-return]


def _policy() -> Policy:
    return Policy.from_settings(current_app.extensions["hotline.settings"])


def _now() -> datetime:
    """The web app's clock (core.clock), never the wall clock directly."""
    return current_app.extensions["hotline.clock"].now()  # type: ignore[no-any-return]


def _who() -> Identity:
    return current_identity()


def _as_role(who: Identity, wanted: Any) -> str:
    """The role an action is taken in: the one asked for, which the caller must hold."""
    if not who.name:
        abort(401, "Authorization: a bearer token is needed to change work orders")
    role = wanted if isinstance(wanted, str) and wanted else (who.roles[0] if who.roles else "")
    if role not in who.roles:
        abort(403, f"role: {who.name} does not act as {str(role)[:20]!r}")
    return role


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "body: a JSON object")
    return body


def _fail(exc: HotlineError) -> Any:
    if isinstance(exc, service.OrderNotFound):
        abort(404, str(exc))
    if isinstance(exc, workflow.RoleError):
        abort(403, str(exc))
    if isinstance(exc, workflow.WorkflowError | service.ConcurrentChange):
        abort(409, str(exc))
    abort(400, str(exc))


def _number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value):
        abort(400, f"{name}: a number")
    return float(value)


def _text(body: dict[str, Any], name: str, default: str = "") -> str:
    value = body.get(name, default)
    if not isinstance(value, str):
        abort(400, f"{name}: text")
    return value


def _time(name: str) -> datetime | None:
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        abort(400, f"{name}: an ISO 8601 time with zone")
    if moment.tzinfo is None:
        abort(400, f"{name}: the time needs a zone, e.g. 2026-11-24T08:00:00+08:00")
    return moment


def _int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name, str(default))
    if not raw.isdigit() or not low <= int(raw) <= high:
        abort(400, f"{name}: a whole number from {low} to {high}")
    return int(raw)


def _full_view(session: Session, order: Any, who: Identity) -> dict[str, Any]:
    view = service.order_view(order, who.see_phone)
    view["history"] = [{
        "seq": e.seq, "action": e.action, "from": e.from_state, "to": e.to_state,
        "actor": e.actor, "role": e.role, "note": e.note, "at": e.at.isoformat()}
        for e in service.history(session, order.case_number)]
    view["deadlines"] = [{
        "step": d.step, "round": d.round, "clock": d.clock, "amount": d.amount, "unit": d.unit,
        "started_at": d.started_at.isoformat(), "yellow_at": d.yellow_at.isoformat(),
        "due_at": d.due_at.isoformat(), "extensions": d.extensions,
        "met_at": d.met_at.isoformat() if d.met_at else None, "warning": d.warning,
        "on_time": d.on_time} for d in deadlines.deadlines(session, order.case_number)]
    view["attachments"] = [{"kind": a.kind, "sha256": a.sha256, "bytes": a.bytes}
                           for a in service.attachments(session, order.case_number)]
    view["surveys"] = [{"round": s.round, "state": s.state, "rating": s.rating,
                        "channel": s.channel, "outcome": s.outcome,
                        "call_attempts": s.call_attempts}
                       for s in surveys.surveys_of(session, order.id)]
    view["allowed_actions"] = sorted({a for role in who.roles
                                      for a in workflow.allowed(order.state, role)})
    return view


@orders_api.post("")
def open_order() -> Any:
    who = _who()
    body = _body()
    _as_role(who, workflow.OPERATOR)
    try:
        with transaction(_sessions()) as session:
            order = service.open_order(
                session, appeal_type=_text(body, "appeal_type"),
                description=_text(body, "description"), channel=_text(body, "channel", "web"),
                actor=who.name, citizen_phone=_text(body, "citizen_phone"),
                citizen_name=_text(body, "citizen_name"),
                category_code=_text(body, "category_code"),
                category_kind=_text(body, "category_kind", "event"),
                urgency=_text(body, "urgency", "normal"), address=_text(body, "address"),
                latitude=_number(body, "latitude"), longitude=_number(body, "longitude"),
                call_id=_text(body, "call_id"), policy=_policy(), now=_now())
            view = _full_view(session, order, who)
    except HotlineError as exc:
        _fail(exc)
    return jsonify(view), 201


@orders_api.get("")
def find_orders() -> Any:
    who = _who()
    state = request.args.get("state") or None
    if state is not None and state not in workflow.STATES:
        abort(400, f"state: one of {', '.join(workflow.STATES)}")
    appeal = request.args.get("appeal_type") or None
    if appeal is not None and appeal not in APPEAL_TYPES:
        abort(400, f"appeal_type: one of {', '.join(APPEAL_TYPES)}")
    phone = request.args.get("citizen_phone") or None
    if phone is not None and not who.see_phone:
        abort(403, "citizen_phone: searching by phone needs the privilege to see phones")
    if phone is not None and not phones.normalise_or_empty(phone):
        abort(400, "citizen_phone: a phone number, e.g. 13800138000 or 0451-88888888")
    query = OrderQuery(
        state=state, appeal_type=appeal,
        department_code=(request.args.get("department_code") or None),
        grid_prefix=(request.args.get("grid_prefix") or "")[:15] or None,
        citizen_phone=phone, text=(request.args.get("q") or "")[:100] or None,
        since=_time("since"), until=_time("until"), limit=_int("limit", 50, 1, 500),
        offset=_int("offset", 0, 0, 10_000_000))
    with _sessions()() as session:
        total, found = service.find_orders(session, query)
        items = [service.order_view(o, who.see_phone) for o in found]
    return jsonify({"total": total, "limit": query.limit, "offset": query.offset,
                    "items": items})


@orders_api.get("/<case_number>")
def get_order(case_number: str) -> Any:
    who = _who()
    try:
        with _sessions()() as session:
            return jsonify(_full_view(session, service.get_order(session, case_number), who))
    except HotlineError as exc:
        _fail(exc)


@orders_api.post("/<case_number>/actions/<action>")
def take_action(case_number: str, action: str) -> Any:
    who = _who()
    body = _body()
    role = _as_role(who, body.get("role"))
    version = body.get("expected_version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        abort(400, "expected_version: a whole number")
    note = _text(body, "note")
    into = _text(body, "into") if action == "merge" else ""
    try:
        with transaction(_sessions()) as session:
            order = service.act(session, case_number, action, actor=who.name, role=role,
                                note=note, expected_version=version, into=into,
                                amount=body.get("amount"), policy=_policy(), now=_now())
            view = _full_view(session, order, who)
    except HotlineError as exc:
        _fail(exc)
    return jsonify(view)


@orders_api.post("/<case_number>/photos")
def add_photo(case_number: str) -> Any:
    """A photo for the order (the department's feedback, 处置反馈照片): the raw image bytes,
    Content-Type image/jpeg, image/png or image/webp. 201 when added, 200 with the one
    already kept when the order has these very bytes."""
    who = _who()
    if not who.name:
        abort(401, "Authorization: a bearer token is needed to add photos")
    request.max_content_length = service.MAX_PHOTO_BYTES
    if request.mimetype not in ("image/jpeg", "image/png", "image/webp"):
        abort(415, "Content-Type: image/jpeg, image/png or image/webp")
    settings = current_app.extensions["hotline.settings"]
    # Read before the transaction: on SQLite it holds the write lock from its start, and a
    # slow upload must not keep every other writer waiting.
    content = request.get_data(cache=False)
    try:
        with transaction(_sessions()) as session:
            row, added = service.store_photo(
                session, case_number, content, settings.storage.data_dir / "attachments",
                roles=who.roles, now=_now())
            answer = {"kind": row.kind, "sha256": row.sha256, "bytes": row.bytes}
    except HotlineError as exc:
        _fail(exc)
    return jsonify(answer), 201 if added else 200


@surveys_api.get("/callback-list")
def callback_list() -> Any:
    who = _who()
    with _sessions()() as session:
        items = [{"survey_id": s.id, "case_number": case, "round": s.round,
                  "phone": service.show_phone(s.phone, who.see_phone),
                  "call_attempts": s.call_attempts, "note": s.note}
                 for s, case in surveys.agent_list(session)]
    return jsonify({"items": items})


@surveys_api.post("/<survey_id>/result")
def survey_result(survey_id: str) -> Any:
    if not survey_id.isdigit() or len(survey_id) > 12:
        abort(404, "no such survey")
    who = _who()
    body = _body()
    _as_role(who, workflow.OPERATOR)
    rating = body.get("rating")
    if rating is not None and (isinstance(rating, bool) or rating not in surveys.RATINGS):
        abort(400, "rating: 1 (very satisfied) to 5 (very dissatisfied), or null if the "
                   "citizen could not be reached")
    try:
        with transaction(_sessions()) as session:
            outcome = surveys.agent_result(session, int(survey_id), rating, actor=who.name,
                                           note=_text(body, "note")[:500], policy=_policy(),
                                           now=_now())
    except surveys.SurveyError as exc:
        abort(404 if "no survey" in str(exc) else 409, str(exc))
    return jsonify({"survey_id": int(survey_id), "outcome": outcome})


@catalogue_api.get("")
def read_catalogue() -> Any:
    with _sessions()() as session:
        return jsonify({
            "categories": [{"code": c.code, "kind": c.kind, "name": c.name}
                           for c in catalogue.categories(session)],
            "departments": [{"code": d.code, "name": d.name}
                            for d in catalogue.departments(session)],
            "appeal_types": APPEAL_TYPES})


@exchange_api.post("/updates")
def inbound_update() -> Any:
    """A status update from the city platform, signed with the shared secret."""
    settings = current_app.extensions["hotline.settings"]
    if (request.content_length or 0) > exchange.MAX_INBOUND_BYTES:
        abort(413, f"body: at most {exchange.MAX_INBOUND_BYTES} bytes")
    body = request.stream.read(exchange.MAX_INBOUND_BYTES + 1)  # chunked: stop one past
    with transaction(_sessions()) as session:
        status, answer = exchange.apply_inbound(
            session, idempotency_key=request.headers.get("Idempotency-Key", ""),
            body_bytes=body, timestamp=request.headers.get("X-Hotline-Timestamp", ""),
            signature=request.headers.get("X-Hotline-Signature", ""),
            secret=settings.exchange.webhook_secret, now=_now(),
            policy=_policy())
    return jsonify(answer), status


_ORDER = {
    "type": "object",
    "required": ["case_number", "state", "version", "appeal_type", "description"],
    "properties": {
        "case_number": {"type": "string", "pattern": "^[0-9]{12,16}$",
                        "description": "案件编号 YYYYMMDDNNNN: the local day and its count, "
                                       "more than 4 digits after the 9,999th of a day"},
        "state": {"type": "string", "enum": list(workflow.STATES)},
        "version": {"type": "integer", "description": "for expected_version"},
        "appeal_type": {"type": "string", "enum": list(APPEAL_TYPES)},
        "category_code": {"type": "string"}, "category_kind": {"type": "string"},
        "urgency": {"type": "string", "enum": list(service.URGENCIES)},
        "description": {"type": "string"}, "channel": {"type": "string"},
        "citizen_phone": {"type": "string",
                          "description": "masked (138****8000) without the privilege"},
        "citizen_name": {"type": "string"}, "address": {"type": "string"},
        "latitude": {"type": ["number", "null"], "description": "WGS84"},
        "longitude": {"type": ["number", "null"]},
        "grid_code": {"type": "string", "description": "单元网格 code"},
        "department_code": {"type": "string"},
        "duplicate_of": {"type": "string", "description": "a suspected repeat of this order"},
        "merged_into": {"type": "string"}, "repeat_caller": {"type": "boolean"},
        "rework_count": {"type": "integer"}, "first_call_resolved": {"type": "boolean"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "closed_at": {"type": ["string", "null"], "format": "date-time"},
        "history": {"type": "array", "items": {"type": "object"}},
        "deadlines": {"type": "array", "items": {"type": "object"}},
        "attachments": {"type": "array", "items": {"type": "object"}},
        "surveys": {"type": "array", "items": {"type": "object"}},
        "allowed_actions": {"type": "array", "items": {"type": "string"}},
    },
}
_NEW_ORDER = {
    "type": "object", "required": ["appeal_type", "description"],
    "properties": {
        "appeal_type": {"type": "string", "enum": list(APPEAL_TYPES)},
        "description": {"type": "string", "maxLength": service.MAX_DESCRIPTION},
        "channel": {"type": "string", "enum": list(service.CHANNELS), "default": "web"},
        "citizen_phone": {"type": "string"}, "citizen_name": {"type": "string"},
        "category_code": {"type": "string"},
        "category_kind": {"type": "string", "enum": ["event", "component"]},
        "urgency": {"type": "string", "enum": list(service.URGENCIES)},
        "address": {"type": "string", "maxLength": 200},
        "latitude": {"type": "number", "minimum": -90, "maximum": 90},
        "longitude": {"type": "number", "minimum": -180, "maximum": 180},
        "call_id": {"type": "string"},
    },
}
_ERRORS = {code: {"$ref": f"#/components/responses/{name}"} for code, name in (
    ("400", "BadRequest"), ("401", "Unauthorized"), ("403", "Forbidden"), ("404", "NotFound"),
    ("409", "Conflict"), ("503", "Unavailable"))}
_CASE = {"name": "case_number", "in": "path", "required": True, "schema": {"type": "string"}}
_JSON_ORDER = {"content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/WorkOrder"}}}}

OPENAPI: dict[str, Any] = {
    "schemas": {"WorkOrder": _ORDER, "NewWorkOrder": _NEW_ORDER},
    "paths": {
        "/api/v1/orders": {
            "post": {"tags": ["orders"], "summary": "Take in a work order (受理)",
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"$ref": "#/components/schemas/NewWorkOrder"}}}},
                     "responses": {"201": {"description": "the new order", **_JSON_ORDER},
                                   **_ERRORS}},
            "get": {"tags": ["orders"], "summary": "Search work orders, newest first",
                    "parameters": [
                        {"name": n, "in": "query", "schema": {"type": "string"}}
                        for n in ("state", "appeal_type", "department_code", "grid_prefix",
                                  "citizen_phone", "q", "since", "until", "limit", "offset")],
                    "responses": {"200": {"description": "a page of orders"}, **_ERRORS}},
        },
        "/api/v1/orders/{case_number}": {"get": {
            "tags": ["orders"], "summary": "One order with its history, clocks and surveys",
            "parameters": [_CASE],
            "responses": {"200": {"description": "the order", **_JSON_ORDER}, **_ERRORS}}},
        "/api/v1/orders/{case_number}/actions/{action}": {"post": {
            "tags": ["orders"],
            "summary": "Take a workflow action (立案, 派遣, 签收, 反馈, 结案, 并单, 延期 ...)",
            "parameters": [_CASE, {"name": "action", "in": "path", "required": True,
                                   "schema": {"type": "string",
                                              "enum": list(workflow.ACTIONS)}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "properties": {
                    "role": {"type": "string", "enum": list(workflow.ROLES)},
                    "note": {"type": "string", "maxLength": 2000},
                    "expected_version": {"type": "integer"},
                    "into": {"type": "string", "description": "merge: the surviving order"},
                    "amount": {"type": "integer", "minimum": 1,
                               "description": "grant_extension: how much longer, in the "
                                              "running clock's own unit (minutes, hours or "
                                              "days); at most its original limit at a "
                                              "time"}}}}}},
            "responses": {"200": {"description": "the order after the action", **_JSON_ORDER},
                          **_ERRORS}}},
        "/api/v1/orders/{case_number}/photos": {"post": {
            "tags": ["orders"],
            "summary": "Add a photo to an order (处置照片), at most 8 MiB: by a role that may "
                       "act on the order now (403), not once it is finished (409)",
            "parameters": [_CASE],
            "requestBody": {"required": True, "content": {
                kind: {"schema": {"type": "string", "format": "binary"}}
                for kind in ("image/jpeg", "image/png", "image/webp")}},
            "responses": {"201": {"description": "kept: its SHA-256 and size"},
                          "200": {"description": "these bytes were already kept with the "
                                                 "order: that attachment, not a second"},
                          "413": {"description": "over 8 MiB"},
                          "415": {"description": "not a JPEG, PNG or WebP"}, **_ERRORS}}},
        "/api/v1/surveys/callback-list": {"get": {
            "tags": ["surveys"],
            "summary": "Surveys the survey line and SMS could not finish (人工回访)",
            "responses": {"200": {"description": "the list"}}}},
        "/api/v1/surveys/{survey_id}/result": {"post": {
            "tags": ["surveys"], "summary": "An agent's callback: the rating, or unreachable",
            "parameters": [{"name": "survey_id", "in": "path", "required": True,
                            "schema": {"type": "integer"}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "properties": {
                    "rating": {"type": ["integer", "null"], "minimum": 1, "maximum": 5},
                    "note": {"type": "string"}}}}}},
            "responses": {"200": {"description": "the outcome"}, **_ERRORS}}},
        "/api/v1/catalogue": {"get": {
            "tags": ["catalogue"],
            "summary": "Event and component categories, departments, appeal types",
            "responses": {"200": {"description": "the catalogue"}}}},
        "/api/v1/exchange/updates": {"post": {
            "tags": ["exchange"],
            "summary": "A signed status update from the city platform (idempotent)",
            "parameters": [
                {"name": "Idempotency-Key", "in": "header", "required": True,
                 "schema": {"type": "string"}},
                {"name": "X-Hotline-Timestamp", "in": "header", "required": True,
                 "schema": {"type": "string"}},
                {"name": "X-Hotline-Signature", "in": "header", "required": True,
                 "schema": {"type": "string", "description": "sha256=<hex HMAC>"}}],
            "responses": {"200": {"description": "applied (or the first answer, replayed)"},
                          **_ERRORS}}},
    },
}
