"""The outbox worker (短信发送任务): drains the outbox through RQ jobs on the Redis we have.

Each tick (every second, on a loop of the centre) finds the numbers whose first pending
message is due and enqueues one RQ job per number (`send_to_number`, job id
`sms-out-<digits>`, unique: a number never has two jobs at once); an RQ SimpleWorker in the
centre's process runs them (it holds the provider, whose SMPP bind lives as long as the
centre). A job sends its number's messages one after the other; a message that must wait
(backoff) stops the job, and the messages behind it wait with it: a later message to a number
never overtakes an earlier one (the claim in `outbox` holds that rule even for two workers).

One worker per database: when it starts it settles what a dead one left in `sending`
(`outbox.recover`).

A delivery receipt for a part not recorded yet waits (an hour at most) and is tried again each
tick; at most UNMATCHED_LIMIT wait, the oldest dropped beyond that (counted): a receipt only
says a sent message arrived, and an SMSC that floods receipts for parts we never sent must not
grow the worker without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import redis
from rq import Queue, SimpleWorker
from rq.exceptions import DuplicateJobError
from rq.timeouts import TimerDeathPenalty
from sqlalchemy.orm import Session, sessionmaker

from channels.outbound import outbox
from channels.outbound.gateway import (
    Outgoing,
    PermanentError,
    Provider,
    TemporaryError,
    UncertainError,
)
from core.clock import Clock
from core.config import Settings
from core.db import run_retrying, transaction
from core.metrics import SMS_RECEIPTS_DROPPED, SMS_RECEIPTS_UNMATCHED

log = logging.getLogger(__name__)

QUEUE = "sms-out"
_running: OutboundWorker | None = None  # the process's worker, for the RQ jobs it runs
_running_lock = threading.Lock()
UNMATCHED_LIMIT = 1_000  # receipts waiting for their part; each is tried again every tick
SMS_RECEIPTS_UNMATCHED.set_function(lambda: len(_running._unmatched) if _running else 0)


def make_provider(settings: Settings, report: Callable[[str, bool, datetime], None],
                  clock: Clock) -> Provider | None:
    """The provider `sms.provider` names, started; None for "none"."""
    sms = settings.sms
    if sms.provider == "twilio":
        from channels.outbound.twilio import TwilioProvider

        return TwilioProvider(sms.twilio_base_url, sms.twilio_account_sid,
                              sms.twilio_auth_token, sms.sender,
                              status_callback_url=sms.status_callback_url,
                              timeout_seconds=sms.send_timeout_seconds)
    if sms.provider == "smpp":
        from channels.outbound.smpp import SmppProvider

        return SmppProvider(sms.smpp_host, sms.smpp_port, sms.smpp_system_id,
                            sms.smpp_password, sms.sender, report=report, now=clock.now,
                            enquire_link_seconds=sms.smpp_enquire_link_seconds,
                            timeout_seconds=sms.send_timeout_seconds).start()
    return None


class _InThreadWorker(SimpleWorker):
    """An RQ SimpleWorker that runs in a thread of the centre: no signal handlers (only the
    main thread may set them; the centre stops it), timeouts by timer, not SIGALRM."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:
        pass


def send_to_number(phone: str) -> int:
    """The RQ job: send `phone`'s due messages in order; how many were settled."""
    worker = _running
    if worker is None:
        raise RuntimeError("no outbox worker runs in this process")
    try:
        return worker.drain_number(phone)
    except Exception:  # e.g. the database away: the job ends, the next tick enqueues again
        log.exception("sms: sending to %s stopped", phone)
        return 0


