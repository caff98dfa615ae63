"""The sign-in page (登录), signing out, and an empty home page per role that proves the web
shell: who is signed in, their role, a sign-out button. The surfaces (the agents' desk, the
wallboard, the case workspaces) replace these homes in their own issues.

Pages that need an account send the browser to /login (the API answers 401 JSON instead).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from flask_login import logout_user
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import Forbidden, Unauthorized
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from accounts.access import PUBLIC, requires
from accounts.service import (
    MAX_PASSWORD,
    ROLE_TITLES,
    ROLES,
    Lockout,
    identity_of,
    session_user_id,
    sign_in,
    sign_out,
)
from accounts.web import EXPIRED, client_address, current_identity, start_session
from core.db import transaction

pages = Blueprint("pages", __name__, template_folder="templates")


class LoginForm(FlaskForm):  # type: ignore[misc]
    name = StringField("用户名", validators=[DataRequired("请输入用户名"), Length(max=50)])
    password = PasswordField("密码", validators=[DataRequired("请输入密码"),
                                                 Length(max=MAX_PASSWORD)])


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
    message = "登录已过期，请重新登录" if session.pop(EXPIRED, False) else ""
    status = 200
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
        message = "账户已暂时锁定，请稍后再试或联系管理员" if outcome.refusal == "locked" \
            else "用户名或密码错误"
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
                               titles=ROLE_TITLES, logout=LogoutForm())

    home.__name__ = f"home_{role}"
    home.__doc__ = f"The home page of a {role} ({ROLE_TITLES[role]})."
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
    return render_template("accounts/home.html", who=who, role=None, titles=ROLE_TITLES,
                           logout=LogoutForm())


def to_login(_error: Unauthorized) -> Any:
    return redirect(url_for("pages.login", next=request.full_path.rstrip("?")))


def forbidden(_error: Forbidden) -> Any:
    who = current_identity()
    return render_template("accounts/message.html", title="无权访问",
                           text=f"{who.name} 无权访问此页面。", home=_home_url(who.roles)), 403


def csrf_refused(error: CSRFError) -> Any:
    return render_template("accounts/message.html", title="请求已被拒绝",
                           text="表单已失效或来源不明（CSRF 校验失败），请返回重试。",
                           detail=error.description, home=url_for("pages.index")), 400


def guard_pages(blueprint: Blueprint) -> Blueprint:
    """A blueprint of pages (not the API): without an account the browser goes to /login,
    a refusal or a failed CSRF check is a page, not JSON. Every surface's pages use it."""
    blueprint.register_error_handler(Unauthorized, to_login)
    blueprint.register_error_handler(Forbidden, forbidden)
    blueprint.register_error_handler(CSRFError, csrf_refused)
    return blueprint


guard_pages(pages)
