"""call dispositions (话后小结): what the agent says the call was, chosen in wrap-up

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-29 22:00:00.000000

`call_records.disposition` is the code chosen (settings seats.dispositions) and
`disposition_by` who chose it. An agent often chooses before the call's record is stored (it
waits for the recording to be closed): the choice waits in `pending_call_dispositions`, with
the agent who chose it ("" when a supervisor did), and is applied when the record is stored,
if that agent took the call.
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("call_records") as batch_op:
        batch_op.add_column(sa.Column("disposition", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("disposition_by", sa.String(length=50), nullable=False,
                                      server_default=""))
    op.create_table(
        "pending_call_dispositions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("agent", sa.String(length=40), nullable=False),
        sa.Column("chosen_by", sa.String(length=50), nullable=False),
        sa.Column("chosen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_call_dispositions")),
        sa.UniqueConstraint("call_id", name=op.f("uq_pending_call_dispositions_call_id")),
    )


def downgrade() -> None:
    op.drop_table("pending_call_dispositions")
    with op.batch_alter_table("call_records") as batch_op:
        batch_op.drop_column("disposition_by")
        batch_op.drop_column("disposition")
