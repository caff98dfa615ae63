"""work order attachments

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24 05:07:30.433560
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "work_order_attachments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["work_orders.id"],
            name=op.f("fk_work_order_attachments_order_id_work_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_order_attachments")),
    )
    with op.batch_alter_table("work_order_attachments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_work_order_attachments_order_id"), ["order_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("work_order_attachments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_work_order_attachments_order_id"))

    op.drop_table("work_order_attachments")
