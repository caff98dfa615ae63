"""The operator changed a rule the order loop follows: a day of the work calendar (工作日历)
or the time limits (时限).

Every edit of them (`workcalendar.set_day`, `clear_day`, `catalogue.set_limit`,
`remove_limit`, a catalogue load that touched its limits) calls `changed` inside its own
transaction: a `RulesChanged` event goes into the outbox with the change, and the bus bumps
VERSION_KEY when the relay hands it the event (`core.events.versioned`: such an event moves
the key and does not join the stream), right after the commit of a process that publishes
on commit, or by the centre's relay thread (within a second; once Redis is back). Each
process's `tickets.in_force.RulesCache` compares that key with what it read, so an edit made
by any process (CLI, API, another worker) is in force at the next step everywhere.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import ClassVar

from sqlalchemy.orm import Session

from core.events import DomainEvent, announce, versioned

VERSION_KEY = "hotline:tickets:rules:version"
EDITED = "hotline.rules_edited"  # session.info: this session changed the rules


@dataclass(frozen=True)
class RulesChanged(DomainEvent):
    """The work calendar or the time limits were changed; `what` says which. The edits take
    no clock (`at` is 0): what counts is that the change is committed, not when."""

    type: ClassVar[str] = "tickets.rules_changed"
    what: str = ""  # calendar | limits
    change: str = ""  # a fresh id: every change is an event of its own

    def identity(self) -> tuple[object, ...]:
        return (self.change,)


versioned(RulesChanged.type, VERSION_KEY)


def changed(session: Session, what: str) -> None:
    """Record, in the edit's transaction, that `what` changed. The session is marked too:
    a step later in it reads the tables, its own uncommitted edit included."""
    session.info[EDITED] = True
    announce(session, RulesChanged(at=0.0, what=what, change=uuid.uuid4().hex))
