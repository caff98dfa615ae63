"""Work orders (工单): opening one, moving it through the workflow, reading its history.

Every move is one conditional update on the order's (state, version) plus one appended
event, in one transaction: of two concurrent moves on one order, exactly one wins and the
other gets a clear error; nothing is half-written. What follows a move (step clocks, the
platform's webhook, the callback survey) subscribes to the order's events
(`tickets.events.emit`, wired in `tickets.follow_ups`) and runs in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, column, false, func, insert, select, table, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import phones
from core.db import insert_on_conflict, page_total, relocate_paths
from core.errors import HotlineError
from core.events import EventBus
from recordings import catalogue as recordings
from telephony import records as call_records
from tickets import catalogue, deadlines, geo, rollups, workflow
from tickets.events import Move, WorkOrderMoved, WorkOrderOpened, emit
from tickets.models import (
    CASE_NUMBER_LENGTH,
    CaseCounter,
    OrderRequest,
    WorkOrder,
    WorkOrderAttachment,
    WorkOrderCall,
    WorkOrderEvent,
)
from tickets.policy import DEFAULT_POLICY as DEFAULT_POLICY  # re-exported: the door's
from tickets.policy import Policy as Policy  # callers take the policy from here too

URGENCIES = ("normal", "urgent")
APPEAL_TYPES = {"enquiry": "咨询", "help": "求助", "complaint": "投诉", "report": "举报",
                "suggestion": "建议", "praise": "表扬"}
CHANNELS = ("phone", "web", "sms", "open311", "field")
MAX_DESCRIPTION = 4000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class OrderError(HotlineError):
    """Input a work order cannot take; the message names the field."""


class OrderNotFound(OrderError):
    """No order has that case number."""

    status = 404


class CallTaken(OrderError):
    """The call belongs to another order already: a call belongs to at most one."""

    status = 409


class ConcurrentChange(OrderError):
    """Someone else moved the order first; reload and decide again."""

    status = 409


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
               category_code: str = "", category_kind: str = "event", urgency: str = "normal",
               address: str = "", latitude: float | None = None,
               longitude: float | None = None, call_id: str = "",
               bus: EventBus | None = None, policy: Policy = DEFAULT_POLICY,
               now: datetime) -> WorkOrder:
    """A new order in intake (受理), with its case number YYYYMMDDNNNN (`next_case_number`),
    its grid and responsible department derived from the location, flagged when it looks
    like a repeat of an open order nearby (疑似重复) or the caller reported recently
    (重复来电). Taken in on call `call_id`, the order is linked to that call (`link_call`):
    often while the call is still up, the record to follow when it ends."""
    call_id = _call_id(call_id) if call_id else ""
    if appeal_type not in APPEAL_TYPES:
        raise OrderError(f"appeal_type: one of {', '.join(APPEAL_TYPES)}")
    if channel not in CHANNELS:
        raise OrderError(f"channel: one of {', '.join(CHANNELS)}")
    if urgency not in URGENCIES:
        raise OrderError(f"urgency: one of {', '.join(URGENCIES)}")
    text = _clean(description, "description", MAX_DESCRIPTION, required=True)
    name = _clean(citizen_name, "citizen_name", 50)
    place = _clean(address, "address", 200)
    try:
        phone = phones.normalise(citizen_phone) if citizen_phone else ""
    except phones.PhoneError as exc:
        raise OrderError(f"citizen_{exc}") from None
    if category_code:
        found = catalogue.category(session, category_code, kind=category_kind) \
            if re.fullmatch(r"[0-9]{2,16}", category_code) else None
        if found is None or not found.active:
            raise OrderError(f"category_code: no active {category_kind} category "
                             f"{category_code[:20]!r} in the catalogue")
    if (latitude is None) != (longitude is None):
        raise OrderError("latitude and longitude: give both or neither")
    grid_code = ""
    if latitude is not None and longitude is not None:
        try:
            geo.check_point(latitude, longitude)
        except geo.GeoError as exc:
            raise OrderError(f"location: {exc}") from None
        grid = geo.grid_at(session, latitude, longitude)
        grid_code = grid.code if grid else ""
    department = catalogue.department_for(session, category_code, grid_code,
                                          kind=category_kind) if category_code else ""
    duplicate = _nearby_open_order(session, category_code, category_kind, latitude, longitude,
                                   policy, now)
    repeat = bool(phone) and session.scalar(select(func.count(WorkOrder.id)).where(
        WorkOrder.citizen_phone == phone,
        WorkOrder.created_at >= now - timedelta(hours=policy.repeat_window_hours))) > 0
    number = next_case_number(session, now.astimezone(ZoneInfo(policy.timezone)).date())
    order = WorkOrder(case_number=number, appeal_type=appeal_type, category_code=category_code,
                      category_kind=category_kind if category_code else "",
                      description=text, citizen_phone=phone, citizen_name=name,
                      channel=channel, call_id=call_id, state="intake", version=1,
                      urgency=urgency, address=place, latitude=latitude,
                      longitude=longitude, grid_code=grid_code,
                      department_code=department, duplicate_of=duplicate,
                      repeat_caller=repeat, created_at=now, updated_at=now)
    session.add(order)
    session.flush()
    _append(session, order, "create", "", "intake", actor, workflow.OPERATOR, "", now)
    if call_id:
        _link(session, order, call_id, how="intake", actor=actor, bus=bus, now=now)
    emit(WorkOrderOpened(
        at=now.timestamp(), case_number=number, appeal_type=appeal_type, channel=channel,
        category_code=category_code, department_code=department, duplicate_of=duplicate,
        repeat_caller=repeat), Move(session, order, "create", policy, now))
    return order


# --- a POST sent again (Idempotency-Key) ------------------------------------------------------

IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:~+/=-]{8,80}")


class RequestReused(OrderError):
    """The Idempotency-Key came with another order before: a key names one request."""

    status = 409


def request_sha256(fields: dict[str, object]) -> str:
    """The fingerprint of an order request as validated (key order and spacing aside)."""
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def earlier_request(session: Session, *, actor: str, key: str, body_sha256: str,
                    now: datetime) -> str | None:
    """The case number `actor`'s request `key` took in before, or None: it is new, and is
    claimed in the caller's transaction (`file_request` names its order before the commit).
    The claim is taken first: a second copy sent while the first is still in flight waits
    for the first's commit on PostgreSQL (the unique key) or the write lock on SQLite, then
    finds its order; if the first was rolled back (the database went away) it goes on as
    the new one. The same key with another body is refused (RequestReused, 409)."""
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise OrderError("Idempotency-Key: 8 to 80 letters, digits or ._:~+/=- characters")
    requests = OrderRequest.__table__
    claimed = session.execute(insert_on_conflict(session, requests).values(
        actor=actor, idempotency_key=key, body_sha256=body_sha256, case_number="",
        received_at=now).on_conflict_do_nothing(
        index_elements=[requests.c.actor, requests.c.idempotency_key])
        .returning(requests.c.id)).scalar()
    if claimed is not None:
        return None
    row = session.scalar(select(OrderRequest).where(
        OrderRequest.actor == actor, OrderRequest.idempotency_key == key))
    if row is None or row.body_sha256 != body_sha256 or not row.case_number:
        raise RequestReused("Idempotency-Key: already used for another order request")
    return row.case_number


def file_request(session: Session, *, actor: str, key: str, case_number: str) -> None:
    """Name the order that request `key` (claimed by `earlier_request`) took in."""
    session.execute(update(OrderRequest).where(
        OrderRequest.actor == actor, OrderRequest.idempotency_key == key)
        .values(case_number=case_number))


def next_case_number(session: Session, day: date) -> str:
    """The next case number of the local `day`: YYYYMMDD and the day's count, four digits
    for the first 9,999, five and more after. One upsert of the day's counter row in the
    caller's transaction: concurrent openings queue on that row until each commits, so
    every one gets its own number and none is refused; an opening rolled back gives its
    number back."""
    counters = CaseCounter.__table__
    upsert = insert_on_conflict(session, counters).values(day=day, last_number=1)
    count = session.execute(upsert.on_conflict_do_update(
        index_elements=[counters.c.day],
        set_={"last_number": counters.c.last_number + 1},
    ).returning(counters.c.last_number)).scalar_one()
    number = f"{day:%Y%m%d}{count:04d}"
    if len(number) > CASE_NUMBER_LENGTH:  # 99,999,999 orders in one day
        raise OrderError(f"case number: the numbers of {day} are used up")
    return number


@dataclass(frozen=True)
class Nearby:
    """An open order that a new one would repeat (疑似重复): its case number, where it is
    and how far from the new one's place."""

    case_number: str
    address: str
    distance_m: float
    created_at: datetime


