"""The orders one operator took in (受理), for that operator's own desk: how many today, and
the ones back on their desk for more information (退回补充).

An order is taken in by whoever created it (its "create" event's actor). It comes back to
the operator when a move returns it to intake from a later state: today the 核实反馈
("verified") after the operator sent it for verification; any return to intake added to
the workflow later counts the same. It stays on the list until it leaves intake again.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, aliased

from tickets.models import WorkOrder, WorkOrderEvent


def _created_by(actor: str) -> Select[tuple[int]]:
    return select(WorkOrderEvent.order_id).where(
        WorkOrderEvent.action == "create", WorkOrderEvent.actor == actor)


def taken_in(session: Session, actor: str, start: datetime, end: datetime) -> int:
    """Orders `actor` took in during [start, end)."""
    return int(session.scalar(select(func.count(WorkOrderEvent.id)).where(
        WorkOrderEvent.action == "create", WorkOrderEvent.actor == actor,
        WorkOrderEvent.at >= start, WorkOrderEvent.at < end)) or 0)


def returned_to(session: Session, actor: str, limit: int = 100
                ) -> list[tuple[WorkOrder, WorkOrderEvent]]:
    """Orders `actor` took in that are back in intake, each with the move that returned
    it (who, when, the note saying what is missing); the longest waiting first."""
    latest = aliased(WorkOrderEvent)  # its last move that changed its state (a 督办 does not)
    last_seq = (select(func.max(latest.seq)).where(
        latest.order_id == WorkOrderEvent.order_id, latest.from_state != latest.to_state)
        .correlate(WorkOrderEvent).scalar_subquery())
    rows = session.execute(
        select(WorkOrder, WorkOrderEvent).join(
            WorkOrderEvent, WorkOrderEvent.order_id == WorkOrder.id).where(
            WorkOrder.state == "intake", WorkOrder.id.in_(_created_by(actor)),
            WorkOrderEvent.seq == last_seq, WorkOrderEvent.to_state == "intake",
            WorkOrderEvent.from_state != "")
        .order_by(WorkOrderEvent.at).limit(limit))
    return [(order, event) for order, event in rows]
