"""accounts, hashed bearer tokens and the append-only audit log

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-29 19:00:00.000000

`api_users` becomes `accounts` (people with passwords, machine clients without) and
`api_tokens`. Every existing API user becomes an account with no password, and keeps its
token: the token's SHA-256 moves to `api_tokens`, its row id is the start of that SHA-256
(a token from before has no id part of its own), scoped to all the user's roles.

`audit_log` refuses UPDATE and DELETE by trigger on both databases: the log is append-only
even for someone with the database's password who is not its owner's DBA.
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

REFUSE = "audit_log is append-only"


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=True),
        sa.Column("roles", sa.String(length=200), nullable=False),
        sa.Column("see_phone", sa.Boolean(), nullable=False),
        sa.Column("department", sa.String(length=40), nullable=True),
        sa.Column("agent", sa.String(length=20), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("session_epoch", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("name", name=op.f("uq_accounts_name")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_api_tokens_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
    )
    op.create_index(op.f("ix_api_tokens_account_id"), "api_tokens", ["account_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    for column in ("at", "actor", "action", "target"):
        op.create_index(op.f(f"ix_audit_log_{column}"), "audit_log", [column])

    op.execute(
        "INSERT INTO accounts (name, password_hash, roles, see_phone, department, agent, "
        "disabled, failed_logins, locked_until, session_epoch, created_at) "
        "SELECT name, NULL, roles, see_phone, NULL, NULL, false, 0, NULL, 0, created_at "
        "FROM api_users")
    op.execute(
        "INSERT INTO api_tokens (id, account_id, token_sha256, scope, created_at) "
        "SELECT substr(u.token_sha256, 1, 16), a.id, u.token_sha256, u.roles, u.created_at "
        "FROM api_users u JOIN accounts a ON a.name = u.name")
    op.drop_table("api_users")

    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""
            CREATE FUNCTION audit_log_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION '{REFUSE}'; END $$""")
        op.execute("CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
                   "FOR EACH ROW EXECUTE FUNCTION audit_log_refuse()")
        op.execute("CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
                   "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse()")
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log "
                       f"BEGIN SELECT RAISE(ABORT, '{REFUSE}'); END")


def downgrade() -> None:
    # Back to one token per API user: each account keeps its newest token in force; people's
    # passwords and the audit log have no place in the old schema and are dropped.
    op.create_table(
        "api_users",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("roles", sa.String(length=200), nullable=False),
        sa.Column("see_phone", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_api_users")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_api_users_token_sha256")),
    )
    op.execute(
        "INSERT INTO api_users (name, token_sha256, roles, see_phone, created_at) "
        "SELECT a.name, t.token_sha256, a.roles, a.see_phone, a.created_at "
        "FROM accounts a JOIN api_tokens t ON t.account_id = a.id "
        "WHERE NOT a.disabled AND t.revoked_at IS NULL AND t.id = ("
        "  SELECT t2.id FROM api_tokens t2 WHERE t2.account_id = a.id "
        "  AND t2.revoked_at IS NULL ORDER BY t2.created_at DESC, t2.id DESC LIMIT 1)")
    op.drop_table("audit_log")  # its triggers go with it
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION audit_log_refuse()")
    op.drop_table("api_tokens")
    op.drop_table("accounts")