class OutboundWorker:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session],
                 live: redis.Redis, clock: Clock, provider: Provider | None = None) -> None:
        self.settings, self.sessions, self.clock = settings, sessions, clock
        self.queue = Queue(QUEUE, connection=live)
        self.provider = provider or make_provider(settings, self.report, clock)
        if self.provider is None:
            raise ValueError("sms.provider is none: nothing to send with")
        self._unmatched: list[tuple[str, bool, datetime]] = []  # receipts before their part
        self.unmatched_limit = UNMATCHED_LIMIT
        self._lock = threading.Lock()

    def start(self) -> OutboundWorker:
        global _running
        with _running_lock:
            _running = self
        with transaction(self.sessions) as session:
            settled = outbox.recover(session)
        if settled:
            log.warning("sms: %d message(s) left sending by a stopped worker settled", settled)
        return self

    def stop(self) -> None:
        global _running
        with _running_lock:
            if _running is self:
                _running = None
        self.provider.close()  # type: ignore[union-attr]

    # ------------------------------------------------------------------------- the ticks

    async def run(self, stop: asyncio.Event, every: float = 1.0) -> None:
        while not stop.is_set():
            try:  # the database restarting: backs off rather than failing every tick
                await run_retrying(self.tick, "sms outbox tick", stop)
            except Exception:
                log.exception("sms outbox tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    def tick(self) -> int:
        """Enqueue the due numbers' jobs and run the queue's jobs; jobs run."""
        self._retry_unmatched()
        if not self.provider.ready():  # type: ignore[union-attr]
            return 0  # e.g. no SMPP bind yet: messages wait in the queue, untried
        with self.sessions() as session:
            phones = outbox.due_phones(session, self.clock.now())
        for phone in phones:
            with contextlib.suppress(DuplicateJobError):  # its job is waiting already
                self.queue.enqueue(send_to_number, phone, job_id="sms-out-" + phone.lstrip("+"),
                                   unique=True, result_ttl=0, failure_ttl=3600,
                                   job_timeout=-1)
        if not self.queue.count:
            return 0
        worker = _InThreadWorker([self.queue], connection=self.queue.connection)
        before = self.queue.count
        worker.work(burst=True, logging_level="WARNING")
        return before

    # ----------------------------------------------------------------------- sending

    def drain_number(self, phone: str) -> int:
        settled = 0
        sms = self.settings.sms
        provider = self.provider
        assert provider is not None
        while True:
            now = self.clock.now()
            with transaction(self.sessions) as session:
                message = outbox.claim_next(session, phone, now)
                if message is None:
                    return settled
                out = Outgoing(message.id, message.phone, message.text,
                               first=outbox.parts_taken(session, message.id) + 1)

            def on_part(seq: int, provider_id: str, out: Outgoing = out) -> None:
                with transaction(self.sessions) as session:
                    outbox.record_part(session, out.id, seq, provider.name, provider_id)

            try:
                total = provider.send(out, on_part)
            except TemporaryError as exc:
                with transaction(self.sessions) as session:
                    held = session.get(outbox.SmsMessage, out.id)
                    assert held is not None
                    state = outbox.retry_later(session, held, str(exc), self.clock.now(),
                                               max_attempts=sms.max_attempts,
                                               retry_seconds=sms.retry_seconds)
                log.info("sms %d to %s: %s (%s)", out.id, phone, exc, state)
                if state == "queued":
                    return settled  # the rest of this number's messages wait behind it
                settled += 1
                continue
            except PermanentError as exc:
                with transaction(self.sessions) as session:
                    outbox.fail(session, out.id, str(exc))
            except (UncertainError, Exception) as exc:  # never resent blind
                log.warning("sms %d to %s held: %s", out.id, phone, exc)
                with transaction(self.sessions) as session:
                    outbox.hold(session, out.id, str(exc) or repr(exc))
            else:
                with transaction(self.sessions) as session:
                    outbox.mark_sent(session, out.id, provider.name, total, self.clock.now())
            settled += 1

    # ----------------------------------------------------------------------- receipts

    def report(self, provider_id: str, delivered: bool, at: datetime) -> bool:
        """A delivery receipt from the provider; kept for a while if its part is not recorded
        yet (an SMSC may send the receipt before our record of the part is committed)."""
        assert self.provider is not None
        with transaction(self.sessions) as session:
            found = outbox.record_receipt(session, self.provider.name, provider_id,
                                          delivered, at)
        if found is None:
            with self._lock:
                self._unmatched.append((provider_id, delivered, at))
                while len(self._unmatched) > self.unmatched_limit:
                    dropped = self._unmatched.pop(0)
                    SMS_RECEIPTS_DROPPED.inc()
                    log.warning("sms: too many receipts for parts not recorded; the receipt "
                                "for %s is dropped", dropped[0])
        return found is not None

    def _retry_unmatched(self) -> None:
        with self._lock:
            waiting, self._unmatched = self._unmatched, []
        horizon = self.clock.now() - timedelta(hours=1)
        for provider_id, delivered, at in waiting:
            if at >= horizon:
                self.report(provider_id, delivered, at)


def queue_length(live: redis.Redis) -> int:
    return Queue(QUEUE, connection=live).count


def running() -> Any:
    return _running
