"""speech_keywords (告警关键词): the alert keywords the operator edits

Revision ID: 0027
Revises: 0026
Create Date: 2026-11-30 05:30:00.000000

One row per word: active or removed (kept, with who changed it and when), so a list the
operator emptied is not seeded again from `speech.alert_keywords` (recordings.keywords).
"""

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "speech_keywords",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("word", sa.String(length=40), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_speech_keywords")),
        sa.UniqueConstraint("word", name=op.f("uq_speech_keywords_word")),
    )


def downgrade() -> None:
    op.drop_table("speech_keywords")
