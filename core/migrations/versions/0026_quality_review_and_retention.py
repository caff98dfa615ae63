"""quality review (质检): scoring forms, samples, reviews; recording retention: holds, deletions

Revision ID: 0026
Revises: 0019
Create Date: 2026-11-30 01:40:00.000000

A form version's criteria never change; a review points at the version it was scored on.
A recording's deletion is claimed by its row (one per call) before the file is unlinked.
"""

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0024"
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "quality_forms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quality_forms")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_quality_forms_name")),
    )
    op.create_index(op.f("ix_quality_forms_active"), "quality_forms", ["active"])
    op.create_table(
        "quality_criteria",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("form_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=100), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("max_points", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["form_id"], ["quality_forms.id"], ondelete="CASCADE",
                                name=op.f("fk_quality_criteria_form_id_quality_forms")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quality_criteria")),
    )
    op.create_index(op.f("ix_quality_criteria_form_id"), "quality_criteria", ["form_id"])
    op.create_table(
        "quality_samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("agent", sa.String(length=40), nullable=False),
        sa.Column("call_started_at", _TZ, nullable=False),
        sa.Column("period", sa.String(length=10), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("sampled_at", _TZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quality_samples")),
        sa.UniqueConstraint("call_id", name=op.f("uq_quality_samples_call_id")),
    )
    for column in ("agent", "call_started_at", "period", "state"):
        op.create_index(op.f(f"ix_quality_samples_{column}"), "quality_samples", [column])
    op.create_table(
        "quality_flags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("flagged_at", _TZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quality_flags")),
        sa.UniqueConstraint("call_id", "reason", name=op.f("uq_quality_flags_call_id")),
    )
    op.create_index(op.f("ix_quality_flags_call_id"), "quality_flags", ["call_id"])
    op.create_table(
        "quality_reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("form_id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("agent", sa.String(length=40), nullable=False),
        sa.Column("reviewer", sa.String(length=64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("reviewed_at", _TZ, nullable=False),
        sa.ForeignKeyConstraint(["sample_id"], ["quality_samples.id"], ondelete="CASCADE",
                                name=op.f("fk_quality_reviews_sample_id_quality_samples")),
        sa.ForeignKeyConstraint(["form_id"], ["quality_forms.id"],
                                name=op.f("fk_quality_reviews_form_id_quality_forms")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quality_reviews")),
        sa.UniqueConstraint("sample_id", name=op.f("uq_quality_reviews_sample_id")),
    )
    for column in ("call_id", "agent", "reviewed_at"):
        op.create_index(op.f(f"ix_quality_reviews_{column}"), "quality_reviews", [column])
    op.create_table(
        "quality_scores",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("review_id", sa.Integer(), nullable=False),
        sa.Column("criterion_id", sa.Integer(), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("comment", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(["review_id"], ["quality_reviews.id"], ondelete="CASCADE",
                                name=op.f("fk_quality_scores_review_id_quality_reviews")),
        sa.ForeignKeyConstraint(["criterion_id"], ["quality_criteria.id"],
                                name=op.f("fk_quality_scores_criterion_id_quality_criteria")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quality_scores")),
        sa.UniqueConstraint("review_id", "criterion_id",
                            name=op.f("uq_quality_scores_review_id")),
    )
    op.create_index(op.f("ix_quality_scores_review_id"), "quality_scores", ["review_id"])
    op.create_table(
        "recording_holds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("placed_by", sa.String(length=64), nullable=False),
        sa.Column("placed_at", _TZ, nullable=False),
        sa.Column("released_at", _TZ, nullable=True),
        sa.Column("released_by", sa.String(length=64), nullable=False),
        sa.Column("release_reason", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recording_holds")),
    )
    op.create_index(op.f("ix_recording_holds_call_id"), "recording_holds", ["call_id"])
    op.create_table(
        "recording_deletions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("recorded_at", _TZ, nullable=False),
        sa.Column("claimed_at", _TZ, nullable=False),
        sa.Column("deleted_at", _TZ, nullable=True),
        sa.Column("run_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recording_deletions")),
        sa.UniqueConstraint("call_id", name=op.f("uq_recording_deletions_call_id")),
    )


def downgrade() -> None:
    op.drop_table("recording_deletions")
    op.drop_index(op.f("ix_recording_holds_call_id"), table_name="recording_holds")
    op.drop_table("recording_holds")
    for table in ("quality_scores", "quality_reviews", "quality_flags", "quality_samples",
                  "quality_criteria", "quality_forms"):
        op.drop_table(table)
