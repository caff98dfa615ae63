"""HTTP adapter of the telephony room: call records (/api/v1/calls) and agent seats
(/api/v1/seats). Seat changes go to the telephony service as commands; this adapter never
talks to Asterisk itself."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from flask import Blueprint, abort, current_app, jsonify, request

from core import phones
from telephony import commands, records
from telephony.seats import SEATS_KEY, STATES

calls_api = Blueprint("calls", __name__, url_prefix="/api/v1/calls")
seats_api = Blueprint("seats", __name__, url_prefix="/api/v1/seats")
SEAT_ACTIONS = ("login", "logout", "pause", "resume")
# How long a request waits for the telephony service: a waitress thread is held meanwhile,
# and the web server has few of them.
WEB_COMMAND_SECONDS = 3.0

_AGENT = re.compile(r"[0-9+*#]{1,40}")


def _sessions():  # type: ignore[no-untyped-def]
    return current_app.extensions["hotline.sessions"]


def _time_param(name: str) -> float | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        abort(400, f"{name}: an ISO 8601 time with zone, or Unix seconds")
    if parsed.tzinfo is None:
        abort(400, f"{name}: the time needs a zone, e.g. 2026-11-24T08:00:00+08:00")
    return parsed.timestamp()


def _int_param(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name, str(default))
    if not raw.isdigit() or not low <= int(raw) <= high:
        abort(400, f"{name}: a whole number from {low} to {high}")
    return int(raw)


@calls_api.get("")
def list_calls() -> Any:
    caller = request.args.get("caller_number") or None
    if caller is not None and not phones.normalise_or_empty(caller):
        abort(400, "caller_number: a phone number, e.g. 13800138000 or 0451-88888888")
    outcome = request.args.get("outcome") or None
    if outcome is not None and outcome not in records.OUTCOMES:
        abort(400, f"outcome: one of {', '.join(records.OUTCOMES)}")
    agent = request.args.get("agent") or None
    if agent is not None and not _AGENT.fullmatch(agent):
        abort(400, "agent: an agent number")
    direction = request.args.get("direction") or None
    if direction is not None and direction not in records.DIRECTIONS:
        abort(400, f"direction: one of {', '.join(records.DIRECTIONS)}")
    query = records.CallQuery(
        since=_time_param("since"), until=_time_param("until"), caller_number=caller,
        outcome=outcome, agent=agent, direction=direction,
        limit=_int_param("limit", 50, 1, 500),
        offset=_int_param("offset", 0, 0, 10_000_000))
    with _sessions()() as session:
        total, items = records.find_calls(session, query)
    return jsonify({"total": total, "limit": query.limit, "offset": query.offset,
                    "items": items})


@calls_api.get("/<call_id>")
def get_call(call_id: str) -> Any:
    if len(call_id) > 64:
        abort(404, "no such call")
    with _sessions()() as session:
        call = records.get_call(session, call_id)
    if call is None:
        abort(404, "no such call")
    return jsonify(call)


@seats_api.get("")
def list_seats() -> Any:
    live = current_app.extensions["hotline.redis"].hgetall(SEATS_KEY)
    seats = sorted((json.loads(v) for v in live.values()), key=lambda s: s["agent"])
    return jsonify({"items": seats})


@seats_api.post("/<agent>/<action>")
def seat_action(agent: str, action: str) -> Any:
    if action not in SEAT_ACTIONS:
        abort(404, f"no seat action {action[:20]!r}; one of {', '.join(SEAT_ACTIONS)}")
    if not _AGENT.fullmatch(agent):
        abort(404, "no such agent")
    body = request.get_json(silent=True) if request.data else {}
    if not isinstance(body, dict):
        abort(400, "body: a JSON object, e.g. {\"reason\": \"break\"}")
    args: dict[str, Any] = {"agent": agent}
    if action == "pause":
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason:
            abort(400, "reason: required to pause, e.g. break")
        args["reason"] = reason[:40]
    try:
        commands.send(current_app.extensions["hotline.redis"], f"seat.{action}", args,
                      timeout=WEB_COMMAND_SECONDS)
    except commands.Unavailable as exc:
        abort(503, str(exc).removeprefix("telephony: "))
    except commands.CommandError as exc:
        abort(409, str(exc).removeprefix("telephony: "))
    return jsonify({"agent": agent, "done": action}), 202


_SEAT = {
    "type": "object",
    "properties": {
        "agent": {"type": "string"},
        "state": {"type": "string", "enum": list(STATES)},
        "reason": {"type": "string", "description": "pause reason code while paused"},
        "since": {"type": "number", "description": "Unix seconds, from the AMI event"},
        "queues": {"type": "array", "items": {"type": "string"}},
        "unanswered_in_a_row": {"type": "integer"},
        "seconds_in_state": {"type": "object", "additionalProperties": {"type": "number"}},
    },
}

_CALL = {
    "type": "object",
    "required": ["call_id", "caller_number", "started_at", "outcome"],
    "properties": {
        "call_id": {"type": "string", "description": "Asterisk Linkedid of the call"},
        "direction": {"type": "string", "enum": list(records.DIRECTIONS),
                      "description": "outbound: a call the hotline placed"},
        "purpose": {"type": "string", "description": "of an outbound call: survey, callback"},
        "caller_number": {"type": "string", "description": "as Asterisk presented it"},
        "citizen_number": {"type": "string",
                           "description": "the citizen's number, national form; \"\" when "
                                          "withheld"},
        "caller_name": {"type": "string"},
        "entry_number": {"type": "string", "example": "12319"},
        "started_at": {"type": "number", "description": "Unix seconds"},
        "ended_at": {"type": ["number", "null"]},
        "duration_seconds": {"type": ["number", "null"]},
        "outcome": {"type": "string", "enum": list(records.OUTCOMES)},
        "queue": {"type": ["string", "null"]},
        "queue_position": {"type": ["integer", "null"]},
        "wait_seconds": {"type": ["number", "null"]},
        "short_abandon": {"type": "boolean"},
        "agent": {"type": ["string", "null"]},
        "connected_at": {"type": ["number", "null"]},
        "talk_seconds": {"type": ["number", "null"]},
        "hold_seconds": {"type": "number"},
        "hangup_by": {"type": "string", "enum": ["citizen", "agent", "transfer", "system"]},
        "hangup_cause": {"type": ["integer", "null"]},
        "hangup_cause_text": {"type": "string"},
        "recording": {"type": ["object", "null"], "properties": {
            "path": {"type": "string"}, "sha256": {"type": ["string", "null"]},
            "bytes": {"type": ["integer", "null"]}}},
        "incomplete": {"type": "boolean",
                       "description": "part of the call happened while the AMI link was down"},
        "ivr_path": {"type": "array", "items": {"type": "object"}},
        "agent_attempts": {"type": "array", "items": {"type": "object"}},
        "transfers": {"type": "array", "items": {"type": "object"}},
        "legs": {"type": "array", "items": {"type": "object"}},
    },
}

OPENAPI = {
    "schemas": {"Call": _CALL, "Seat": _SEAT},
    "paths": {
        "/api/v1/seats": {"get": {
            "tags": ["seats"], "summary": "Every agent seat's live state (坐席状态)",
            "responses": {"200": {"description": "seats", "content": {"application/json": {
                "schema": {"type": "object", "properties": {"items": {
                    "type": "array", "items": {"$ref": "#/components/schemas/Seat"}}}}}}}},
        }},
        "/api/v1/seats/{agent}/{action}": {"post": {
            "tags": ["seats"],
            "summary": "Log a seat in or out, pause it with a reason, or resume it",
            "parameters": [
                {"name": "agent", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "action", "in": "path", "required": True,
                 "schema": {"type": "string", "enum": list(SEAT_ACTIONS)}}],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"reason": {"type": "string"}}}}}},
            "responses": {
                "202": {"description": "Asterisk accepted it; the seat's state follows"},
                "400": {"$ref": "#/components/responses/BadRequest"},
                "404": {"$ref": "#/components/responses/NotFound"},
                "409": {"$ref": "#/components/responses/Conflict"},
                "503": {"$ref": "#/components/responses/Unavailable"},
            },
        }},
        "/api/v1/calls": {"get": {
            "tags": ["calls"], "summary": "Finished calls, newest first (通话记录)",
            "parameters": [
                {"name": "since", "in": "query", "schema": {"type": "string"},
                 "description": "ISO 8601 with zone, or Unix seconds"},
                {"name": "until", "in": "query", "schema": {"type": "string"}},
                {"name": "caller_number", "in": "query", "schema": {"type": "string"}},
                {"name": "agent", "in": "query", "schema": {"type": "string"}},
                {"name": "direction", "in": "query",
                 "schema": {"type": "string", "enum": list(records.DIRECTIONS)}},
                {"name": "outcome", "in": "query",
                 "schema": {"type": "string", "enum": list(records.OUTCOMES)}},
                {"name": "limit", "in": "query",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}},
                {"name": "offset", "in": "query",
                 "schema": {"type": "integer", "minimum": 0, "default": 0}},
            ],
            "responses": {
                "200": {"description": "a page of calls", "content": {"application/json": {
                    "schema": {"type": "object", "properties": {
                        "total": {"type": "integer"}, "limit": {"type": "integer"},
                        "offset": {"type": "integer"},
                        "items": {"type": "array",
                                  "items": {"$ref": "#/components/schemas/Call"}}}}}}},
                "400": {"$ref": "#/components/responses/BadRequest"},
            },
        }},
        "/api/v1/calls/{call_id}": {"get": {
            "tags": ["calls"], "summary": "One finished call",
            "parameters": [{"name": "call_id", "in": "path", "required": True,
                            "schema": {"type": "string", "maxLength": 64}}],
            "responses": {
                "200": {"description": "the call", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Call"}}}},
                "404": {"$ref": "#/components/responses/NotFound"},
            },
        }},
    },
}