def nearby_open_order(session: Session, category_code: str, category_kind: str,
                      latitude: float, longitude: float, *, policy: Policy = DEFAULT_POLICY,
                      now: datetime) -> Nearby | None:
    """The open order of the same category within tickets.duplicate_distance_m of the
    place, taken in within tickets.duplicate_window_hours, that `open_order` would flag
    the new one a repeat of; None if there is none (or no category or place yet)."""
    if category_kind not in catalogue.KINDS:
        raise OrderError(f"category_kind: one of {', '.join(catalogue.KINDS)}")
    try:
        latitude, longitude = geo.check_point(latitude, longitude)
    except geo.GeoError as exc:
        raise OrderError(f"location: {exc}") from None
    number = _nearby_open_order(session, category_code, category_kind, latitude, longitude,
                                policy, now)
    if not number:
        return None
    order = _order(session, number)
    distance = geo.distance_m(latitude, longitude, order.latitude or 0.0,
                              order.longitude or 0.0)
    return Nearby(number, order.address, round(distance, 1), order.created_at)


def _nearby_open_order(session: Session, category_code: str, category_kind: str,
                       latitude: float | None, longitude: float | None, policy: Policy,
                       now: datetime) -> str:
    """The nearest open order of the same category within the configured distance and
    window, or ""."""
    if not category_code or latitude is None or longitude is None:
        return ""
    reach = policy.duplicate_distance_m / 111_000  # degrees of latitude; a box to narrow on
    wide = reach / max(0.01, math.cos(math.radians(latitude)))
    candidates = session.execute(select(
        WorkOrder.case_number, WorkOrder.latitude, WorkOrder.longitude).where(
        WorkOrder.category_code == category_code, WorkOrder.category_kind == category_kind,
        WorkOrder.state.in_(workflow.OPEN),
        WorkOrder.created_at >= now - timedelta(hours=policy.duplicate_window_hours),
        WorkOrder.latitude.between(latitude - reach, latitude + reach),
        WorkOrder.longitude.between(longitude - wide, longitude + wide)))
    # At one distance the earlier report: by length first, "2026112910000" came after
    # "202611299999".
    near = sorted((geo.distance_m(latitude, longitude, lat, lon), len(number), number)
                  for number, lat, lon in candidates if lat is not None and lon is not None)
    return near[0][2] if near and near[0][0] <= policy.duplicate_distance_m else ""


