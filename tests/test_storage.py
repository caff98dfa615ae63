"""Migrations and the telephony directory on both SQLite and PostgreSQL; Redis both ways."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, make_url, text

from core.db import alembic_config, make_engine, session_factory, transaction, upgrade
from core.errors import HotlineError
from core.live import connect_redis
from telephony import directory
from tests.conftest import POSTGRES_ADMIN_URL, REDIS_SERVER_URL, make_settings


def test_migrations_create_upgrade_and_roll_back(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    upgrade(engine)  # idempotent: every start runs it
    assert {"agents", "call_queues", "queue_members", "alembic_version"} <= set(
        inspect(engine).get_table_names())
    command.downgrade(alembic_config(engine), "base")
    assert "agents" not in inspect(engine).get_table_names()
    upgrade(engine)
    assert "agents" in inspect(engine).get_table_names()


def test_directory_round_trip(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    factory = session_factory(engine)
    with transaction(factory) as session:
        directory.ensure_queue(session, "intake", "综合受理")
        directory.ensure_queue(session, "complaints", "投诉", strategy="ringall")
        directory.add_agent(session, "8001", "张三", queues=("intake", "complaints"))
        directory.add_agent(session, "8002", "李四", static_contact="sip:8002@127.0.0.3:5060",
                            queues=("intake",), penalty=2)
    with factory() as session:
        snap = directory.snapshot(session)
    assert [q.name for q in snap.queues] == ["complaints", "intake"]
    assert snap.queues[1].members == (("8001", 0), ("8002", 2))
    assert snap.agents[0].name == "张三" and snap.agents[0].static_contact is None
    assert snap.agents[1].static_host == "127.0.0.3"
    assert len(snap.agents[0].sip_password) >= 16


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: directory.add_agent(s, "8001", "重复"), "already exists"),
        (lambda s: directory.add_agent(s, "80a1", "x"), "2-20 digits"),
        (lambda s: directory.add_agent(s, "8003", "x\ny"), "printable"),
        (lambda s: directory.add_agent(s, "8003", "x", queues=("nope",)), "does not exist"),
        (lambda s: directory.add_agent(s, "8003", "x", static_contact="sip:x@y;evil"),
         "contact"),
        (lambda s: directory.ensure_queue(s, "general"), "not 'general'"),
        (lambda s: directory.ensure_queue(s, "Bad Name"), "lower-case"),
        (lambda s: directory.ensure_queue(s, "fine", strategy="chaos"), "strategy"),
        (lambda s: directory.remove_agent(s, "9999"), "does not exist"),
    ],
)
def test_directory_refuses_bad_changes_and_writes_nothing(
        database_url: str, change, message: str) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(database_url)
    upgrade(engine)
    factory = session_factory(engine)
    with transaction(factory) as session:
        directory.ensure_queue(session, "intake")
        directory.add_agent(session, "8001", "张三", queues=("intake",))
    with pytest.raises(directory.DirectoryError, match=message), transaction(factory) as session:
        change(session)
    with factory() as session:
        snap = directory.snapshot(session)
    assert [a.number for a in snap.agents] == ["8001"]
    assert [q.name for q in snap.queues] == ["intake"]


def test_unreachable_database_is_one_clear_error(tmp_path: Path) -> None:
    engine = make_engine("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(HotlineError, match="db: cannot connect to postgresql"):
        upgrade(engine)


@pytest.mark.parametrize("kind", ["embedded", "server"])
def test_redis_both_ways_publish_and_store(tmp_path: Path, kind: str) -> None:
    env = {} if kind == "embedded" else {"REDIS_URL": REDIS_SERVER_URL}
    settings = make_settings(tmp_path, **env)
    client = connect_redis(settings)
    pubsub = client.pubsub()
    pubsub.subscribe("hotline:test")
    pubsub.get_message(timeout=2)  # subscription confirmation
    client.publish("hotline:test", "来电")
    message = pubsub.get_message(timeout=2)
    assert message is not None and message["data"].decode() == "来电"
    client.set("hotline:test:key", "1", ex=10)
    assert client.get("hotline:test:key") == b"1"
    # the embedded server is private to the data directory, reached over a unix socket
    assert ("path" in client.connection_pool.connection_kwargs) == (kind == "embedded")


def test_unreachable_redis_is_one_clear_error(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, REDIS_URL="redis://127.0.0.1:1/0")
    with pytest.raises(HotlineError, match=r"redis: cannot use redis://127\.0\.0\.1:1/0"):
        connect_redis(settings)


def test_a_command_nobody_took_in_time_is_never_carried_out_later(tmp_path: Path) -> None:
    """The telephony service was away: when it comes back it must not place a survey call
    (or pause an agent) its sender has long written off."""
    from telephony import commands

    client = connect_redis(make_settings(tmp_path))  # embedded: a stream of its own
    commands.ensure_group(client)
    with pytest.raises(commands.CommandError, match=r"no answer to call\.outbound"):
        commands.send(client, "call.outbound", {"purpose": "survey", "number": "139"},
                      timeout=1)
    [(entry, request, name, args)] = commands.receive(client, "late-service", block_ms=100)
    assert (name, args) == ("call.outbound", {"__expired__": True})
    commands.reply(client, entry, request, ok=False, error="expired")
    # the service takes the next command as it arrives (the read blocks until then)
    fresh = threading.Thread(target=lambda: commands.reply(
        client, *commands.receive(client, "service", block_ms=2000)[0][:2], ok=True))
    fresh.start()
    assert commands.send(client, "seat.resume", {"agent": "8101"}, timeout=5) == {}
    fresh.join()


REPORT_INDEXES = {  # migration 0030, written out by hand from bench/kpi_queries.py PROPOSED
    "work_order_events": {"ix_work_order_events_action_at": ["action", "at"],
                          "ix_work_order_events_at": ["at"],
                          "ix_work_order_events_order_at": ["order_id", "at", "seq"]},
    "work_order_deadlines": {"ix_work_order_deadlines_step_met_at": ["step", "met_at"]},
    "work_orders": {"ix_work_orders_closed_at": ["closed_at"]},
    "surveys": {"ix_surveys_answered_at": ["answered_at"]},
}
PG_ONLY_INDEXES = {"ix_work_orders_grid_code_prefix", "ix_work_orders_description_trgm"}


def _indexes(engine, table: str) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    return {ix["name"]: ix["column_names"] for ix in inspect(engine).get_indexes(table)}


def test_the_report_indexes_come_and_go_with_their_migration(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    for table, wanted in REPORT_INDEXES.items():
        found = _indexes(engine, table)
        assert {name: found.get(name) for name in wanted} == wanted
    names = set(_indexes(engine, "work_orders"))
    if engine.dialect.name == "postgresql":
        assert names >= PG_ONLY_INDEXES
        with engine.connect() as conn:
            definitions = {name: ddl for name, ddl in conn.execute(text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'work_orders'"))}
            assert "varchar_pattern_ops" in definitions["ix_work_orders_grid_code_prefix"]
            assert "gin_trgm_ops" in definitions["ix_work_orders_description_trgm"]
            # the planner can take them for a grid prefix and a search inside the text
            conn.execute(text("SET enable_seqscan = off"))
            grid = "\n".join(conn.scalars(text(
                "EXPLAIN SELECT id FROM work_orders WHERE grid_code LIKE '2301%'")))
            words = "\n".join(conn.scalars(text(
                "EXPLAIN SELECT id FROM work_orders WHERE description LIKE '%井盖缺失%'")))
        assert "ix_work_orders_grid_code_prefix" in grid
        assert "ix_work_orders_description_trgm" in words
    else:
        assert not PG_ONLY_INDEXES & names
    command.downgrade(alembic_config(engine), "0026")
    for table, wanted in REPORT_INDEXES.items():
        assert not set(wanted) & set(_indexes(engine, table))
    assert not PG_ONLY_INDEXES & set(_indexes(engine, "work_orders"))
    upgrade(engine)  # and back up again on the same database
    assert set(_indexes(engine, "work_orders")) >= PG_ONLY_INDEXES \
        or engine.dialect.name != "postgresql"


def test_without_the_right_to_create_pg_trgm_the_migration_goes_on_without_that_index(
        caplog: pytest.LogCaptureFixture) -> None:
    """A role that may not create extensions: every other index lands, the trigram index is
    left out with a warning that names what a superuser runs."""
    suffix = uuid.uuid4().hex[:10]
    role, name = f"hotline_role_{suffix}", f"hotline_test_{suffix}"
    admin = create_engine(POSTGRES_ADMIN_URL.replace("postgresql:", "postgresql+psycopg:", 1),
                          isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(text(f'CREATE DATABASE "{name}" OWNER "{role}"'))
        # trusted extensions need CREATE on the database: the owner's taken away
        conn.execute(text(f'REVOKE CREATE ON DATABASE "{name}" FROM "{role}", PUBLIC'))
    engine = make_engine(make_url(POSTGRES_ADMIN_URL).set(username=role, database=name)
                         .render_as_string(hide_password=False))
    try:
        with caplog.at_level("WARNING", logger="alembic.runtime.migration"):
            upgrade(engine)
        names = set(_indexes(engine, "work_orders"))
        assert "ix_work_orders_grid_code_prefix" in names
        assert "ix_work_orders_description_trgm" not in names
        assert "ix_work_orders_closed_at" in names
        assert "CREATE EXTENSION pg_trgm" in caplog.text
        assert "gin_trgm_ops" in caplog.text
        command.downgrade(alembic_config(engine), "0026")  # and down again without it
        assert "ix_work_orders_grid_code_prefix" not in set(_indexes(engine, "work_orders"))
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()
