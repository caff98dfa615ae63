"""What the tickets room knows about calls, for the rooms that know a call but not its order:
those that review calls (quality review, 质检), keep them (retention) and search their
transcripts: which order each call belongs to, which belong to a complaint (投诉) order,
which orders' citizens rated the handling low, which case numbers are still open."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from tickets import workflow
from tickets.models import Survey, WorkOrder, WorkOrderCall


def case_numbers(session: Session, call_ids: Iterable[str], *,
                 appeal_type: str | None = None) -> dict[str, str]:
    """call id -> the case number of the order it belongs to (a call belongs to at most
    one), for those of `call_ids` linked to an order (of `appeal_type`, when given); a
    bounded IN at a time."""
    ids = sorted(set(call_ids))
    found: dict[str, str] = {}
    for at in range(0, len(ids), 500):
        statement = (select(WorkOrderCall.call_id, WorkOrder.case_number)
                     .join(WorkOrder, WorkOrder.id == WorkOrderCall.order_id)
                     .where(WorkOrderCall.call_id.in_(ids[at:at + 500])))
        if appeal_type is not None:
            statement = statement.where(WorkOrder.appeal_type == appeal_type)
        found.update((call_id, case) for call_id, case in session.execute(statement))
    return found


def complaint_calls(session: Session, call_ids: Iterable[str]) -> dict[str, str]:
    """call id -> case number, for those of `call_ids` linked to a complaint order."""
    return case_numbers(session, call_ids, appeal_type="complaint")


def low_rated_calls(session: Session, call_ids: Iterable[str],
                    ratings: Iterable[int]) -> dict[str, int]:
    """call id -> the worst rating (1 非常满意 .. 5 非常不满意) among `ratings` that a
    citizen gave a survey of the order the call belongs to."""
    ids, low = list(call_ids), list(ratings)
    if not ids or not low:
        return {}
    rows = session.execute(
        select(WorkOrderCall.call_id, Survey.rating)
        .join(Survey, Survey.order_id == WorkOrderCall.order_id)
        .where(WorkOrderCall.call_id.in_(ids), Survey.rating.in_(low)))
    out: dict[str, int] = {}
    for call_id, rating in rows:
        out[call_id] = max(out.get(call_id, 0), int(rating))
    return out


def open_case_numbers(session: Session, case_numbers: Iterable[str]) -> set[str]:
    """Those of `case_numbers` whose order is still open (not closed, evaluated, voided or
    merged): their recordings are kept."""
    cases = list(case_numbers)
    if not cases:
        return set()
    return set(session.scalars(select(WorkOrder.case_number).where(
        WorkOrder.case_number.in_(cases), WorkOrder.state.in_(workflow.OPEN))))
