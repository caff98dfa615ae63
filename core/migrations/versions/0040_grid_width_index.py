"""an index of the grids' widths, so a point's candidate grids are a band (issue 14)

Revision ID: 0040
Revises: 0039
Create Date: 2026-12-02 07:50:00.000000

A point's grid was looked for among the grids whose box starts west of it (`min_lon <=
lon`): half the city's grids on average, 2 ms of each order opened with 6,400 grids
(bench/orders_throughput.py). With the widest box's width read from this index, the
search is the band of `min_lon` between the point less that width and the point.
"""

import sqlalchemy as sa
from alembic import op

revision = "0040"
down_revision = "0039"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_grids_width", "grids", [sa.text("(max_lon - min_lon)")])


def downgrade() -> None:
    op.drop_index("ix_grids_width", table_name="grids")
