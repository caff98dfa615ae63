"""order rollups: hourly counts of the order figures of the reports and the evaluation

Revision ID: 0029
Revises: 0026
Create Date: 2026-11-30 05:30:00.000000

Hours are UTC hours: a centre's time zone is a whole number of hours from UTC, so its local
days are whole UTC hours. Filled by `hotline reports rebuild` for orders stored before.
"""

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "order_rollups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("figure", sa.String(length=16), nullable=False),
        sa.Column("hour", _TZ, nullable=False),
        sa.Column("k1", sa.String(length=50), nullable=False),
        sa.Column("k2", sa.String(length=50), nullable=False),
        sa.Column("k3", sa.String(length=50), nullable=False),
        sa.Column("k4", sa.String(length=50), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_rollups")),
        sa.UniqueConstraint("figure", "hour", "k1", "k2", "k3", "k4",
                            name=op.f("uq_order_rollups_figure")),
    )
    op.create_table(
        "order_rollup_marks",
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["order_id"], ["work_orders.id"], ondelete="CASCADE",
                                name=op.f("fk_order_rollup_marks_order_id_work_orders")),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_order_rollup_marks")),
    )


def downgrade() -> None:
    op.drop_table("order_rollup_marks")
    op.drop_table("order_rollups")
