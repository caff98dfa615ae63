"""surge modes (突发事件模式): an incident's announcement played to every caller before the menu

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-29 22:30:00.000000

One row per incident; the one without `ended_at` is on. `sound` names the announcement's WAV
under the prompts folder's surge/.
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "surge_modes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=100), nullable=False),
        sa.Column("text", sa.String(length=500), nullable=False),
        sa.Column("sound", sa.String(length=80), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_by", sa.String(length=64), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_surge_modes")),
    )
    op.create_index(op.f("ix_surge_modes_started_at"), "surge_modes", ["started_at"])
    op.create_index(op.f("ix_surge_modes_ended_at"), "surge_modes", ["ended_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_surge_modes_ended_at"), table_name="surge_modes")
    op.drop_index(op.f("ix_surge_modes_started_at"), table_name="surge_modes")
    op.drop_table("surge_modes")
