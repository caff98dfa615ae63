"""indexes the report queries need (bench/kpi_queries.py --try-indexes, issue 14)

Revision ID: 0030
Revises: 0026
Create Date: 2026-11-30 05:20:00.000000

Windows over events, stopped deadline rounds, closed orders and answered surveys on both
databases. On PostgreSQL alone: a pattern-ops index for grid prefixes (LIKE 'p%': the plain
btree serves it only under the C collation) and, with the pg_trgm extension, a trigram index
for the description search (LIKE '%q%'). The extension is created when the server has it
and the migrating role may create it (pg_trgm is a trusted extension: a database owner
may); otherwise the trigram index is left out with a warning naming the two statements a
superuser can run later, and the search stays correct (a scan).
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

# (name, table, columns): on every database
PORTABLE = (
    ("ix_work_order_events_action_at", "work_order_events", ["action", "at"]),
    ("ix_work_order_events_at", "work_order_events", ["at"]),
    ("ix_work_order_events_order_at", "work_order_events", ["order_id", "at", "seq"]),
    ("ix_work_order_deadlines_step_met_at", "work_order_deadlines", ["step", "met_at"]),
    ("ix_work_orders_closed_at", "work_orders", ["closed_at"]),
    ("ix_surveys_answered_at", "surveys", ["answered_at"]),
)
GRID_PREFIX = "ix_work_orders_grid_code_prefix"
DESCRIPTION_TRGM = "ix_work_orders_description_trgm"
_TRGM_DDL = (f"CREATE INDEX {DESCRIPTION_TRGM} ON work_orders "
             "USING gin (description gin_trgm_ops)")


def _trigrams_available(bind: sa.Connection) -> bool:
    """pg_trgm installed in this database, creating it if the server has it and we may."""
    if bind.scalar(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")):
        return True
    if not bind.scalar(sa.text(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")):
        log.warning("0030: the server has no pg_trgm extension (postgresql-contrib); "
                    "the description search goes without its trigram index")
        return False
    try:
        with bind.begin_nested():  # a refusal must not abort the migration's transaction
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError as exc:
        log.warning("0030: cannot create the pg_trgm extension (%s); the description "
                    "search goes without its trigram index: a superuser can run "
                    "CREATE EXTENSION pg_trgm; %s;", str(exc.orig).strip(), _TRGM_DDL)
        return False
    return True


def upgrade() -> None:
    for name, table, columns in PORTABLE:
        op.create_index(name, table, columns)
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.create_index(GRID_PREFIX, "work_orders", ["grid_code"],
                    postgresql_ops={"grid_code": "varchar_pattern_ops"})
    if _trigrams_available(bind):
        op.execute(_TRGM_DDL)


def downgrade() -> None:
    # The pg_trgm extension stays: other objects of the database may use it.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {DESCRIPTION_TRGM}")
        op.drop_index(GRID_PREFIX, table_name="work_orders")
    for name, table, _columns in reversed(PORTABLE):
        op.drop_index(name, table_name=table)
