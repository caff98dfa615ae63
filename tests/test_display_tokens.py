"""Display tokens (大屏令牌, agent_desk.displays): stored, listed and revoked one by one.

- The service on SQLite and PostgreSQL: a token opens the wall for its own row only; a
  revoked or expired one is refused, saying so; issuing and revoking are audited; a bad name
  stores nothing; revoking twice or an unknown one is refused (409, 404).
- The admin page and the push server: an admin issues a token (shown once), the wall opens
  and its push stream opens; the admin revokes it: the open stream is closed, the wall is a
  401, its ticket renewal too, and its push stream, reconnecting with the ticket it still
  holds, is refused (401).
- `hotline board token` issues, lists (--list) and revokes (--revoke ID).
- Migration 0020's index on call_records (agent, connected_at), on both databases.
"""

from __future__ import annotations

import asyncio
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, select

from accounts import audit
from agent_desk import displays
from agent_desk.models import DisplayToken
from agent_desk.push import PushServer
from core.db import make_engine, session_factory, transaction, upgrade
from core.errors import HotlineError
from tests import api_world
from tests.isolation import free_port

NOW = api_world.NOW
SECRET = "display-secret-for-tests-0123456789"


@pytest.fixture
def sessions(database_url: str) -> Iterator[Any]:
    engine = make_engine(database_url)
    upgrade(engine)
    try:
        yield session_factory(engine)
    finally:
        engine.dispose()


def _audit(sessions: Any) -> list[tuple[str, str, str]]:
    with sessions() as session:
        rows = session.scalars(select(audit.AuditEntry).where(audit.AuditEntry.action.in_(
            (audit.TOKEN_ISSUED, audit.TOKEN_REVOKED))).order_by(audit.AuditEntry.id)).all()
        return [(r.action, r.actor, r.target) for r in rows]


def test_a_token_opens_the_wall_until_it_is_revoked_or_expires(sessions: Any) -> None:
    with transaction(sessions) as session:
        hall, token = displays.issue(session, SECRET, " 指挥大厅 ", days=30, actor="管理员",
                                     now=NOW)
        _lobby, other = displays.issue(session, SECRET, "大厅二", days=30, actor="管理员",
                                       now=NOW)
    with sessions() as session:
        assert displays.check(session, SECRET, token, NOW) == displays.Display(hall.id,
                                                                                "指挥大厅")
        assert displays.check(session, SECRET, other, NOW).name == "大厅二"
        for bad in (token[:-2] + "xx", "forged", other.replace(".", "!")):
            with pytest.raises(displays.DisplayTokenError, match="not a display token"):
                displays.check(session, SECRET, bad, NOW)
        with pytest.raises(displays.DisplayTokenError, match="not a display token"):
            displays.check(session, "another secret", token, NOW)
        with pytest.raises(displays.DisplayTokenError, match="expired"):
            displays.check(session, SECRET, token, NOW + timedelta(days=30))
    with transaction(sessions) as session:
        displays.revoke(session, hall.id, actor="管理员", now=NOW + timedelta(hours=1))
    with sessions() as session:
        with pytest.raises(displays.DisplayTokenError, match="revoked") as refused:
            displays.check(session, SECRET, token, NOW + timedelta(hours=2))
        assert refused.value.status == 401
        assert displays.check(session, SECRET, other, NOW).name == "大厅二"  # the other stays
        assert [(r.name, displays.state(r, NOW + timedelta(hours=2)))
                for r in displays.listing(session)] == [("大厅二", "active"),
                                                        ("指挥大厅", "revoked")]
    assert _audit(sessions) == [
        ("token_issued", "管理员", f"display:{hall.id}"),
        ("token_issued", "管理员", f"display:{hall.id + 1}"),
        ("token_revoked", "管理员", f"display:{hall.id}")]


def test_refusals_store_nothing(sessions: Any) -> None:
    with transaction(sessions) as session:
        row, _token = displays.issue(session, SECRET, "指挥大厅", days=30, actor="a", now=NOW)
        displays.revoke(session, row.id, actor="a", now=NOW)
    for name in ("", "   ", "长" * 51):
        with pytest.raises(HotlineError, match="name") as refused, \
                transaction(sessions) as session:
            displays.issue(session, SECRET, name, days=30, actor="a", now=NOW)
        assert refused.value.status == 400
    with pytest.raises(displays.DisplayConflict, match="revoked already"), \
            transaction(sessions) as session:
        displays.revoke(session, row.id, actor="b", now=NOW)
    with pytest.raises(HotlineError, match="no display token 999") as unknown, \
            transaction(sessions) as session:
        displays.revoke(session, 999, actor="b", now=NOW)
    assert unknown.value.status == 404
    with sessions() as session:
        assert [(r.id, r.revoked_by) for r in displays.listing(session)] == [(row.id, "a")]
    assert [action for action, _who, _what in _audit(sessions)] == ["token_issued",
                                                                    "token_revoked"]


def test_migration_0020_indexes_an_agents_connected_calls(sessions: Any) -> None:
    indexes = inspect(sessions.kw["bind"]).get_indexes("call_records")
    assert {"name": "ix_call_records_agent_connected_at",
            "columns": ["agent", "connected_at"]} in [
        {"name": i["name"], "columns": i["column_names"]} for i in indexes]