def transition(session: Session, case_number: str, action: str, *, actor: str, role: str,
               note: str = "", expected_version: int | None = None,
               policy: Policy = DEFAULT_POLICY, now: datetime) -> WorkOrder:
    """Take `action` on the order as `role`; WorkflowError if not allowed now. What follows
    the move (the step's clocks, the platform's webhook, the callback survey) runs in the same
    transaction, as subscribers of the WorkOrderMoved event (tickets.follow_ups)."""
    order = _order(session, case_number)
    if expected_version is not None and expected_version != order.version:
        raise ConcurrentChange(f"work order {case_number} changed since version "
                               f"{expected_version} (now {order.version})")
    note = _clean(note, "note", 2000)
    before, version = order.state, order.version
    after = workflow.apply(before, action, role)
    if action in workflow.NEEDS_REQUEST:
        workflow.check_request(action, role, pending_request(session, order.id))
    # A busy database (SQLite's "database is locked") is not a change by someone else: it
    # propagates, and the web layer answers 503, try again.
    moved = session.execute(
        _move_statement(action in ("rework", "reopen"), action == "resolve_on_call",
                        after == "closed"),
        {"m_id": order.id, "m_version": version, "m_before": before, "m_state": after,
         "m_next": version + 1, "m_now": now}).scalars().all()
    if len(moved) != 1:
        raise ConcurrentChange(f"work order {case_number} was changed by someone else; "
                               "reload it")
    _append(session, order, action, before, after, actor, role, note, now)
    emit(WorkOrderMoved(at=now.timestamp(), case_number=case_number, version=order.version,
                        action=action, from_state=before, to_state=after, actor=actor,
                        role=role, department_code=order.department_code),
         Move(session, order, action, policy, now))
    return order


@lru_cache(maxsize=8)
def _move_statement(rework: bool, resolved: bool, closing: bool) -> Any:
    """A move's UPDATE of its order, built once per kind (building it cost more than
    running it): if the order is still in the version and state the move read, the new
    state and version; a rework counted, a first-call answer, the closing time. RETURNING
    the row refreshes the order object in the same statement (no SELECT after it)."""
    o = WorkOrder.__table__.c
    now = bindparam("m_now", type_=o.updated_at.type)
    changes: dict[str, Any] = {"state": bindparam("m_state"), "version": bindparam("m_next"),
                               "updated_at": now}
    if rework:
        changes["rework_count"] = o.rework_count + 1
    if resolved:
        changes["first_call_resolved"] = True
    if closing:
        changes["closed_at"] = now
    return (update(WorkOrder)
            .where(o.id == bindparam("m_id"), o.version == bindparam("m_version"),
                   o.state == bindparam("m_before"))
            .values(changes).returning(WorkOrder)
            .execution_options(synchronize_session=False, populate_existing=True))


def pending_request(session: Session, order_id: int) -> str:
    """The department's request (request_extension 申请延期, request_park 申请挂账) made since
    the order last moved otherwise, not answered yet; "" for none. A 督办 in between leaves it
    pending; any other move (an approval, a refusal, a feedback) ends it."""
    event = pending_request_event(session, order_id)
    return event.action if event is not None else ""


def pending_request_event(session: Session, order_id: int) -> WorkOrderEvent | None:
    """The event of the request `pending_request` names (who asked, when, their reason)."""
    events = session.scalars(select(WorkOrderEvent).where(
        WorkOrderEvent.order_id == order_id).order_by(WorkOrderEvent.seq.desc()).limit(20))
    for event in events:
        if event.action in workflow.REQUESTS:
            return event
        if event.action != "supervise":
            return None
    return None


