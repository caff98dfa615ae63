"""Accounts on SQLite and PostgreSQL: argon2 passwords and the lockout, bearer tokens kept
only as hashes with a scope, the migration of the old API users, sign-in sessions' cookies
and CSRF, and the audit log: a row for each audited act in the act's own transaction,
append-only, read by auditors."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, func, inspect, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from accounts import audit, service
from accounts.audit import AuditEntry
from accounts.models import Account, ApiToken
from accounts.service import Lockout
from core.clock import FixedClock
from core.db import make_engine, session_factory, transaction, upgrade
from core.live import connect_redis
from hotline.web import create_app
from tests.conftest import REDIS_SERVER_URL, make_settings
from tickets import catalogue

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # 10:00 in Beijing
PASSWORD = "十二三一九-hotline"  # a person's password: 16 characters


@pytest.fixture
def db(database_url: str) -> Iterator[tuple[Engine, sessionmaker[Session]]]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield engine, session_factory(engine)
    engine.dispose()


@pytest.fixture
def web(database_url: str, tmp_path: Path) -> Iterator[tuple[Flask, sessionmaker[Session],
                                                              FixedClock]]:
    settings = make_settings(tmp_path, DATABASE_URL=database_url, REDIS_URL=REDIS_SERVER_URL,
                             HOTLINE_ACCOUNTS_LOCKOUT_ATTEMPTS="3",
                             HOTLINE_ACCOUNTS_IDLE_MINUTES="30",
                             HOTLINE_ACCOUNTS_SESSION_HOURS="10")
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        catalogue.seed(session)
    clock = FixedClock(NOW)
    yield create_app(settings, sessions, connect_redis(settings), clock), sessions, clock
    engine.dispose()


def _person(sessions: sessionmaker[Session], name: str, *roles: str, **kwargs: Any) -> None:
    with transaction(sessions) as session:
        service.create_account(session, name, roles, password=PASSWORD, actor="测试",
                               now=NOW, **kwargs)


def _log(sessions: sessionmaker[Session], **where: str) -> list[tuple[str, str, str]]:
    """(action, actor, target) of the log's rows, oldest first."""
    with sessions() as session:
        rows = session.scalars(select(AuditEntry).filter_by(**where).order_by(AuditEntry.id))
        return [(r.action, r.actor, r.target) for r in rows]


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def _sign_in(http: FlaskClient, name: str, password: str = PASSWORD) -> Any:
    token = _csrf(http.get("/login").text)
    return http.post("/login", data={"name": name, "password": password, "csrf_token": token},
                     environ_base={"REMOTE_ADDR": "10.1.2.3"})


# ------------------------------------------------------------------------------ passwords

def test_a_password_is_kept_as_argon2id_and_a_lockout_follows_repeated_failures(db) -> None:
    _engine, sessions = db
    _person(sessions, "小王", "operator")
    with sessions() as session:
        stored = session.scalar(select(Account.password_hash))
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    lockout = Lockout(attempts=3, minutes=15)

    def attempt(password: str, at: datetime) -> service.SignIn:
        with transaction(sessions) as session:
            return service.sign_in(session, "小王", password, lockout=lockout, now=at,
                                   address="10.0.0.7")

    assert attempt("wrong one!", NOW).refusal == "credentials"
    assert attempt(PASSWORD, NOW).account is not None  # a success forgets the failure
    for _ in range(2):
        assert attempt("wrong one!", NOW).refusal == "credentials"
    third = attempt("wrong one!", NOW)
    assert third.refusal == "credentials"  # the third in a row locks ...
    locked = attempt(PASSWORD, NOW + timedelta(minutes=14, seconds=59))
    assert (locked.account, locked.refusal) == (None, "locked")  # ... even the right password
    assert locked.locked_until == NOW + timedelta(minutes=15)
    assert attempt(PASSWORD, NOW + timedelta(minutes=15)).account is not None
    assert attempt("wrong one!", NOW + timedelta(minutes=16)).refusal == "credentials"
    assert attempt(PASSWORD, NOW + timedelta(minutes=16)).account is not None  # counts anew
    assert [a for a, _, _ in _log(sessions, target="小王")] == [
        "account_created", "login_failed", "login", "login_failed", "login_failed",
        "login_failed", "login_failed", "login", "login_failed", "login"]
    with sessions() as session:
        failed = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "login_failed").order_by(AuditEntry.id)).all()
    assert {f.address for f in failed} == {"10.0.0.7"}
    assert [f.detail for f in failed][3:5] == [
        '{"locked_until": "2026-11-24T02:15:00+00:00", "reason": "wrong password"}',
        '{"reason": "locked"}']


