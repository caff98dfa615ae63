"""Who is asking over HTTP, for every room's adapter: `current_identity()`; and the audit
helpers adapters call when they show what is audited (`phones_shown`, `audit`).

A bearer token (machine clients, scripts) is looked at first; else the signed-in person's
session (Flask-Login). Adapters ask here and never read accounts' tables themselves.

`init_app` sets up sign-in sessions and CSRF for the web app. Decisions kept here:
- The session cookie is HttpOnly, SameSite=Lax and `Secure` on every request except plain
  http to a loopback host (127.0.0.0/8, ::1, localhost: development and the tests); behind a
  TLS proxy, the proxy must pass the public Host header on (nginx: `proxy_set_header Host`).
- A session ends `accounts.session_hours` after signing in, or `accounts.idle_minutes` after
  its last request, measured on the app's injected clock; signing out, a new password or
  disabling the account ends all of that account's sessions (`Account.session_epoch`).
- CSRF: every state-changing request that uses the session (a person signed in), and every
  form post, must carry the CSRF token; a request with a bearer token is exempt (a page in
  another site cannot make a browser send one), as is a JSON request without a signed-in
  session (it carries no one's authority).
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app, g, request, session
from flask.sessions import SecureCookieSessionInterface
from flask_login import LoginManager, UserMixin, current_user
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Unauthorized

from accounts import audit as audit_log
from accounts.service import ANONYMOUS, Identity, identify, session_identity
from core import limits
from core.config import Settings
from core.db import transaction

SIGNED_IN_AT, SEEN_AT, EXPIRED = "hotline_signed_in_at", "hotline_seen_at", "hotline_expired"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")


def current_identity() -> Identity:
    """The caller of this request (ANONYMOUS when nobody says who they are); an unknown
    token is a 401 before anything else of the request is read. A disabled account is
    nobody: its token is unknown, its sessions ended."""
    if "hotline_identity" not in g:
        authorization = request.headers.get("Authorization")
        if authorization:
            rules = current_app.extensions["hotline.settings"].accounts
            limits.enforce(rules.api_per_address, scope="api-address")  # guessing tokens too
            with current_app.extensions["hotline.sessions"]() as db:
                found = identify(db, authorization)
            if found is None:
                raise Unauthorized("Authorization: unknown token",
                                   www_authenticate=WWWAuthenticate("bearer"))
            if found.token_id:
                limits.enforce(rules.api_per_token, scope="api-token", key=found.token_id)
        elif current_user.is_authenticated:
            found = current_user.identity
        else:
            found = ANONYMOUS
        g.hotline_identity = found
    return g.hotline_identity  # type: ignore[no-any-return]


def _now() -> datetime:
    return current_app.extensions["hotline.clock"].now()  # type: ignore[no-any-return]


def client_address() -> str:
    return request.remote_addr or ""


def audit(session: Session, action: str, *, target: str = "",
          detail: dict[str, Any] | None = None) -> None:
    """Write to the audit log, in `session`'s transaction, that this request's caller did
    `action` (accounts.audit.ACTIONS) on `target`: e.g. RECORDING_PLAYED with the call id,
    EXPORT with what was exported."""
    who = current_identity()
    extra = {"token": who.token_id} if who.token_id else {}
    audit_log.record(session, action, actor=who.name, now=_now(), target=target,
                     address=client_address(), detail={**(detail or {}), **extra})


@contextlib.contextmanager
def reading_personal_data(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A session to read citizens' data in. For a caller who sees numbers unmasked it is a
    transaction, so the audit rows of what they were shown (`phones_shown`) commit with the
    read or not at all; for everyone else a plain read."""
    if current_identity().see_phone:
        with transaction(sessions) as session:
            yield session
    else:
        with sessions() as session:
            yield session


def phones_shown(session: Session, targets: Iterable[str], *, what: str = "") -> None:
    """A citizen's number was shown unmasked to this request's caller, once per target (a
    case number, a call id). Nothing is written for a caller who saw them masked."""
    if not current_identity().see_phone:
        return
    detail = {"what": what} if what else None
    for target in dict.fromkeys(targets):  # once each, in the order shown
        audit(session, audit_log.PHONE_SHOWN, target=target, detail=detail)


# ------------------------------------------------------------------------------ sessions

class SignedIn(UserMixin):  # type: ignore[misc]
    """Flask-Login's user: a person's identity and the id their session cookie keeps."""

    def __init__(self, identity: Identity, user_id: str) -> None:
        self.identity, self._user_id = identity, user_id

    def get_id(self) -> str:
        return self._user_id


def start_session(identity: Identity, user_id: str) -> None:
    """Sign the person in on this browser: a fresh session (nothing from before carries
    over, the CSRF token neither), timed on the app's clock."""
    from flask_login import login_user

    session.clear()
    login_user(SignedIn(identity, user_id))
    session.permanent = True
    session[SIGNED_IN_AT] = session[SEEN_AT] = _now().timestamp()
    g.hotline_identity = identity


def _load_user(user_id: str) -> SignedIn | None:
    settings: Settings = current_app.extensions["hotline.settings"]
    now = _now().timestamp()
    signed_in, seen = session.get(SIGNED_IN_AT), session.get(SEEN_AT)
    if not isinstance(signed_in, float) or not isinstance(seen, float) \
            or now - signed_in > settings.accounts.session_hours * 3600 \
            or now - seen > settings.accounts.idle_minutes * 60:
        session.clear()
        session[EXPIRED] = True
        return None
    with current_app.extensions["hotline.sessions"]() as db:
        identity = session_identity(db, user_id)
    if identity is None:
        session.clear()
        return None
    session[SEEN_AT] = now
    return SignedIn(identity, user_id)


def _loopback(host: str) -> bool:
    name = urlsplit(f"//{host}").hostname or ""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class _Cookies(SecureCookieSessionInterface):
    def get_cookie_secure(self, app: Flask) -> bool:
        return request.scheme != "http" or not _loopback(request.host)


class _Csrf(CSRFProtect):
    def protect(self, apply_exemptions: bool = False) -> None:
        if request.headers.get("Authorization", "").lower().startswith("bearer "):
            return
        if "_user_id" not in session and request.mimetype not in FORM_TYPES:
            return
        super().protect(apply_exemptions)


def init_app(app: Flask, settings: Settings) -> None:
    """Sign-in sessions (Flask-Login) and CSRF protection (Flask-WTF) for the web app."""
    app.config.update(
        SECRET_KEY=settings.accounts.session_secret,
        SESSION_COOKIE_NAME="hotline_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.accounts.session_hours),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as its session, timed above
    )
    app.session_interface = _Cookies()
    manager = LoginManager(app)
    manager.user_loader(_load_user)
    _Csrf(app)
