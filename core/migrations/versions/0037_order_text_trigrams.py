"""a trigram index of the orders' descriptions on SQLite (issue 14)

Revision ID: 0037
Revises: 0036
Create Date: 2026-12-01 00:40:00.000000

The order search's text filter (tickets.service.find_orders: the description contains the
words, LIKE '%q%') read every order on SQLite: 150 ms at 200,000 orders, growing with them
(PostgreSQL has the pg_trgm index of 0030). An FTS5 table with the trigram tokenizer
(SQLite 3.34 and later) over work_orders' description, kept by triggers, gives the orders
holding every three-character piece of a phrase of three characters or more; LIKE still
decides, so the meaning is unchanged. On SQLite only.

A later migration that rebuilds work_orders on SQLite (alembic's batch mode copies the
table) drops these triggers with the old table: it must create them again
(tests/test_order_text_search.py fails without them).
"""

import sqlite3

from alembic import op

revision = "0037"
down_revision = "0036"
branch_labels = None
depends_on = None

TABLE = "work_order_text"
_ADD = f"INSERT INTO {TABLE} (rowid, description) VALUES (new.id, new.description);"
_REMOVE = (f"INSERT INTO {TABLE} ({TABLE}, rowid, description) "
           "VALUES ('delete', old.id, old.description);")
TRIGGERS = {
    f"{TABLE}_insert": f"AFTER INSERT ON work_orders BEGIN {_ADD} END",
    f"{TABLE}_delete": f"AFTER DELETE ON work_orders BEGIN {_REMOVE} END",
    f"{TABLE}_update": f"AFTER UPDATE OF description ON work_orders BEGIN {_REMOVE} {_ADD} END",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    if sqlite3.sqlite_version_info < (3, 34):
        raise RuntimeError(f"SQLite {sqlite3.sqlite_version} has no trigram tokenizer: the "
                           "embedded database needs SQLite 3.34 or later")
    op.execute(f"CREATE VIRTUAL TABLE {TABLE} USING fts5(description, content='work_orders', "
               "content_rowid='id', tokenize='trigram')")
    for name, body in TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {body}")
    op.execute(f"INSERT INTO {TABLE} ({TABLE}) VALUES ('rebuild')")  # the orders already there


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute(f"DROP TABLE IF EXISTS {TABLE}")