def act(session: Session, case_number: str, action: str, *, actor: str, role: str,
        note: str = "", expected_version: int | None = None, into: str = "",
        amount: object = None, policy: Policy = DEFAULT_POLICY, now: datetime) -> WorkOrder:
    """A person takes a workflow `action` on an order, from the shell or over HTTP: 并单
    `merge` folds it `into` another order, 延期 `grant_extension` grants `amount` more in
    the running clock's own unit, any other action is a plain move (`transition`)."""
    if action == "merge":
        return merge(session, case_number, into, actor=actor, role=role, note=note,
                     expected_version=expected_version, policy=policy, now=now)
    if action == "grant_extension":
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
            raise OrderError("amount: the extension, a whole number of the step's units")
        return grant_extension(session, case_number, amount, actor=actor, role=role,
                               note=note, expected_version=expected_version, policy=policy,
                               now=now)
    return transition(session, case_number, action, actor=actor, role=role, note=note,
                      expected_version=expected_version, policy=policy, now=now)


def grant_extension(session: Session, case_number: str, amount: int, *, actor: str,
                    role: str, note: str = "", step: str = "handle",
                    expected_version: int | None = None, policy: Policy = DEFAULT_POLICY,
                    now: datetime) -> WorkOrder:
    """延期: the dispatcher (answering the department's request) or the shift chief grants
    the department `amount` more (in the step's own units)
    on the running clock; the due time only ever moves later. One extension is at most the
    round's original limit (tickets.deadlines.extend): a longer one is an OrderError."""
    order = transition(session, case_number, "grant_extension", actor=actor, role=role,
                       note=note or f"延期 {amount}", expected_version=expected_version,
                       policy=policy, now=now)
    try:
        deadlines.extend(session, order, step, amount, now, policy.calendar(session),
                         policy.yellow_percent)
    except deadlines.DeadlineError as exc:
        raise OrderError(str(exc)) from None
    rollups.mark_changed(session, order.id)  # the round's due time moved after the move's own
    return order


def merge(session: Session, case_number: str, into: str, *, actor: str, role: str,
          note: str = "", expected_version: int | None = None,
          policy: Policy = DEFAULT_POLICY, now: datetime) -> WorkOrder:
    """并单: fold a repeat report into the open order it repeats; the citizen's report stays
    readable on the merged order, which points at the surviving one. `expected_version`
    is the merged order's."""
    if not into:
        raise OrderError("merge: 'into', the case number to merge into, is needed")
    if into == case_number:
        raise OrderError("merge: an order cannot be merged into itself")
    # Both orders locked and read afresh, or A into B and B into A at the same moment both
    # find their target open and both reports end up merged. An open target is never
    # merged, so a chain of merges never closes into a cycle.
    target = _locked(session, into, case_number)[into]
    if target.state not in workflow.OPEN:
        raise workflow.WorkflowError(f"merge: work order {into} is {target.state}, not open")
    order = transition(session, case_number, "merge", actor=actor, role=role,
                       note=note or f"并入 {into}", expected_version=expected_version,
                       policy=policy, now=now)
    order.merged_into = into
    session.flush()
    return order


def _locked(session: Session, *case_numbers: str) -> dict[str, WorkOrder]:
    """The orders, read afresh and locked until the transaction ends: SELECT ... FOR UPDATE
    in id order on PostgreSQL, so two transactions locking the same orders cannot
    deadlock; on SQLite the write transaction already holds the database (core.db)."""
    found = {o.case_number: o for o in session.scalars(
        select(WorkOrder).where(WorkOrder.case_number.in_(case_numbers))
        .order_by(WorkOrder.id).with_for_update()
        .execution_options(populate_existing=True))}
    for number in case_numbers:
        if number not in found:
            raise OrderNotFound(f"no work order {number[:20]!r}")
    return found


_BY_NUMBER = select(WorkOrder).where(WorkOrder.case_number == bindparam("number"))


def _order(session: Session, case_number: str) -> WorkOrder:
    order = session.scalar(_BY_NUMBER, {"number": case_number})
    if order is None:
        raise OrderNotFound(f"no work order {case_number[:20]!r}")
    return order


def _append(session: Session, order: WorkOrder, action: str, before: str, after: str,
            actor: str, role: str, note: str, now: datetime) -> None:
    session.execute(_APPEND_EVENT, {
        "e_order_id": order.id, "e_action": action, "e_from": before, "e_to": after,
        "e_actor": _clean(actor, "actor", 50, True), "e_role": role, "e_note": note,
        "e_at": now})


