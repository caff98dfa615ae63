"""The screen pop (来电弹屏): who is calling, on the desk whose phone rings, pushed not polled.

A loop follows the event bus in its own consumer group ("desk-pop"). It remembers, per live
call, the caller (`call.started`) and what they did in the IVR (`call.ivr_step`: nodes
visited, menu keys, a case number keyed); when a call rings an agent (`call.agent_ringing`)
it composes the pop and appends it to the desk feed for that agent (agent_desk.feed, kind
"pop"). A call that started before the loop did (a restart) is looked up backwards in the
bus stream.

The pop, read through the rooms' doors only: the caller's number masked (in full under
data["private"], which the push server gives only to viewers who may see numbers), the
queue the IVR routed to, the IVR keys and keyed case number, marks (VIP, blocklist, repeat
caller: `hotline.repeat_threshold` inbound calls within `hotline.repeat_window_hours`, as
the IVR's screening counts them), the caller's last calls and work orders with their
states, and every order of theirs still open. Nothing else in it carries a full number:
caller names, descriptions and keyed digits are passed through `phones.mask_in_text`.

A withheld or unreadable number gets a pop with no history that says so; bad data in an
event is logged and skipped, never the end of the loop. "Now" is the injected clock's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session, sessionmaker

from agent_desk import feed
from core import phones
from core.clock import Clock
from core.config import Settings
from core.events import EventBus, gather_burst
from telephony import directory, records, screening
from tickets import service as orders
from tickets import workflow

log = logging.getLogger(__name__)

EVENTS_GROUP = "desk-pop"  # the composer's consumer group on the event stream
# the event types `handle` acts on; the others are acknowledged undecoded
HEARD_TYPES = frozenset({"call.started", "call.ivr_step", "call.queue_joined", "call.ended",
                         "call.agent_ringing"})
BLOCK_MS = 300  # how long one read waits for new events
GATHER_SECONDS = 0.1  # after a read that found events, the rest of the burst (gather_burst)
LIVE_CALLS_KEPT = 5_000  # calls whose caller and IVR steps are remembered
RECENT_CALLS = 5  # the caller's earlier calls shown, newest first
RECENT_ORDERS = 5  # ... and their orders
OPEN_ORDERS = 10  # every open order, up to this many
STALE_SECONDS = 60.0  # a ringing older than this (read after a restart) pops nothing
REUSE_SECONDS = 10.0  # agents rung at once (ringall) or again soon get the same pop
LOOK_BACK = 5_000  # bus entries searched backwards for a call started before the loop
DESCRIPTION_CHARS = 60
_IVR_NODES = ("node", "menu", "case", "transfer", "ivr")  # a "digit" repeats a key


@dataclass
class CallSoFar:
    """What the bus said of a live call before it rang an agent."""

    call_id: str
    caller_number: str = ""
    caller_name: str = ""
    queue: str = ""
    ivr: list[dict[str, Any]] = field(default_factory=list)
    started: bool = False
    pop: dict[str, Any] | None = None  # the last pop composed, for the next agent rung
    pop_at: float = 0.0

    def hear(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "call.started":
            self.started = True
            self.caller_number = _text(event.get("caller_number"), 40)
            self.caller_name = _text(event.get("caller_name"), 100)
        elif kind == "call.ivr_step":
            node = _text(event.get("node"), 20)
            if node in _IVR_NODES:
                self.ivr.append({"node": node, "value": _text(event.get("value"), 40),
                                 "at": _number(event.get("at"))})
        elif kind == "call.queue_joined":
            self.queue = _text(event.get("queue"), 40)


def _text(value: object, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def ivr_keys(steps: list[dict[str, Any]]) -> list[str]:
    """The menu keys the caller pressed, in order (a menu left silent is no key)."""
    return [s["value"] for s in steps if s.get("node") == "menu" and s["value"].isdigit()]


def keyed_case(steps: list[dict[str, Any]]) -> str:
    """The case number the caller keyed last (办理进度查询), or ""."""
    return next((s["value"] for s in reversed(steps) if s["node"] == "case"), "")


@dataclass(frozen=True)
class Marks:
    repeat_window: timedelta
    repeat_threshold: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Marks:
        return cls(timedelta(hours=settings.hotline.repeat_window_hours),
                   settings.hotline.repeat_threshold)


def compose(session: Session, call: CallSoFar, *, agent: str, queue: str, rang_at: float,
            now: datetime, marks: Marks, timezone: ZoneInfo) -> dict[str, Any]:
    """The pop for `agent` of the call ringing them; full numbers only under "private"."""
    citizen = phones.normalise_or_empty(call.caller_number)
    queue = queue or call.queue
    steps = [{"node": s["node"], "value": phones.mask_in_text(s["value"]), "at": s["at"]}
             for s in call.ivr]
    pop: dict[str, Any] = {
        "call_id": call.call_id, "agent": agent, "queue": queue,
        "queue_title": directory.queue_title(session, queue),
        "at": rang_at, "rang_at": _iso(rang_at, timezone),
        "composed_at": now.astimezone(timezone).isoformat(),
        "caller_known": bool(citizen),
        "caller_number": phones.mask(citizen) if citizen else "",
        "caller_name": phones.mask_in_text(call.caller_name),
        "ivr": steps, "ivr_keys": ivr_keys(steps), "case_keyed": keyed_case(steps),
        "case_order": None,
        "marks": {"vip": False, "blocked": False, "repeat": False, "recent_calls": 0,
                  "repeat_window_hours": marks.repeat_window.total_seconds() / 3600},
        "calls": [], "calls_total": 0, "orders": [], "orders_total": 0, "open_orders": [],
    }
    case = pop["case_keyed"]
    if case:
        found = orders.progress(session, case)
        if found is not None:
            pop["case_order"] = {"case_number": found.case_number, "state": found.state,
                                 "open": found.state in workflow.OPEN}
    if not citizen:
        return pop  # withheld or unreadable: no history to show
    pop[feed.PRIVATE] = {"caller_number": phones.national(citizen)}
    seen = screening.screen(session, citizen, now, marks.repeat_window,
                            marks.repeat_threshold)
    pop["marks"].update(vip=seen.vip, blocked=seen.blocked, repeat=seen.repeat,
                        recent_calls=seen.recent_calls)
    total, calls = records.find_calls(session, records.CallQuery(
        caller_number=citizen, direction="inbound", limit=RECENT_CALLS))
    pop["calls_total"] = total
    pop["calls"] = [{
        "call_id": c["call_id"], "started_at": _iso(c["started_at"], timezone),
        "outcome": c["outcome"], "queue": c["queue"] or "", "agent": c["agent"] or "",
        "talk_seconds": c["talk_seconds"], "case_number": c["case_number"] or "",
        "ivr_keys": ivr_keys([s for s in c["ivr_path"] if isinstance(s, dict)
                              and isinstance(s.get("value"), str)]),
    } for c in calls]
    total, recent = orders.find_orders(session, orders.OrderQuery(
        citizen_phone=citizen, limit=RECENT_ORDERS))
    pop["orders_total"] = total
    pop["orders"] = [_order(o, timezone) for o in recent]
    # all the caller's orders are on the page already (most callers): their open ones too
    still_open = ([o for o in recent if o.state in workflow.OPEN][:OPEN_ORDERS]
                  if total <= len(recent) else
                  orders.open_orders_of(session, citizen, OPEN_ORDERS))
    pop["open_orders"] = [_order(o, timezone) for o in still_open]
    return pop


def _order(order: orders.WorkOrder, timezone: ZoneInfo) -> dict[str, Any]:
    view = orders.order_view(order, see_phone=False)
    created = order.created_at
    return {
        "case_number": view["case_number"], "state": view["state"],
        "open": view["state"] in workflow.OPEN, "appeal_type": view["appeal_type"],
        "category_code": view["category_code"],
        "summary": phones.mask_in_text(str(view["description"]))[:DESCRIPTION_CHARS],
        "created_at": (created if created.tzinfo else created.replace(tzinfo=UTC))
        .astimezone(timezone).isoformat(),
    }


def _iso(epoch: float | None, timezone: ZoneInfo) -> str:
    return "" if epoch is None else datetime.fromtimestamp(epoch, timezone).isoformat()


class ScreenPop:
    """The composer: `run` follows the bus until stopped; `handle` takes one event."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], bus: EventBus,
                 clock: Clock) -> None:
        self.sessions, self.bus, self.clock = sessions, bus, clock
        self.marks = Marks.from_settings(settings)
        self.timezone = ZoneInfo(settings.calendar.timezone)
        self.consumer = f"pop-{socket.gethostname()}"
        self.calls: OrderedDict[str, CallSoFar] = OrderedDict()
        self.composed: list[float] = []  # seconds each of the last pops took, for the bench
        bus.ensure_group(EVENTS_GROUP)  # before anything is published for it to miss

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            before = self.bus.read_up_to.get(EVENTS_GROUP)
            try:
                await asyncio.to_thread(self.tick, BLOCK_MS)
            except Exception:  # Redis away a moment: try again, never give up
                log.exception("screen pop: reading the bus failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
            if self.bus.read_up_to.get(EVENTS_GROUP) != before:
                await gather_burst(stop, GATHER_SECONDS)

    def tick(self, block_ms: int | None = None) -> list[str]:
        """Handle what the bus has for the group (waiting up to `block_ms` for it); the desk
        feed ids of the pops published."""
        published = []
        handled: list[str] = []
        try:
            for entry_id, event in self.bus.consume(EVENTS_GROUP, self.consumer, count=200,
                                                    block_ms=block_ms, types=HEARD_TYPES):
                try:
                    pop_id = self.handle(entry_id, event)
                    if pop_id:
                        published.append(pop_id)
                except Exception:  # bad data, a database hiccup: this pop is lost, not the loop
                    log.exception("screen pop: event %s not handled", entry_id)
                handled.append(entry_id)
        finally:  # acknowledged together: one round trip a batch
            self.bus.ack(EVENTS_GROUP, *handled)
        return published

    def handle(self, entry_id: str, event: dict[str, Any]) -> str | None:
        if not isinstance(event, dict):
            return None
        kind, call_id = event.get("type"), event.get("call_id")
        if not isinstance(call_id, str) or not call_id:
            return None
        if kind in ("call.started", "call.ivr_step", "call.queue_joined"):
            self._call(call_id).hear(event)
        elif kind == "call.ended":
            self.calls.pop(call_id, None)
        elif kind == "call.agent_ringing":
            return self.ringing(entry_id, event)
        return None

    def ringing(self, entry_id: str, event: dict[str, Any]) -> str | None:
        agent, rang_at = _text(event.get("agent"), 40), _number(event.get("at"))
        now = self.clock.now()
        if not agent or rang_at is None:
            log.warning("screen pop: ringing without agent or time: %s", entry_id)
            return None
        if now.timestamp() - rang_at > STALE_SECONDS:
            return None  # read again after a restart: that phone stopped ringing long ago
        call = self.calls.get(event["call_id"])
        if call is None or not call.started:
            call = self._recall(entry_id, event["call_id"])
        queue = _text(event.get("queue"), 40) or call.queue
        if (call.pop is not None and call.pop["queue"] == queue
                and 0 <= now.timestamp() - call.pop_at < REUSE_SECONDS):
            pop = {**call.pop, "agent": agent, "at": rang_at,
                   "rang_at": _iso(rang_at, self.timezone)}
        else:
            began = time.perf_counter()
            with self.sessions() as session:
                pop = compose(session, call, agent=agent, queue=queue, rang_at=rang_at,
                              now=now, marks=self.marks, timezone=self.timezone)
            self.composed = [*self.composed[-99:], time.perf_counter() - began]
            call.pop, call.pop_at = pop, now.timestamp()
        return feed.publish(self.bus.client, agent, "pop", pop)

    def _call(self, call_id: str) -> CallSoFar:
        call = self.calls.get(call_id)
        return call if call is not None else self._keep(CallSoFar(call_id))

    def _keep(self, call: CallSoFar) -> CallSoFar:
        self.calls[call.call_id] = call
        while len(self.calls) > LIVE_CALLS_KEPT:  # calls whose end was never heard
            self.calls.popitem(last=False)
        return call

    def _recall(self, entry_id: str, call_id: str) -> CallSoFar:
        """A call this loop did not see start: its events, found backwards in the stream
        from the ringing, up to LOOK_BACK entries."""
        found: list[dict[str, Any]] = []
        upper, searched, started = entry_id, 0, False
        while searched < LOOK_BACK and not started:
            page = self.bus.client.xrevrange(self.bus.stream, max=upper, min="-", count=500)
            if not page:
                break
            searched += len(page)
            for _key, fields in page:
                try:
                    event = json.loads(fields[b"data"])
                except (KeyError, ValueError):
                    continue
                if isinstance(event, dict) and event.get("call_id") == call_id:
                    found.append(event)
                    started = started or event.get("type") == "call.started"
            last = page[-1][0]
            upper = "(" + (last.decode() if isinstance(last, bytes) else str(last))
        call = CallSoFar(call_id)
        for event in reversed(found):
            call.hear(event)
        self.calls.pop(call_id, None)
        return self._keep(call)
