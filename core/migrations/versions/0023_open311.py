"""Open311 GeoReport v2: clients' API keys and the requests posted through them

Revision ID: 0023
Revises: 0019
Create Date: 2026-11-30 01:30:00.000000

`open311_keys` keeps each client's key as its id and the SHA-256 of the whole key;
`open311_requests` ties a posted request to its work order (by case number), with the
token a client may look it up by and what the order has no field for.
"""

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "open311_keys",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("client", sa.String(length=60), nullable=False),
        sa.Column("key_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_open311_keys")),
    )
    op.create_index(op.f("ix_open311_keys_client"), "open311_keys", ["client"])
    op.create_table(
        "open311_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_number", sa.String(length=16), nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("service_code", sa.String(length=20), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("email", sa.String(length=200), nullable=False),
        sa.Column("device_id", sa.String(length=100), nullable=False),
        sa.Column("account_id", sa.String(length=100), nullable=False),
        sa.Column("media_url", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["open311_keys.id"],
                                name=op.f("fk_open311_requests_key_id_open311_keys")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_open311_requests")),
        sa.UniqueConstraint("case_number", name=op.f("uq_open311_requests_case_number")),
        sa.UniqueConstraint("token", name=op.f("uq_open311_requests_token")),
    )
    op.create_index(op.f("ix_open311_requests_key_id"), "open311_requests", ["key_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_open311_requests_key_id"), table_name="open311_requests")
    op.drop_table("open311_requests")
    op.drop_index(op.f("ix_open311_keys_client"), table_name="open311_keys")
    op.drop_table("open311_keys")
