"""an index for a department's orders in one state, newest first (issue 14)

Revision ID: 0036
Revises: 0035
Create Date: 2026-12-01 00:30:00.000000

A department's list (its orders being handled, its closed ones) filters on department and
state and shows the newest first. PostgreSQL served it by combining the two one-column
indexes; SQLite uses one index per table and scanned every order of the department: 75-120
ms against 1-3 ms with this index at 200,000 orders (bench/kpi_queries.py --sqlite), and
growing with the department's orders.
"""

from alembic import op

revision = "0036"
down_revision = "0035"
branch_labels = None
depends_on = None

NAME = "ix_work_orders_department_state"


def upgrade() -> None:
    op.create_index(NAME, "work_orders", ["department_code", "state", "created_at"])


def downgrade() -> None:
    op.drop_index(NAME, table_name="work_orders")
