"""Domain events of the tickets room, announced inside the transaction that made them true
and published on the event bus once it commits (`hotline.events.announce`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hotline.events import DomainEvent


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


@dataclass(frozen=True)
class WorkOrderMoved(DomainEvent):
    """A step of the case workflow was taken (立案, 派遣, 结案 ...)."""

    type: ClassVar[str] = "work_order.moved"
    case_number: str = ""
    action: str = ""
    from_state: str = ""
    to_state: str = ""
    actor: str = ""
    role: str = ""


@dataclass(frozen=True)
class DeadlineWarned(DomainEvent):
    """A step's clock passed its yellow warning or its limit (red: escalated to 督办)."""

    type: ClassVar[str] = "work_order.deadline"
    case_number: str = ""
    step: str = ""
    warning: str = ""
    due_at: str = ""


@dataclass(frozen=True)
class SurveyFinished(DomainEvent):
    """The callback survey (回访) of an order ended: a rating, or why there is none."""

    type: ClassVar[str] = "survey.finished"
    case_number: str = ""
    rating: int | None = None
    channel: str = ""
    outcome: str = ""
