"""The relational store: one SQLAlchemy engine per process, migrations by Alembic.

SQLite (the embedded default) and PostgreSQL are both first-class; anything that differs
between them is handled here, not in the rooms' services.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
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
from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

from core.errors import HotlineError

log = logging.getLogger(__name__)

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
STORAGE_RETRY_SECONDS = 120.0  # a worker waits this long for a restarting database
POOL_RECYCLE_SECONDS = 1800  # PostgreSQL: a pooled connection is replaced after this long
# The connection option `transaction()` sets: on SQLite its BEGIN takes the write lock.
WRITE_TRANSACTION = "hotline_write_transaction"
# With it, that BEGIN does not wait for another writer: it fails at once as busy.
NO_WAIT = "hotline_no_wait"


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
    # pre-ping: a pooled connection the server dropped (a restart, a failover) is found
    # dead at checkout and replaced, so the pool recovers by itself; recycle: none outlives
    # a firewall's or pgbouncer's idle timeout.
    options.setdefault("pool_recycle", POOL_RECYCLE_SECONDS)
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
    options = conn.get_execution_options()
    writes = options.get(WRITE_TRANSACTION, False)
    if not (writes and options.get(NO_WAIT, False)):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")
        return
    waits = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
    conn.exec_driver_sql("PRAGMA busy_timeout = 0")
    try:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    finally:
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(waits or 0)}")


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


# PostgreSQL: connection_exception (class 08), admin_shutdown, crash_shutdown,
# cannot_connect_now (the server is starting or stopping).
_GONE_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


def is_disconnect(error: BaseException) -> bool:
    """The database went away under the statement or could not be reached at all (a
    restart: "terminating connection due to administrator command", "server closed the
    connection unexpectedly", connection refused while it starts again). The transaction
    was not committed (or its COMMIT's answer was lost) and the pool replaces the
    connection; the same request is worth trying again shortly. SQLite has no such state,
    and a programming error (no such table, a bad statement) is not one."""
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    orig = error.orig
    sqlstate = getattr(orig, "sqlstate", None) or ""
    if sqlstate.startswith("08") or sqlstate in _GONE_SQLSTATES:
        return True
    # psycopg gives no SQLSTATE when there is no server answer at all (refused, closed)
    return not sqlstate and isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError)


def is_transient(error: BaseException) -> bool:
    """Worth trying again shortly: the database busy (`is_busy`) or away (`is_disconnect`)."""
    return is_busy(error) or is_disconnect(error)


def retrying(what: str, *, give_up_after_s: float = STORAGE_RETRY_SECONDS) -> Retrying:
    """A tenacity loop for a worker's unit of work against a database that may be busy or
    restarting: tried again with exponential back-off (0.5 s doubling to 10 s) while
    the error is transient, for at most `give_up_after_s`; any other error is raised at
    once. The unit must be safe to run again (one transaction, idempotent by its key)."""
    return Retrying(
        retry=retry_if_exception(is_transient), reraise=True,
        wait=wait_exponential(multiplier=0.5, max=10), stop=stop_after_delay(give_up_after_s),
        before_sleep=lambda state: log.warning(
            "%s: database unavailable (%s), trying again in %.1f s", what,
            _first_line(state.outcome.exception() if state.outcome else None),
            state.next_action.sleep if state.next_action else 0))


async def run_retrying(job: Callable[[], object], what: str, stop: asyncio.Event) -> None:
    """Run the blocking `job` in a thread, again with exponential back-off (0.5 s doubling
    to 10 s) while it fails because the database is busy or away, until it succeeds or
    `stop` is set: a worker loop's tick that a database restart interrupted is finished
    when the database is back, once, rather than each tick logging a traceback. Any other
    error is raised. The job must be safe to run again (each step one transaction that
    claims its work, so what committed before the failure is not done twice)."""

    async def pause(seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_transient), reraise=True, sleep=pause,
            wait=wait_exponential(multiplier=0.5, max=10), stop=lambda _state: stop.is_set(),
            before_sleep=lambda state: log.warning(
                "%s: database unavailable (%s), trying again in %.1f s", what,
                _first_line(state.outcome.exception() if state.outcome else None),
                state.next_action.sleep if state.next_action else 0)):
        with attempt:
            await asyncio.to_thread(job)


def _first_line(error: BaseException | None) -> str:
    orig = getattr(error, "orig", None) or error
    return (str(orig).strip().splitlines() or [""])[0]


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
    return insert_for(session.get_bind().dialect.name, table)


def insert_for(dialect: str, table: Table) -> Any:
    """insert_on_conflict for a database kind by its name ("postgresql", "sqlite"): for a
    statement built once and kept per kind."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def page_total(page: int, limit: int, offset: int, count: Callable[[], int]) -> int:
    """How many rows match in all, given a page of `page` rows read at `offset` with
    `limit`: known without `count` (a COUNT over every match) when the page is not full and
    shows where the matches end, as for most callers' history on the desk's screen pop."""
    if page < limit and (page or not offset):
        return offset + page
    return count()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session], *, wait: bool = True) -> Iterator[Session]:
    """One unit of work: committed on success, rolled back on any error. On SQLite it
    holds the write lock from its start, so it never fails halfway for a writer that
    committed meanwhile; it waits its turn (at most the engine's lock wait), or without
    `wait` fails at once as busy (`is_busy`) while another writer holds the lock."""
    with factory() as session, session.begin():
        session.connection(execution_options={WRITE_TRANSACTION: True, NO_WAIT: not wait})
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
