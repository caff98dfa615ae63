"""The sign-in page (登录), signing out, and an empty home page per role that proves the web
shell: who is signed in, their role, a sign-out button. The surfaces (the agents' desk, the
wallboard, the case workspaces) replace these homes in their own issues.

Pages that need an account send the browser to /login (the API answers 401 JSON instead).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import logout_user
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import Forbidden, Unauthorized
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from accounts.access import PUBLIC, requires
from accounts.service import (
    ADMIN,
    AUDITOR,
    DEPARTMENT,
    DISPATCHER,
    MAX_PASSWORD,
    OPERATOR,
    ROLES,
    SHIFT_CHIEF,
    SUPERVISOR,
    Lockout,
    identity_of,
    session_user_id,
    sign_in,
    sign_out,
)
from accounts.web import EXPIRED, client_address, current_identity, start_session
from core import limits
from core.db import transaction

pages = Blueprint("pages", __name__, template_folder="templates")


def titles() -> dict[str, str]:
    """The roles' names on the pages, in the page's language (the Chinese ones, 话务员,
    值班长 ..., are in the translations)."""
    return {OPERATOR: _("Hotline agent"), SUPERVISOR: _("Supervisor"),
            SHIFT_CHIEF: _("Shift chief"), DISPATCHER: _("Dispatcher"),
            DEPARTMENT: _("Department handler"), ADMIN: _("Administrator"),
            AUDITOR: _("Auditor")}


class LoginForm(FlaskForm):  # type: ignore[misc]
    # labels are the template's, in the page's language
    name = StringField(validators=[DataRequired(), Length(max=50)])
    password = PasswordField(validators=[DataRequired(), Length(max=MAX_PASSWORD)])


class LogoutForm(FlaskForm):  # type: ignore[misc]
    """Only its CSRF token: signing out is a state change like any other."""


def _now() -> Any:
    return current_app.extensions["hotline.clock"].now()


def _home_url(roles: tuple[str, ...]) -> str:
    first = next((r for r in ROLES if r in roles), None)
    return url_for(f"pages.home_{first}") if first else url_for("pages.no_role")


def _safe_next(target: str | None) -> str | None:
    """Only a path on this site: never an open redirect to another one."""
    if not target or not target.startswith("/") or target.startswith("//") \
            or "\\" in target or urlsplit(target).netloc:
        return None
    return target


@pages.get("/")
@requires(PUBLIC)
def index() -> Any:
    who = current_identity()
    return redirect(_home_url(who.roles) if who.known else url_for("pages.login"))


@pages.route("/login", methods=["GET", "POST"])
@requires(PUBLIC)
def login() -> Any:
    form = LoginForm()
    message = _("Your session has expired: please sign in again") \
        if session.pop(EXPIRED, False) else ""
    status = 200
    if request.method == "POST":  # password guessing from one address, across accounts
        limits.enforce(current_app.extensions["hotline.settings"].accounts.sign_in_per_address,
                       scope="sign-in")
    if form.validate_on_submit():
        settings = current_app.extensions["hotline.settings"]
        with transaction(current_app.extensions["hotline.sessions"]) as db:
            outcome = sign_in(db, form.name.data, form.password.data,
                              lockout=Lockout.from_settings(settings), now=_now(),
                              address=client_address())
            if outcome.account is not None:
                identity = identity_of(outcome.account)
                user_id = session_user_id(outcome.account)
        if outcome.account is not None:
            start_session(identity, user_id)
            return redirect(_safe_next(request.args.get("next")) or _home_url(identity.roles))
        status = 401
        message = _("This account is locked for a while: try again later or ask an "
                    "administrator") if outcome.refusal == "locked" \
            else _("Wrong user name or password")
    elif current_identity().known and request.method == "GET":
        return redirect(_home_url(current_identity().roles))
    return render_template("accounts/login.html", form=form, message=message), status


@pages.post("/logout")
@requires(PUBLIC)
def logout() -> Any:
    who = current_identity()
    if who.known and who.token_id is None and who.account_id is not None:
        with transaction(current_app.extensions["hotline.sessions"]) as db:
            sign_out(db, who.account_id, now=_now(), address=client_address())
    logout_user()
    session.clear()
    return redirect(url_for("pages.login"))


def _home(role: str) -> Any:
    def home() -> Any:
        who = current_identity()
        return render_template("accounts/home.html", who=who, role=role,
                               titles=titles(), logout=LogoutForm())

    home.__name__ = f"home_{role}"
    home.__doc__ = f"The home page of a {role}."
    return requires(f"home.{role}")(home)


for _role in ROLES:
    pages.add_url_rule(f"/home/{_role}", view_func=_home(_role), methods=["GET"])


@pages.get("/home")
@requires(PUBLIC)
def no_role() -> Any:
    """A signed-in account without any role: nothing to show but who it is."""
    who = current_identity()
    if not who.known:
        return redirect(url_for("pages.login"))
    return render_template("accounts/home.html", who=who, role=None, titles=titles(),
                           logout=LogoutForm())


def to_login(_error: Unauthorized) -> Any:
    return redirect(url_for("pages.login", next=request.full_path.rstrip("?")))


def forbidden(_error: Forbidden) -> Any:
    who = current_identity()
    return render_template("accounts/message.html", title=_("Not allowed"),
                           text=_("%(name)s may not see this page.", name=who.name),
                           home=_home_url(who.roles)), 403


def csrf_refused(error: CSRFError) -> Any:
    return render_template("accounts/message.html", title=_("Request refused"),
                           text=_("The form has expired or did not come from this site "
                                  "(CSRF check failed): go back and try again."),
                           detail=error.description, home=url_for("pages.index")), 400


def guard_pages(blueprint: Blueprint) -> Blueprint:
    """A blueprint of pages (not the API): without an account the browser goes to /login,
    a refusal or a failed CSRF check is a page, not JSON. Every surface's pages use it."""
    blueprint.register_error_handler(Unauthorized, to_login)
    blueprint.register_error_handler(Forbidden, forbidden)
    blueprint.register_error_handler(CSRFError, csrf_refused)
    return blueprint


guard_pages(pages)
