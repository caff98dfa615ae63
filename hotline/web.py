"""The web application: every room's HTTP adapter under /api/v1, one OpenAPI document."""

from __future__ import annotations

import threading
from typing import Any

import redis
from flask import Flask, jsonify
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from waitress import wasyncore
from werkzeug.exceptions import HTTPException

from accounts import http as accounts_http
from accounts import pages as accounts_pages
from accounts import web as accounts_web
from core.clock import Clock
from core.config import Settings
from core.db import is_busy
from hotline import shell
from reports import http as reports_http
from telephony import http as telephony_http
from tickets import http as tickets_http

ROOMS = (telephony_http, tickets_http, reports_http, accounts_http)
MAX_REQUEST_BYTES = 1 << 20
RETRY_AFTER_SECONDS = 1  # a 503's Retry-After: storage busy, the telephony service away


def create_app(settings: Settings, sessions: sessionmaker[Session], live: redis.Redis,
               clock: Clock) -> Flask:
    app = Flask("hotline", static_folder=None)  # static files: the shell's route
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.extensions["hotline.settings"] = settings
    app.extensions["hotline.sessions"] = sessions
    app.extensions["hotline.redis"] = live
    app.extensions["hotline.clock"] = clock
    accounts_web.init_app(app, settings)  # sign-in sessions, CSRF
    app.register_blueprint(accounts_pages.pages)
    app.register_blueprint(telephony_http.calls_api)
    app.register_blueprint(telephony_http.seats_api)
    for blueprint in (*tickets_http.BLUEPRINTS, *reports_http.BLUEPRINTS,
                      *accounts_http.BLUEPRINTS):
        app.register_blueprint(blueprint)
    shell.init_app(app)  # the pages' ground: static files, languages, CSP, the API docs

    @app.get("/api/v1/openapi.json")
    def openapi() -> Any:
        return jsonify(openapi_document())

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        response = jsonify({"error": error.name, "detail": error.description})
        if error.code == 503:  # unavailable for now: say when to come back
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response, error.code

    @app.errorhandler(OperationalError)
    def storage_error(error: OperationalError) -> Any:
        """Locks held by other writers (SQLite's "database is locked"): the request's
        transaction was rolled back whole, so the client may simply send it again."""
        if not is_busy(error):
            raise error  # a broken or unreachable database stays a 500
        return (jsonify({"error": "Service Unavailable",
                         "detail": "storage busy: other changes hold the database; nothing "
                                   "was changed, send the request again shortly"}),
                503, {"Retry-After": str(RETRY_AFTER_SECONDS)})

    return app


def stop_web_server(server: Any, thread: threading.Thread) -> None:
    """Stop a waitress server running `server.run()` in `thread`: finish the requests in
    flight, then close every socket from the server's own loop thread and wait for it.
    Closed from another thread, the loop went on selecting on a closed descriptor, and a
    server started next on the same port could find it still taken."""
    server.task_dispatcher.shutdown(timeout=5)
    server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
    thread.join(5)
    if thread.is_alive():
        wasyncore.close_all(server._map)


def openapi_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for room in ROOMS:
        schemas.update(room.OPENAPI["schemas"])
        paths.update(room.OPENAPI["paths"])
    error = {"type": "object", "required": ["error", "detail"],
             "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "12319 hotline API", "version": "1",
                 "description": "城市管理服务热线 · the city-service hotline's JSON API"},
        "security": [{}, {"bearer": []}],
        "paths": {**paths, "/api/v1/openapi.json": {"get": {
            "summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}}},
        "components": {
            "schemas": {**schemas, "Error": error},
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "a token from `hotline users add`; reads without one see "
                               "masked phone numbers"}},
            "responses": {
                name: {"description": text, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Error"}}}}
                for name, text in (
                    ("BadRequest", "a parameter is wrong; detail names it"),
                    ("Unauthorized", "no token, or a token nobody holds"),
                    ("Forbidden", "the token's user may not do this (role, privilege)"),
                    ("NotFound", "no such resource"),
                    ("Conflict", "refused in the resource's present state; detail says why"),
                    ("Unavailable", "the telephony service or Asterisk cannot be reached, "
                                    "or the database is busy: nothing was changed, send "
                                    "the request again after Retry-After seconds"))},
        },
    }
