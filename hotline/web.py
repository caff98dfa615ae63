"""The web application: every room's HTTP adapter under /api/v1, one OpenAPI document.

Schema-first with flask-openapi3 (pydantic v2, OpenAPI 3.1): each route declares its path,
query, header and body models and its responses, the library validates them before the view
runs and builds /api/v1/openapi.json from the same models. Its docs UI is off (the web shell
serves a local one). Who may call a route (`accounts.access.requires`) is checked before
anything of the request is validated or parsed.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import Any

import redis
from flask import current_app, jsonify, request
from flask.json.provider import DefaultJSONProvider
from flask_openapi3 import Info, OpenAPI
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from waitress import wasyncore
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from accounts import http as accounts_http
from accounts import pages as accounts_pages
from accounts import web as accounts_web
from accounts.access import PUBLIC, check, requires
from agent_desk import board_pages
from agent_desk import casemap as desk_map
from agent_desk import lists as desk_lists
from agent_desk import orders as desk_orders
from agent_desk import pages as desk_pages
from agent_desk import quality_pages as desk_quality
from agent_desk import staffing as desk_staffing
from agent_desk import supervise as desk_supervise
from agent_desk import transcript_search as desk_transcripts
from agent_desk import workspace as desk_workspace
from channels import open311_http, portal_pages, sms_http
from channels.outbound import http as sms_status
from core import limits, logs
from core.clock import Clock
from core.config import Settings
from core.db import is_busy, is_disconnect
from core.errors import HotlineError
from core.schemas import ErrorBody, parse_json
from hotline import health, metrics, shell
from ivr.prompts import speak
from quality import http as quality_http
from recordings import http as transcripts_http
from recordings import retention_http
from reports import http as reports_http
from reports import pages as reports_pages
from telephony import http as telephony_http
from tickets import call_facts, knowledge_http
from tickets import http as tickets_http
from tickets.in_force import RulesCache
from tickets.policy import APP_KEY, Policy

MAX_REQUEST_BYTES = 1 << 20
log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 1  # a 503's Retry-After: storage busy, the telephony service away
OPENAPI_PATH = "/api/v1/openapi.json"
BEARER = {"bearer": {"type": "http", "scheme": "bearer",
                     "description": "a token from `hotline users add` (or a signed-in "
                                    "session); phone numbers stay masked without the "
                                    "privilege to see them"}}


class _JsonProvider(DefaultJSONProvider):
    """Request bodies parsed by pydantic-core: nesting past its limit, NaN or Infinity are
    a ValueError (so a 400), never a RecursionError deep in the standard library."""

    ensure_ascii = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return parse_json(s)


class _HotlineOpenAPI(OpenAPI):
    json_provider_class = _JsonProvider


# pydantic's messages for the common cases, in the words the API's documentation uses
_WORDS: dict[str, Any] = {
    "int_type": lambda _: "a whole number", "int_parsing": lambda _: "a whole number",
    "int_from_float": lambda _: "a whole number",
    "float_type": lambda _: "a number", "float_parsing": lambda _: "a number",
    "finite_number": lambda _: "a finite number",
    "string_type": lambda _: "text",
    "string_too_long": lambda c: f"at most {c.get('max_length')} characters",
    "string_too_short": lambda c: ("required" if c.get("min_length") == 1
                                   else f"at least {c.get('min_length')} characters"),
    "less_than_equal": lambda c: f"at most {c.get('le')}",
    "greater_than_equal": lambda c: f"at least {c.get('ge')}",
    "literal_error": lambda c: "one of " + str(c.get("expected", "")).replace("'", ""),
    "timezone_aware": lambda _: "the time needs a zone, e.g. 2026-11-24T08:00:00+08:00",
    "missing": lambda _: "required",
}


def _problem(error: dict[str, Any]) -> str:
    """One pydantic error as "field: what is wrong" (a whole-model error names its fields
    in its own message)."""
    names = [str(part) for part in error.get("loc", ()) if not isinstance(part, int)]
    kind = error.get("type")
    text = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if kind in ("model_attributes_type", "dict_type", "model_type"):
        text = "a JSON object"
    elif kind == "extra_forbidden":
        text = "not a field of this request"
    elif kind in _WORDS:
        text = _WORDS[kind](error.get("ctx") or {})
    else:
        text = text[:1].lower() + text[1:]
    if not names:
        if text != "a JSON object":
            return text
        if request.get_data(cache=True) and request.get_json(silent=True) is None:
            return "body: a JSON object (this is not JSON, or nests deeper than 200 levels)"
        return "body: a JSON object"
    return f"{'.'.join(names)}: {text}"


def validation_error(error: ValidationError) -> Any:
    """400 naming the first wrong field (every wrong field follows); a path parameter
    that fails its schema names nothing that exists: 404."""
    problems = error.errors(include_url=False, include_input=False)
    detail = "; ".join(_problem(p) for p in problems[:5])
    status = 404 if error.title.endswith("Path") else 400
    response = jsonify({"error": HTTP_STATUS_CODES[status], "detail": detail})
    response.status_code = status
    return response


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> Any:
    response = jsonify({"error": HTTP_STATUS_CODES.get(status, "Error"), "detail": detail})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    if status == 401:
        response.headers.setdefault("WWW-Authenticate", 'Bearer realm="hotline"')
    if status == 503:  # unavailable for now: say when to come back
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def create_app(settings: Settings, sessions: sessionmaker[Session], live: redis.Redis,
               clock: Clock, policy: Policy | None = None) -> OpenAPI:
    """The web app; `policy`: the process's (hotline.compose), whose rules cache every door
    shares, else one from the settings with a cache of its own."""
    app = _HotlineOpenAPI(
        "hotline", static_folder=None, info=Info(title="12319 hotline API", version="1",
                             description="城市管理服务热线 · the city-service hotline's JSON API"),
        security_schemes=BEARER, doc_ui=False, validation_error_status=400,
        validation_error_model=ErrorBody, validation_error_callback=validation_error)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.extensions["hotline.settings"] = settings
    app.extensions["hotline.sessions"] = sessions
    app.extensions["hotline.redis"] = live
    app.extensions["hotline.clock"] = clock
    app.extensions[APP_KEY] = policy if policy is not None else replace(
        Policy.from_settings(settings), rules=RulesCache(lambda: live))
    app.extensions["hotline.speak"] = speak  # surge announcements typed as text (espeak-ng)
    # the case number of a call's order, for the rooms below tickets (a transcript's hits)
    app.extensions[transcripts_http.CASE_NUMBERS] = call_facts.case_numbers
    accounts_web.init_app(app, settings)  # sign-in sessions, CSRF
    limits.init_app(app, live)  # rate limits counted in the app's Redis (core.limits)
    app.register_blueprint(accounts_pages.pages)
    app.register_blueprint(desk_pages.desk)
    app.register_blueprint(desk_workspace.workspace)  # case workspaces, order pages
    app.register_blueprint(desk_staffing.staffing)  # the staffing forecast, surge mode
    app.register_blueprint(desk_supervise.supervise)  # listen / whisper / barge
    app.register_blueprint(board_pages.board_pages)  # the live wallboard (监控大屏)
    app.register_blueprint(desk_quality.quality_pages)  # quality review (质检)
    app.register_blueprint(desk_transcripts.transcript_search)  # transcript search (检索)
    app.register_api(desk_orders.desk_orders)  # the desk's order form (no API document)
    app.register_api(desk_lists.desk_lists)  # the agent's own lists (no API document)
    app.register_api(reports_pages.report_pages)  # the reports page and exports (no API doc)
    app.register_blueprint(desk_map.map_page)  # the case map (案件地图) ...
    app.register_api(desk_map.map_data)  # ... and its data (no API document)
    app.register_blueprint(portal_pages.portal_pages)  # the citizens' portal (公众服务门户)
    app.register_api(portal_pages.portal_api)  # ... and its endpoints (public)
    for blueprint in (*telephony_http.BLUEPRINTS, *tickets_http.BLUEPRINTS,
                      *knowledge_http.BLUEPRINTS,
                      *reports_http.BLUEPRINTS, *accounts_http.BLUEPRINTS,
                      *quality_http.BLUEPRINTS, *retention_http.BLUEPRINTS):
        app.register_api(blueprint)
    app.register_api(sms_status.sms_status_api)  # the SMS gateway's delivery receipts
    app.extensions["csrf"].exempt(sms_status.sms_status_api)  # signed, no browser session
    for blueprint in sms_http.BLUEPRINTS:  # the SMS gateway's webhook: signed, no CSRF token
        app.register_api(blueprint)
        app.extensions["csrf"].exempt(blueprint)
    open311_http.init_app(app)  # Open311 GeoReport v2 (/open311), its own errors and formats
    app.register_api(transcripts_http.transcripts_api)  # transcripts (通话转写), speech status
    shell.init_app(app)  # the pages' ground: static files, languages, CSP, the API docs
    app.register_api(health.health_api)  # /healthz and /readyz, public (hotline.health)
    metrics.init_app(app, settings)  # /metrics for Prometheus, and each request timed

    @app.before_request
    def ids_for_logs() -> None:
        """What this request is about, on its log lines (core.logs); none: cleared, as the
        server's threads serve one request after another."""
        args = request.view_args or {}
        logs.CALL_ID.set(str(args.get("call_id", "")))
        logs.CASE_NUMBER.set(str(args.get("case_number", "")))

    @app.before_request
    def who_may() -> None:
        """The route's declared permission, before its body or parameters are read."""
        view = app.view_functions.get(request.endpoint or "")
        access = getattr(view, "access", None)
        if access is not None and access != PUBLIC:
            check(access)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        if error.response is not None:  # a response already made (validation_error)
            return error.response
        headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
        return error_response(error.code or 500, error.description or "", headers)

    @app.errorhandler(HotlineError)
    def domain_error(error: HotlineError) -> Any:
        """Every room's refusals: the error's own status, its message as the detail."""
        if error.status >= 500 and error.status != 503:
            raise error
        return error_response(error.status, str(error))

    @app.errorhandler(DBAPIError)
    def storage_error(error: DBAPIError) -> Any:
        """Locks held by other writers (SQLite's "database is locked"), or the database
        away (PostgreSQL restarting, the connection dropped or refused): the request's
        transaction was rolled back whole, so the client may simply send it again (an
        order with the same Idempotency-Key: a COMMIT whose answer was lost is not taken
        in twice). Anything else (a bad statement, a broken schema) stays a 500."""
        if is_busy(error):
            return error_response(503, "storage busy: other changes hold the database; "
                                       "nothing was changed, send the request again shortly")
        if is_disconnect(error):
            log.warning("database unavailable: %s", error.orig or error)
            return error_response(503, "storage unavailable: the database cannot be reached "
                                       "for now; send the request again shortly")
        raise error

    @app.errorhandler(PoolTimeout)
    def no_connection_free(_error: PoolTimeout) -> Any:
        """Every pooled connection in use for longer than the pool waits: busy, not broken."""
        return error_response(503, "storage busy: no database connection free; nothing was "
                                   "changed, send the request again shortly")

    @app.errorhandler(redis.RedisError)
    def live_state_away(error: redis.RedisError) -> Any:
        """Live state (seats, live calls, commands) lives in Redis: while Redis is away a
        page or API that needs it answers 503; stored changes (orders) still go through,
        their events kept in the outbox until Redis returns (core.outbox)."""
        current_app.logger.warning("Redis cannot be reached: %s", error)
        return error_response(503, "live state unavailable: Redis cannot be reached "
                                   f"({type(error).__name__}); stored data is safe, try "
                                   "again shortly")

    @app.get(OPENAPI_PATH, summary="This document (OpenAPI 3.1)", responses={200: {
        "description": "the OpenAPI 3.1 document of this API",
        "content": {"application/json": {"schema": {"type": "object"}}}}})
    @requires(PUBLIC)
    def openapi() -> Any:
        return jsonify(current_app.api_doc)  # type: ignore[attr-defined]

    return app