def test_unknown_names_machine_clients_and_disabled_people_cannot_sign_in(db) -> None:
    _engine, sessions = db
    _person(sessions, "老李", "dispatcher")
    with transaction(sessions) as session:
        service.create_account(session, "城市平台", ["dispatcher"], password=None,
                               actor="测试", now=NOW)
        service.set_disabled(session, "老李", True, actor="管理员", now=NOW)
    with transaction(sessions) as session:
        for name in ("没有这个人", "城市平台", "老李"):
            outcome = service.sign_in(session, name, PASSWORD, lockout=Lockout(), now=NOW,
                                      address="10.0.0.8")
            assert (outcome.account, outcome.refusal) == (None, "credentials")
    with sessions() as session:
        reasons = session.scalars(select(AuditEntry.detail).where(
            AuditEntry.action == "login_failed").order_by(AuditEntry.id)).all()
    assert reasons == ['{"reason": "no such account"}',
                       '{"reason": "no password (machine client)"}', '{"reason": "disabled"}']


def test_names_roles_passwords_and_bindings_are_checked(db) -> None:
    _engine, sessions = db
    with transaction(sessions) as session:
        for name, roles, password, kwargs, complaint in (
                ("a,b", ["operator"], PASSWORD, {}, "name:"),
                (" 前后有空格", ["operator"], PASSWORD, {}, "name:"),
                ("小王", ["超级用户"], PASSWORD, {}, "roles: one or more of operator"),
                ("小王", [], PASSWORD, {}, "roles:"),
                ("小王", ["operator"], "short", {}, "password: 10-256"),
                ("环卫局", ["department"], PASSWORD, {}, "department:"),
                ("小王", ["operator"], PASSWORD, {"department": "sanitation"}, "department:"),
                ("小王", ["operator"], PASSWORD, {"agent": "八零零一"}, "agent:")):
            with pytest.raises(service.AuthError, match=complaint):
                service.create_account(session, name, roles, password=password, actor="测试",
                                       now=NOW, **kwargs)
        service.create_account(session, "环卫局", ["department"], password=PASSWORD,
                               department="sanitation", actor="测试", now=NOW)
        with pytest.raises(service.AuthError, match="exists already"):
            service.create_account(session, "环卫局", ["operator"], password=PASSWORD,
                                   actor="测试", now=NOW)


# ------------------------------------------------------------------------------ tokens

def _every_stored_text(engine: Engine) -> str:
    """Every value of every table, as one text: what a stolen database would give away."""
    with engine.connect() as conn:
        return "\n".join(str(row) for table in inspect(conn).get_table_names()
                         for row in conn.execute(text(f'SELECT * FROM "{table}"')))


