"""Work orders (工单): opening one, moving it through the workflow, reading its history.

Every move is one conditional update on the order's (state, version) plus one appended
event, in one transaction: of two concurrent moves on one order, exactly one wins and the
other gets a clear error; nothing is half-written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from hotline.errors import HotlineError
from telephony.screening import normalise
from tickets import workflow
from tickets.models import WorkOrder, WorkOrderAttachment, WorkOrderEvent

APPEAL_TYPES = {"enquiry": "咨询", "help": "求助", "complaint": "投诉", "report": "举报",
                "suggestion": "建议", "praise": "表扬"}
CHANNELS = ("phone", "web", "sms", "open311", "field")
MAX_DESCRIPTION = 4000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class OrderError(HotlineError):
    """Input a work order cannot take; the message names the field."""


class ConcurrentChange(OrderError):
    """Someone else moved the order first; reload and decide again."""


@dataclass(frozen=True)
class Progress:
    case_number: str
    state: str
    updated_at: datetime
    steps: int


def _clean(text: str, field: str, limit: int, required: bool = False) -> str:
    if not isinstance(text, str):
        raise OrderError(f"{field}: text expected")
    cleaned = _CONTROL.sub("", text).strip()
    if required and not cleaned:
        raise OrderError(f"{field}: required")
    if len(cleaned) > limit:
        raise OrderError(f"{field}: at most {limit} characters (got {len(cleaned)})")
    return cleaned


def open_order(session: Session, *, appeal_type: str, description: str, channel: str,
               actor: str, citizen_phone: str = "", citizen_name: str = "",
               category_code: str = "", call_id: str = "", timezone: str = "Asia/Shanghai",
               now: datetime | None = None) -> WorkOrder:
    """A new order in intake (受理), with its case number YYYYMMDDNNNN."""
    if appeal_type not in APPEAL_TYPES:
        raise OrderError(f"appeal_type: one of {', '.join(APPEAL_TYPES)}")
    if channel not in CHANNELS:
        raise OrderError(f"channel: one of {', '.join(CHANNELS)}")
    text = _clean(description, "description", MAX_DESCRIPTION, required=True)
    name = _clean(citizen_name, "citizen_name", 50)
    phone = normalise(citizen_phone) if citizen_phone else ""
    if citizen_phone and not re.fullmatch(r"[0-9]{3,20}", phone):
        raise OrderError("citizen_phone: 3-20 digits")
    if category_code and not re.fullmatch(r"[0-9]{2,16}", category_code):
        raise OrderError("category_code: 2-16 digits of the event/component catalogue")
    now = now or datetime.now(UTC)
    day = now.astimezone(ZoneInfo(timezone)).strftime("%Y%m%d")
    for _attempt in range(5):  # two intakes in the same instant may pick the same number
        last = session.scalar(select(func.max(WorkOrder.case_number)).where(
            WorkOrder.case_number.like(f"{day}%")))
        number = f"{day}{(int(last[8:]) if last else 0) + 1:04d}"
        order = WorkOrder(case_number=number, appeal_type=appeal_type,
                          category_code=category_code, description=text, citizen_phone=phone,
                          citizen_name=name, channel=channel, call_id=call_id[:64],
                          state="intake", version=1, created_at=now, updated_at=now)
        try:
            with session.begin_nested():
                session.add(order)
                session.flush()
        except IntegrityError:
            continue
        _append(session, order, "create", "", "intake", actor, workflow.OPERATOR, "", now)
        return order
    raise OrderError("case number: could not allocate one; try again")


def transition(session: Session, case_number: str, action: str, *, actor: str, role: str,
               note: str = "", expected_version: int | None = None,
               now: datetime | None = None) -> WorkOrder:
    """Take `action` on the order as `role`; WorkflowError if not allowed now."""
    order = _order(session, case_number)
    if expected_version is not None and expected_version != order.version:
        raise ConcurrentChange(f"work order {case_number} changed since version "
                               f"{expected_version} (now {order.version})")
    note = _clean(note, "note", 2000)
    before, version = order.state, order.version
    after = workflow.apply(before, action, role)
    now = now or datetime.now(UTC)
    changes: dict[str, object] = {"state": after, "version": version + 1, "updated_at": now}
    if action in ("rework", "reopen"):
        changes["rework_count"] = WorkOrder.rework_count + 1
    if action == "resolve_on_call":
        changes["first_call_resolved"] = True
    try:
        moved = session.execute(
            update(WorkOrder)
            .where(WorkOrder.id == order.id, WorkOrder.version == version,
                   WorkOrder.state == before)
            .values(**changes)
            .execution_options(synchronize_session=False))
    except OperationalError:  # SQLite: another writer committed since we read
        raise ConcurrentChange(f"work order {case_number} was changed by someone else; "
                               "reload it") from None
    if moved.rowcount != 1:
        raise ConcurrentChange(f"work order {case_number} was changed by someone else; "
                               "reload it")
    _append(session, order, action, before, after, actor, role, note, now)
    session.refresh(order)
    return order


def _order(session: Session, case_number: str) -> WorkOrder:
    order = session.scalar(select(WorkOrder).where(WorkOrder.case_number == case_number))
    if order is None:
        raise OrderError(f"no work order {case_number[:20]!r}")
    return order


def _append(session: Session, order: WorkOrder, action: str, before: str, after: str,
            actor: str, role: str, note: str, now: datetime) -> None:
    seq = (session.scalar(select(func.max(WorkOrderEvent.seq)).where(
        WorkOrderEvent.order_id == order.id)) or 0) + 1
    session.add(WorkOrderEvent(order_id=order.id, seq=seq, action=action, from_state=before,
                               to_state=after, actor=_clean(actor, "actor", 50, True),
                               role=role, note=note, at=now))
    session.flush()


def history(session: Session, case_number: str) -> list[WorkOrderEvent]:
    order = _order(session, case_number)
    return list(session.scalars(select(WorkOrderEvent).where(
        WorkOrderEvent.order_id == order.id).order_by(WorkOrderEvent.seq)))


def progress(session: Session, case_number: str) -> Progress | None:
    """What a citizen may hear about their case (办理进度)."""
    order = session.scalar(select(WorkOrder).where(WorkOrder.case_number == case_number))
    if order is None:
        return None
    return Progress(order.case_number, order.state, order.updated_at, order.version)


ATTACHMENT_KINDS = ("audio", "photo", "document")


def attach(session: Session, case_number: str, kind: str, path: str, sha256: str,
           size: int, now: datetime | None = None) -> WorkOrderAttachment:
    order = _order(session, case_number)
    if kind not in ATTACHMENT_KINDS:
        raise OrderError(f"attachment kind: one of {', '.join(ATTACHMENT_KINDS)}")
    if not re.fullmatch(r"[0-9a-f]{64}", sha256) or size <= 0:
        raise OrderError("attachment: a SHA-256 and a size above zero are needed")
    row = WorkOrderAttachment(order_id=order.id, kind=kind, path=path[:500], sha256=sha256,
                              bytes=size, created_at=now or datetime.now(UTC))
    session.add(row)
    session.flush()
    return row


def attachments(session: Session, case_number: str) -> list[WorkOrderAttachment]:
    order = _order(session, case_number)
    return list(session.scalars(select(WorkOrderAttachment).where(
        WorkOrderAttachment.order_id == order.id).order_by(WorkOrderAttachment.id)))
