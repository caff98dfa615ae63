"""What the centre publishes of its work orders to anyone who asks (Open311's GET requests):
an order's category, state, place, department and times, never the citizen, the staff or the
notes. One read for a page of orders: their departments' names and the deadlines of the
steps they are in come with them, not one query per order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, false, or_, select
from sqlalchemy.orm import Session

from tickets.models import Department, WorkOrder, WorkOrderDeadline

MAX_PAGE = 1_000


@dataclass(frozen=True)
class PublishedOrder:
    case_number: str
    category_kind: str
    category_code: str
    state: str
    merged_into: str
    channel: str
    description: str  # as stored: the reader decides whether and how to show it
    address: str
    latitude: float | None
    longitude: float | None
    department_code: str
    department_name: str
    created_at: datetime
    updated_at: datetime
    expected_at: datetime | None  # when the step the order is in is due; None when none runs


def orders(session: Session, *, case_numbers: Sequence[str] | None = None,
           categories: Sequence[tuple[str, str]] | None = None,
           states: Sequence[str] | None = None, since: datetime | None = None,
           until: datetime | None = None, limit: int = MAX_PAGE) -> list[PublishedOrder]:
    """Classified orders (those with a category), newest first, at most `limit`: those
    named by `case_numbers`, of the (kind, code) `categories`, in `states`, taken in from
    `since` to `until` (both included); each filter left out (None) is not applied."""
    where = [WorkOrder.category_code != ""]
    if case_numbers is not None:
        where.append(WorkOrder.case_number.in_(list(case_numbers)) if case_numbers else false())
    if categories is not None:
        where.append(or_(*(and_(WorkOrder.category_kind == kind, WorkOrder.category_code == code)
                           for kind, code in categories)) if categories else false())
    if states is not None:
        where.append(WorkOrder.state.in_(list(states)) if states else false())
    if since is not None:
        where.append(WorkOrder.created_at >= since)
    if until is not None:
        where.append(WorkOrder.created_at <= until)
    rows = list(session.scalars(select(WorkOrder).where(*where).order_by(
        WorkOrder.created_at.desc(), WorkOrder.id.desc()).limit(max(0, min(limit, MAX_PAGE)))))
    names = {code: name for code, name in session.execute(select(Department.code, Department.name))}
    due = _expected(session, [o.id for o in rows])
    return [PublishedOrder(
        o.case_number, o.category_kind or "event", o.category_code, o.state, o.merged_into,
        o.channel, o.description, o.address, o.latitude, o.longitude, o.department_code,
        names.get(o.department_code, ""), o.created_at, o.updated_at, due.get(o.id))
        for o in rows]


def _expected(session: Session, order_ids: list[int]) -> dict[int, datetime]:
    """Per order, when the step it is in is due: its soonest running step clock; the whole
    appeal's (办结 complete) only when no step clock runs."""
    found: dict[int, tuple[bool, datetime]] = {}
    for start in range(0, len(order_ids), 500):  # bounded IN lists
        for order_id, step, due_at in session.execute(
                select(WorkOrderDeadline.order_id, WorkOrderDeadline.step,
                       WorkOrderDeadline.due_at).where(
                    WorkOrderDeadline.order_id.in_(order_ids[start:start + 500]),
                    WorkOrderDeadline.met_at.is_(None))):
            rank = (step == "complete", due_at)
            if order_id not in found or rank < found[order_id]:
                found[order_id] = rank
    return {order_id: rank[1] for order_id, rank in found.items()}
