"""The work queues of the case workspaces (案件工作台): which orders wait for which role,
soonest due first, with the colour of their running clock; and the dispatcher's dispatch to a
named department (派遣至部门). Doors for the pages in agent_desk; the workflow's own rules
(tickets.workflow) decide every move.

What waits for whom (the states where the role has a step of its own to take):
- shift chief (值班长): intake and verifying (立案, 作废, 并单), a department's pending request
  for an extension or a park (批准延期, 挂账, 驳回), checked (结案), parked and deferred;
- dispatcher (派遣员): opened (派遣), reported (转核查) and, like the chief above them, a
  department's pending request for an extension or a park (批准 or 驳回);
- department handler (处置部门): dispatched and handling, of their own department only;
- supervisor (监督员): verifying (核实) and checking (核查).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from recordings import catalogue as recordings
from tickets import deadlines, service, workflow
from tickets.models import (
    Department,
    WorkOrder,
    WorkOrderCall,
    WorkOrderDeadline,
    WorkOrderEvent,
)
from tickets.policy import DEFAULT_POLICY, Policy

# The states each role's queue shows (the shift chief's and the dispatcher's handling orders
# only with a request pending: see `pending_request`).
QUEUE_STATES: dict[str, tuple[str, ...]] = {
    workflow.SHIFT_CHIEF: ("intake", "verifying", "handling", "checked", "parked",
                           "deferred"),
    workflow.DISPATCHER: ("opened", "reported", "handling"),
    workflow.DEPARTMENT: ("dispatched", "handling"),
    workflow.SUPERVISOR: ("verifying", "checking"),
}
MAX_QUEUE = 200


@dataclass(frozen=True)
class QueueItem:
    """One order in a queue: its running clock's due time and colour ("" no clock, green,
    yellow, red) and a department's request still waiting for an answer, with the reason
    the department gave and the unit an extension counts (the handling clock's)."""

    case_number: str
    state: str
    version: int
    appeal_type: str
    category_code: str
    department_code: str
    address: str
    created_at: datetime
    due_at: datetime | None
    colour: str
    pending_request: str
    request_note: str = ""
    clock_unit: str = ""


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def colour(yellow_at: datetime | None, due_at: datetime | None, now: datetime) -> str:
    """A clock's colour at `now`: red from its due time, yellow from its warning point."""
    if due_at is None:
        return ""
    if now >= _aware(due_at):
        return "red"
    if yellow_at is not None and now >= _aware(yellow_at):
        return "yellow"
    return "green"


def pending_request(session: Session, order_id: int) -> str:
    """The department's request still waiting for an answer (service.pending_request)."""
    return service.pending_request(session, order_id)


def queue(session: Session, role: str, *, now: datetime, department_code: str | None = None,
          limit: int = MAX_QUEUE) -> list[QueueItem]:
    """The orders waiting for `role`, soonest due first (orders with no running clock last,
    oldest first); a department handler's only of `department_code`."""
    states = QUEUE_STATES.get(role, ())
    if not states:
        return []
    where = [WorkOrder.state.in_(states)]
    if role == workflow.DEPARTMENT:
        where.append(WorkOrder.department_code == (department_code or "\x00none"))
    elif "handling" in states:  # in handling only those with a request waiting, in SQL so
        # that many orders in handling never push the requests out of the queue's limit
        where = [or_(WorkOrder.state.in_([s for s in states if s != "handling"]),
                     and_(WorkOrder.state == "handling", WorkOrder.id.in_(_asking())))]
    orders = list(session.scalars(select(WorkOrder).where(*where)
                                  .order_by(WorkOrder.created_at, WorkOrder.id)
                                  .limit(limit * 2)))
    clocks: dict[int, WorkOrderDeadline] = {}
    handling: dict[int, WorkOrderDeadline] = {}  # what an extension (延期) extends
    if orders:
        for row in session.scalars(select(WorkOrderDeadline).where(
                WorkOrderDeadline.order_id.in_([o.id for o in orders]),
                WorkOrderDeadline.met_at.is_(None)).order_by(WorkOrderDeadline.due_at)):
            clocks.setdefault(row.order_id, row)  # the soonest due running clock
            if row.step == "handle":
                handling.setdefault(row.order_id, row)
    items = []
    for order in orders:
        asked = service.pending_request_event(session, order.id) \
            if order.state == "handling" else None
        request = asked.action if asked is not None else ""
        if role != workflow.DEPARTMENT and order.state == "handling" and not request:
            continue  # the department is working on it: nothing to decide
        clock = clocks.get(order.id)
        items.append(QueueItem(
            order.case_number, order.state, order.version, order.appeal_type,
            order.category_code, order.department_code, order.address,
            _aware(order.created_at), _aware(clock.due_at) if clock else None,
            colour(clock.yellow_at if clock else None, clock.due_at if clock else None, now),
            request, asked.note if asked is not None else "",
            _unit(handling.get(order.id))))
    far = datetime.max.replace(tzinfo=UTC)
    items.sort(key=lambda i: (i.due_at or far, i.created_at, i.case_number))
    return items[:limit]


def _unit(clock: WorkOrderDeadline | None) -> str:
    return deadlines.unit_name(clock.clock, clock.unit) if clock is not None else ""


def _asking() -> Select[tuple[int]]:
    """The ids of orders in handling whose last move (督办 aside) is a department's request
    (申请延期, 申请挂账): what `pending_request` finds, for many orders at once."""
    event = WorkOrderEvent
    last = (select(event.order_id, func.max(event.seq).label("seq"))
            .join(WorkOrder, WorkOrder.id == event.order_id)
            .where(WorkOrder.state == "handling", event.action != "supervise")
            .group_by(event.order_id).subquery())
    return (select(event.order_id)
            .join(last, and_(last.c.order_id == event.order_id, last.c.seq == event.seq))
            .where(event.action.in_(list(workflow.REQUESTS))))


def running_clock(session: Session, case_number: str, now: datetime
                  ) -> tuple[datetime | None, str]:
    """The order's soonest due running clock: (due time, colour), (None, "") for none."""
    order = service.get_order(session, case_number)
    row = session.scalar(select(WorkOrderDeadline).where(
        WorkOrderDeadline.order_id == order.id, WorkOrderDeadline.met_at.is_(None))
        .order_by(WorkOrderDeadline.due_at).limit(1))
    if row is None:
        return None, ""
    return _aware(row.due_at), colour(row.yellow_at, row.due_at, now)


def dispatch_to(session: Session, case_number: str, department_code: str, *, actor: str,
                role: str, note: str = "", expected_version: int | None = None,
                policy: Policy = DEFAULT_POLICY, now: datetime) -> WorkOrder:
    """派遣: the dispatcher sends the order to `department_code` (an active department;
    "" keeps the one the dispatch rules named) and the workflow moves it to dispatched.
    The department is set in the same transaction as the move, so the move's follow-ups
    (the platform's webhook) already name it; a refused move changes nothing."""
    code = department_code.strip()
    if code:
        department = session.get(Department, code)
        if department is None or not department.active:
            raise service.OrderError(f"department_code: no active department {code[:20]!r}")
    order = service.get_order(session, case_number)
    workflow.apply(order.state, "dispatch", role)  # refuse before anything changes
    if code and code != order.department_code:
        order.department_code = code
        session.flush()
    elif not order.department_code:
        raise service.OrderError("department_code: the dispatch rules named no department "
                                 "for this order; choose one")
    return service.transition(session, case_number, "dispatch", actor=actor, role=role,
                              note=note or f"派遣至 {order.department_code}",
                              expected_version=expected_version, policy=policy, now=now)


def call_recording(session: Session, recordings_dir: Path, case_number: str,
                   call_id: str) -> Path | None:
    """The recording of one of the order's calls, to be played in its page: the file filed
    under the case number (filed now if the call's record has one that was not filed yet).
    None for a call that is not the order's, or has no recording on this host."""
    order = service.get_order(session, case_number)
    link = session.scalar(select(WorkOrderCall).where(WorkOrderCall.order_id == order.id,
                                                      WorkOrderCall.call_id == call_id))
    if link is None or link.call_record_id is None:
        return None
    found = recordings.filed_recording(recordings_dir, order.case_number, call_id)
    if found is None:
        call = {c["call_id"]: c for c in service.calls_of_order(session, case_number)}
        if call_id in call:
            service.link_call(session, order.case_number, call_id, actor="workspace",
                              recordings_dir=recordings_dir, now=order.updated_at)
            found = recordings.filed_recording(recordings_dir, order.case_number, call_id)
    return found
