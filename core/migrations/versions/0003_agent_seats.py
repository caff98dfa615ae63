"""agent seats

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 03:59:15.892854
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "seat_intervals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agent_number", sa.String(length=20), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_seat_intervals")),
    )
    with op.batch_alter_table("seat_intervals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_seat_intervals_agent_number"), ["agent_number"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_seat_intervals_started_at"), ["started_at"], unique=False
        )

    op.create_table(
        "seat_logins",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agent_number", sa.String(length=20), nullable=False),
        sa.Column("logged_in_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("pause_reason", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_seat_logins")),
        sa.UniqueConstraint("agent_number", name=op.f("uq_seat_logins_agent_number")),
    )


def downgrade() -> None:
    op.drop_table("seat_logins")
    with op.batch_alter_table("seat_intervals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_seat_intervals_started_at"))
        batch_op.drop_index(batch_op.f("ix_seat_intervals_agent_number"))

    op.drop_table("seat_intervals")
