"""call records: direction and purpose (calls the hotline places), who hung up

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29 19:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("call_records") as batch_op:
        batch_op.add_column(sa.Column("direction", sa.String(length=10), nullable=False,
                                      server_default="inbound"))
        batch_op.add_column(sa.Column("purpose", sa.String(length=20), nullable=False,
                                      server_default=""))
        batch_op.add_column(sa.Column("hangup_by", sa.String(length=10), nullable=False,
                                      server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("call_records") as batch_op:
        batch_op.drop_column("hangup_by")
        batch_op.drop_column("purpose")
        batch_op.drop_column("direction")