# One Core INSERT that numbers the event itself (no SELECT of the last number before it, no
# ORM object nobody reads; two appends racing still meet on (order_id, seq)), built once:
# building a statement costs the order loop more than running it.
_EVENTS = WorkOrderEvent.__table__
_APPEND_EVENT = insert(_EVENTS).values(
    order_id=bindparam("e_order_id", type_=_EVENTS.c.order_id.type),
    seq=select(func.coalesce(func.max(_EVENTS.c.seq), 0) + 1)
    .where(_EVENTS.c.order_id == bindparam("e_order_id", type_=_EVENTS.c.order_id.type))
    .scalar_subquery(),
    action=bindparam("e_action", type_=_EVENTS.c.action.type),
    from_state=bindparam("e_from", type_=_EVENTS.c.from_state.type),
    to_state=bindparam("e_to", type_=_EVENTS.c.to_state.type),
    actor=bindparam("e_actor", type_=_EVENTS.c.actor.type),
    role=bindparam("e_role", type_=_EVENTS.c.role.type),
    note=bindparam("e_note", type_=_EVENTS.c.note.type),
    at=bindparam("e_at", type_=_EVENTS.c.at.type))


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
           size: int, *, now: datetime) -> WorkOrderAttachment:
    order = _order(session, case_number)
    if kind not in ATTACHMENT_KINDS:
        raise OrderError(f"attachment kind: one of {', '.join(ATTACHMENT_KINDS)}")
    if not re.fullmatch(r"[0-9a-f]{64}", sha256) or size <= 0:
        raise OrderError("attachment: a SHA-256 and a size above zero are needed")
    row = WorkOrderAttachment(order_id=order.id, kind=kind, path=path[:500], sha256=sha256,
                              bytes=size, created_at=now)
    session.add(row)
    session.flush()
    return row


MAX_PHOTO_BYTES = 8 << 20
# What a photo must start with: JPEG, PNG, WebP (RIFF....WEBP); anything else is refused.
_PHOTO_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"RIFF", "webp"))


def store_photo(session: Session, case_number: str, content: bytes, directory: Path, *,
                roles: Sequence[str], now: datetime) -> tuple[WorkOrderAttachment, bool]:
    """A photo (e.g. the department's proof of handling, 处置照片) kept with the order by
    someone holding one of `roles` that may act on it now (workflow.allowed), never once
    it is finished (voided, merged, closed, evaluated). Written once under its SHA-256:
    the same photo sent twice is one file and one attachment; the bool says whether this
    call added it."""
    order = _locked(session, case_number)[case_number]  # a move or a twin upload waits
    if order.state in (*workflow.FINAL, "closed", "evaluated"):
        raise workflow.WorkflowError(f"photo: work order {case_number} is {order.state}; "
                                     "no photos can be added any more")
    if not any(workflow.allowed(order.state, role) for role in roles):
        raise workflow.RoleError(f"photo: {', '.join(roles)[:60] or 'no role'} may not act "
                                 f"on work order {case_number} while it is {order.state}")
    if not content or len(content) > MAX_PHOTO_BYTES:
        raise OrderError(f"photo: 1 byte to {MAX_PHOTO_BYTES >> 20} MiB")
    suffix = next((ext for magic, ext in _PHOTO_MAGIC if content.startswith(magic)
                   and (ext != "webp" or content[8:12] == b"WEBP")), None)
    if suffix is None:
        raise OrderError("photo: a JPEG, PNG or WebP image")
    digest = hashlib.sha256(content).hexdigest()
    kept = session.scalar(select(WorkOrderAttachment).where(
        WorkOrderAttachment.order_id == order.id, WorkOrderAttachment.kind == "photo",
        WorkOrderAttachment.sha256 == digest).order_by(WorkOrderAttachment.id).limit(1))
    if kept is not None:
        return kept, False
    target = directory / now.strftime("%Y/%m") / f"{digest}.{suffix}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{uuid.uuid4().hex}.part")
        partial.write_bytes(content)
        os.replace(partial, target)  # never a half-written photo under the final name
    return attach(session, order.case_number, "photo", str(target), digest, len(content),
                  now=now), True


def attachments(session: Session, case_number: str) -> list[WorkOrderAttachment]:
    order = _order(session, case_number)
    return list(session.scalars(select(WorkOrderAttachment).where(
        WorkOrderAttachment.order_id == order.id).order_by(WorkOrderAttachment.id)))


def show_phone(stored: str, see_phone: bool) -> str:
    """A citizen's number as people see it: the national form, masked (138****8000) for
    anyone without the privilege to see numbers."""
    return phones.national(stored) if see_phone else phones.mask(stored)


def order_view(order: WorkOrder, see_phone: bool) -> dict[str, object]:
    """An order as every view shows it; the phone is masked without the privilege."""
    return {
        "case_number": order.case_number, "state": order.state, "version": order.version,
        "appeal_type": order.appeal_type, "category_code": order.category_code,
        "category_kind": order.category_kind, "urgency": order.urgency,
        "description": order.description, "channel": order.channel, "call_id": order.call_id,
        "citizen_phone": show_phone(order.citizen_phone, see_phone),
        "citizen_name": order.citizen_name, "address": order.address,
        "latitude": order.latitude, "longitude": order.longitude,
        "grid_code": order.grid_code, "department_code": order.department_code,
        "duplicate_of": order.duplicate_of, "merged_into": order.merged_into,
        "repeat_caller": order.repeat_caller, "rework_count": order.rework_count,
        "first_call_resolved": order.first_call_resolved,
        "created_at": order.created_at.isoformat(), "updated_at": order.updated_at.isoformat(),
        "closed_at": order.closed_at.isoformat() if order.closed_at else None,
    }


