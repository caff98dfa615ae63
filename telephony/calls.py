"""The call model: AMI events in, live calls and domain events out. Pure: no I/O.

One call per caller, keyed by Asterisk's Linkedid, with its legs (the caller's channel, the
agents' channels), its IVR path, its queue wait, the agents rung, talk and hold time,
transfers, who hung up and why, and recording. Times come from the events' own timestamps
(manager.conf timestampevents), so they are Asterisk's; an Asterisk that does not stamp its
events is timed by when each event arrived. Intervals agree with Asterisk's own whole-second
figures (app_queue's HoldTime, TalkTime, RingTime): where the times disagree with them by a
second or more (a backlog delayed some events) Asterisk's figure is kept. No time of a call
is before it began, and no interval is negative.

Calls the hotline places itself (survey calls, keep-my-place callbacks) say so in channel
variables their Originate sets: their direction, purpose and the citizen's number.

Events may arrive twice (a replay after reconnect) or not at all (missed while disconnected):
duplicates are ignored, and `resync` reconciles with the channels Asterisk really has.
"""

from __future__ import annotations

import logging
import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from telephony.events import (
    AgentConnected,
    AgentNoAnswer,
    AgentRinging,
    CallAbandoned,
    CallEnded,
    CallStarted,
    DomainEvent,
    IvrStep,
    QueueJoined,
)
from telephony.seats import agent_of

log = logging.getLogger(__name__)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
UP = "6"  # AMI ChannelState for an answered channel
RECENT_CALLS_KEPT = 10_000
# Channel variables the dialplan and the IVR set on the caller's leg -> IVR path node names.
IVR_VARIABLES = {"HOTLINE_MENU_CHOICE": "menu", "HOTLINE_IVR_NODE": "node", "HOTLINE_IVR": "ivr",
                 "HOTLINE_TRANSFER": "transfer", "HOTLINE_CASE_QUERY": "case",
                 "HOTLINE_SPOKEN": "spoken"}  # the menu (node) whose answer was said
# Who ended a call: AgentComplete's Reason, else the first own hang-up (a BYE, seen as
# HangupRequest) on the caller's leg or the answering agent's, else a transfer, else the
# system (IVR, queue timeout, PBX).
HANGUP_BY = ("citizen", "agent", "transfer", "system")
_REASONS = {"caller": "citizen", "agent": "agent", "transfer": "transfer"}
TRUNK_CHANNEL = "PJSIP/trunk-"  # the citizen's side of a call the hotline places
LIVE_AUDIO_CHANNEL = "AudioSocket/"  # recordings.live's side channel (no call of its own)


def _stamp(event: dict[str, str], received_at: float) -> float:
    """When Asterisk says the event happened, else when it reached us."""
    try:
        stamp = float(event.get("Timestamp") or "nan")
    except ValueError:
        return received_at
    return stamp if math.isfinite(stamp) and stamp > 0 else received_at


def _figure(event: dict[str, str], key: str, scale: float = 1.0) -> float | None:
    """One of Asterisk's own interval figures (whole seconds, or `scale` for milliseconds)."""
    value = event.get(key, "")
    return int(value) * scale if value.isdigit() and len(value) < 12 else None


def agree(measured: float | None, figure: float | None) -> float | None:
    """An interval as the events' times give it, unless Asterisk's own whole-second figure
    contradicts it: the figure is the difference of two whole-second clocks, so the true
    interval lies within a second of it; further off, the times are wrong (events that
    arrived late, with no Timestamp) and the figure is kept."""
    if figure is None:
        return None if measured is None else max(0.0, round(measured, 3))
    if measured is None or abs(measured - figure) >= 1:
        return float(figure)
    return max(0.0, round(measured, 3))


def _text(value: object, limit: int = 200) -> str:
    """Caller-supplied text (names, numbers) without control characters, bounded;
    Asterisk's "<unknown>" placeholder is no name at all."""
    text = _CONTROL.sub("", str(value or ""))[:limit]
    return "" if text == "<unknown>" else text


