"""Alembic environment: the engine comes from the hotline settings, never from an ini file."""

from alembic import context
from sqlalchemy import Connection

import accounts.service  # noqa: F401
import agent_desk.models  # noqa: F401
import channels.models  # noqa: F401  (registers the tables on Base.metadata)
import core.outbox  # noqa: F401  (the event outbox)
import quality.models  # noqa: F401  (quality review, 质检)
import recordings.keywords
import recordings.retention  # noqa: F401  (legal holds, the deletion log)
import telephony.models  # noqa: F401
import tickets.models  # noqa: F401
from channels import (
    open311_models,  # noqa: F401  (Open311 keys and requests)
    portal_models,  # noqa: F401  (the portal's drafts and tracking links)
)
from core.db import WRITE_TRANSACTION, Base


def _sqlite_foreign_keys(connection: Connection, on: bool) -> None:
    # The pragma is a no-op inside a transaction: sent straight to the driver, which runs
    # it in autocommit between transactions (core.db).
    connection.connection.driver_connection.execute(  # type: ignore[union-attr]
        f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")


engine = context.config.attributes["engine"]
with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # A batch migration rebuilds a SQLite table: copy, drop the old one, rename. With
        # foreign keys on, that DROP is a DELETE cascading to every child row (an order's
        # history, clocks, surveys): off for the migration, checked before committing.
        _sqlite_foreign_keys(connection, on=False)
    try:
        connection.execution_options(**{WRITE_TRANSACTION: True})
        with connection.begin():
            context.configure(connection=connection, target_metadata=Base.metadata,
                              render_as_batch=sqlite)
            with context.begin_transaction():
                context.run_migrations()
            if sqlite and (broken := connection.exec_driver_sql(
                    "PRAGMA foreign_key_check").fetchall()):
                raise RuntimeError(f"migration left rows without their parent: {broken[:5]}")
    finally:
        if sqlite:
            _sqlite_foreign_keys(connection, on=True)