# the trigram index of the descriptions on SQLite (migration 0037)
_ORDER_TEXT = table("work_order_text", column("rowid"), column("work_order_text"))


@dataclass(frozen=True)
class OrderQuery:
    state: str | None = None
    appeal_type: str | None = None
    department_code: str | None = None
    grid_prefix: str | None = None
    citizen_phone: str | None = None
    text: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    offset: int = 0


def find_orders(session: Session, query: OrderQuery) -> tuple[int, list[WorkOrder]]:
    """Orders matching every given filter, newest first, with the total count."""
    where = []
    if query.state:
        where.append(WorkOrder.state == query.state)
    if query.appeal_type:
        where.append(WorkOrder.appeal_type == query.appeal_type)
    if query.department_code:
        where.append(WorkOrder.department_code == query.department_code)
    if query.grid_prefix:
        where.append(WorkOrder.grid_code.startswith(query.grid_prefix, autoescape=True))
    if query.citizen_phone:
        # any form of the number; what is not one matches no order (not the anonymous ones)
        citizen = phones.normalise_or_empty(query.citizen_phone)
        where.append(WorkOrder.citizen_phone == citizen if citizen else false())
    if query.text:
        where.append(WorkOrder.description.contains(query.text, autoescape=True))
        if len(query.text) >= 3 and session.get_bind().dialect.name == "sqlite":
            # the trigram index (migration 0037) names the orders that may hold it, instead
            # of LIKE reading every description; LIKE above still decides
            phrase = '"' + query.text.replace('"', '""') + '"'
            where.append(WorkOrder.id.in_(select(_ORDER_TEXT.c.rowid).where(
                _ORDER_TEXT.c.work_order_text.op("MATCH")(phrase))))
    if query.since:
        where.append(WorkOrder.created_at >= query.since)
    if query.until:
        where.append(WorkOrder.created_at < query.until)
    # count(*), not count(id): an index holding the filtered columns answers it alone (a
    # department's closed orders at 1,000,000 orders: 405 -> 21 ms on PostgreSQL)
    rows = list(session.scalars(select(WorkOrder).where(*where)
                                .order_by(WorkOrder.created_at.desc(), WorkOrder.id.desc())
                                .limit(query.limit).offset(query.offset)))
    return page_total(len(rows), query.limit, query.offset, lambda: session.scalar(
        select(func.count()).select_from(WorkOrder).where(*where)) or 0), rows


def open_orders_of(session: Session, citizen_phone: str, limit: int = 10) -> list[WorkOrder]:
    """A citizen's orders still being worked on (not closed, evaluated, voided or merged),
    newest first: what the desk's screen pop shows an agent before they answer. Any form of
    the number; what is not one has none."""
    citizen = phones.normalise_or_empty(citizen_phone)
    if not citizen:
        return []
    return list(session.scalars(
        select(WorkOrder).where(WorkOrder.citizen_phone == citizen,
                                WorkOrder.state.in_(workflow.OPEN))
        .order_by(WorkOrder.created_at.desc(), WorkOrder.id.desc()).limit(limit)))


def get_order(session: Session, case_number: str) -> WorkOrder:
    return _order(session, case_number)


# --- the calls of an order (通话) --------------------------------------------------------------

LINK_KINDS = ("intake", "agent", "ivr", "migrated")  # how a call came to belong to an order
# An Asterisk Linkedid ("1764400000.12"), or a test kit's id: no path, no markup.
_CALL_ID = re.compile(r"[0-9A-Za-z_-][0-9A-Za-z._-]{0,63}")
PENDING_DAYS = 2  # a pending link whose call never got a record is looked at this long


def _call_id(text: str) -> str:
    call_id = text.strip() if isinstance(text, str) else ""
    if not _CALL_ID.fullmatch(call_id):
        raise OrderError("call_id: a call's id as the telephony service gives it, "
                         "e.g. 1764400000.12")
    return call_id


def link_call(session: Session, case_number: str, call_id: str, *, actor: str,
              how: str = "agent", bus: EventBus | None = None,
              recordings_dir: Path | None = None, now: datetime) -> WorkOrderCall:
    """Add call `call_id` to the order: a later call about the same case, or the one it was
    taken in on. Linking a call to its own order again changes nothing; a call belongs to
    at most one order (CallTaken, 409, if another has it).

    A stored call is linked at once and its record shows the case number. A call still up
    has no record yet: with `bus`, a call the telephony service announced is linked pending
    and resolved when its record is stored (`call_ended`, `resolve_links`); an id that is
    neither is refused. Without a bus (the IVR's own voice messages, opened on the very
    call they name) the id is taken as it is. With `recordings_dir` a stored call's
    recording is filed under the case number at once."""
    if how not in LINK_KINDS:
        raise OrderError(f"how: one of {', '.join(LINK_KINDS)}")
    order = _order(session, case_number)
    link = _link(session, order, _call_id(call_id), how=how, actor=actor, bus=bus, now=now)
    if recordings_dir is not None and link.call_record_id is not None:
        call = call_records.calls_of(session, [link.call_record_id])[link.call_record_id]
        file_recording(recordings_dir, order.case_number, call)
    return link