@dataclass
class Leg:
    uniqueid: str
    channel: str
    role: str  # caller | agent | other
    number: str
    name: str
    created_at: float
    answered_at: float | None = None
    ended_at: float | None = None
    cause: int | None = None
    cause_text: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class LiveCall:
    call_id: str
    caller_number: str
    caller_name: str
    entry_number: str
    started_at: float
    legs: dict[str, Leg] = field(default_factory=dict)
    ivr_path: list[dict[str, Any]] = field(default_factory=list)
    queue: str | None = None
    queue_position: int | None = None
    queue_joined_at: float | None = None
    queue_left_at: float | None = None
    abandoned: bool = False
    agent_attempts: list[dict[str, Any]] = field(default_factory=list)
    agent: str | None = None
    agent_uniqueid: str = ""  # the leg of the agent who answered (AgentConnect)
    connected_at: float | None = None
    talk_ended_at: float | None = None
    hold_since: dict[str, float] = field(default_factory=dict)
    hold_seconds: float = 0.0
    transfers: list[dict[str, Any]] = field(default_factory=list)
    recording: str | None = None
    incomplete: bool = False
    direction: str = "inbound"  # outbound: a call the hotline placed
    purpose: str = ""  # of an outbound call: survey | callback | desk | consult | agent
    citizen_number: str = ""  # of an outbound call: the number dialled
    citizen_answered: bool = False  # of an outbound call: the citizen picked up
    hangup_by: str = ""
    asterisk_wait: float | None = None  # app_queue's own figures, whole seconds
    asterisk_talk: float | None = None

    @property
    def caller_leg(self) -> Leg | None:
        return self.legs.get(self.call_id) or next(
            (leg for leg in self.legs.values() if leg.role == "caller"), None)

    def at(self, moment: float) -> float:
        """A moment of this call: never before it began."""
        return max(moment, self.started_at)

    def wait_seconds(self) -> float | None:
        if self.queue_joined_at is None:
            return None
        until = self.connected_at or self.queue_left_at or self.ended_at()
        measured = None if until is None else until - self.queue_joined_at
        return agree(measured, self.asterisk_wait)

    def ended_at(self) -> float | None:
        ends = [leg.ended_at for leg in self.legs.values()]
        return None if not ends or None in ends else max(ends)  # type: ignore[type-var]

    def outcome(self) -> str:
        if self.direction == "outbound" and self.queue_joined_at is None:
            return "answered" if self.citizen_answered else "unanswered"
        if self.connected_at is not None:
            return "answered"
        if self.abandoned:
            return "abandoned"
        if self.queue_joined_at is not None:
            return "unanswered"  # left the queue by timeout or with no agent at all
        return "ivr"

    def talk_seconds(self) -> float | None:
        end = self.talk_ended_at or self.ended_at()
        if self.connected_at is None or end is None:
            return None
        return agree(end - self.connected_at, self.asterisk_talk)

    def who_hung_up(self) -> str:
        if self.hangup_by:
            return self.hangup_by
        return "transfer" if self.transfers else "system"

    def record(self, short_abandon_seconds: float) -> dict[str, Any]:
        ended = self.ended_at()
        caller = self.caller_leg
        wait = self.wait_seconds()
        return {
            "call_id": self.call_id,
            "direction": self.direction,
            "purpose": self.purpose,
            "caller_number": self.caller_number,
            "citizen_number": self.citizen_number or (
                self.caller_number if self.direction == "inbound" else ""),
            "caller_name": self.caller_name,
            "entry_number": self.entry_number,
            "started_at": self.started_at,
            "ended_at": ended,
            "duration_seconds": None if ended is None else round(ended - self.started_at, 3),
            "outcome": self.outcome(),
            "queue": self.queue,
            "queue_position": self.queue_position,
            "wait_seconds": wait,
            "short_abandon": bool(self.abandoned and wait is not None
                                  and wait < short_abandon_seconds),
            "agent": self.agent,
            "connected_at": self.connected_at,
            "talk_seconds": self.talk_seconds(),
            "hold_seconds": round(max(0.0, self.hold_seconds), 3),
            "hangup_by": self.who_hung_up(),
            "hangup_cause": caller.cause if caller else None,
            "hangup_cause_text": caller.cause_text if caller else "",
            "ivr_path": self.ivr_path,
            "agent_attempts": self.agent_attempts,
            "transfers": self.transfers,
            "recording": self.recording,
            "legs": [leg.as_dict() for leg in self.legs.values()],
            "incomplete": self.incomplete,
        }


