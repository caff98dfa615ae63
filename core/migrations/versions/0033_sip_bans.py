"""SIP security: addresses banned after repeated failed registrations or calls

Revision ID: 0033
Revises: 0026
Create Date: 2026-11-30 05:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sip_bans",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=45), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("banned_at", _TZ, nullable=False),
        sa.Column("until", _TZ, nullable=False),
        sa.Column("lifted_at", _TZ, nullable=True),
        sa.Column("lifted_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sip_bans")),
    )
    op.create_index(op.f("ix_sip_bans_address"), "sip_bans", ["address"])
    op.create_index(op.f("ix_sip_bans_until"), "sip_bans", ["until"])
    op.create_index(op.f("ix_sip_bans_lifted_at"), "sip_bans", ["lifted_at"])


def downgrade() -> None:
    op.drop_table("sip_bans")