def test_tokens_are_stored_hashed_scoped_and_refused_once_revoked_or_disabled(db) -> None:
    engine, sessions = db
    with transaction(sessions) as session:
        service.create_account(session, "短信网关", ["operator", "dispatcher"], password=None,
                               see_phone=True, actor="cli:root", now=NOW)
        token = service.issue_token(session, "短信网关", ["dispatcher"], actor="cli:root",
                                    now=NOW)
        full = service.issue_token(session, "短信网关", None, actor="cli:root", now=NOW)
    token_id, _, secret = token.partition(".")
    assert re.fullmatch(r"[0-9a-f]{16}", token_id) and len(secret) >= 40
    stored = _every_stored_text(engine)
    assert secret not in stored and full.partition(".")[2] not in stored
    with sessions() as session:
        assert session.get(ApiToken, token_id).token_sha256 == \
            hashlib.sha256(token.encode()).hexdigest()
        who = service.identify(session, f"Bearer {token}")
        assert (who.name, who.roles, who.see_phone, who.token_id) == (
            "短信网关", ("dispatcher",), True, token_id)  # the scope narrows the roles
        assert service.identify(session, f"bearer {full}").roles == ("operator", "dispatcher")
        # the same id with another secret, no secret, junk, another scheme: nobody
        for header in (f"Bearer {token_id}.{secret[:-1]}x", f"Bearer {token_id}",
                       f"Bearer {token_id}.", "Bearer \x00", f"Basic {token}", "Bearer "):
            assert service.identify(session, header) is None, header
        assert service.identify(session, None) is service.ANONYMOUS
    with transaction(sessions) as session:
        with pytest.raises(service.AuthError, match="scope: one or more of operator, "
                                                    "dispatcher"):
            service.issue_token(session, "短信网关", ["admin"], actor="cli:root", now=NOW)
        service.revoke_token(session, token_id, actor="cli:root", now=NOW)
    with sessions() as session:
        assert service.identify(session, f"Bearer {token}") is None
        assert service.identify(session, f"Bearer {full}") is not None
    with transaction(sessions) as session:
        service.set_disabled(session, "短信网关", True, actor="cli:root", now=NOW)
    with sessions() as session:
        assert service.identify(session, f"Bearer {full}") is None
    assert [a for a, _, _ in _log(sessions)] == [
        "account_created", "token_issued", "token_issued", "token_revoked",
        "account_disabled"]


def test_the_old_api_users_become_accounts_whose_tokens_still_work(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine, "0014")
    old_token = "Zm9yLXRoZS1taWdyYXRpb24tdGVzdC1vbmx5"  # as `secrets.token_urlsafe(24)` made
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO api_users (name, token_sha256, roles, see_phone, created_at) "
            "VALUES ('受理员', :digest, 'operator,dispatcher', true, :at)"),
            {"digest": hashlib.sha256(old_token.encode()).hexdigest(), "at": NOW})
    upgrade(engine)
    sessions = session_factory(engine)
    with sessions() as session:
        who = service.identify(session, f"Bearer {old_token}")
        account = session.scalar(select(Account))
    assert (who.name, who.roles, who.see_phone) == ("受理员", ("operator", "dispatcher"), True)
    assert account.password_hash is None and not account.disabled
    assert "api_users" not in inspect(engine).get_table_names()
    # and back: the account's token in force is the API user's token again
    upgrade_down = __import__("alembic.command", fromlist=["downgrade"]).downgrade
    from core.db import alembic_config

    upgrade_down(alembic_config(engine), "0014")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name, token_sha256 FROM api_users")).all() == [
            ("受理员", hashlib.sha256(old_token.encode()).hexdigest())]
    engine.dispose()


def test_add_user_keeps_scripts_working_and_rekeys_an_account(db) -> None:
    _engine, sessions = db
    with transaction(sessions) as session:
        first = service.add_user(session, "派遣员", ["dispatcher"], False, now=NOW)
    with transaction(sessions) as session:
        second = service.add_user(session, "派遣员", ["dispatcher", "operator"], True,
                                  now=NOW)
    with sessions() as session:
        assert service.identify(session, f"Bearer {first}") is None  # re-keyed
        who = service.identify(session, f"Bearer {second}")
    assert (who.roles, who.see_phone) == (("operator", "dispatcher"), True)


# ------------------------------------------------------------------------------ audit log

