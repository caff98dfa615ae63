"""Callbacks that keep the caller's place in the queue (预约回电): the request's life.

Each state change is a conditional update (`advance`), so a request is placed in the queue
once and its caller dialled once, however often a command or an event is replayed.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core import phones
from telephony.models import CallbackRequest

STATES = ("requested", "holding", "dialling", "connected", "failed", "agent")
# failed -> agent: an agent called the citizen back by hand from the desk and said so


def create(session: Session, caller: str, queue: str, position: int, priority: int,
           call_id: str, *, now: datetime) -> CallbackRequest | None:
    """A new request; None when the caller's number cannot be dialled back."""
    number = phones.normalise_or_empty(caller)
    if not number or not queue:
        return None
    request = CallbackRequest(id=f"cb-{uuid.uuid4().hex[:20]}", caller_number=number,
                              queue=queue, position=max(1, position), priority=priority,
                              call_id=call_id[:64], requested_at=now, updated_at=now)
    session.add(request)
    session.flush()
    return request


def advance(session: Session, request_id: str, before: str, after: str, detail: str = "", *,
            now: datetime) -> bool:
    """Move a request from `before` to `after`; False if it was not in `before`."""
    result = session.execute(
        update(CallbackRequest)
        .where(CallbackRequest.id == request_id, CallbackRequest.state == before)
        .values(state=after, detail=detail[:200], updated_at=now))
    return bool(result.rowcount)


def get(session: Session, request_id: str) -> CallbackRequest | None:
    return session.get(CallbackRequest, request_id)


def waiting(session: Session) -> list[str]:
    """Requests not yet placed in the queue (e.g. made while the service was away)."""
    return list(session.scalars(select(CallbackRequest.id).where(
        CallbackRequest.state == "requested")))


def hold_action(request: CallbackRequest, entry_number: str, wait_seconds: int
                ) -> dict[str, str]:
    """The Originate that puts a placeholder for the caller at their place in the queue."""
    dial = phones.national(request.caller_number)
    return {
        "Action": "Originate", "ActionID": request.id,
        "Channel": f"Local/{dial}@hotline-callback-hold",
        "Context": "hotline-callback-dial", "Exten": dial, "Priority": "1",
        "Async": "true", "Timeout": str(wait_seconds * 1000),
        "CallerID": f'"12319 回电" <{entry_number}>',
        "Variable": (f"__HOTLINE_QUEUE={request.queue},__HOTLINE_POSITION={request.position},"
                     f"__HOTLINE_PRIORITY={request.priority},"
                     f"__HOTLINE_CALLBACK_ID={request.id},"
                     # the call record's direction, purpose and the citizen it serves
                     f"__HOTLINE_OUTBOUND_PURPOSE=callback,"
                     f"__HOTLINE_OUTBOUND_NUMBER={request.caller_number}"),
    }


def unreached(session: Session, limit: int = 100) -> list[CallbackRequest]:
    """Callers the centre failed to call back, for the agents to call by hand (回电失败),
    the longest waiting first."""
    return list(session.scalars(select(CallbackRequest).where(
        CallbackRequest.state == "failed").order_by(CallbackRequest.requested_at).limit(limit)))


def called_by_agent(session: Session, request_id: str, agent: str, *, now: datetime) -> bool:
    """An agent called the failed request's caller back by hand; False if it is not (or no
    longer) waiting for that."""
    return advance(session, request_id, "failed", "agent", f"called back by agent {agent}",
                   now=now)
