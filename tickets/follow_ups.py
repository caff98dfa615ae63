"""What follows a move of a work order, wired once, here, in the order it runs: each
subscriber runs inside the move's own transaction (tickets.events.emit), so a move and all
that follows it are stored together or not at all.

The package imports this module (tickets/__init__.py), so a move made through any door of
the room, by any process, is followed alike; the modules that follow a move may call the
order's door (tickets.service) without the door knowing them.
"""

from __future__ import annotations

from tickets import deadlines, exchange, rollups, surveys
from tickets.events import Subscriber, WorkOrderMoved, WorkOrderOpened, subscribe

FOLLOW_UPS: tuple[tuple[Subscriber, tuple[type[WorkOrderOpened | WorkOrderMoved], ...]], ...] = (
    (deadlines.follow_move, (WorkOrderOpened, WorkOrderMoved)),  # step clocks (时限)
    (exchange.follow_move, (WorkOrderOpened, WorkOrderMoved)),  # the platform's webhook
    (surveys.follow_move, (WorkOrderMoved,)),  # the callback survey (回访) once closed
    # the reports' hourly rollups, last: they count what the others stored
    (rollups.follow_move, (WorkOrderOpened, WorkOrderMoved)),
)

for subscriber, kinds in FOLLOW_UPS:
    subscribe(subscriber, *kinds)
