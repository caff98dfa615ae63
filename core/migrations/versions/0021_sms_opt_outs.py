"""sms opt-outs (短信退订): numbers that texted an opt-out word, until they resubscribe

Revision ID: 0021
Revises: 0019
Create Date: 2026-11-30 01:30:00.000000

One row a number (E.164) while it is opted out; resubscribing deletes it. The outbox
withholds notices and surveys for these numbers (channels.sms.queue).
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sms_opt_outs",
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("word", sa.String(length=20), nullable=False),
        sa.Column("gateway_id", sa.String(length=80), nullable=False),
        sa.Column("opted_out_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("phone", name=op.f("pk_sms_opt_outs")),
    )


def downgrade() -> None:
    op.drop_table("sms_opt_outs")
