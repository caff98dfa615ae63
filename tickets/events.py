"""Domain events of the tickets room, announced inside the transaction that made them true
and published on the event bus once it commits (`core.events.announce`). Each event's id
is the order and the step it records (an order's version names each of its moves).

What follows a move of an order (its step clocks, the platform's webhook, the callback
survey) subscribes here to the order's events and runs inside the move's own transaction:
`emit` hands the event to each subscriber in the order they were wired, then announces it.
A subscriber that fails fails the move, and nothing of it is stored. The subscribers are
wired once, in one place: `tickets.follow_ups`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import ClassVar

from sqlalchemy.orm import Session

from core.events import DomainEvent, announce
from tickets.in_force import InForce
from tickets.models import WorkOrder
from tickets.policy import Policy
from tickets.workcalendar import WorkCalendar


@dataclass(frozen=True)
class WorkOrderOpened(DomainEvent):
    """A work order (工单) was taken in; `duplicate_of` names an open order it may repeat."""

    type: ClassVar[str] = "work_order.opened"
    case_number: str = ""
    appeal_type: str = ""
    channel: str = ""
    category_code: str = ""
    department_code: str = ""
    duplicate_of: str = ""
    repeat_caller: bool = False

    def identity(self) -> tuple[object, ...]:
        return (self.case_number,)


@dataclass(frozen=True)
class WorkOrderMoved(DomainEvent):
    """A step of the case workflow was taken (立案, 派遣, 结案 ...)."""

    type: ClassVar[str] = "work_order.moved"
    case_number: str = ""
    version: int = 0  # the order's version after the move
    action: str = ""
    from_state: str = ""
    to_state: str = ""
    actor: str = ""
    role: str = ""
    department_code: str = ""  # the order's department after the move (派遣 may set it)

    def identity(self) -> tuple[object, ...]:
        return (self.case_number, self.version)


@dataclass(frozen=True)
class DeadlineWarned(DomainEvent):
    """A step's clock passed its yellow warning or its limit (red: escalated to 督办)."""

    type: ClassVar[str] = "work_order.deadline"
    case_number: str = ""
    step: str = ""
    round: int = 1
    warning: str = ""
    due_at: str = ""

    def identity(self) -> tuple[object, ...]:
        return (self.case_number, self.step, self.round, self.warning)


@dataclass(frozen=True)
class SurveyFinished(DomainEvent):
    """The callback survey (回访) of an order ended: a rating, or why there is none."""

    type: ClassVar[str] = "survey.finished"
    case_number: str = ""
    round: int = 1  # the order's survey round: a reopened order is surveyed again
    rating: int | None = None
    channel: str = ""
    outcome: str = ""

    def identity(self) -> tuple[object, ...]:
        return (self.case_number, self.round)


# --- what follows a move ----------------------------------------------------------------------


@dataclass
class Move:
    """What a subscriber gets with the event: the move's own transaction, the order as the
    move left it, the action taken ("create" for an opening), the operator's rules and the
    very instant of the move."""

    session: Session
    order: WorkOrder
    action: str
    policy: Policy
    now: datetime

    @cached_property
    def rules(self) -> InForce:
        """The work calendar and the time limits, read once for all the move's subscribers
        (from the process's cache while nothing changed: tickets.in_force)."""
        return self.policy.in_force(self.session)

    @property
    def calendar(self) -> WorkCalendar:
        return self.rules.calendar


OrderEvent = WorkOrderOpened | WorkOrderMoved
Subscriber = Callable[[OrderEvent, Move], None]
_subscribers: dict[type[DomainEvent], list[Subscriber]] = {}


def subscribe(subscriber: Subscriber, *kinds: type[OrderEvent]) -> None:
    """Have `subscriber` follow every event of `kinds`, after those wired before it. Wiring
    the same subscriber again changes nothing: each follows a move exactly once."""
    for kind in kinds:
        wired = _subscribers.setdefault(kind, [])
        if subscriber not in wired:
            wired.append(subscriber)


def unsubscribe(subscriber: Subscriber, *kinds: type[OrderEvent]) -> None:
    for kind in kinds:
        if subscriber in _subscribers.get(kind, []):
            _subscribers[kind].remove(subscriber)


def subscribers(kind: type[OrderEvent]) -> tuple[Subscriber, ...]:
    return tuple(_subscribers.get(kind, ()))


def emit(event: OrderEvent, move: Move) -> None:
    """Run what follows `event` in the move's transaction, then announce it for the bus."""
    for subscriber in subscribers(type(event)):
        subscriber(event, move)
    announce(move.session, event)