def _link(session: Session, order: WorkOrder, call_id: str, *, how: str, actor: str,
          bus: EventBus | None, now: datetime) -> WorkOrderCall:
    owner = _owner(session, call_id)
    if owner is not None:
        return _same_order(owner, order, call_id)
    record_id = call_records.stored_ids(session, [call_id]).get(call_id)
    if record_id is None and bus is not None and not call_records.call_started(bus, call_id):
        raise OrderError(f"call_id: no call {call_id!r}: neither a finished call nor one "
                         "under way")
    link = WorkOrderCall(order_id=order.id, call_id=call_id, call_record_id=record_id,
                         how=how, actor=_clean(actor, "actor", 50), linked_at=now)
    try:
        with session.begin_nested():  # two desks linking one call at once: one wins
            session.add(link)
    except IntegrityError:
        owner = _owner(session, call_id)
        if owner is None:
            raise
        return _same_order(owner, order, call_id)
    if record_id is not None:
        call_records.mark_case(session, call_id, order.case_number)
    return link


def _owner(session: Session, call_id: str) -> tuple[WorkOrderCall, str] | None:
    found = session.execute(select(WorkOrderCall, WorkOrder.case_number)
                            .join(WorkOrder, WorkOrder.id == WorkOrderCall.order_id)
                            .where(WorkOrderCall.call_id == call_id)).first()
    return None if found is None else (found[0], found[1])


def _same_order(owner: tuple[WorkOrderCall, str], order: WorkOrder,
                call_id: str) -> WorkOrderCall:
    link, case_number = owner
    if link.order_id != order.id:
        raise CallTaken(f"call_id: call {call_id} belongs to work order {case_number}")
    return link


@dataclass(frozen=True)
class Resolved:
    """A link whose call record now exists: file its recording under the case number."""

    case_number: str
    call: dict[str, object]


def resolve_links(session: Session, call_ids: Sequence[str] | None = None, *,
                  now: datetime) -> list[Resolved]:
    """Give pending links (calls linked while still up) their stored record, and the
    record the case number: those of `call_ids`, or every one of the last PENDING_DAYS.
    Resolving again changes nothing."""
    where = [WorkOrderCall.call_record_id.is_(None)]
    if call_ids is not None:
        where.append(WorkOrderCall.call_id.in_(list(call_ids)))
    else:
        where.append(WorkOrderCall.linked_at >= now - timedelta(days=PENDING_DAYS))
    pending = session.execute(select(WorkOrderCall, WorkOrder.case_number)
                              .join(WorkOrder, WorkOrder.id == WorkOrderCall.order_id)
                              .where(*where)).all()
    stored = call_records.stored_ids(session, [link.call_id for link, _ in pending])
    done = [(link, case) for link, case in pending if link.call_id in stored]
    for link, case_number in done:
        link.call_record_id = stored[link.call_id]
        call_records.mark_case(session, link.call_id, case_number)
    session.flush()
    calls = call_records.calls_of(session, [link.call_record_id for link, _ in done
                                            if link.call_record_id is not None])
    return [Resolved(case, calls[link.call_record_id]) for link, case in done
            if link.call_record_id in calls]


def call_ended(session: Session, record: dict[str, object], *,
               now: datetime) -> Resolved | None:
    """The tickets side of a finished call (`call.ended`, its stored `record`): a pending
    link gets its record; a call that belongs to no order yet, whose caller keyed the case
    number of an order in the IVR (办理进度查询), is added to that order (to the surviving
    one of a merged order). Idempotent: the bus may deliver the call twice."""
    call_id = str(record.get("call_id") or "")
    if not _CALL_ID.fullmatch(call_id):
        return None
    resolved = resolve_links(session, [call_id], now=now)
    if resolved:
        return resolved[0]
    owner = _owner(session, call_id)
    if owner is not None:
        link, case_number = owner
        calls = call_records.calls_of(session, [link.call_record_id] if link.call_record_id
                                      else [])
        return Resolved(case_number, calls[link.call_record_id]) \
            if link.call_record_id in calls else None
    order = _keyed_order(session, record.get("ivr_path"))
    if order is None:
        return None
    link = _link(session, order, call_id, how="ivr", actor="ivr", bus=None, now=now)
    if link.call_record_id is None:  # not stored after all: resolved by the next sweep
        return None
    calls = call_records.calls_of(session, [link.call_record_id])
    return Resolved(order.case_number, calls[link.call_record_id])


