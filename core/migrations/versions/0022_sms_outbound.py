"""outbound SMS (短信下发): attempts, backoff, provider, parts and delivery receipts

Revision ID: 0022
Revises: 0019
Create Date: 2026-11-30 01:40:00.000000

`sms_messages` gains the worker's bookkeeping (attempts, next_attempt_at, sending_at, provider,
parts, error) and the delivery receipt's outcome (delivery, delivered_at); one row per part
the provider took, with the provider's id that its receipt names.
"""

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sms_messages") as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("sending_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("provider", sa.String(length=10), nullable=False,
                                      server_default=""))
        batch_op.add_column(sa.Column("parts", sa.Integer(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("error", sa.String(length=200), nullable=False,
                                      server_default=""))
        batch_op.add_column(sa.Column("delivery", sa.String(length=12), nullable=False,
                                      server_default=""))
        batch_op.add_column(sa.Column("delivered_at", sa.DateTime(timezone=True),
                                      nullable=True))
    op.create_table(
        "sms_message_parts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=10), nullable=False),
        sa.Column("provider_id", sa.String(length=80), nullable=False),
        sa.Column("delivery", sa.String(length=12), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["message_id"], ["sms_messages.id"],
                                name=op.f("fk_sms_message_parts_message_id_sms_messages")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_message_parts")),
    )
    op.create_index(op.f("ix_sms_message_parts_message_id"), "sms_message_parts",
                    ["message_id"])
    op.create_index(op.f("ix_sms_message_parts_provider_id"), "sms_message_parts",
                    ["provider_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_sms_message_parts_provider_id"), table_name="sms_message_parts")
    op.drop_index(op.f("ix_sms_message_parts_message_id"), table_name="sms_message_parts")
    op.drop_table("sms_message_parts")
    with op.batch_alter_table("sms_messages") as batch_op:
        for column in ("delivered_at", "delivery", "error", "parts", "provider", "sending_at",
                       "next_attempt_at", "attempts"):
            batch_op.drop_column(column)
