"""display tokens (大屏令牌) stored, to be listed and revoked; the wrap-up lookup's index

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-30 01:30:00.000000

One row per display token issued (agent_desk.displays): the token names the row, the row
says whether it still opens the wall (revoked_at, expires_at). And an index on
call_records (agent, connected_at): telephony.measures finds each wrap-up's call as the
agent's latest connected by then, which without it read every call of that agent.
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "display_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_display_tokens")),
    )
    op.create_index("ix_call_records_agent_connected_at", "call_records",
                    ["agent", "connected_at"])


def downgrade() -> None:
    op.drop_index("ix_call_records_agent_connected_at", table_name="call_records")
    op.drop_table("display_tokens")