def test_an_audit_row_lives_and_dies_with_its_transaction(db) -> None:
    _engine, sessions = db
    _person(sessions, "小王", "operator")
    with pytest.raises(RuntimeError), transaction(sessions) as session:
        service.set_roles(session, "小王", ["operator", "supervisor"], see_phone=True,
                          department=None, agent=None, actor="管理员", now=NOW)
        assert _count_in(session) == 2  # written, in this transaction ...
        raise RuntimeError("the act failed after its audit row was written")
    assert _log(sessions) == [("account_created", "测试", "小王")]  # ... and gone with it
    with sessions() as session:
        assert session.scalar(select(Account.roles)) == "operator"
    # and the other way: the act is refused, nothing of it is logged
    with pytest.raises(service.AuthError), transaction(sessions) as session:
        service.set_roles(session, "小王", ["pilot"], see_phone=True, department=None,
                          agent=None, actor="管理员", now=NOW)
    with transaction(sessions) as session:
        service.set_roles(session, "小王", ["operator", "supervisor"], see_phone=True,
                          department=None, agent=None, actor="管理员", now=NOW)
    assert _log(sessions)[-1] == ("roles_changed", "管理员", "小王")
    with sessions() as session:
        detail = session.scalar(select(AuditEntry.detail).where(
            AuditEntry.action == "roles_changed"))
    assert detail == ('{"after": {"agent": null, "department": null, "roles": ["operator", '
                      '"supervisor"], "see_phone": true}, "before": {"agent": null, '
                      '"department": null, "roles": ["operator"], "see_phone": false}}')


def _count_in(session: Session) -> int:
    return session.scalar(select(func.count(AuditEntry.id))) or 0


def test_the_audit_log_refuses_updates_and_deletes_in_the_database(db) -> None:
    engine, sessions = db
    with transaction(sessions) as session:
        audit.record(session, audit.EXPORT, actor="小王", now=NOW, target="orders")
    for statement in ("UPDATE audit_log SET actor = 'nobody'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    assert _log(sessions) == [("export", "小王", "orders")]
    with pytest.raises(audit.AuditError, match="unknown action"), \
            transaction(sessions) as session:
        audit.record(session, "looked_around", actor="小王", now=NOW)


# ------------------------------------------------------------------------------ over HTTP

def test_auditors_read_the_log_filtered_and_in_pages(web) -> None:
    app, sessions, _clock = web
    _person(sessions, "审计员", "auditor")
    _person(sessions, "小王", "operator")
    with transaction(sessions) as session:
        for minute in range(5):
            audit.record(session, audit.PHONE_SHOWN, actor="小王",
                         now=NOW + timedelta(minutes=minute), target=f"20261124000{minute}")
        auditor = service.issue_token(session, "审计员", None, actor="测试", now=NOW)
        operator = service.issue_token(session, "小王", None, actor="测试", now=NOW)
    http = app.test_client()
    assert http.get("/api/v1/audit").status_code == 401
    assert http.get("/api/v1/audit",
                    headers={"Authorization": f"Bearer {operator}"}).status_code == 403
    bearer = {"Authorization": f"Bearer {auditor}"}
    page = http.get("/api/v1/audit?action=phone_shown&limit=2&offset=1", headers=bearer).json
    assert page["total"] == 5 and (page["limit"], page["offset"]) == (2, 1)
    assert [e["target"] for e in page["items"]] == ["202611240003", "202611240002"]
    assert page["items"][0]["at"] == "2026-11-24T02:03:00+00:00"
    window = http.get("/api/v1/audit?actor=%E5%B0%8F%E7%8E%8B&since=2026-11-24T10:01:00%2B08:00"
                      "&until=2026-11-24T02:03:00Z", headers=bearer).json
    assert [e["target"] for e in window["items"]] == ["202611240002", "202611240001"]
    assert http.get("/api/v1/audit?target=202611240004", headers=bearer).json["total"] == 1
    for bad, field in (("limit=0", "limit"), ("limit=501", "limit"), ("offset=-1", "offset"),
                       ("limit=%C2%B2", "limit"), ("since=2026-11-24", "since"),
                       ("until=yesterday", "until"), ("action=looked", "action"),
                       ("actor=%00", "actor"), ("target=" + "x" * 201, "target")):
        reply = http.get(f"/api/v1/audit?{bad}", headers=bearer)
        assert reply.status_code == 400 and reply.json["detail"].startswith(field), bad


def test_adapters_audit_phones_shown_with_the_caller_and_address(web) -> None:
    app, sessions, _clock = web
    from accounts import web as accounts_web

    _person(sessions, "小王", "operator", see_phone=True)
    with transaction(sessions) as session:
        token = service.issue_token(session, "小王", None, actor="测试", now=NOW)
    with app.test_request_context("/api/v1/orders", headers={
            "Authorization": f"Bearer {token}"}, environ_base={"REMOTE_ADDR": "10.9.8.7"}), \
            transaction(sessions) as session:
        accounts_web.phones_shown(session, ["202611240001", "202611240002", "202611240001"],
                                  what="citizen_phone")
        accounts_web.audit(session, audit.RECORDING_PLAYED, target="call-1")
    with sessions() as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.action != "account_created"
                                                        ).order_by(AuditEntry.id)).all()
    token_id = token.partition(".")[0]
    assert [(r.action, r.actor, r.target, r.address, r.detail) for r in rows] == [
        ("token_issued", "测试", "小王", "", f'{{"scope": ["operator"], "token": "{token_id}"}}'),
        ("phone_shown", "小王", "202611240001", "10.9.8.7",
         f'{{"token": "{token_id}", "what": "citizen_phone"}}'),
        ("phone_shown", "小王", "202611240002", "10.9.8.7",
         f'{{"token": "{token_id}", "what": "citizen_phone"}}'),
        ("recording_played", "小王", "call-1", "10.9.8.7", f'{{"token": "{token_id}"}}')]


