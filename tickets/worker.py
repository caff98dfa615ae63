"""The tickets room's clockwork, run beside the telephony service (`hotline serve`):

- survey calls that are due are placed through the telephony service (one process writes to
  AMI), and unanswered ones come back as `outbound.failed` events, read through the
  worker's consumer group: one published while the worker is down is handled when it
  returns, and one it read but did not finish is read again;
- SMS surveys nobody answered go to the agents' callback list;
- finished calls (`call.ended`) are bound to their orders: a call an order was opened on
  while it was up gets its record, a caller who keyed a case number in the IVR has the call
  added to that order, and the recording is filed under the case number;
- deadline warnings (yellow, red) and escalation to supervision (督办);
- webhook deliveries to the city platform, retried until they land;
- the orders changed since the last tick folded into the reports' rollups.

Each job is a plain function over a `now` (by default the worker's clock), so tests drive
them one tick at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from core.clock import Clock, FixedClock
from core.config import Settings
from core.db import run_retrying, transaction
from core.errors import HotlineError
from core.events import EventBus, announce
from telephony import commands
from tickets import deadlines, exchange, rollups, service, surveys, workflow
from tickets.events import DeadlineWarned

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
FOLLOWED_TYPES = frozenset({"outbound.failed", "call.ended"})  # what handle_events acts on
DEADLINE_EVERY = 30.0
PENDING_EVERY = 30.0  # pending call links whose call.ended came before the order committed
STALE_ATTEMPT = timedelta(minutes=10)  # a survey call with no outcome after this is retried
EVENTS_GROUP = "tickets"  # the worker's consumer group on the event stream


class TicketsWorker:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], bus: EventBus,
                 clock: Clock, policy: service.Policy | None = None) -> None:
        self.settings, self.sessions, self.bus, self.clock = settings, sessions, bus, clock
        self.policy = policy or service.Policy.from_settings(settings)
        # one consumer per host: after a restart it finds what it had read but not finished
        self.consumer = f"worker-{socket.gethostname()}"
        bus.ensure_group(EVENTS_GROUP)  # before anything is published for it to miss

    async def run(self, stop: asyncio.Event) -> None:
        last_sweep = last_links = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            jobs = [self.survey_outcomes, self.dial_surveys, self.expire_sms,
                    self.deliver_webhooks]
            if loop.time() - last_sweep >= DEADLINE_EVERY:
                jobs.append(self.sweep_deadlines)
                last_sweep = loop.time()
            if loop.time() - last_links >= PENDING_EVERY:
                jobs.append(self.resolve_pending_calls)
                last_links = loop.time()
            jobs.append(self.fold_rollups)  # last: the tick's own moves (escalations) too
            for job in jobs:
                try:  # the database restarting: backs off and finishes the job when it's back
                    await run_retrying(job, f"tickets job {job.__name__}", stop)
                except Exception:  # one failing job must not stop the others
                    log.exception("tickets job %s failed", job.__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK_SECONDS)

    # ------------------------------------------------------------------ reports

    def fold_rollups(self) -> int:
        """The orders changed since the last tick folded into the reports' rollups (one
        look when there are none): a report then has little or nothing left to fold."""
        with self.sessions() as session:
            return rollups.settle(session)

    # ------------------------------------------------------------------ surveys

    def dial_surveys(self, now: datetime | None = None) -> list[str]:
        """Place the survey calls that are due; returns their attempt ids."""
        now = now or self.clock.now()
        placed = []
        with self.sessions() as session:
            due = surveys.due_calls(session, now)
        for survey_id in due:
            with transaction(self.sessions) as session:
                attempt = surveys.claim_call(session, survey_id, now)
            if attempt is None:
                continue
            try:
                commands.send(self.bus.client, "call.outbound", {
                    "purpose": "survey", "reference": attempt.attempt_id,
                    "number": attempt.phone})
                placed.append(attempt.attempt_id)
            except commands.CommandError as exc:
                self._call_failed(attempt.attempt_id, str(exc), now)
        return placed

    def survey_outcomes(self, now: datetime | None = None) -> None:
        """The events the worker follows (`handle_events`), then survey attempts that
        never reported back."""
        now = now or self.clock.now()
        self.handle_events(now)
        with self.sessions() as session:
            stale = surveys.stale_calls(session, now, STALE_ATTEMPT)
        for attempt_id in stale:
            self._call_failed(attempt_id, "no outcome reported", now)

    def handle_events(self, now: datetime | None = None) -> None:
        """The telephony service's events, through the worker's consumer group: unanswered
        survey calls (`outbound.failed`) and finished calls (`call.ended`). An event is
        acknowledged once handled; one whose handling failed (the database busy) comes
        again at the next tick."""
        now = now or self.clock.now()
        handled: list[str] = []
        try:
            for entry_id, event in self.bus.consume(EVENTS_GROUP, self.consumer,
                                                    types=FOLLOWED_TYPES):
                if event.get("type") == "outbound.failed" and event.get("purpose") == "survey":
                    self._call_failed(str(event.get("reference", "")),
                                      str(event.get("reason", "")), now)
                elif event.get("type") == "call.ended" and isinstance(event.get("record"), dict):
                    self.call_ended(event["record"], now)
                handled.append(entry_id)
        finally:  # those handled, in one round trip; the one that failed comes again
            self.bus.ack(EVENTS_GROUP, *handled)

    # ------------------------------------------------------------------ calls of orders

    def call_ended(self, record: dict[str, object], now: datetime | None = None) -> str:
        """Bind a finished call to its order (tickets.service.call_ended) and file its
        recording under the case number; the case number, or "" if it belongs to none."""
        with self.sessions() as session:
            if not service.concerns_orders(session, record):
                return ""  # most calls: no order, no case number keyed
        now = now or self.clock.now()
        try:
            with transaction(self.sessions) as session:
                resolved = service.call_ended(session, record, now=now)
        except HotlineError as exc:  # e.g. linked to another order meanwhile: nothing to do
            log.info("call %s not linked: %s", record.get("call_id"), exc)
            return ""
        if resolved is None:
            return ""
        self._file(resolved)
        log.info("call %s belongs to work order %s", record.get("call_id"),
                 resolved.case_number)
        return resolved.case_number

    def resolve_pending_calls(self, now: datetime | None = None) -> list[str]:
        """Pending links whose call ended while the order was being saved (its call.ended
        was handled before the order committed); the call ids resolved."""
        with transaction(self.sessions) as session:
            resolved = service.resolve_links(session, now=now or self.clock.now())
        for item in resolved:
            self._file(item)
        return [str(item.call["call_id"]) for item in resolved]

    def _file(self, resolved: service.Resolved) -> None:
        try:
            service.file_recording(self.settings.storage.recordings_dir,
                                   resolved.case_number, resolved.call)
        except (OSError, ValueError) as exc:  # the link is kept; the catalogue name is not
            log.warning("recording of call %s not filed under %s: %s",
                        resolved.call.get("call_id"), resolved.case_number, exc)

    def _call_failed(self, attempt_id: str, reason: str, now: datetime) -> None:
        with transaction(self.sessions) as session:
            state = surveys.call_failed(session, attempt_id, reason, self.policy,
                                        self.policy.calendar(session), now)
        if state:
            log.info("survey attempt %s failed (%s): now %s", attempt_id, reason, state)

    def expire_sms(self, now: datetime | None = None) -> int:
        with transaction(self.sessions) as session:
            return surveys.expire_sms(session, self.policy, now or self.clock.now())

    # ------------------------------------------------------------------ deadlines

    def sweep_deadlines(self, now: datetime | None = None) -> list[deadlines.Warning]:
        """Yellow and red warnings; a red one is escalated to supervision (督办) once."""
        now = now or self.clock.now()
        with transaction(self.sessions) as session:
            changed = deadlines.sweep(session, self.policy.calendar(session), now)
            for warning in changed:
                announce(session, DeadlineWarned(
                    at=now.timestamp(), case_number=warning.case_number, step=warning.step,
                    round=warning.round, warning=warning.warning,
                    due_at=warning.due_at.isoformat()))
                if warning.escalate:
                    try:
                        with session.begin_nested():
                            service.transition(
                                session, warning.case_number, "supervise", actor="时限监控",
                                role=workflow.SYSTEM, note=f"{warning.step} 超时督办",
                                policy=self.policy, now=now)
                    except HotlineError as exc:  # closed meanwhile: nothing to chase
                        log.info("not escalating %s: %s", warning.case_number, exc)
        return changed

    # ------------------------------------------------------------------ data exchange

    def deliver_webhooks(self, now: datetime | None = None) -> None:
        """Every row carries its own URL: events queued before the URL was removed still
        go out."""
        x = self.settings.exchange
        exchange.deliver_due(self.sessions, x.webhook_secret, x.max_attempts, x.retry_seconds,
                             FixedClock(now) if now else self.clock)
