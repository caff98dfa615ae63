"""the citizens' portal (公众服务门户): reports waiting for their SMS code, and tracking links

Revision ID: 0024
Revises: 0019
Create Date: 2026-11-30 01:40:00.000000

A draft holds a report (and its re-encoded photos) until the citizen types the code sent to
their phone; then it becomes a work order and is deleted. A tracker maps the SHA-256 of a
private tracking token to its case number.
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "portal_drafts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("codes_sent", sa.Integer(), nullable=False),
        sa.Column("appeal_type", sa.String(length=12), nullable=False),
        sa.Column("category_code", sa.String(length=16), nullable=False),
        sa.Column("category_kind", sa.String(length=10), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("address", sa.String(length=200), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=True),
        sa.Column("longitude", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_drafts")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_portal_drafts_token_hash")),
    )
    op.create_index(op.f("ix_portal_drafts_phone"), "portal_drafts", ["phone"])
    op.create_index(op.f("ix_portal_drafts_expires_at"), "portal_drafts", ["expires_at"])
    op.create_table(
        "portal_draft_photos",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("draft_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["draft_id"], ["portal_drafts.id"], ondelete="CASCADE",
                                name=op.f("fk_portal_draft_photos_draft_id_portal_drafts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_draft_photos")),
    )
    op.create_index(op.f("ix_portal_draft_photos_draft_id"), "portal_draft_photos",
                    ["draft_id"])
    op.create_table(
        "portal_trackers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("case_number", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_trackers")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_portal_trackers_token_hash")),
    )
    op.create_index(op.f("ix_portal_trackers_case_number"), "portal_trackers",
                    ["case_number"])


def downgrade() -> None:
    op.drop_index(op.f("ix_portal_trackers_case_number"), table_name="portal_trackers")
    op.drop_table("portal_trackers")
    op.drop_index(op.f("ix_portal_draft_photos_draft_id"), table_name="portal_draft_photos")
    op.drop_table("portal_draft_photos")
    op.drop_index(op.f("ix_portal_drafts_expires_at"), table_name="portal_drafts")
    op.drop_index(op.f("ix_portal_drafts_phone"), table_name="portal_drafts")
    op.drop_table("portal_drafts")