class CallTracker:
    """Feeds on AMI events (dicts of strings); `feed` returns the domain events they mean."""

    def __init__(self, short_abandon_seconds: float = 5.0) -> None:
        self.short_abandon_seconds = short_abandon_seconds
        self.calls: dict[str, LiveCall] = {}
        self._leg_call: dict[str, str] = {}  # uniqueid -> call_id
        self._finished: OrderedDict[str, None] = OrderedDict()
        self.ignored = 0

    # ------------------------------------------------------------------ feeding

    def feed(self, event: dict[str, str], received_at: float) -> list[DomainEvent]:
        """The domain events `event` means; `received_at` times it when Asterisk did not."""
        name = event.get("Event", "")
        if name not in _HANDLERS:  # most of Asterisk's events mean nothing to a call
            return []
        handler = getattr(self, f"_on_{name}")
        try:
            return handler(event, _stamp(event, received_at)) or []
        except (KeyError, ValueError, TypeError) as exc:
            self.ignored += 1
            log.warning("ignoring malformed %s event: %s", event.get("Event"), exc)
            return []

    def _call_of(self, event: dict[str, str], key: str = "Uniqueid") -> LiveCall | None:
        call_id = self._leg_call.get(event.get(key, ""))
        return self.calls.get(call_id) if call_id else None

    def _on_Newchannel(self, e: dict[str, str], at: float) -> list[DomainEvent]:
        uniqueid, linkedid = e["Uniqueid"], e.get("Linkedid") or e["Uniqueid"]
        if uniqueid in self._leg_call or linkedid in self._finished:
            return []  # a replay
        if str(e.get("Channel", "")).startswith(LIVE_AUDIO_CHANNEL):
            return []  # the side channel carrying a caller's voice to live speech: no call
        out: list[DomainEvent] = []
        call = self.calls.get(linkedid)
        if call is None:
            call = LiveCall(call_id=linkedid, caller_number=_text(e.get("CallerIDNum"), 40),
                            caller_name=_text(e.get("CallerIDName"), 100),
                            entry_number=_text(e.get("Exten"), 40), started_at=at)
            self.calls[linkedid] = call
            out.append(CallStarted(call_id=linkedid, at=at, caller_number=call.caller_number,
                                   caller_name=call.caller_name,
                                   entry_number=call.entry_number))
        role = "caller" if uniqueid == linkedid else "other"
        if role == "caller" and out == []:
            # adopted at a resync, the agent's leg may come first: the call is the caller's
            call.caller_number = _text(e.get("CallerIDNum"), 40)
            call.caller_name = _text(e.get("CallerIDName"), 100)
            call.entry_number = _text(e.get("Exten"), 40)
            call.started_at = min(call.started_at, at)
        call.legs[uniqueid] = Leg(uniqueid=uniqueid, channel=_text(e.get("Channel")), role=role,
                                  number=_text(e.get("CallerIDNum"), 40),
                                  name=_text(e.get("CallerIDName"), 100), created_at=call.at(at))
        self._leg_call[uniqueid] = linkedid
        return out

    def _on_Newstate(self, e: dict[str, str], at: float) -> None:
        call = self._call_of(e)
        if call and e.get("ChannelState") == UP:
            leg = call.legs[e["Uniqueid"]]
            leg.answered_at = leg.answered_at or call.at(at)
            if call.direction == "outbound" and leg.channel.startswith(TRUNK_CHANNEL):
                call.citizen_answered = True

    def _on_DTMFEnd(self, e: dict[str, str], at: float) -> list[DomainEvent]:
        call = self._call_of(e)
        if (call is None or e.get("Direction") != "Received"
                or call.legs[e["Uniqueid"]].role != "caller" or call.connected_at):
            return []  # digits to an agent are conversation, not navigation
        at, digit = call.at(at), _text(e.get("Digit"), 1)
        call.ivr_path.append({"at": at, "node": "digit", "value": digit})
        return [IvrStep(call_id=call.call_id, at=at, node="digit", value=digit)]

    def _on_VarSet(self, e: dict[str, str], at: float) -> list[DomainEvent]:
        call = self._call_of(e)
        if call is None:
            return []
        name, value = e.get("Variable", "").lstrip("_"), _text(e.get("Value"))
        if name in ("HOTLINE_RECORDING", "MIXMONITOR_FILENAME"):
            # ours, or a recording any other dialplan started with MixMonitor
            call.recording = call.recording or value or None
        elif name == "HOTLINE_OUTBOUND_PURPOSE" and value:
            call.direction, call.purpose = "outbound", value[:20]
        elif name == "HOTLINE_OUTBOUND_NUMBER" and value:
            call.citizen_number = value[:40]
        elif name in IVR_VARIABLES and call.legs[e["Uniqueid"]].role == "caller":
            at, node = call.at(at), IVR_VARIABLES[name]
            call.ivr_path.append({"at": at, "node": node, "value": value})
            return [IvrStep(call_id=call.call_id, at=at, node=node, value=value)]
        return []

    def _on_QueueCallerJoin(self, e: dict[str, str], at: float) -> list[DomainEvent]:
        call = self._call_of(e)
        if call is None or call.queue_joined_at is not None:
            return []
        call.queue, call.queue_joined_at = _text(e["Queue"], 40), call.at(at)
        call.queue_position = int(e.get("Position") or 0)
        return [QueueJoined(call_id=call.call_id, at=call.queue_joined_at, queue=call.queue,
                            position=call.queue_position)]

    def _on_QueueCallerLeave(self, e: dict[str, str], at: float) -> None:
        call = self._call_of(e)
        if call is not None and call.queue_left_at is None:
            call.queue_left_at = call.at(at)

    def _on_QueueCallerAbandon(self, e: dict[str, str], at: float) -> list[DomainEvent]:
        call = self._call_of(e)
        if call is None or call.abandoned:
            return []
        at = call.at(at)
        call.abandoned = True
        call.queue_left_at = call.queue_left_at or at
        call.asterisk_wait = _figure(e, "HoldTime")
        wait = call.wait_seconds() or 0.0
        return [CallAbandoned(call_id=call.call_id, at=at, queue=call.queue or "",
                              wait_seconds=wait, short=wait < self.short_abandon_seconds)]

    def _on_AgentCalled(self, e: dict[str, str], at: float) -> list[DomainEvent]:
        call = self._call_of(e)
        if call is None:
            return []
        at, agent = call.at(at), agent_of(e)
        dest = call.legs.get(e.get("DestUniqueid", ""))
        if dest is not None:
            dest.role = "agent"
        call.agent_attempts.append({"agent": agent, "queue": _text(e.get("Queue"), 40),
                                    "rang_at": at, "outcome": "ringing", "ended_at": None,
                                    "uniqueid": e.get("DestUniqueid", "")})
        return [AgentRinging(call_id=call.call_id, at=at, queue=_text(e.get("Queue"), 40),
                             agent=agent)]

    def _attempt(self, call: LiveCall, e: dict[str, str]) -> dict[str, Any] | None:
        dest, agent = e.get("DestUniqueid"), agent_of(e)
        for attempt in reversed(call.agent_attempts):
            if attempt["outcome"] == "ringing" and (
                    attempt["uniqueid"] == dest or attempt["agent"] == agent):
                return attempt
        return None

    def _on_AgentRingNoAnswer(self, e: dict[str, str], at: float) -> list[DomainEvent]:
        call = self._call_of(e)
        attempt = self._attempt(call, e) if call else None
        if call is None or attempt is None:
            return []
        at = call.at(at)
        attempt.update(outcome="no_answer", ended_at=at)
        ring = agree(at - attempt["rang_at"], _figure(e, "RingTime", 0.001)) or 0.0
        return [AgentNoAnswer(call_id=call.call_id, at=at, queue=attempt["queue"],
                              agent=attempt["agent"], ring_seconds=ring)]

    def _on_AgentConnect(self, e: dict[str, str], at: float) -> list[DomainEvent]:
        call = self._call_of(e)
        if call is None or call.connected_at is not None:
            return []
        at = call.at(at)
        attempt = self._attempt(call, e)
        if attempt is not None:
            attempt.update(outcome="connected", ended_at=at)
        call.agent, call.connected_at = agent_of(e), at
        call.agent_uniqueid = e.get("DestUniqueid", "")
        call.queue_left_at = call.queue_left_at or at
        call.asterisk_wait = _figure(e, "HoldTime")
        return [AgentConnected(call_id=call.call_id, at=at, queue=_text(e.get("Queue"), 40),
                               agent=call.agent, wait_seconds=call.wait_seconds() or 0.0)]

    def _on_AgentComplete(self, e: dict[str, str], at: float) -> None:
        call = self._call_of(e)
        if call is not None and call.talk_ended_at is None:
            call.talk_ended_at = call.at(at)
            call.asterisk_talk = _figure(e, "TalkTime")
            call.hangup_by = _REASONS.get(e.get("Reason", ""), call.hangup_by)
            self._end_holds(call, call.talk_ended_at)

    def _on_HangupRequest(self, e: dict[str, str], _at: float) -> None:
        """A hang-up the channel's far end asked for (a BYE), not the dialplan: on the
        citizen's own leg, the citizen hung up; on the answering agent's leg, the agent did.
        AgentComplete says so too, but app_queue sends it from a thread of its own, so it
        may come after the last leg's Hangup, when the call's record is already made."""
        call = self._call_of(e)
        if call is None or call.hangup_by:
            return
        uniqueid = e["Uniqueid"]
        if call.legs[uniqueid].role == "caller":
            call.hangup_by = "citizen"
        elif uniqueid == call.agent_uniqueid and not call.transfers:
            call.hangup_by = "agent"  # after a transfer its leg's end is the transfer's

    def _on_DialEnd(self, e: dict[str, str], at: float) -> None:
        call = self._call_of(e)
        attempt = self._attempt(call, e) if call else None
        if call is not None and attempt is not None and e.get("DialStatus") not in (
                "ANSWER", None):
            attempt.update(outcome=e["DialStatus"].lower(), ended_at=call.at(at))

    def _on_Hold(self, e: dict[str, str], at: float) -> None:
        call = self._call_of(e)
        if call is not None:
            call.hold_since.setdefault(e["Uniqueid"], call.at(at))

    def _on_Unhold(self, e: dict[str, str], at: float) -> None:
        call = self._call_of(e)
        if call is not None and e["Uniqueid"] in call.hold_since:
            call.hold_seconds += max(0.0, call.at(at) - call.hold_since.pop(e["Uniqueid"]))

    def _end_holds(self, call: LiveCall, at: float) -> None:
        for uniqueid in list(call.hold_since):
            call.hold_seconds += max(0.0, at - call.hold_since.pop(uniqueid))

    def _on_BlindTransfer(self, e: dict[str, str], at: float) -> None:
        call = self._call_of(e, "TransfererUniqueid")
        if call is not None:
            call.transfers.append({"at": call.at(at), "kind": "blind",
                                   "to": _text(e.get("Extension")),
                                   "context": _text(e.get("Context")),
                                   "result": _text(e.get("Result"))})

    def _on_AttendedTransfer(self, e: dict[str, str], at: float) -> None:
        call = self._call_of(e, "OrigTransfererUniqueid")
        if call is not None:
            # the target is who the transferer consulted (TransferTarget); the second
            # transferer is the agent's own consultation leg, whose number is the agent's
            to = (e.get("TransferTargetCallerIDNum")
                  or e.get("SecondTransfererConnectedLineNum"))
            call.transfers.append({"at": call.at(at), "kind": "attended",
                                   "to": _text(to),
                                   "result": _text(e.get("Result"))})

    def _on_Hangup(self, e: dict[str, str], at: float) -> list[DomainEvent]:
        call = self._call_of(e)
        if call is None:
            return []
        at = call.at(at)
        leg = call.legs[e["Uniqueid"]]
        if leg.ended_at is None:
            leg.ended_at = at
            leg.cause = int(e["Cause"]) if str(e.get("Cause", "")).isdigit() else None
            leg.cause_text = _text(e.get("Cause-txt"), 80)
        return self._finish_if_over(call, at)

    def _finish_if_over(self, call: LiveCall, at: float) -> list[DomainEvent]:
        if call.ended_at() is None:
            return []
        self._end_holds(call, at)
        del self.calls[call.call_id]
        for uniqueid in call.legs:
            self._leg_call.pop(uniqueid, None)
        self._finished[call.call_id] = None
        while len(self._finished) > RECENT_CALLS_KEPT:
            self._finished.popitem(last=False)
        return [CallEnded(call_id=call.call_id, at=at,
                          record=call.record(self.short_abandon_seconds))]

    # ------------------------------------------------------------------ reconciling

    def forget(self, call_id: str) -> LiveCall | None:
        """Drop a live call whose end is known from elsewhere (Asterisk's channel event
        log, telephony.cel) as finished, with no event; the call as it was known."""
        call = self.calls.pop(call_id, None)
        if call is not None:
            for uniqueid in call.legs:
                self._leg_call.pop(uniqueid, None)
        self._finished[call_id] = None
        while len(self._finished) > RECENT_CALLS_KEPT:
            self._finished.popitem(last=False)
        return call

    def resync(self, active: list[dict[str, str]], at: float) -> list[DomainEvent]:
        """Match Asterisk's real channels (CoreShowChannel entries) after a reconnect.

        Legs we track that Asterisk no longer has ended while we were away: they end now,
        their calls are closed and marked incomplete. Channels we never saw are adopted,
        dated back by the age Asterisk gives them (Duration); a caller in Queue() bridged
        to another leg is talking to the agent that leg's device names, since that leg
        began.
        """
        out: list[DomainEvent] = []
        present = {ch.get("Uniqueid", "") for ch in active}
        for call in list(self.calls.values()):
            gone = [leg for leg in call.legs.values()
                    if leg.ended_at is None and leg.uniqueid not in present]
            for leg in gone:
                leg.ended_at, leg.cause_text = call.at(at), "ended while the AMI link was down"
            if gone:
                call.incomplete = True
                out += self._finish_if_over(call, at)
        adopted = [ch for ch in active
                   if ch.get("Uniqueid") and ch["Uniqueid"] not in self._leg_call]
        for channel in adopted:
            began = at - _duration(channel.get("Duration", ""))
            out += self._on_Newchannel({**channel, "Timestamp": repr(began)}, began)
            call = self._call_of(channel)
            if call is not None:
                call.incomplete = True
        for channel in adopted:
            if channel.get("Application") == "Queue" and channel.get("BridgeId"):
                self._adopt_connection(channel, adopted)
        return out

    def _adopt_connection(self, caller: dict[str, str], channels: list[dict[str, str]]
                          ) -> None:
        call = self._call_of(caller)
        agent_leg = next((ch for ch in channels if ch.get("BridgeId") == caller["BridgeId"]
                          and ch.get("Uniqueid") != caller.get("Uniqueid")), None)
        if call is None or agent_leg is None or call.connected_at is not None:
            return
        leg = call.legs.get(agent_leg.get("Uniqueid", ""))
        if leg is None:
            return
        device = re.sub(r"-[0-9a-f]+$", "", agent_leg.get("Channel", ""))  # PJSIP/8101-0005
        leg.role = "agent"
        call.agent_uniqueid = leg.uniqueid
        call.queue = _text(caller.get("ApplicationData", "").split(",")[0], 40) or None
        call.agent, call.connected_at = agent_of({"Interface": device}) or None, leg.created_at


def _duration(text: str) -> float:
    """Seconds in an "HH:MM:SS" Duration (CoreShowChannel); 0 when unreadable."""
    parts = text.split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return 0.0
    hours, minutes, seconds = map(int, parts)
    return float(hours * 3600 + minutes * 60 + seconds)


# the events CallTracker has a handler for (`_on_<Event>`), to skip the rest at one lookup
_HANDLERS = frozenset(name[4:] for name in vars(CallTracker) if name.startswith("_on_"))
