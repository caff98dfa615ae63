"""HTTP adapter of the reports room: the hotline's KPIs and the CJ/T 292 evaluation of a
window (/api/v1/kpis)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, abort, current_app, jsonify, request

from reports import kpis

kpis_api = Blueprint("kpis", __name__, url_prefix="/api/v1/kpis")
BLUEPRINTS = (kpis_api,)
KPI_BUCKETS = ("day", "week", "month")


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


@kpis_api.get("")
def read_kpis() -> Any:
    start, end = _time("from"), _time("to")
    if start is None or end is None or end <= start:
        abort(400, "from, to: an ISO 8601 window with zones, from before to")
    if (end - start).days > 3660:
        abort(400, "from, to: at most ten years")
    bucket = request.args.get("bucket") or None
    if bucket is not None and bucket not in KPI_BUCKETS:
        abort(400, f"bucket: one of {', '.join(KPI_BUCKETS)}")
    with current_app.extensions["hotline.sessions"]() as session:
        return jsonify(kpis.window_report(
            session, current_app.extensions["hotline.settings"], start, end, bucket,
            current_app.extensions["hotline.clock"].now()))


_ERRORS = {code: {"$ref": f"#/components/responses/{name}"} for code, name in (
    ("400", "BadRequest"), ("401", "Unauthorized"), ("403", "Forbidden"))}

OPENAPI: dict[str, Any] = {
    "schemas": {},
    "paths": {
        "/api/v1/kpis": {"get": {
            "tags": ["kpis"], "summary": "Hotline and work-order KPIs over a window",
            "parameters": [
                {"name": "from", "in": "query", "required": True,
                 "schema": {"type": "string", "format": "date-time"}},
                {"name": "to", "in": "query", "required": True,
                 "schema": {"type": "string", "format": "date-time"}},
                {"name": "bucket", "in": "query",
                 "schema": {"type": "string", "enum": ["day", "week", "month"]}}],
            "responses": {"200": {"description": "the report"}, **_ERRORS}}},
    },
}
