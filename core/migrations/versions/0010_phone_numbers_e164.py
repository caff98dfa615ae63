"""phone numbers stored in E.164; call records carry the citizen's number

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 18:00:00
"""

import sqlalchemy as sa
from alembic import op

from core import phones

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Every column that holds a citizen's number, as the old normaliser left it (digits, +86
# dropped): rewritten in the one stored form. A value the new normaliser cannot read is
# left as it was; so is one whose new form the same table already holds under a unique key.
COLUMNS = (("caller_list", "number"), ("work_orders", "citizen_phone"), ("surveys", "phone"),
           ("sms_messages", "phone"), ("callback_requests", "caller_number"))


def _rewrite(table: str, column: str, source: str | None = None) -> None:
    bind = op.get_bind()
    source = source or column
    values = bind.execute(sa.text(
        f"SELECT DISTINCT {source} FROM {table} WHERE {source} IS NOT NULL AND {source} != ''"
    )).scalars().all()
    for old in values:
        new = phones.normalise_or_empty(old)
        if not new or (new == old and source == column):
            continue
        if table == "caller_list" and bind.execute(sa.text(
                "SELECT count(*) FROM caller_list WHERE number = :new"), {"new": new}).scalar():
            continue  # already listed in its new form
        bind.execute(sa.text(f"UPDATE {table} SET {column} = :new WHERE {source} = :old"),
                     {"new": new, "old": old})


def upgrade() -> None:
    with op.batch_alter_table("call_records") as batch_op:
        batch_op.add_column(sa.Column("citizen_number", sa.String(length=24), nullable=False,
                                      server_default=""))
        batch_op.create_index(batch_op.f("ix_call_records_citizen_number"), ["citizen_number"],
                              unique=False)
    for table, column in COLUMNS:
        _rewrite(table, column)
    _rewrite("call_records", "citizen_number", source="caller_number")


def downgrade() -> None:
    with op.batch_alter_table("call_records") as batch_op:
        batch_op.drop_index(batch_op.f("ix_call_records_citizen_number"))
        batch_op.drop_column("citizen_number")
