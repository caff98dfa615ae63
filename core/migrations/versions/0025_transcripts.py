"""transcripts (语音转写): recording files per leg, transcription jobs, transcripts, search index

Revision ID: 0025
Revises: 0019
Create Date: 2026-11-30 01:40:00.000000

`recording_files` links each file of a call (the mixed recording, the caller's leg, the
agent's leg) to its call. `transcription_jobs` is one row per recording checksum: queued once,
its attempts counted. `transcripts` and `transcript_segments` keep what the engine heard, word
timings and confidences included. `transcript_index` is the search index of the segments'
masked, segmented text: an FTS5 table on SQLite, a tsvector with a GIN index on PostgreSQL.
"""

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recording_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("leg", sa.String(length=8), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recording_files")),
        sa.UniqueConstraint("call_id", "leg", name=op.f("uq_recording_files_call_id")),
    )
    op.create_index(op.f("ix_recording_files_sha256"), "recording_files", ["sha256"])
    op.create_table(
        "transcription_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("leg", sa.String(length=8), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=False),
        sa.Column("worker_pid", sa.Integer(), nullable=True),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("audio_seconds", sa.Float(), nullable=True),
        sa.Column("work_seconds", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcription_jobs")),
        sa.UniqueConstraint("sha256", name=op.f("uq_transcription_jobs_sha256")),
    )
    op.create_index(op.f("ix_transcription_jobs_state"), "transcription_jobs", ["state"])
    op.create_table(
        "transcripts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("leg", sa.String(length=8), nullable=False),
        sa.Column("engine", sa.String(length=20), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("audio_seconds", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcripts")),
        sa.UniqueConstraint("sha256", name=op.f("uq_transcripts_sha256")),
    )
    op.create_index(op.f("ix_transcripts_call_id"), "transcripts", ["call_id"])
    op.create_table(
        "transcript_segments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("transcript_id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("leg", sa.String(length=8), nullable=False),
        sa.Column("start", sa.Float(), nullable=False),
        sa.Column("end", sa.Float(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("words", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["transcript_id"], ["transcripts.id"],
                                name=op.f("fk_transcript_segments_transcript_id_transcripts"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcript_segments")),
    )
    op.create_index(op.f("ix_transcript_segments_transcript_id"), "transcript_segments",
                    ["transcript_id"])
    op.create_index(op.f("ix_transcript_segments_call_id"), "transcript_segments", ["call_id"])
    if op.get_bind().dialect.name == "sqlite":
        # words are cut by jieba before they get here: unicode61 only splits at the spaces
        op.execute("CREATE VIRTUAL TABLE transcript_index USING fts5("
                   "terms, segment_id UNINDEXED, tokenize = 'unicode61')")
    else:
        # the lexemes are the segmenter's words as they are, with their positions, written
        # as a tsvector literal (recordings.transcripts): no parser, no dictionary
        op.execute("CREATE TABLE transcript_index ("
                   "segment_id integer PRIMARY KEY REFERENCES transcript_segments(id) "
                   "ON DELETE CASCADE, terms text NOT NULL, tsv tsvector NOT NULL)")
        op.execute("CREATE INDEX ix_transcript_index_tsv ON transcript_index USING gin (tsv)")


def downgrade() -> None:
    op.execute("DROP TABLE transcript_index")
    op.drop_index(op.f("ix_transcript_segments_call_id"), table_name="transcript_segments")
    op.drop_index(op.f("ix_transcript_segments_transcript_id"),
                  table_name="transcript_segments")
    op.drop_table("transcript_segments")
    op.drop_index(op.f("ix_transcripts_call_id"), table_name="transcripts")
    op.drop_table("transcripts")
    op.drop_index(op.f("ix_transcription_jobs_state"), table_name="transcription_jobs")
    op.drop_table("transcription_jobs")
    op.drop_index(op.f("ix_recording_files_sha256"), table_name="recording_files")
    op.drop_table("recording_files")
