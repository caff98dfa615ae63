"""order requests: the Idempotency-Key of an order POST, kept with the order it took in

Revision ID: 0035
Revises: 0026
Create Date: 2026-11-30 06:10:00.000000

A POST sent again after its answer was lost (the database restarted under it) finds the
order the first one took in instead of opening a second.
"""

import sqlalchemy as sa
from alembic import op

revision = "0035"
down_revision = "0033"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "order_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=80), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("case_number", sa.String(length=16), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_requests")),
        sa.UniqueConstraint("actor", "idempotency_key",
                            name=op.f("uq_order_requests_actor")),
    )


def downgrade() -> None:
    op.drop_table("order_requests")
