"""Domain events of the tickets room, announced inside the transaction that made them true
and published on the event bus once it commits (`core.events.announce`). Each event's id
is the order and the step it records (an order's version names each of its moves)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from core.events import DomainEvent


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