# ------------------------------------------------------------------ the page and the push

@pytest.fixture
def world(tmp_path: Path) -> Iterator[api_world.World]:
    built = api_world.build(f"sqlite:///{tmp_path / 'hotline.db'}", tmp_path)
    yield built
    built.engine.dispose()


@pytest.fixture
def push(world: api_world.World) -> Iterator[str]:
    """The push server on a port of its own; its base address."""
    app = world.app
    port = free_port()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = PushServer(app.extensions["hotline.settings"], world.sessions,
                        app.extensions["hotline.redis"], app.extensions["hotline.clock"],
                        host="127.0.0.1", port=port)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def _stream(push: str, ticket: str) -> tuple[int, bytes]:
    """Open the wall's push stream: its status and first bytes (then it is closed)."""
    url = f"{push}/desk/push?agent=board&ticket={ticket}"
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read(8)
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read()


def test_a_revoked_token_is_refused_by_the_wall_and_the_push_stream(
        world: api_world.World, push: str) -> None:
    admin = world.tokens["admin"]
    client = world.client
    assert client.get("/board/displays", headers=admin).status_code == 200
    for role in ("supervisor", "shift_chief", "operator"):  # admins only
        assert client.get("/board/displays", headers=world.tokens[role]).status_code == 403
    issued = client.post("/board/displays", data={"name": "指挥大厅"}, headers=admin)
    assert issued.status_code == 201
    page = issued.get_data(as_text=True)
    token = re.search(r'<code id="issued-token">([^<]+)</code>', page).group(1)  # type: ignore[union-attr]
    assert f"/board/wall?token={token}" in page
    assert client.get("/board/displays", headers=admin).get_data(
        as_text=True).count(token) == 0  # shown once, never listed
    blank = client.post("/board/displays", data={"name": "  "}, headers=admin)
    assert blank.status_code == 400
    with world.sessions() as session:
        [row] = displays.listing(session)

    assert client.get(f"/board/wall?token={token}").status_code == 200
    renewed = client.get(f"/board/wall/push-ticket?token={token}")
    assert renewed.status_code == 200
    ticket = renewed.json["ticket"]
    assert _stream(push, ticket) == (200, b"retry: 2")
    open_stream = urllib.request.urlopen(f"{push}/desk/push?agent=board&ticket={ticket}",
                                         timeout=10)
    assert open_stream.read(8) == b"retry: 2"
    ended = threading.Event()

    def drain() -> None:
        while open_stream.read(64):
            pass
        ended.set()

    threading.Thread(target=drain, daemon=True).start()
    assert not ended.wait(1.0)  # open, and stays open

    revoked = client.post("/board/displays/revoke", data={"display_id": str(row.id)},
                          headers=admin)
    assert revoked.status_code == 303
    assert ended.wait(5.0)  # the stream the wall held open is closed at once
    wall = client.get(f"/board/wall?token={token}")
    assert wall.status_code == 401
    assert "revoked" in wall.get_data(as_text=True)
    assert client.get(f"/board/wall/push-ticket?token={token}").status_code == 401
    status, body = _stream(push, ticket)  # the ticket it holds has not expired: still no
    assert status == 401 and b"revoked" in body
    again = client.post("/board/displays/revoke", data={"display_id": str(row.id)},
                        headers=admin)
    assert again.status_code == 409
    assert client.post("/board/displays/revoke", data={"display_id": "x1"},
                       headers=admin).status_code == 400
    with world.sessions() as session:
        audited = session.scalars(select(audit.AuditEntry).where(
            audit.AuditEntry.target == f"display:{row.id}").order_by(audit.AuditEntry.id)).all()
        assert [(a.action, a.actor) for a in audited] == [
            ("token_issued", "admin-account"),
            ("token_revoked", "admin-account")]
        assert session.scalar(select(DisplayToken.revoked_at).where(
            DisplayToken.id == row.id)) is not None


def test_the_board_token_command_issues_lists_and_revokes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hotline.cli import cli

    monkeypatch.setenv("HOTLINE_STORAGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    runner = CliRunner()
    made = runner.invoke(cli, ["board", "token", "指挥大厅"])
    assert made.exit_code == 0, made.output
    token = made.stdout.strip()
    assert token and "/board/wall?token=" in made.stderr
    listed = runner.invoke(cli, ["board", "token", "--list"])
    assert listed.exit_code == 0
    assert re.fullmatch(r"1\t指挥大厅\tactive\tcli:\S+\t[-0-9: ]+\t[-0-9: ]+\n", listed.stdout)
    done = runner.invoke(cli, ["board", "token", "--revoke", "1"])
    assert done.exit_code == 0 and done.stdout == "revoked display token 1 (指挥大厅)\n"
    assert "\trevoked\t" in runner.invoke(cli, ["board", "token", "--list"]).stdout
    twice = runner.invoke(cli, ["board", "token", "--revoke", "1"])
    assert twice.exit_code == 1 and "revoked already" in twice.output
    both = runner.invoke(cli, ["board", "token", "大厅", "--list"])
    assert both.exit_code == 2
