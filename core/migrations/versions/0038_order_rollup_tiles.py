"""order rollups by day and by month beside the hours (issue 14)

Revision ID: 0038
Revises: 0037
Create Date: 2026-12-01 03:40:00.000000

A year's report read every hour row of the year: 816,000 rows at 200,000 orders, some ten
million at the 2.4 million orders of a city's five years (bench/RESULTS.md). The rows gain
a `grain`: "h" for the hours kept so far, "d" and "m" for their sums per day and per month
of China Standard Time (UTC+8, tickets.rollups.TILE_ZONE), which reports read for the days
and months lying whole in a window. The hour rows already stored are summed here into
their days and months, by one INSERT ... SELECT each.
"""

import sqlalchemy as sa
from alembic import op

revision = "0038"
down_revision = "0037"
branch_labels = None
depends_on = None

NAME = "uq_order_rollups_figure"
KEYS = ["figure", "hour", "k1", "k2", "k3", "k4"]
# the UTC start of the UTC+8 day or month an hour row is in: PostgreSQL's timestamptz, and
# SQLite's text as SQLAlchemy writes it (2026-09-30 16:00:00.000000, so it compares as text)
STARTS = {
    "postgresql": "(date_trunc('{unit}', (hour AT TIME ZONE 'UTC') + interval '8 hours') "
                  "- interval '8 hours') AT TIME ZONE 'UTC'",
    "sqlite": "strftime('%Y-%m-%d %H:%M:%S.000000', hour, '+8 hours', 'start of {unit}', "
              "'-8 hours')",
}


def upgrade() -> None:
    with op.batch_alter_table("order_rollups") as batch:
        batch.add_column(sa.Column("grain", sa.String(length=1), nullable=False,
                                   server_default="h"))
        batch.drop_constraint(NAME, type_="unique")
        batch.create_unique_constraint(NAME, ["figure", "grain", *KEYS[1:]])
    with op.batch_alter_table("order_rollups") as batch:
        batch.alter_column("grain", server_default=None)
    start = STARTS[op.get_bind().dialect.name]
    for grain, unit in (("d", "day"), ("m", "month")):
        op.execute(
            f"INSERT INTO order_rollups (figure, grain, hour, k1, k2, k3, k4, n) "
            f"SELECT figure, '{grain}', {start.format(unit=unit)} AS tile, k1, k2, k3, k4, "
            f"sum(n) FROM order_rollups WHERE grain = 'h' "
            f"GROUP BY figure, tile, k1, k2, k3, k4 HAVING sum(n) <> 0")


def downgrade() -> None:
    op.execute("DELETE FROM order_rollups WHERE grain <> 'h'")
    with op.batch_alter_table("order_rollups") as batch:
        batch.drop_constraint(NAME, type_="unique")
        batch.create_unique_constraint(NAME, KEYS)
        batch.drop_column("grain")
