"""work orders bound to their calls by a real foreign key

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-29 20:00:00.000000

`work_order_calls` links an order to its calls (an order has many, a call belongs to at
most one order): `call_id` is the call's Linkedid, known while the call is up, and
`call_record_id` the stored record, empty until the call ends. `call_records.case_number`
is what the call record shows of it.

The free-text `work_orders.call_id` of existing orders that names a stored call becomes a
link (the earliest order, if several named one call). The column stays: it is what the
intake was told, and ids that match no stored call (typed by hand, from a PBX gone since)
would be lost if it went; the link table alone says which calls an order has. Dropping it
would also rebuild `work_orders` on SQLite under its child tables.
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "work_order_calls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("call_record_id", sa.Integer(), nullable=True),
        sa.Column("how", sa.String(length=10), nullable=False),
        sa.Column("actor", sa.String(length=50), nullable=False),
        sa.Column("linked_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["order_id"], ["work_orders.id"],
                                name=op.f("fk_work_order_calls_order_id_work_orders"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["call_record_id"], ["call_records.id"],
                                name=op.f("fk_work_order_calls_call_record_id_call_records"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_order_calls")),
        sa.UniqueConstraint("call_id", name=op.f("uq_work_order_calls_call_id")),
        sa.UniqueConstraint("call_record_id", name=op.f("uq_work_order_calls_call_record_id")),
    )
    with op.batch_alter_table("work_order_calls") as batch_op:
        batch_op.create_index(batch_op.f("ix_work_order_calls_order_id"), ["order_id"],
                              unique=False)
    with op.batch_alter_table("call_records") as batch_op:
        batch_op.add_column(sa.Column("case_number", sa.String(length=16), nullable=True))
        batch_op.create_index(batch_op.f("ix_call_records_case_number"), ["case_number"],
                              unique=False)

    orders = sa.table("work_orders", sa.column("id", sa.Integer()),
                      sa.column("case_number", sa.String()), sa.column("call_id", sa.String()),
                      sa.column("created_at", sa.DateTime(timezone=True)))
    calls = sa.table("call_records", sa.column("id", sa.Integer()),
                     sa.column("call_id", sa.String()), sa.column("case_number", sa.String()))
    links = sa.table("work_order_calls", sa.column("order_id", sa.Integer()),
                     sa.column("call_id", sa.String()), sa.column("call_record_id", sa.Integer()),
                     sa.column("how", sa.String()), sa.column("actor", sa.String()),
                     sa.column("linked_at", sa.DateTime(timezone=True)))
    conn = op.get_bind()
    first = sa.select(orders.c.call_id, sa.func.min(orders.c.id).label("order_id")).where(
        orders.c.call_id != "").group_by(orders.c.call_id).subquery()
    found = conn.execute(
        sa.select(first.c.order_id, orders.c.case_number, orders.c.created_at, calls.c.id,
                  calls.c.call_id)
        .join(orders, orders.c.id == first.c.order_id)
        .join(calls, calls.c.call_id == first.c.call_id)).all()
    for order_id, case_number, created_at, record_id, call_id in found:
        conn.execute(links.insert().values(order_id=order_id, call_id=call_id,
                                           call_record_id=record_id, how="migrated",
                                           actor="", linked_at=created_at))
        conn.execute(calls.update().where(calls.c.id == record_id)
                     .values(case_number=case_number))


def downgrade() -> None:
    with op.batch_alter_table("work_order_calls") as batch_op:
        batch_op.drop_index(batch_op.f("ix_work_order_calls_order_id"))
    op.drop_table("work_order_calls")
    with op.batch_alter_table("call_records") as batch_op:
        batch_op.drop_index(batch_op.f("ix_call_records_case_number"))
        batch_op.drop_column("case_number")
