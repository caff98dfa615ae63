"""hourly call rollups (话务小时汇总) and the repeat-caller flag stored with each call

Revision ID: 0028
Revises: 0026
Create Date: 2026-11-30 05:30:00.000000

One row per UTC hour and queue ("" for calls that reached none) holding the sums of
telephony.measures (telephony.rollups says why UTC hours). The flags and rows of the calls
already stored are filled here by telephony.rollups.rebuild, with the default repeat window
(24 h); a centre with another `hotline.repeat_window_hours` runs `hotline reports rebuild`.
"""

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("call_records") as batch:
        batch.add_column(sa.Column("repeat_caller", sa.Boolean(), server_default=sa.false(),
                                   nullable=False))
    counts = ("calls", "offered", "answered", "abandoned", "unanswered", "short_abandons",
              "answered_within_10", "answered_within_15", "answered_within_20",
              "answered_within_30", "answered_within_60", "known_number_calls",
              "repeat_calls", "repeat_window_seconds", "outbound_calls", "outbound_answered")
    op.create_table(
        "call_hour_rollups",
        sa.Column("hour", _TZ, nullable=False),
        sa.Column("queue", sa.String(length=40), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in counts),
        *(sa.Column(name, sa.Float(), nullable=False)
          for name in ("wait_seconds", "talk_seconds", "hold_seconds")),
        sa.Column("longest_wait_seconds", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("hour", "queue", name=op.f("pk_call_hour_rollups")),
    )
    # The calls stored before: their flags and rollups from the records (a fresh database
    # has none). Imported here, not at the top: only an upgrade with calls needs it.
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT 1 FROM call_records LIMIT 1")).first() is not None:
        from sqlalchemy.orm import Session

        from telephony import rollups

        with Session(bind=bind, join_transaction_mode="create_savepoint") as session:
            rollups.rebuild(session)
            session.commit()  # the savepoint; the migration's transaction commits it


def downgrade() -> None:
    op.drop_table("call_hour_rollups")
    with op.batch_alter_table("call_records") as batch:
        batch.drop_column("repeat_caller")
