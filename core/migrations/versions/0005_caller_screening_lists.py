"""caller screening lists

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 04:28:57.178292
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "caller_list",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_caller_list")),
        sa.UniqueConstraint("number", "kind", name=op.f("uq_caller_list_number")),
    )
    with op.batch_alter_table("caller_list", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_caller_list_number"), ["number"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("caller_list", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_caller_list_number"))

    op.drop_table("caller_list")
