"""The relational store: one SQLAlchemy engine per process, migrations by Alembic.

SQLite (the embedded default) and PostgreSQL are both first-class; anything that differs
between them is handled here, not in the rooms' services.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    MetaData,
    Table,
    create_engine,
    event,
    func,
    literal,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from core.errors import HotlineError

# Stable constraint names so migrations behave the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UtcDateTime(TypeDecorator[datetime]):
    """A moment, stored in UTC and read back time-zone aware on every database. SQLite keeps
    no offset: without this a Beijing-time value would be stored as its wall-clock time and
    compare wrongly with UTC ones, and would come back naive."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"a time-zone aware datetime is needed, got {value!r}")
        return value.astimezone(UTC)  # type: ignore[no-any-return]

    def process_result_value(self, value: Any, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


MIGRATIONS_DIR = Path(__file__).with_name("migrations")


LOCK_WAIT_SECONDS = 30.0
# The connection option `transaction()` sets: on SQLite its BEGIN takes the write lock.
WRITE_TRANSACTION = "hotline_write_transaction"


def make_engine(url: str, *, lock_wait_s: float = LOCK_WAIT_SECONDS, **options: Any) -> Engine:
    """The engine for `url` (`options` go to create_engine, e.g. a pool). A statement waits
    at most `lock_wait_s` for another writer's lock, then fails as storage busy
    (`is_busy`), which the web layer answers with 503."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": lock_wait_s}, **options)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if url.startswith("postgresql:"):
        url = "postgresql+psycopg:" + url.removeprefix("postgresql:")
    return create_engine(url, pool_pre_ping=True, connect_args={
        "options": f"-c lock_timeout={max(1, round(lock_wait_s * 1000))}"}, **options)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
    # SQLAlchemy's recipe for pysqlite: the driver's own transaction handling begins only
    # before DML, so SELECTs ran outside any transaction and SAVEPOINTs outside the
    # enclosing one; switch it off and emit BEGIN in `_sqlite_begin` instead.
    dbapi_connection.isolation_level = None


def _sqlite_begin(conn: Connection) -> None:
    # A deferred transaction that read and then writes after another writer committed is
    # refused at once (SQLITE_BUSY_SNAPSHOT, no waiting): write transactions take the write
    # lock at BEGIN and queue behind each other instead. Plain read sessions stay deferred:
    # in WAL mode they never wait for a writer.
    writes = conn.get_execution_options().get(WRITE_TRANSACTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


# PostgreSQL: lock_not_available (lock_timeout), deadlock_detected, serialization_failure.
_BUSY_SQLSTATES = frozenset({"55P03", "40P01", "40001"})
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6  # primary result codes; extended ones add high bits


def is_busy(error: BaseException) -> bool:
    """The database refused for now because others hold its locks (SQLite's "database is
    locked", PostgreSQL's lock timeout, deadlock or serialization failure): the same
    request is worth trying again shortly. Unreachable or broken storage is not busy."""
    if not isinstance(error, DBAPIError) or error.orig is None:
        return False
    if getattr(error.orig, "sqlstate", None) in _BUSY_SQLSTATES:
        return True
    code = getattr(error.orig, "sqlite_errorcode", None)  # sqlite3, Python 3.11+
    return isinstance(code, int) and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)


def check_reachable(engine: Engine) -> None:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise HotlineError(
            f"db: cannot connect to {engine.url.render_as_string(hide_password=True)}: {reason}"
        ) from None


def alembic_config(engine: Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision`; safe to run on every start."""
    check_reachable(engine)
    command.upgrade(alembic_config(engine), revision)


def insert_on_conflict(session: Session, table: Table) -> Any:
    """INSERT for `table` with the ON CONFLICT clauses (on_conflict_do_update / _nothing)
    that SQLite and PostgreSQL both have, in the session's database's own construct."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: committed on success, rolled back on any error. On SQLite it
    holds the write lock from its start, so it never fails halfway for a writer that
    committed meanwhile; it waits its turn (at most the engine's lock wait)."""
    with factory() as session, session.begin():
        session.connection(execution_options={WRITE_TRANSACTION: True})
        yield session


def relocate_paths(session: Session, column: Any, old_root: str, new_root: str) -> int:
    """Rewrite the stored file paths in `column` that lie under `old_root` to lie under
    `new_root` (a restore into another data directory); the number of rows changed."""
    old, new = old_root.rstrip("/"), new_root.rstrip("/")
    if old == new:
        return 0
    table = column.class_.__table__ if hasattr(column, "class_") else column.table
    statement = (table.update().where(column.like(old.replace("%", r"\%").replace("_", r"\_")
                                                  + "/%", escape="\\"))
                 .values({column.key: literal(new) + func.substr(column, len(old) + 1)}))
    return session.execute(statement).rowcount or 0