def test_a_session_cookie_is_httponly_samesite_and_secure_off_loopback(web) -> None:
    app, sessions, _clock = web
    _person(sessions, "小王", "operator")
    for base, secure in (("http://127.0.0.1:8319", False), ("http://localhost", False),
                         ("http://[::1]:8319", False), ("http://hotline.example", True),
                         ("https://127.0.0.1", True), ("http://10.0.0.5:8319", True)):
        http = app.test_client()
        http.environ_base["HTTP_REFERER"] = f"{base}/login"
        token = _csrf(http.get("/login", base_url=base).text)
        reply = http.post("/login", base_url=base, data={
            "name": "小王", "password": PASSWORD, "csrf_token": token})
        assert reply.status_code == 302, (base, reply.text)
        cookie = reply.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie, cookie
        assert ("; Secure" in cookie) == secure, (base, cookie)


def test_the_session_is_who_asks_unless_a_token_says_otherwise(web) -> None:
    app, sessions, _clock = web
    _person(sessions, "小王", "operator")
    _person(sessions, "审计员", "auditor")
    with transaction(sessions) as session:
        auditor = service.issue_token(session, "审计员", None, actor="测试", now=NOW)
    http = app.test_client()
    assert http.get("/").headers["Location"] == "/login"
    assert http.get("/home/operator").headers["Location"] == "/login?next=/home/operator"
    assert _sign_in(http, "小王").headers["Location"] == "/home/operator"
    assert http.get("/").headers["Location"] == "/home/operator"
    assert "小王" in http.get("/home/operator").text
    assert http.get("/home/auditor").status_code == 403
    stray = app.test_client()  # a name no database can store as it is: nobody, no 500
    reply = stray.post("/login", data={"name": "小\x00王", "password": PASSWORD,
                                       "csrf_token": _csrf(stray.get("/login").text)})
    assert reply.status_code == 401 and "用户名或密码错误" in reply.text
    assert _log(sessions, action="login_failed") == [("login_failed", "小\ufffd王",
                                                      "小\ufffd王")]
    assert http.get("/api/v1/audit").status_code == 403  # the session: an operator
    assert http.get("/api/v1/audit", headers={  # the token first
        "Authorization": f"Bearer {auditor}"}).status_code == 200
    assert http.get("/api/v1/audit", headers={"Authorization": "Bearer 0123456789abcdef.x"}
                    ).status_code == 401  # a wrong token is never the session's person
    def disabled(flag: bool) -> None:  # behind the service's back: only the flag changes
        with transaction(sessions) as session:
            session.execute(text("UPDATE accounts SET disabled = :flag"), {"flag": flag})

    again = app.test_client()
    _sign_in(again, "小王")
    disabled(True)  # a disabled account's session is nobody's
    assert http.get("/home/operator").headers["Location"] == "/login?next=/home/operator"
    disabled(False)
    assert again.get("/home/operator").status_code == 200
    with transaction(sessions) as session:  # disabling ends the sessions for good
        service.set_disabled(session, "小王", True, actor="管理员", now=NOW)
    disabled(False)
    assert again.get("/home/operator").headers["Location"] == "/login?next=/home/operator"
    assert _log(sessions, action="login") == [("login", "小王", "小王")] * 2
    with sessions() as session:
        assert session.scalar(select(AuditEntry.address).where(
            AuditEntry.action == "login")) == "10.1.2.3"