def stop_web_server(server: Any, thread: threading.Thread) -> None:
    """Stop a waitress server running `server.run()` in `thread`: finish the requests in
    flight, then close every socket from the server's own loop thread and wait for it.
    Closed from another thread, the loop went on selecting on a closed descriptor, and a
    server started next on the same port could find it still taken.

    The loop is woken through its trigger, a pipe. If that pipe is gone (closed, or its
    write end no longer ours: a CI run found it so, closed by something in the process that
    is still unknown), writing to it could land in another file that took the number: the
    loop is then stopped by emptying its map instead, and its sockets closed once it has
    returned; the pipe's two numbers are left alone, for the same reason."""
    server.task_dispatcher.shutdown(timeout=5)
    trigger = server.trigger
    if getattr(trigger, "_closed", False):  # waitress marks its trigger closed here
        log.error("web: the server's wake-up pipe was closed before its stop; stopping "
                  "its loop by emptying its map")
    else:
        try:
            trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        except OSError as exc:
            log.error("web: the server's wake-up pipe (descriptor %s) cannot be written "
                      "(%s): something in this process closed a descriptor it did not own; "
                      "stopping the loop by emptying its map", trigger.trigger, exc)
            _stop_loop_from_outside(server, thread, close_trigger=False)
            return
        thread.join(5)
    if thread.is_alive() or server._map:
        _stop_loop_from_outside(server, thread)


def _stop_loop_from_outside(server: Any, thread: threading.Thread, *,
                            close_trigger: bool = True) -> None:
    """Empty the loop's map, so that it returns after its current select (at most its
    timeout, a second), then close what was in it from this thread, no longer racing it.
    A trigger already closed is not closed again (waitress checks)."""
    left = list(server._map.values())
    server._map.clear()
    thread.join(server.adj.asyncore_loop_timeout + 5)
    for dispatcher in left:
        if dispatcher is server.trigger:
            if close_trigger:
                dispatcher.close()
        elif dispatcher is server:  # the listening socket; its close() closes the trigger
            wasyncore.dispatcher.close(server)
        else:
            dispatcher.close()
