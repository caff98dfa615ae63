"""time limits in minutes

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-29 17:00:00.000000

A time limit's amount, and a running clock's, counts the clock's own unit (hours on
continuous and working_hours, days on working_days and calendar_days) when `unit` is "", or
minutes when it is "minutes". Existing rows get "" and keep their meaning.

A running clock also keeps how much of its amount extensions granted (`extended`), since one
extension may be at most the original limit. Existing rows get 0: a clock extended before
this counts its amount in force as its original limit.
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

TABLES = ("time_limits", "work_order_deadlines")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("unit", sa.String(length=8), nullable=False,
                                       server_default=""))
    op.add_column("work_order_deadlines", sa.Column("extended", sa.Integer(), nullable=False,
                                                    server_default="0"))


def downgrade() -> None:
    # The old schema has no minutes: N minutes become whole hours of the same kind of time
    # (natural -> continuous, working -> working_hours), rounded up so no limit gets shorter.
    for table in TABLES:
        op.execute(
            f"UPDATE {table} SET amount = (amount + 59) / 60, "
            "clock = CASE WHEN clock IN ('continuous', 'calendar_days') THEN 'continuous' "
            "ELSE 'working_hours' END WHERE unit = 'minutes'")
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("unit")
            if table == "work_order_deadlines":
                batch_op.drop_column("extended")
