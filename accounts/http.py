"""HTTP adapter of the accounts room: the audit log for auditors (`GET /api/v1/audit`)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from flask import Blueprint, abort, current_app, jsonify, request

from accounts import audit
from accounts.access import requires

audit_api = Blueprint("audit", __name__, url_prefix="/api/v1/audit")
BLUEPRINTS = (audit_api,)
MAX_OFFSET = 10**9


def _text(name: str, limit: int) -> str | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    if len(raw) > limit or re.search(r"[\x00-\x1f\x7f]", raw):
        abort(400, f"{name}: at most {limit} printable characters")
    return raw


def _time(name: str) -> datetime | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00")) if len(raw) <= 40 else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None or not 1970 <= moment.year <= 9998:
        abort(400, f"{name}: an ISO 8601 time with its offset, e.g. 2026-11-24T08:00:00+08:00")
    return moment


def _int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name, str(default))
    if not re.fullmatch(r"[0-9]{1,10}", raw) or not low <= int(raw) <= high:
        abort(400, f"{name}: a whole number from {low} to {high}")
    return int(raw)


@audit_api.get("")
@requires("audit.read")
def read_log() -> Any:
    """The audit log, newest first: filters actor, action, target, since, until; pages
    with limit and offset."""
    action = _text("action", 32)
    if action is not None and action not in audit.ACTIONS:
        abort(400, f"action: one of {', '.join(audit.ACTIONS)}")
    query = audit.AuditQuery(
        actor=_text("actor", 64), action=action, target=_text("target", 200),
        since=_time("since"), until=_time("until"),
        limit=_int("limit", 100, 1, audit.MAX_PAGE), offset=_int("offset", 0, 0, MAX_OFFSET))
    with current_app.extensions["hotline.sessions"]() as session:
        total, entries = audit.find(session, query)
        items = [audit.entry_view(e) for e in entries]
    return jsonify({"total": total, "limit": query.limit, "offset": query.offset,
                    "items": items})


_ERRORS = {code: {"$ref": f"#/components/responses/{name}"} for code, name in (
    ("400", "BadRequest"), ("401", "Unauthorized"), ("403", "Forbidden"))}
_ENTRY = {"type": "object",
          "required": ["id", "at", "actor", "action", "target", "address", "detail"],
          "properties": {
              "id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
              "actor": {"type": "string", "description": "account name; empty: anonymous"},
              "action": {"type": "string", "enum": list(audit.ACTIONS)},
              "target": {"type": "string", "description": "whose or what: an account, a "
                                                          "case number, a call id"},
              "address": {"type": "string", "description": "the client's address"},
              "detail": {"type": "object"}}}
OPENAPI: dict[str, Any] = {
    "schemas": {"AuditEntry": _ENTRY},
    "paths": {"/api/v1/audit": {"get": {
        "tags": ["audit"], "summary": "The audit log (审计日志), newest first; auditors only",
        "parameters": [
            *({"name": n, "in": "query", "schema": {"type": "string", "maxLength": m}}
              for n, m in (("actor", 64), ("target", 200))),
            {"name": "action", "in": "query",
             "schema": {"type": "string", "enum": list(audit.ACTIONS)}},
            *({"name": n, "in": "query", "schema": {"type": "string", "format": "date-time"}}
              for n in ("since", "until")),
            {"name": "limit", "in": "query",
             "schema": {"type": "integer", "minimum": 1, "maximum": audit.MAX_PAGE,
                        "default": 100}},
            {"name": "offset", "in": "query",
             "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET,
                        "default": 0}}],
        "responses": {"200": {"description": "one page of entries", "content": {
            "application/json": {"schema": {
                "type": "object", "required": ["total", "limit", "offset", "items"],
                "properties": {"total": {"type": "integer"}, "limit": {"type": "integer"},
                               "offset": {"type": "integer"},
                               "items": {"type": "array", "items": {
                                   "$ref": "#/components/schemas/AuditEntry"}}}}}}},
            **_ERRORS}}}},
}