def test_csrf_guards_what_a_session_changes_but_not_a_bearer_token(web) -> None:
    app, sessions, _clock = web
    _person(sessions, "小王", "operator")
    with transaction(sessions) as session:
        token = service.issue_token(session, "小王", None, actor="测试", now=NOW)
    order = {"appeal_type": "enquiry", "description": "垃圾清运时间", "channel": "phone"}
    http = app.test_client()
    login = http.get("/login").text
    refused = http.post("/login", data={"name": "小王", "password": PASSWORD})
    assert refused.status_code == 400 and "CSRF" in refused.text  # login CSRF too
    assert _log(sessions, action="login") == []
    http.post("/login", data={"name": "小王", "password": PASSWORD,
                              "csrf_token": _csrf(login)})
    bare = http.post("/api/v1/orders", json=order)
    assert bare.status_code == 400 and "CSRF" in bare.json["detail"]
    forged = http.post("/api/v1/orders", json=order, headers={"X-CSRFToken": "forged"})
    assert forged.status_code == 400
    page_token = _csrf(http.get("/home/operator").text)
    assert http.post("/api/v1/orders", json=order,
                     headers={"X-CSRFToken": page_token}).status_code == 201
    machine = app.test_client()  # no session: a bearer token needs no CSRF token
    assert machine.post("/api/v1/orders", json=order,
                        headers={"Authorization": f"Bearer {token}"}).status_code == 201
    assert http.post("/logout", data={"csrf_token": "forged"}).status_code == 400
    assert http.get("/home/operator").status_code == 200  # still signed in
    assert http.post("/logout", data={"csrf_token": page_token}).headers["Location"] == \
        "/login"
    assert http.get("/home/operator").status_code == 302


@pytest.mark.parametrize("key", ["LOCKOUT_ATTEMPTS", "LOCKOUT_MINUTES", "SESSION_HOURS",
                                 "IDLE_MINUTES"])
def test_the_accounts_settings_refuse_zero_naming_the_key(tmp_path: Path, key: str) -> None:
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match=f"config: accounts.{key.lower()} "):
        make_settings(tmp_path, **{f"HOTLINE_ACCOUNTS_{key}": "0"})
    secret = make_settings(tmp_path).accounts.session_secret
    assert len(secret) == 64 and make_settings(tmp_path).accounts.session_secret == secret
