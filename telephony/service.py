"""The telephony service: the one process that holds the AMI connection.

It feeds every AMI event to the call model and the seat board, publishes the domain events
on the bus, stores each finished call once (with its recording's checksum) and every
finished seat state, and carries out commands other processes send over Redis (agents log
in, pause, resume, log out). After every (re)connect it asks Asterisk which channels and
queue members exist, so calls that ended while the link was down are closed, none is left
as a ghost, and agents who were logged in before an Asterisk restart are logged in again.
Reconnects back off up to 30 s.

Calls that ended while the link was down (the service crashed, restarted, lost the network)
are rebuilt from Asterisk's own channel event log (telephony.cel) with their true times,
queue, agent and outcome: the service keeps a high-water mark in Redis (every call it has
not stored began at or after it), and each resync stores every call the log shows ended
since then that is neither stored nor still up. Only a call the log lacks is closed as
`incomplete`. The log's rows are trimmed hourly (pbx.cel_keep_days, and stored calls').
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import weakref
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import redis
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from core import logs, metrics, phones
from core.clock import Clock
from core.config import Settings
from core.db import retrying, transaction
from core.events import EventBus, announce, publish, publish_all
from core.live import failing_fast
from recordings import live, transcribe_worker
from recordings.catalogue import RecordingFile, call_files, catalogue_call, host_path
from telephony import (
    callbacks,
    cel,
    commands,
    directory,
    link,
    records,
    seats,
    sipguard,
    wallboard,
)
from telephony.ami import AmiClient, AmiError, event_fields
from telephony.calls import CallTracker, LiveCall
from telephony.events import (
    AgentConnected,
    CallAbandoned,
    CallEnded,
    CallStarted,
    DomainEvent,
    OutboundCallFailed,
    QueueJoined,
    SeatChanged,
    WrapUpExtended,
)
from telephony.models import SeatInterval, SeatLogin

log = logging.getLogger(__name__)

BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
# Calls the hotline places, by purpose: the dialplan context that serves the answered call.
# "desk": an agent's click-to-call from the desk (坐席外呼): the citizen is dialled, and
# when they answer the agent's own phones ring (Exten is the agent's number).
OUTBOUND_CONTEXTS = {"survey": "hotline-survey", "desk": "hotline-desk-call"}
OUTBOUND_RING_SECONDS = 40
DIAL_STATUS_REASONS = {"BUSY": "busy", "NOANSWER": "no answer", "CONGESTION": "congestion",
                       "CHANUNAVAIL": "unreachable", "CANCEL": "no answer",
                       "User busy": "busy", "User alerting, no answer": "no answer",
                       "Call Rejected": "refused", "Normal Clearing": "no answer"}
OUTBOUND_REASON_WAIT = 1.0
# A supervisor's listen / whisper / barge (监听 / 耳语 / 强插): the call placed to the
# supervisor's phone runs ChanSpy on the agent's channel (extensions.conf [hotline-spy]).
SPY_MODES = ("listen", "whisper", "barge")
SPY_CONTEXT = "hotline-spy"
SPY_RING_SECONDS = 30
# The high-water mark of the channel event log: every call not yet stored began at or after
# it (Unix epoch seconds, Asterisk's clock). Read back with a margin, for rows written late.
CEL_MARK_KEY = "telephony:cel_mark"
CEL_MARGIN_SECONDS = 60.0
CEL_TRIM_SECONDS = 3600.0
BAN_SWEEP_SECONDS = 1.0  # how soon an ended or lifted SIP ban reaches Asterisk
INTERVALS_GATHER_SECONDS = 0.25  # seat intervals that finish together, stored together
# The side channel that sends the caller's voice to the live receiver (recordings.live).
LIVE_CONTEXT = "hotline-live"


_services: weakref.WeakSet[TelephonyService] = weakref.WeakSet()
metrics.TELEPHONY_TASKS_PENDING.set_function(
    lambda: sum(len(service._pending) for service in list(_services)))


class TelephonyService:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], bus: EventBus,
                 clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.sessions = sessions
        self.bus = bus
        self.tracker = CallTracker(settings.hotline.short_abandon_seconds)
        self.board = seats.SeatBoard()
        self.redis = bus.client
        self.live = failing_fast(bus.client)  # live state writes on the AMI loop (`_live`)
        self.client: AmiClient | None = None
        self.connected = asyncio.Event()
        self.connections = 0
        self.stored = 0
        # durable work (a call to store, a callback's step): counted, never refused
        self._pending: set[asyncio.Task[None]] = set()
        _services.add(self)
        self._unsaved_intervals: list[seats.Interval] = []  # finished, not yet stored
        self._saving_intervals = False
        self._auto_pausing: set[str] = set()
        self._dialling: dict[str, str] = {}  # placeholder channel -> callback request
        self._placeholders: dict[str, str] = {}  # its Local channels -> callback request
        self._outbound: dict[str, tuple[str, str]] = {}  # ActionID -> (purpose, number)
        self._outbound_legs: dict[str, str] = {}  # its channel -> ActionID
        self._outbound_status: dict[str, str] = {}  # ActionID -> DialStatus
        self._untimed_warned = False
        self.cel = cel.CelStore(cel.store_path(settings))
        self.rebuilt = 0  # calls stored from the channel event log
        self._storing: dict[str, float] = {}  # call ended, record being stored -> began
        self._last_event_at: float | None = None
        # SIP security: failures counted per address; the bans Asterisk was last given
        self.guard = sipguard.FailureCounter.from_settings(settings)
        self._banned: set[str] = set()  # standing or being stored: not counted again
        self._bans_applied: frozenset[str] | None = None
        self._bans_changed = asyncio.Event()
        self._redis_away = False  # live state writes failing: warned once
        # what the AMI loop emitted in this turn of the event loop, written out together
        # when the turn ends (`_flush_turn`): live-state writes, then the events
        self._turn_writes: Any = None  # a Redis pipeline
        self._turn_events: list[DomainEvent] = []
        self._turn_end: asyncio.Handle | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until `stop` is set."""
        backoff = BACKOFF_FIRST
        await asyncio.to_thread(commands.ensure_group, self.redis)
        saved = await asyncio.to_thread(self.redis.hgetall, seats.SEATS_KEY)
        self.board.restore(saved.values())
        command_loop = asyncio.create_task(self._serve_commands(stop))
        link_state = asyncio.create_task(link.keep(self.redis, self.connected, stop))
        cel_trim = asyncio.create_task(self._trim_cel_hourly(stop))
        ban_keeper = asyncio.create_task(self._keep_bans(stop))
        while not stop.is_set():
            lost = asyncio.Event()
            client = AmiClient(self.settings, self.clock)
            try:
                await client.connect(timeout=5, on_disconnect=lost.set)
            except AmiError as exc:
                log.warning("%s; retrying in %.0f s", exc, backoff)
                await _wait_either(stop, asyncio.Event(), backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            self.client = client
            client.on_event("*", self._on_ami_event)
            try:
                await self._resync(client)
            except Exception as exc:  # never leave the loop: the next connect resyncs again
                log.warning("resync failed (%s: %s); reconnecting in %.0f s",
                            type(exc).__name__, exc, backoff)
                client.close()
                self.client = None
                await _wait_either(stop, asyncio.Event(), backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_FIRST
            self.connections += 1
            self._bans_applied = None  # a restarted Asterisk is given the ban list again
            self._bans_changed.set()
            self.connected.set()
            await _wait_either(stop, lost)
            self.connected.clear()
            client.close()
            self.client = None
        await command_loop
        await link_state
        await cel_trim
        await ban_keeper
        await self.drain()

    async def drain(self) -> None:
        """Wait for records still being written."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def live_calls(self) -> list[str]:
        return sorted(self.tracker.calls)

    async def _resync(self, client: AmiClient) -> None:
        answer = await client.action({"Action": "CoreShowChannels"}, timeout=10, as_list=True)
        channels = [event_fields(m) for m in answer if m.get("Event") == "CoreShowChannel"]
        now = self.clock.time()
        up = {ch.get("Linkedid") or ch.get("Uniqueid", "") for ch in channels}
        gap = await asyncio.to_thread(self._ended_in_gap, up, now)
        for call in gap:
            self._rebuilt(call)
        if gap:
            log.info("%d calls that ended while the AMI link was down rebuilt from "
                     "Asterisk's channel event log", len(gap))
        for event in self.tracker.resync(channels, now):
            self._emit(event)
        self._flush_turn()  # out before the live calls are rebuilt below
        snapshot, wanted = await asyncio.to_thread(self._directory_and_logins)
        self.board.wrapup_seconds = {q.name: q.wrapup_seconds for q in snapshot.queues}
        answer = await client.action({"Action": "QueueStatus"}, timeout=10, as_list=True)
        members = [event_fields(m) for m in answer if m.get("Event") == "QueueMember"]
        waiting = [event_fields(m) for m in answer if m.get("Event") == "QueueEntry"]
        await asyncio.to_thread(self._rebuild_live_calls, waiting, now)
        for event in self.board.resync(members, now):
            self._emit(event)
        self._flush_turn()
        for seat in list(self.board.seats.values()):  # an extension a restart stopped timing
            if seat.paused and seat.pause_reason == seats.WRAP_UP_PAUSE_REASON:
                until = seat.wrap_up_until or now
                self._later(until - now, seat.agent, until)
        for login in wanted:  # an Asterisk restart forgets dynamic members
            if not self.board.seat(login.agent_number).queues:
                try:
                    # on the device it last used: an Asterisk restart keeps the browser
                    await self._login(client, snapshot, login.agent_number, login.paused,
                                      login.pause_reason,
                                      self.board.seat(login.agent_number).device)
                except commands.CommandError as exc:
                    log.warning("cannot log %s in again: %s", login.agent_number, exc)
        for request_id in await asyncio.to_thread(self._waiting_callbacks):
            await self._hold_place(request_id)  # requested while the link was down
        self._save_mark(now)
        log.info("AMI resync: %d channels, %d live calls, %d queue members", len(channels),
                 len(self.tracker.calls), len(members))

    # ------------------------------------------------------------------ the gap (CEL)

    def _save_mark(self, now: float | None = None, client: Any = None) -> None:
        """Persist the high-water mark: the start of the oldest call not yet stored, else
        the last event seen (else `now`, right after a resync found nothing open); on
        `client` when given (the loop turn's writes)."""
        starts = [c.started_at for c in self.tracker.calls.values()]
        starts += list(self._storing.values())
        mark = min(starts) if starts else (self._last_event_at or now)
        if mark is not None:
            # (a pipeline with nothing in it yet is falsy: not `client or self.live`)
            self._live((self.live if client is None else client).set, CEL_MARK_KEY,
                       repr(mark))

    def _ended_in_gap(self, up: set[str], now: float) -> list[LiveCall]:
        """The calls Asterisk's channel event log shows ended since the mark that are not
        stored and not up now, rebuilt; none before the first mark (a fresh install), nor
        while Redis, which keeps the mark, is away (the mark stays for the next resync)."""
        try:
            saved = self.live.get(CEL_MARK_KEY)
        except redis.RedisError:
            return []
        try:
            mark = float(saved) if saved is not None else None
        except ValueError:
            mark = None
        if mark is None:
            return []
        try:
            ended = [c for c in self.cel.ended_between(mark - CEL_MARGIN_SECONDS)
                     if c not in up]
            with self.sessions() as session:
                stored = records.stored_ids(session, ended)
            rows = self.cel.rows_of([c for c in ended if c not in stored])
            rebuilt = [cel.rebuild(found) for found in rows.values()]
        except Exception as exc:  # an unreadable log leaves the old way: incomplete
            log.warning("cannot read Asterisk's channel event log %s (%s: %s)",
                        self.cel.path, type(exc).__name__, exc)
            return []
        return [call for call in rebuilt if call is not None]

    def _rebuilt(self, call: LiveCall) -> None:
        """Store a call rebuilt from the log once, as the live path would have ended it;
        what the service knew of it live (the IVR path) is kept."""
        known = self.tracker.forget(call.call_id)
        if known is not None:
            call.ivr_path = known.ivr_path
        ended = call.ended_at() or call.started_at
        self.rebuilt += 1
        self._emit(CallEnded(call_id=call.call_id, at=ended,
                             record=call.record(self.tracker.short_abandon_seconds)))

    async def _trim_cel_hourly(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await _wait_either(stop, asyncio.Event(), CEL_TRIM_SECONDS)
            if stop.is_set():
                return
            try:
                gone = await asyncio.to_thread(self.trim_cel, self.clock.time())
                log.info("channel event log: %d rows trimmed", gone)
            except Exception:
                log.exception("trimming the channel event log failed")

    def trim_cel(self, now: float) -> int:
        """Delete the log's rows older than pbx.cel_keep_days, and those of calls stored
        before the mark (their records are the centre's); how many rows went."""
        saved = self.redis.get(CEL_MARK_KEY)
        mark = float(saved) if saved is not None else now
        done = self.cel.ended_between(0.0, mark - CEL_MARGIN_SECONDS)
        stored: list[str] = []
        with self.sessions() as session:
            for first in range(0, len(done), 500):
                stored += records.stored_ids(session, done[first:first + 500])
        return self.cel.trim(now - self.settings.pbx.cel_keep_days * 86400, stored)

    def _rebuild_live_calls(self, waiting: list[dict[str, str]], now: float) -> None:
        """The wallboard's live calls (telephony.wallboard) from the tracker as just
        resynced and Asterisk's queue entries (QueueEntry: Queue, Uniqueid, Wait)."""
        joined: dict[str, tuple[str, float]] = {}
        for entry in waiting:
            call_id = self.tracker._leg_call.get(entry.get("Uniqueid", ""))
            if call_id:
                wait = float(entry["Wait"]) if str(entry.get("Wait", "")).isdigit() else 0.0
                joined[call_id] = (entry.get("Queue", ""), now - wait)
        live = []
        for call in self.tracker.calls.values():
            if call.direction != "inbound" or call.abandoned:
                continue
            queue, since = joined.get(call.call_id, (call.queue or "", 0.0))
            if not queue or (call.call_id not in joined and call.connected_at is None):
                continue  # not in a queue (IVR) or out of it with nobody
            live.append(wallboard.LiveCall(
                call.call_id, call.queue or queue, call.caller_number,
                call.queue_joined_at or since or call.started_at, call.agent,
                call.connected_at))
        wallboard.replace_live_calls(self.redis, live)

    def _live_call_moved(self, client: Any, event: DomainEvent) -> None:
        """Keep the wallboard's live calls as the call moves (before the event is out)."""
        call = self.tracker.calls.get(getattr(event, "call_id", ""))
        if isinstance(event, QueueJoined) and call is not None and call.direction == "inbound":
            wallboard.put_live_call(client, wallboard.LiveCall(
                call.call_id, event.queue, call.caller_number, event.at))
        elif isinstance(event, AgentConnected) and call is not None and call.queue_joined_at:
            wallboard.put_live_call(client, wallboard.LiveCall(
                call.call_id, call.queue or event.queue, call.caller_number,
                call.queue_joined_at, event.agent, event.at))
            metrics.QUEUE_WAIT.labels(queue=call.queue or event.queue, outcome="answered"
                                      ).observe(max(0.0, event.at - call.queue_joined_at))
        elif isinstance(event, CallAbandoned):
            wallboard.drop_live_call(client, event.call_id)
            metrics.QUEUE_WAIT.labels(queue=event.queue, outcome="abandoned"
                                      ).observe(max(0.0, event.wait_seconds))

    def _directory_and_logins(self) -> tuple[directory.Directory, list[SeatLogin]]:
        with self.sessions() as session:
            return directory.snapshot(session), list(session.scalars(select(SeatLogin)))

    def _on_ami_event(self, _manager: Any, message: Any) -> None:
        event = event_fields(message)
        received_at = getattr(message, "received_at", None) or self.clock.time()
        logs.CALL_ID.set(event.get("Linkedid", ""))  # on what this event's handling logs
        self._last_event_at = _event_time(event, received_at)
        if "Timestamp" not in event and not self._untimed_warned:
            self._untimed_warned = True
            log.warning("Asterisk's AMI events carry no Timestamp: calls are timed as their "
                        "events arrive; set timestampevents = yes in manager.conf [general] "
                        "for Asterisk's own times ('hotline pbx render' does)")
        for domain_event in (self.tracker.feed(event, received_at)
                             + self.board.feed(event, received_at)):
            self._emit(domain_event)
        stamped = event.get("Timestamp")
        if stamped:  # the real lag, whatever clock the calls are timed by
            with contextlib.suppress(ValueError):
                metrics.AMI_EVENT_LAG.observe(max(0.0, time.time() - float(stamped)))
        name = event.get("Event")
        if name in sipguard.FAILURES:
            self._sip_failure(name, event, received_at)
        if name == "AgentRingNoAnswer":
            self._maybe_auto_pause(event.get("MemberName", ""))
        elif name == "QueueMemberPause":
            self._auto_pausing.discard(event.get("MemberName", ""))
        elif name == "VarSet":
            self._on_callback_variable(event)
            if event.get("Variable") == "HOTLINE_OUTBOUND" and event.get("Value"):
                self._outbound_legs[event.get("Channel", "")] = event["Value"]
        elif name == "DialEnd" and event.get("DestChannel") in self._outbound_legs:
            reference = self._outbound_legs[event["DestChannel"]]
            self._outbound_status[reference] = event.get("DialStatus", "")
        elif name == "Hangup" and event.get("Channel") in self._placeholders:
            # a placeholder that leaves before an agent took it (queue timeout, hung up by
            # an operator): the request ends, it is not left holding for ever
            self._spawn(asyncio.to_thread(
                self._advance_callback, self._placeholders.pop(event["Channel"]), "holding",
                "failed", "the placeholder left the queue before an agent took it"))
        elif name == "Hangup" and event.get("Channel") in self._outbound_legs:
            reference = self._outbound_legs.pop(event["Channel"])
            self._outbound_status.setdefault(reference, event.get("Cause-txt", ""))
        elif name == "OriginateResponse" and event.get("ActionID") in self._outbound:
            self._outbound_answered(event)
        elif name == "DialEnd" and event.get("Channel") in self._dialling:
            request_id = self._dialling.pop(event["Channel"])
            answered = event.get("DialStatus") == "ANSWER"
            self._spawn(asyncio.to_thread(
                self._advance_callback, request_id, "dialling",
                "connected" if answered else "failed", event.get("DialStatus", "")))
        if self.board.intervals:
            self._intervals_finished()

    # ------------------------------------------------------------------ SIP security

    def _sip_failure(self, name: str, event: dict[str, str], at: float) -> None:
        """One failed SIP authentication (a security event): the address is banned when it
        has failed sip.ban_threshold times within the window."""
        where = sipguard.remote_address(event.get("RemoteAddress", ""))
        if where is None or where in self._banned:
            return
        count = self.guard.failed(where, at)
        if count is None:
            return
        self._banned.add(where)
        reason = f"{name} {event.get('AccountID', '')}".strip()
        self._spawn(self._ban(where, count, reason))

    async def _ban(self, where: str, failures: int, reason: str) -> None:
        now = self.clock.now()
        until = await asyncio.to_thread(self._store_ban, where, failures, reason, now)
        if until is not None:
            log.warning("SIP: %s banned until %s after %d failures (%s)", where,
                        until.isoformat(), failures, reason)
        self._bans_changed.set()

    def _store_ban(self, where: str, failures: int, reason: str, now: Any) -> Any:
        """The ban and its event (sip.banned), in one transaction (the outbox)."""
        with transaction(self.sessions) as session:
            row = sipguard.ban(session, where, failures, reason, now,
                               self.settings.sip.ban_seconds)
            if row is None:
                return None
            announce(session, sipguard.SipAddressBanned(
                at=now.timestamp(), address=where, failures=failures, reason=reason,
                until=row.until.timestamp()))
            return row.until

    def _standing_bans(self) -> frozenset[str]:
        """Bans whose time is up are lifted; the addresses of those standing now."""
        now = self.clock.now()
        with transaction(self.sessions) as session:
            for where in sipguard.expire(session, now):
                log.info("SIP: the ban on %s has ended", where)
            return frozenset(b.address for b in sipguard.standing(session, now))

    async def _keep_bans(self, stop: asyncio.Event) -> None:
        """Asterisk's ban ACL follows the standing bans: after a ban, at each sweep (a ban
        ended, or was lifted by `hotline sip unban` in another process) and on connecting."""
        failed = ""
        while not stop.is_set():
            self._bans_changed.clear()
            if self.client is not None:
                try:
                    await self._apply_bans()
                    failed = ""
                except Exception as exc:
                    if f"{exc}" != failed:  # said once, not at every sweep
                        log.warning("SIP: the ban list could not be given to Asterisk "
                                    "(%s: %s)", type(exc).__name__, exc)
                    failed = f"{exc}"
            await _wait_either(stop, self._bans_changed, BAN_SWEEP_SECONDS)

    async def _apply_bans(self) -> None:
        wanted = await asyncio.to_thread(self._standing_bans)
        if wanted == self._bans_applied:
            return
        if self._bans_applied is None and self.client is not None:
            # just connected: Asterisk may have them already (no reload needed then)
            answer = await self.client.action(sipguard.acl_read(), timeout=5, as_list=False)
            self._bans_applied = sipguard.denied(answer)
        if wanted != self._bans_applied:
            await self._ami(sipguard.acl_update(sorted(wanted)))
            self._bans_applied = wanted
        # an address whose ban ended (or was lifted) is counted afresh
        for where in self._banned - wanted:
            self.guard.forget(where)
        self._banned = set(wanted)

    # ------------------------------------------------------------------ callbacks

    def _on_callback_variable(self, event: dict[str, str]) -> None:
        variable, value = event.get("Variable", "").lstrip("_"), event.get("Value", "")
        channel = event.get("Channel", "")
        if variable == "HOTLINE_CALLBACK_ID" and value and not channel.startswith("Local/"):
            self._spawn(self._hold_place(value))  # the caller accepted the offer
        elif variable == "HOTLINE_CALLBACK_ID" and value:
            self._placeholders[channel] = value
        elif variable == "HOTLINE_CALLBACK_DIALLED" and value:
            self._dialling[channel] = value  # an agent took the placeholder: ring the caller
            for taken in [c for c, r in self._placeholders.items() if r == value]:
                del self._placeholders[taken]  # its hang-up is the call's, not a failure
            self._spawn(asyncio.to_thread(self._advance_callback, value, "holding",
                                          "dialling", ""))

    async def _hold_place(self, request_id: str) -> None:
        """Put the placeholder in the queue, once: only the first claim originates."""
        request = await asyncio.to_thread(self._claim_callback, request_id)
        if request is None:
            return
        action = callbacks.hold_action(request, self.settings.hotline.entry_number,
                                       self.settings.hotline.queue_wait_seconds)
        try:
            await self._ami(action)
        except (commands.CommandError, AmiError) as exc:
            await asyncio.to_thread(self._advance_callback, request_id, "holding", "failed",
                                    str(exc))

    def _claim_callback(self, request_id: str) -> Any:
        with transaction(self.sessions) as session:
            if not callbacks.advance(session, request_id, "requested", "holding",
                                     now=self.clock.now()):
                return None
            return callbacks.get(session, request_id)

    def _advance_callback(self, request_id: str, before: str, after: str, detail: str
                          ) -> None:
        with transaction(self.sessions) as session:
            callbacks.advance(session, request_id, before, after, detail,
                              now=self.clock.now())

    def _waiting_callbacks(self) -> list[str]:
        with self.sessions() as session:
            return callbacks.waiting(session)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _emit(self, event: DomainEvent) -> None:
        """Follow a domain event the AMI loop made: its live state written and the event
        published with the rest of this loop turn's (`_flush_turn`); a call's end stored."""
        if isinstance(event, CallEnded):
            # what came before it goes out first; storing waits for the recording to be
            # closed: off the event loop
            self._flush_turn()
            self._storing[event.call_id] = event.record.get("started_at") or event.at
            self._spawn(self._finish(event))
            return
        writes = self._turn_writes
        if writes is None:
            writes = self._turn_writes = self.live.pipeline(transaction=False)
        self._live_call_moved(writes, event)
        if isinstance(event, QueueJoined) and self.settings.speech.live and (
                self.settings.speech.model_path is not None):
            self._spawn(self._tap_live_audio(event.call_id))
        if isinstance(event, CallStarted):
            self._save_mark(client=writes)
        if isinstance(event, SeatChanged):
            seat = self.board.seat(event.agent)
            writes.hset(seats.SEATS_KEY, event.agent, json.dumps(seat.as_dict()))
            if event.state == seats.WRAP_UP and seat.wrap_up_until is not None:
                asyncio.get_running_loop().call_later(
                    max(0.0, seat.wrap_up_until - self.clock.time()), self._end_wrap_up,
                    event.agent, seat.wrap_up_until)
        self._turn_events.append(event)
        if self._turn_end is None:
            try:
                self._turn_end = asyncio.get_running_loop().call_soon(self._flush_turn)
            except RuntimeError:  # no loop (a caller outside the service's): at once
                self._flush_turn()

    def _flush_turn(self) -> None:
        """Write out what this loop turn emitted: the live state first (a consumer reading
        it for an event finds it written), then the events (straight out, or kept in the
        outbox while Redis is away): a round trip each, where each event had two or three
        (an AMI read brings several events; a call makes ~13)."""
        if self._turn_end is not None:
            self._turn_end.cancel()
            self._turn_end = None
        writes, events = self._turn_writes, self._turn_events
        self._turn_writes, self._turn_events = None, []
        if writes is not None and len(writes):
            self._live(writes.execute)
        publish_all(self.sessions, events)

    def _live(self, write: Callable[..., Any], *args: Any) -> None:
        """A write of live state (the wallboard's calls, the seat board) to Redis: while
        Redis is away it is skipped, and the call is still followed and recorded; the next
        resync after Redis returns rebuilds it."""
        try:
            write(*args)
        except redis.RedisError as exc:
            if not self._redis_away:
                log.warning("live state not written, Redis is away: %s", exc)
            self._redis_away = True
        else:
            self._redis_away = False

    def _end_wrap_up(self, agent: str, until: float) -> None:
        for event in self.board.end_wrap_up(agent, until):
            self._emit(event)

    def _maybe_auto_pause(self, agent: str) -> None:
        limit = self.settings.seats.auto_pause_after_unanswered
        seat = self.board.seats.get(agent)
        if (limit and seat is not None and seat.unanswered >= limit and not seat.paused
                and agent not in self._auto_pausing):
            self._auto_pausing.add(agent)  # until Asterisk's QueueMemberPause confirms it
            self._spawn(self._pause(agent, True, seats.AUTO_PAUSE_REASON))

    async def _finish(self, event: CallEnded) -> None:
        try:
            new = await asyncio.to_thread(self._store_retrying, event.record, event.at)
            # stored: the mark may pass it (a failed store keeps it, for the log's rebuild)
            self._storing.pop(event.call_id, None)
            self._save_mark()
            # off the board's live calls once its record is there to count: no gap
            await asyncio.to_thread(self._live, wallboard.drop_live_call, self.live,
                                    event.call_id)
            if new:  # a replayed call was announced the first time
                self.stored += 1  # stored, announced and its recordings filed
        except Exception:
            log.exception("could not store call %s", event.call_id)

    def _store_retrying(self, record: dict[str, Any], at: float) -> bool:
        """`_store`, tried again with back-off while the database is busy or restarting (a
        call's record is never dropped for it); idempotent by call id. A try that failed
        after its record committed (the COMMIT's answer lost) leaves the next try finding
        it stored: it is still this call's first storing, so it is announced (the tickets
        worker's handling of an announcement is idempotent). Whether it was announced."""
        recording, legs = None, {}
        if record.get("recording"):
            path = host_path(self.settings, record["recording"])
            if path is not None:  # waits for MixMonitor: once, before any transaction
                recording, legs = call_files(path)
        failed_before = False
        for attempt in retrying(f"storing call {record.get('call_id')}"):
            with attempt:
                failed_before = attempt.retry_state.attempt_number > 1
                new = self._store(record, at, recording, legs, failed_before)
        return new or failed_before

    def _store(self, record: dict[str, Any], at: float, recording: RecordingFile | None,
               legs: dict[str, RecordingFile], retried: bool = False) -> bool:
        """The call's record stored once, with the disposition chosen while it was up, and
        its CallEnded announced (the record as stored) when it is new, or on a retry (the
        outbox and the bus take an event id once); its recordings (`recording`, the mix,
        and its `legs`) filed in the catalogue and the legs queued for transcription: all
        in one transaction, a call's one write. Whether the record is new."""
        with transaction(self.sessions) as session:
            new = records.store_call(session, record, recording, timedelta(
                hours=self.settings.hotline.repeat_window_hours))
            records.apply_pending_disposition(session, record["call_id"])
            if new or retried:
                stored = records.get_call(session, record["call_id"])
                announce(session, CallEnded(call_id=record["call_id"], at=at,
                                            record=stored or record))
                self._file_recordings(session, record["call_id"], recording, legs)
        return new

    def _file_recordings(self, session: Session, call_id: str,
                         recording: RecordingFile | None,
                         legs: dict[str, RecordingFile]) -> None:
        """The call's files in the catalogue, each leg queued for transcription, in the
        record's transaction; a failure here (a savepoint) never loses the call's record."""
        if recording is None:
            return  # no recording, or none found on this host
        try:
            with session.begin_nested():
                files = catalogue_call(session, call_id, recording, legs)
                transcribe_worker.queue_call(session, self.redis, self.settings, files,
                                             self.clock.now())
        except Exception:
            log.exception("could not file the recordings of call %s", call_id)

    def _intervals_finished(self) -> None:
        """Store the seat board's finished intervals, in the order they finished: those that
        finish while a batch is being written go together in the next (one transaction for
        all, where each AMI event's few had one of their own)."""
        self._unsaved_intervals += self.board.intervals
        self.board.intervals = []
        if not self._saving_intervals:
            self._saving_intervals = True
            self._spawn(self._save_intervals())

    async def _save_intervals(self) -> None:
        try:
            while self._unsaved_intervals:
                # a call's few seat changes come within a moment: one transaction for them
                await asyncio.sleep(INTERVALS_GATHER_SECONDS)
                batch, self._unsaved_intervals = self._unsaved_intervals, []
                try:
                    await asyncio.to_thread(self._store_intervals, batch)
                except Exception:
                    log.exception("could not store %d seat intervals", len(batch))
        finally:
            self._saving_intervals = False

    def _store_intervals(self, finished: list[seats.Interval]) -> None:
        with transaction(self.sessions) as session:
            session.execute(insert(SeatInterval), [dict(
                agent_number=i.agent, state=i.state, reason=i.reason,
                started_at=records.as_time(i.started_at), ended_at=records.as_time(i.ended_at),
                seconds=round(i.ended_at - i.started_at, 3)) for i in finished])

    # ------------------------------------------------------------------ commands

    async def _serve_commands(self, stop: asyncio.Event) -> None:
        consumer = f"service-{id(self)}"
        while not stop.is_set():
            try:
                batch = await asyncio.to_thread(commands.receive, self.redis, consumer, 500)
            except Exception:
                log.exception("reading telephony commands failed")
                await asyncio.sleep(1)
                continue
            for entry_id, request_id, name, args in batch:
                ok, result, error, unavailable = True, {}, "", False
                try:
                    result = await self._command(name, args)
                except (commands.CommandError, AmiError) as exc:
                    ok, error = False, str(exc).removeprefix("telephony: ")
                    unavailable = isinstance(exc, commands.Unavailable | AmiError)
                except Exception as exc:
                    log.exception("command %s failed", name)
                    ok, error = False, f"internal error ({type(exc).__name__})"
                await asyncio.to_thread(commands.reply, self.redis, entry_id, request_id,
                                        ok=ok, result=result, error=error,
                                        unavailable=unavailable)

    async def _command(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        agent = str(args.get("agent", ""))
        handlers = {"seat.login": self._cmd_login, "seat.logout": self._cmd_logout,
                    "seat.pause": self._cmd_pause, "seat.resume": self._cmd_resume,
                    "seat.extend_wrap_up": self._cmd_extend_wrap_up,
                    "seat.spy": self._cmd_spy}
        if name not in handlers and name != "call.outbound":
            raise commands.CommandError(f"unknown command {name[:40]!r}")
        if args.get("__expired__"):
            raise commands.CommandError(f"{name} came after its sender stopped waiting; "
                                        "not done")
        if args.get("__malformed__"):
            raise commands.CommandError(f"{name}: its arguments are not a JSON object")
        if self.client is None or not self.client.connected:
            raise commands.Unavailable("the AMI link to Asterisk is down; try again")
        if name == "call.outbound":
            return await self._cmd_outbound(args)
        snapshot, _ = await asyncio.to_thread(self._directory_and_logins)
        if agent not in {a.number for a in snapshot.agents}:
            raise commands.CommandError(f"no agent {agent[:20]!r} in the directory")
        return {"agent": agent, **(await handlers[name](snapshot, agent, args) or {})}

    def _outbound_answered(self, event: dict[str, str]) -> None:
        """Asterisk's verdict on a call we placed. Its Reason is 0 for every refusal in
        Asterisk 22, so the leg's dial status (or hangup cause) says why; those events may
        come just before or just after the verdict, hence the short wait."""
        reference = event["ActionID"]
        purpose, number = self._outbound.pop(reference)
        if event.get("Response") == "Success":
            self._outbound_status.pop(reference, None)
            return
        asyncio.get_running_loop().call_later(
            OUTBOUND_REASON_WAIT, self._outbound_failed, reference, purpose, number)

    def _outbound_failed(self, reference: str, purpose: str, number: str) -> None:
        status = self._outbound_status.pop(reference, "")
        self._emit(OutboundCallFailed(
            at=self.clock.time(), purpose=purpose, reference=reference, number=number,
            reason=DIAL_STATUS_REASONS.get(status, status.lower() or "not placed")))

    async def _cmd_outbound(self, args: dict[str, Any]) -> dict[str, Any]:
        """Place a call the hotline makes (a survey, an agent's click-to-call), once: the
        caller's `reference` is the Originate's ActionID, and a call that is not answered
        comes back as an OutboundCallFailed event with that reference. A reference whose
        call is still being dialled or still up is refused (409), so a key such as the
        survey's id dials once however often the agent clicks."""
        purpose, number = str(args.get("purpose", "")), str(args.get("number", ""))
        reference, agent = str(args.get("reference", "")), str(args.get("agent", ""))
        if purpose not in OUTBOUND_CONTEXTS:
            raise commands.CommandError(f"no outbound purpose {purpose[:20]!r}")
        try:
            stored = phones.normalise(number)
        except phones.PhoneError as exc:
            raise commands.CommandError(str(exc)) from None
        if not re.fullmatch(r"[A-Za-z0-9_-]{4,40}", reference):
            raise commands.CommandError("reference: an id of 4-40 letters and digits")
        if reference in self._outbound or reference in self._outbound_legs.values():
            raise commands.CommandError(f"{reference} is being dialled or still up")
        exten = "s"
        if purpose == "desk":
            snapshot, _ = await asyncio.to_thread(self._directory_and_logins)
            if agent not in {a.number for a in snapshot.agents}:
                raise commands.CommandError(f"no agent {agent[:20]!r} in the directory")
            exten = agent
            if reference in self._outbound:  # another command got in while we looked
                raise commands.CommandError(f"{reference} is being dialled or still up")
        self._outbound[reference] = (purpose, number)
        entry = self.settings.hotline.entry_number
        try:
            await self._ami({
                "Action": "Originate", "ActionID": reference, "Async": "true",
                "Channel": f"PJSIP/{phones.national(stored)}@trunk",
                "Context": OUTBOUND_CONTEXTS[purpose],
                "Exten": exten, "Priority": "1",
                "Timeout": str(OUTBOUND_RING_SECONDS * 1000),
                "CallerID": f'"12319" <{entry}>',
                "Variable": f"HOTLINE_OUTBOUND={reference},HOTLINE_OUTBOUND_PURPOSE={purpose},"
                            f"HOTLINE_OUTBOUND_NUMBER={stored}"})
        except BaseException:
            self._outbound.pop(reference, None)
            raise
        return {"reference": reference, "state": "dialling"}

    async def _tap_live_audio(self, call_id: str) -> None:
        """Send the caller's voice to the live receiver (recordings.live), if one is up: a
        side channel to it (AudioSocket) runs ChanSpy on the caller's own channel only
        (extensions.conf [hotline-live]); its stream's uuid is written down first, so the
        receiver knows the call of every stream it gets."""
        call = self.tracker.calls.get(call_id)
        leg = call.caller_leg if call is not None else None
        if (call is None or leg is None or call.direction != "inbound"
                or not leg.channel.startswith("PJSIP/")):
            return
        try:
            address = await asyncio.to_thread(live.receiver_address, self.redis)
            if not address:
                return
            stream = await asyncio.to_thread(live.register_stream, self.redis, call_id)
            await self._ami({
                "Action": "Originate", "Async": "true",
                "Channel": f"{live.CHANNEL_PREFIX}{address}/{stream}",
                "Context": LIVE_CONTEXT, "Exten": "s", "Priority": "1",
                "Variable": f"HOTLINE_LIVE_CHANNEL={leg.uniqueid}"})
        except Exception as exc:  # the call goes on without its live transcript
            log.warning("live speech: cannot tap call %s: %s", call_id, exc)

    async def _cmd_spy(self, snapshot: directory.Directory, agent: str,
                       args: dict[str, Any]) -> dict[str, Any]:
        """Listen, whisper or barge (监听 / 耳语 / 强插) on `agent`'s live call: the
        supervisor's own phone (their desk phone, or the desk page's softphone when `device`
        is browser) is called, and when they answer ChanSpy joins the agent's channel in
        that mode (keys 4, 5, 6 switch between the modes during the session). Refused when
        the agent is on no call."""
        mode, supervisor = str(args.get("mode", "")), str(args.get("supervisor", ""))
        device = str(args.get("device") or seats.PHONE)
        if mode not in SPY_MODES:
            raise commands.CommandError(f"mode {mode[:20]!r} is not one of "
                                        f"{', '.join(SPY_MODES)}")
        if device not in seats.DEVICES:
            raise commands.CommandError(
                f"device {device[:20]!r} is not one of {', '.join(seats.DEVICES)}")
        if supervisor not in {a.number for a in snapshot.agents}:
            raise commands.CommandError(f"no supervisor phone {supervisor[:20]!r} in the "
                                        "directory")
        if supervisor == agent:
            raise commands.CommandError("a supervisor cannot listen to their own call")
        assert self.client is not None
        answer = await self.client.action({"Action": "CoreShowChannels"}, timeout=5,
                                          as_list=True)
        live = spied_channel(agent, [event_fields(m) for m in answer
                                     if m.get("Event") == "CoreShowChannel"])
        if live is None:
            raise commands.CommandError(f"agent {agent} has no live call")
        channel, call_id = live
        await self._ami({
            "Action": "Originate", "Async": "true",
            "Channel": seats.interface(supervisor, device),
            "Context": SPY_CONTEXT, "Exten": mode, "Priority": "1",
            "Timeout": str(SPY_RING_SECONDS * 1000),
            "CallerID": f'"{mode} {agent}" <{agent}>',
            # counted apart from citizens' calls, like every call the centre places
            "Variable": f"HOTLINE_SPY_CHANNEL={channel},HOTLINE_OUTBOUND_PURPOSE=spy"})
        return {"mode": mode, "call_id": call_id, "channel": channel,
                "supervisor": supervisor, "device": device}

    async def _cmd_login(self, snapshot: directory.Directory, agent: str,
                         args: dict[str, Any]) -> None:
        device = str(args.get("device") or seats.PHONE)
        if device not in seats.DEVICES:
            raise commands.CommandError(
                f"device {device[:20]!r} is not one of {', '.join(seats.DEVICES)}")
        await asyncio.to_thread(remember_login, self.sessions, agent, True, False, "")
        assert self.client is not None
        await self._login(self.client, snapshot, agent, False, "", device)

    async def _cmd_logout(self, snapshot: directory.Directory, agent: str,
                          _args: dict[str, Any]) -> None:
        await asyncio.to_thread(remember_login, self.sessions, agent, False, False, "")
        queues = sorted(self.board.seat(agent).queues) or [
            q.name for q in snapshot.queues if any(m[0] == agent for m in q.members)]
        for action in seats.logout_actions(agent, queues, self.board.seat(agent).device):
            await self._ami(action)

    async def _cmd_pause(self, _snapshot: directory.Directory, agent: str,
                         args: dict[str, Any]) -> None:
        reason = str(args.get("reason", ""))
        allowed = dict(self.settings.seats.pause_reasons)
        if reason not in allowed:
            raise commands.CommandError(
                f"pause reason {reason[:40]!r} is not one of {', '.join(allowed)}")
        await self._pause(agent, True, reason)

    async def _cmd_resume(self, _snapshot: directory.Directory, agent: str,
                          _args: dict[str, Any]) -> None:
        await self._pause(agent, False, "")

    async def _cmd_extend_wrap_up(self, _snapshot: directory.Directory, agent: str,
                                  _args: dict[str, Any]) -> dict[str, Any]:
        """Keep the agent out of the queue `seats.wrap_up_extend_seconds` longer, once per
        wrap-up. Asterisk's own wrap-up (queues.conf wrapuptime) cannot be lengthened for one
        member, so the member is paused with the wrap-up reason until the extended end and
        then unpaused; the seat stays wrap_up all along (seats.WRAP_UP_PAUSE_REASON)."""
        seat = self.board.seat(agent)
        if seat.paused and seat.pause_reason != seats.WRAP_UP_PAUSE_REASON:
            raise commands.CommandError(f"agent {agent} is paused ({seat.pause_reason}); "
                                        "no wrap-up to extend")
        extra = self.settings.seats.wrap_up_extend_seconds
        try:
            until = self.board.extend_wrap_up(agent, extra)
        except seats.WrapUpRefused as exc:
            raise commands.CommandError(str(exc)) from None
        try:
            await self._ami(seats.pause_action(agent, True, seats.WRAP_UP_PAUSE_REASON,
                                               seat.device))
        except BaseException:
            seat.wrap_up_until, seat.wrap_up_extended = until - extra, False
            raise
        self.redis.hset(seats.SEATS_KEY, agent, json.dumps(seat.as_dict()))
        await asyncio.to_thread(publish, self.sessions, WrapUpExtended(
            at=self.clock.time(), agent=agent, wrap_up_until=until))
        self._later(until - self.clock.time(), agent, until)
        return {"wrap_up_until": until}

    def _later(self, delay: float, agent: str, until: float) -> None:
        """End the extended wrap-up of `agent` at `until`, `delay` seconds from now."""
        asyncio.get_running_loop().call_later(
            max(0.0, delay), lambda: self._spawn(self._end_extended_wrap_up(agent, until)))

    async def _end_extended_wrap_up(self, agent: str, until: float) -> None:
        """The extension is over: unpause the member (unless the agent paused or left
        meanwhile), and the seat is ready once Asterisk confirms it."""
        seat = self.board.seats.get(agent)
        if seat is None or (seat.wrap_up_until is not None and seat.wrap_up_until > until):
            return
        if seat.queues and seat.paused and seat.pause_reason == seats.WRAP_UP_PAUSE_REASON:
            try:
                await self._ami(seats.pause_action(agent, False, "", seat.device))
            except (commands.CommandError, AmiError) as exc:
                log.warning("cannot end %s's extended wrap-up: %s", agent, exc)
        self._end_wrap_up(agent, until)

    async def _login(self, client: AmiClient, snapshot: directory.Directory, agent: str,
                     paused: bool, reason: str, device: str = seats.PHONE) -> None:
        queues = [(q.name, dict(q.members)[agent]) for q in snapshot.queues
                  if agent in dict(q.members)]
        if not queues:
            raise commands.CommandError(f"agent {agent} answers no queue")
        for action in seats.login_actions(agent, queues, paused, reason, device):
            await self._ami(action, client, tolerate="Already there")

    async def _pause(self, agent: str, paused: bool, reason: str) -> None:
        if not self.board.seat(agent).queues:
            raise commands.CommandError(f"agent {agent} is not logged in")
        await asyncio.to_thread(remember_login, self.sessions, agent, None, paused, reason)
        await self._ami(seats.pause_action(agent, paused, reason, self.board.seat(agent).device))

    async def _ami(self, action: dict[str, str], client: AmiClient | None = None,
                   tolerate: str = "") -> None:
        client = client or self.client
        if client is None:
            raise commands.Unavailable("the AMI link to Asterisk is down; try again")
        answer = await client.action(action, timeout=5, as_list=False)
        if answer.get("Response") == "Error" and tolerate not in answer.get("Message", "~"):
            raise commands.CommandError(f"Asterisk: {answer.get('Message')}")



def _event_time(event: dict[str, str], received_at: float) -> float:
    """When Asterisk says the event happened, else when it reached us."""
    try:
        stamp = float(event.get("Timestamp") or "nan")
    except ValueError:
        return received_at
    return stamp if stamp > 0 and stamp != float("inf") else received_at


def spied_channel(agent: str, channels: list[dict[str, str]]) -> tuple[str, str] | None:
    """(channel name, call id) of `agent`'s answered, bridged channel on their desk phone
    or their browser softphone, from CoreShowChannel rows; None when they are on no call."""
    pattern = re.compile(rf"PJSIP/{re.escape(agent)}(?:{re.escape(directory.BROWSER_SUFFIX)})?"
                         r"-[0-9a-f]{8}")
    for row in channels:
        if (pattern.fullmatch(row.get("Channel", "")) and row.get("ChannelState") == "6"
                and row.get("BridgeId")):
            return row["Channel"], row.get("Linkedid") or row.get("Uniqueid", "")
    return None


def remember_login(sessions: sessionmaker[Session], agent: str, logged_in: bool | None,
                   paused: bool, reason: str) -> None:
    """Keep the seat state Asterisk must be given back after a restart.
    logged_in: True logs in, False logs out, None only updates the pause of a logged-in seat."""
    with transaction(sessions) as session:
        row = session.scalar(select(SeatLogin).where(SeatLogin.agent_number == agent))
        if logged_in is False:
            if row is not None:
                session.delete(row)
            return
        if row is None:
            if logged_in is None:
                return
            row = SeatLogin(agent_number=agent)
            session.add(row)
        row.paused, row.pause_reason = paused, reason


async def _wait_either(stop: asyncio.Event, other: asyncio.Event,
                       timeout: float | None = None) -> None:
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(other.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
