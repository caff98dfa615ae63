"""case numbers from a per-day counter, with room for more than 9,999 orders a day

Revision ID: 0013
Revises: 0011
Create Date: 2026-11-29 10:00:00
"""

from datetime import date

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0011"
branch_labels = None
depends_on = None

NARROW, WIDE = 12, 16
CASE_NUMBER_COLUMNS = (("work_orders", "case_number"), ("work_orders", "duplicate_of"),
                       ("work_orders", "merged_into"), ("webhook_deliveries", "case_number"),
                       ("inbound_updates", "case_number"))


def _resize(width: int, was: int) -> None:
    for table in dict.fromkeys(t for t, _ in CASE_NUMBER_COLUMNS):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in (c for t, c in CASE_NUMBER_COLUMNS if t == table):
                batch_op.alter_column(column, type_=sa.String(length=width),
                                      existing_type=sa.String(length=was),
                                      existing_nullable=False)


def upgrade() -> None:
    op.create_table(
        "case_counters",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("last_number", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_case_counters")),
    )
    _resize(WIDE, NARROW)
    # Each day's counter starts at its highest number so far, compared as a number: as
    # text, SQLite's one 13-digit "2026112910000" sorts below "202611299999".
    highest = op.get_bind().execute(sa.text(
        "SELECT substr(case_number, 1, 8), max(CAST(substr(case_number, 9) AS INTEGER)) "
        "FROM work_orders GROUP BY substr(case_number, 1, 8)")).all()
    counters = sa.table("case_counters", sa.column("day", sa.Date()),
                        sa.column("last_number", sa.Integer()))
    if highest:
        op.bulk_insert(counters, [
            {"day": date(int(day[:4]), int(day[4:6]), int(day[6:8])), "last_number": last}
            for day, last in highest])


def downgrade() -> None:
    longer = op.get_bind().scalar(sa.text(
        "SELECT count(*) FROM work_orders WHERE length(case_number) > 12"))
    if longer:
        raise RuntimeError(f"downgrade 0013: {longer} case numbers have more than 12 digits "
                           "and would no longer fit")
    _resize(NARROW, WIDE)
    op.drop_table("case_counters")
