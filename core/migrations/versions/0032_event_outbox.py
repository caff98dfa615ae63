"""the event outbox: domain events stored in the transaction of the change they describe

Revision ID: 0032
Revises: 0026
Create Date: 2026-11-30 05:20:00.000000

A relay appends each row to the Redis stream (hotline:events) in `seq` order and stamps
`relayed_at`; relayed rows are deleted after a retention. `event_id` is unique: an event
announced twice is stored, and so published, once.
"""

import sqlalchemy as sa
from alembic import op

revision = "0032"
down_revision = "0030"
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "event_outbox",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("relayed_at", _TZ, nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_event_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_event_outbox_event_id")),
    )
    op.create_index(op.f("ix_event_outbox_relayed_at"), "event_outbox", ["relayed_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_event_outbox_relayed_at"), table_name="event_outbox")
    op.drop_table("event_outbox")
