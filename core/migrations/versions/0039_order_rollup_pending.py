"""orders whose rollup part awaits folding (issue 14)

Revision ID: 0039
Revises: 0038
Create Date: 2026-12-02 07:20:00.000000

A move brought its order's part of the rollups in step in its own transaction: six of a
move's thirteen statements (bench/RESULTS.md, the order loop). Now it marks the order
changed, and the tickets worker, or a report before it reads, folds the marked orders in by
batches. Every order is in step when this runs: nothing to mark.
"""

import sqlalchemy as sa
from alembic import op

revision = "0039"
down_revision = "0038"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "order_rollup_pending",
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("changes", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["order_id"], ["work_orders.id"], ondelete="CASCADE",
                                name=op.f("fk_order_rollup_pending_order_id_work_orders")),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_order_rollup_pending")),
    )


def downgrade() -> None:
    # the older code keeps the rollups in step move by move and knows no marks: after this,
    # `hotline reports rebuild` brings the orders marked here back in step
    op.drop_table("order_rollup_pending")
