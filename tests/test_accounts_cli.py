"""`hotline users ...` and `hotline audit` as an administrator runs them, and the first
administrator that `hotline up` makes: every change lands in the audit log under the shell
user's name."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from accounts import service
from core.db import make_engine, session_factory, transaction
from tests.conftest import make_settings

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
PASSWORD, NEW_PASSWORD = "话务员的密码-2026", "换了新的密码-2027"


def _hotline(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HOTLINE_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env["HOTLINE_STORAGE_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "hotline", *args], capture_output=True,
                          text=True, env=env, input=stdin, timeout=120)


def _sessions(data_dir: Path):  # type: ignore[no-untyped-def]
    return session_factory(make_engine(make_settings(data_dir).storage.database_url))


def _signs_in(data_dir: Path, name: str, password: str) -> bool:
    with transaction(_sessions(data_dir)) as session:
        return service.sign_in(session, name, password, lockout=service.Lockout(), now=NOW,
                               address="").account is not None


def test_accounts_are_managed_from_the_shell_and_every_change_is_audited(
        tmp_path: Path) -> None:
    line = f"{PASSWORD}\n"  # not a terminal: the first line of stdin
    made = _hotline(tmp_path, "users", "add", "小王", "--role", "operator", "--see-phone",
                    stdin=line)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "account 小王 added (operator)"
    assert PASSWORD not in made.stdout + made.stderr
    assert _signs_in(tmp_path, "小王", PASSWORD)
    for args, complaint in (
            (("老李", "--role", "pilot"), "hotline: roles: one or more of operator, supervisor"),
            (("小王", "--role", "operator"), "hotline: name: an account '小王' exists already"),
            (("环卫", "--role", "department", "--department", "nowhere"),
             "hotline: department: no department 'nowhere' in the catalogue"),
            (("坐席", "--role", "operator", "--agent", "8999"),
             "hotline: agent: no agent '8999' in the directory")):
        refused = _hotline(tmp_path, "users", "add", *args, stdin=line)
        assert refused.returncode != 0 and refused.stderr.strip().startswith(complaint), \
            refused.stderr
    short = _hotline(tmp_path, "users", "add", "老李", "--role", "dispatcher",
                     stdin="short\n")
    assert short.returncode != 0 and "hotline: password: 10-256 characters" in short.stderr

    assert _hotline(tmp_path, "tickets", "catalogue").returncode == 0
    dept = _hotline(tmp_path, "users", "add", "环卫", "--role", "department", "--department",
                    "sanitation", stdin=line)
    assert dept.returncode == 0, dept.stderr

    roles = _hotline(tmp_path, "users", "roles", "小王", "--role", "operator", "--role",
                     "supervisor", "--no-see-phone")
    assert roles.stdout.strip() == "小王: operator, supervisor", roles.stderr
    changed = _hotline(tmp_path, "users", "passwd", "小王",
                       stdin=f"{NEW_PASSWORD}\n")
    assert changed.stdout.strip() == "password of 小王 changed", changed.stderr
    assert not _signs_in(tmp_path, "小王", PASSWORD)
    assert _signs_in(tmp_path, "小王", NEW_PASSWORD)
    assert _hotline(tmp_path, "users", "disable", "小王").stdout.strip() == \
        "account 小王 disabled"
    assert not _signs_in(tmp_path, "小王", NEW_PASSWORD)

    machine = _hotline(tmp_path, "users", "add", "城市平台", "--role", "dispatcher",
                       "--role", "operator", "--machine")
    assert machine.returncode == 0 and "password" not in machine.stderr
    issued = _hotline(tmp_path, "users", "token", "城市平台", "--scope", "dispatcher")
    token = issued.stdout.strip()
    with _sessions(tmp_path)() as session:
        who = service.identify(session, f"Bearer {token}")
    assert (who.name, who.roles) == ("城市平台", ("dispatcher",))
    db_file = Path(make_settings(tmp_path).storage.database_url.removeprefix("sqlite:///"))
    stored = b"".join(p.read_bytes() for p in db_file.parent.glob("hotline.db*"))
    assert token.partition(".")[2].encode() not in stored  # only its hash is kept
    token_id = token.partition(".")[0]

    listed = json.loads(_hotline(tmp_path, "users", "list", "--json").stdout)
    assert listed == [
        {"name": "城市平台", "roles": ["operator", "dispatcher"], "see_phone": False,
         "department": None, "agent": None, "disabled": False, "machine": True,
         "tokens": [{"id": token_id, "scope": ["dispatcher"], "revoked": False}]},
        {"name": "小王", "roles": ["operator", "supervisor"], "see_phone": False,
         "department": None, "agent": None, "disabled": True, "machine": False,
         "tokens": []},
        {"name": "环卫", "roles": ["department"], "see_phone": False,
         "department": "sanitation", "agent": None, "disabled": False, "machine": False,
         "tokens": []}]
    revoked = _hotline(tmp_path, "users", "token", "城市平台", "--revoke", token_id)
    assert revoked.stdout.strip() == f"token {token_id} revoked"
    with _sessions(tmp_path)() as session:
        assert service.identify(session, f"Bearer {token}") is None

    log = json.loads(_hotline(tmp_path, "audit", "--json").stdout)
    me = f"cli:{getpass.getuser()}"
    # newest first; the sign-in checks above were made with the service, as nobody's shell
    acts = [(e["action"], e["actor"], e["target"]) for e in log["items"]
            if e["actor"] == me]
    assert acts == [("token_revoked", me, "城市平台"), ("token_issued", me, "城市平台"),
                    ("account_created", me, "城市平台"), ("account_disabled", me, "小王"),
                    ("password_changed", me, "小王"), ("roles_changed", me, "小王"),
                    ("account_created", me, "环卫"), ("account_created", me, "小王")]
    only = _hotline(tmp_path, "audit", "--action", "roles_changed")
    [line] = only.stdout.splitlines()
    assert line.split()[1:4] == ["roles_changed", me, "小王"], line
    assert only.stderr.strip() == "(1 of 1)"


def test_the_first_administrator_is_made_once_with_a_password_shown_once(
        tmp_path: Path) -> None:
    assert _hotline(tmp_path, "db", "upgrade").returncode == 0
    sessions = _sessions(tmp_path)
    with transaction(sessions) as session:
        made = service.ensure_first_admin(session, now=NOW)
    assert made is not None
    name, password = made
    assert name == "admin" and len(password) >= 16
    assert _signs_in(tmp_path, "admin", password)
    with transaction(sessions) as session:
        assert service.ensure_first_admin(session, now=NOW) is None
        assert [a.name for a in service.accounts(session)] == ["admin"]