def concerns_orders(session: Session, record: dict[str, object]) -> bool:
    """Whether a finished call has anything for `call_ended` to do: a link to an order, or
    a case number keyed in the IVR. Most calls have neither; asked in a read, it spares
    them `call_ended`'s write transaction."""
    call_id = str(record.get("call_id") or "")
    if not _CALL_ID.fullmatch(call_id):
        return False
    return bool(_keyed_numbers(record.get("ivr_path"))) or session.connection().execute(
        _LINKED, {"call_id": call_id}).first() is not None


# built once: asked of every finished call
_LINKED = select(WorkOrderCall.id).where(WorkOrderCall.call_id == bindparam("call_id")).limit(1)


def _keyed_numbers(ivr_path: object) -> list[str]:
    """The case numbers the caller keyed in the IVR (办理进度查询), in the order keyed."""
    if not isinstance(ivr_path, list):
        return []
    keyed = (str(step.get("value") or "") for step in ivr_path
             if isinstance(step, dict) and step.get("node") == "case")
    return [number for number in keyed if re.fullmatch(r"[0-9]{12,16}", number)]


def _keyed_order(session: Session, ivr_path: object) -> WorkOrder | None:
    """The order whose case number the caller keyed last (of those that exist)."""
    for number in reversed(_keyed_numbers(ivr_path)):
        order = session.scalar(select(WorkOrder).where(WorkOrder.case_number == number))
        if order is not None and order.merged_into:
            order = session.scalar(select(WorkOrder).where(
                WorkOrder.case_number == order.merged_into)) or order
        if order is not None:
            return order
    return None


def file_recording(recordings_dir: Path, case_number: str,
                   call: dict[str, object]) -> Path | None:
    """File the call's recording under the case number in the recordings catalogue
    (recordings/cases/<case number>/<call id>.wav); None if it has none on this host."""
    recording = call.get("recording")
    path = recording.get("path") if isinstance(recording, dict) else None
    if not path:
        return None
    return recordings.file_under_case(recordings_dir, Path(str(path)), case_number,
                                      str(call["call_id"]))


def calls_of_order(session: Session, case_number: str) -> list[dict[str, object]]:
    """The order's calls, first linked first: when, who answered, how it ended, how long
    they talked and the recording's fingerprint; `pending` while the call is still up."""
    order = _order(session, case_number)
    links = list(session.scalars(select(WorkOrderCall).where(
        WorkOrderCall.order_id == order.id).order_by(WorkOrderCall.linked_at,
                                                     WorkOrderCall.id)))
    calls = call_records.calls_of(session, [link.call_record_id for link in links
                                            if link.call_record_id is not None])
    out: list[dict[str, object]] = []
    for link in links:
        call = calls.get(link.call_record_id) if link.call_record_id else None
        recording = call.get("recording") if call else None
        started = call.get("started_at") if call else None
        out.append({
            "call_id": link.call_id, "how": link.how, "linked_at": link.linked_at,
            "pending": call is None,
            "started_at": call_records.as_time(float(started))  # type: ignore[arg-type]
            if started is not None else None,
            "agent": call.get("agent") if call else None,
            "outcome": call.get("outcome") if call else None,
            "talk_seconds": call.get("talk_seconds") if call else None,
            "recording": {"sha256": recording.get("sha256"), "bytes": recording.get("bytes")}
            if isinstance(recording, dict) else None})
    return out


# --- what a citizen adds to their own order (市民补充信息) --------------------------------------

CITIZEN = "citizen"  # the role of a citizen's own entries in the timeline (not a workflow role)
CITIZEN_INFO = "citizen_info"


def add_citizen_info(session: Session, case_number: str, note: str, *, actor: str,
                     now: datetime) -> WorkOrderEvent:
    """A citizen adds information to their order while it is open (a channel's report:
    the portal's 补充信息): one timeline entry, the state unchanged; refused once the order
    is finished (closed, evaluated, voided, merged)."""
    order = _locked(session, case_number)[case_number]
    if order.state not in workflow.OPEN:
        raise workflow.WorkflowError(f"note: work order {case_number} is {order.state}; "
                                     "nothing can be added any more")
    text = _clean(note, "note", MAX_DESCRIPTION, required=True)
    _append(session, order, CITIZEN_INFO, order.state, order.state, actor, CITIZEN, text, now)
    order.updated_at = now
    rollups.mark_changed(session, order.id)  # an event of the order, though not a move
    return session.scalars(select(WorkOrderEvent).where(WorkOrderEvent.order_id == order.id)
                           .order_by(WorkOrderEvent.seq.desc()).limit(1)).one()


# --- backup and restore (hotline/backup.py) ---------------------------------------------------


def attachment_files(session: Session) -> list[tuple[str, str]]:
    """(path, sha256) of every file kept with an order (photos, voice messages)."""
    return [(p, s) for p, s in session.execute(
        select(WorkOrderAttachment.path, WorkOrderAttachment.sha256)
        .order_by(WorkOrderAttachment.id))]


def relocate_attachments(session: Session, old_root: str, new_root: str) -> int:
    """The attachments directory moved (a restore elsewhere): the orders' files follow."""
    return relocate_paths(session, WorkOrderAttachment.path, old_root, new_root)
