"""Agent seats (坐席状态): who is logged in, ready, ringing, talking, wrapping up or paused,
and since when. Pure: AMI events in, SeatChanged events and finished state intervals out.

Every change is timed by the AMI event that caused it. Wrap-up (话后整理) is enforced by
Asterisk (queues.conf wrapuptime); it starts at AgentComplete's timestamp and ends
`wrapup_seconds` later, which the service marks with `end_wrap_up` at exactly that time.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from telephony.directory import BROWSER_SUFFIX
from telephony.events import SeatChanged

LOGGED_OUT, READY, RINGING, TALKING, WRAP_UP, PAUSED = (
    "logged_out", "ready", "ringing", "talking", "wrap_up", "paused")
STATES = (LOGGED_OUT, READY, RINGING, TALKING, WRAP_UP, PAUSED)
AUTO_PAUSE_REASON = "no-answer"
# An extended wrap-up keeps the agent out of the queue by pausing the member with this reason
# until the extended end: the seat stays wrap_up meanwhile (never paused), and the reason is
# not one an agent may pause with (settings seats.pause_reasons refuse it).
WRAP_UP_PAUSE_REASON = "wrap-up"
SEATS_KEY = "hotline:seats"  # Redis hash: agent -> live seat state (JSON), for desks and wallboards
# An agent answers on the desk phone (PJSIP/8001) or on the desk page's softphone, the
# agent's WebRTC endpoint PJSIP/8001-webrtc; the seat logs in with the one the agent chose.
PHONE, BROWSER = "phone", "browser"
DEVICES = (PHONE, BROWSER)
# A queue member's device names its agent: PJSIP/8001 (or its softphone PJSIP/8001-webrtc)
# is agent 8001 whether it logged in (MemberName 8001) or is a static member of queues.conf
# with any name.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DEVICE = re.compile(r"(?:PJSIP|SIP|IAX2)/([0-9A-Za-z_.-]{1,40}?)"
                     rf"(?:{re.escape(BROWSER_SUFFIX)})?"
                     r"|Local/([0-9]{2,20})@[^/]*(?:/n)?")


def agent_of(event: dict[str, str]) -> str:
    """The agent a queue event (or a QueueStatus member) is about."""
    for key in ("Interface", "Location", "StateInterface"):
        match = _DEVICE.fullmatch(event.get(key, ""))
        if match:
            return match.group(1) or match.group(2)
    return _CONTROL.sub("", event.get("MemberName") or event.get("Name") or "")[:40]


@dataclass
class Seat:
    agent: str
    queues: set[str] = field(default_factory=set)
    paused: bool = False
    pause_reason: str = ""
    device: str = PHONE  # what the seat logged in with: the queue rings it
    activity: str = ""  # "", ringing, talking, wrap_up
    wrap_up_until: float | None = None
    wrap_up_extended: bool = False  # once per wrap-up
    unanswered: int = 0  # rings unanswered in a row
    state: str = LOGGED_OUT
    state_reason: str = ""  # the pause reason while paused
    since: float = 0.0
    totals: dict[str, float] = field(default_factory=dict)

    def derived_state(self) -> tuple[str, str]:
        if not self.queues:
            return LOGGED_OUT, ""
        if self.activity:
            return self.activity, ""
        if self.paused and self.pause_reason == WRAP_UP_PAUSE_REASON:
            return WRAP_UP, ""  # an extended wrap-up until its unpause arrives
        return (PAUSED, self.pause_reason) if self.paused else (READY, "")

    def as_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "state": self.state, "reason": self.state_reason,
                "since": self.since, "wrap_up_until": self.wrap_up_until,
                "wrap_up_extended": self.wrap_up_extended,
                "queues": sorted(self.queues), "unanswered_in_a_row": self.unanswered,
                "seconds_in_state": dict(self.totals)}


class WrapUpRefused(ValueError):
    """The wrap-up cannot be extended: none is running, or it was extended already."""


@dataclass(frozen=True)
class Interval:
    """A finished stretch of one state, for occupancy and pause reports."""

    agent: str
    state: str
    reason: str
    started_at: float
    ended_at: float


class SeatBoard:
    def __init__(self, wrapup_seconds: dict[str, int] | None = None) -> None:
        self.seats: dict[str, Seat] = {}
        self.wrapup_seconds = wrapup_seconds or {}  # queue -> seconds
        self.intervals: list[Interval] = []  # finished, for the service to store and clear
        self._ringing_legs: dict[str, str] = {}  # agent channel uniqueid -> agent

    def seat(self, agent: str) -> Seat:
        return self.seats.setdefault(agent, Seat(agent=agent))

    def restore(self, saved: Iterable[str | bytes]) -> None:
        """Take up the seats as a previous run of the service left them (`Seat.as_dict` as
        JSON): the resync that follows then changes only what really changed meanwhile, and
        a seat keeps its time in state across a restart. A saved seat that cannot be read is
        left to the resync."""
        for raw in saved:
            try:
                data = json.loads(raw)
                agent, state = str(data["agent"]), str(data["state"])
                since, reason = float(data["since"]), str(data.get("reason", ""))
                queues = {str(q) for q in data.get("queues", [])}
                totals = {str(k): float(v) for k, v in
                          dict(data.get("seconds_in_state", {})).items()}
                until = data.get("wrap_up_until")
                until = None if until is None else float(until)
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
            if state not in STATES:
                continue
            seat = self.seat(agent)
            seat.queues, seat.totals = queues, totals
            seat.state, seat.state_reason, seat.since = state, reason, since
            seat.paused = state == PAUSED
            seat.pause_reason = reason if seat.paused else ""
            seat.activity = state if state in (RINGING, TALKING, WRAP_UP) else ""
            if state == WRAP_UP and until is not None:
                seat.wrap_up_until = until
                seat.wrap_up_extended = bool(data.get("wrap_up_extended"))

    def feed(self, event: dict[str, str], received_at: float) -> list[SeatChanged]:
        """The seat changes `event` means; `received_at` times it when Asterisk did not."""
        name = event.get("Event", "")
        if name in ("DialEnd", "Hangup"):  # a rung agent leg ends without AgentRingNoAnswer
            leg = event.get("DestUniqueid") if name == "DialEnd" else event.get("Uniqueid")
            agent = self._ringing_legs.pop(leg or "", "")
            if name == "DialEnd" and event.get("DialStatus") == "ANSWER":
                return []
            name = "AgentDump"
        elif name not in _HANDLED:  # most events: no seat, and no regex run to find one
            return []
        else:
            agent = agent_of(event)
        if not agent or name not in _HANDLED:
            return []
        try:
            at = float(event.get("Timestamp") or "nan")
        except ValueError:
            at = math.nan
        if not math.isfinite(at) or at <= 0:
            at = received_at
        seat = self.seat(agent)
        queue = event.get("Queue", "")
        if name == "QueueMemberAdded":
            seat.queues.add(queue)
            seat.device = BROWSER if event.get("Interface", "").endswith(BROWSER_SUFFIX) \
                else PHONE
            seat.paused, seat.pause_reason = event.get("Paused") == "1", event.get(
                "PausedReason", "")
        elif name == "QueueMemberRemoved":
            seat.queues.discard(queue)
            if not seat.queues:
                seat.activity, seat.paused, seat.pause_reason = "", False, ""
        elif name == "QueueMemberPause":
            seat.paused = event.get("Paused") == "1"
            seat.pause_reason = event.get("PausedReason", "") if seat.paused else ""
            if not seat.paused:
                seat.unanswered = 0
        elif name == "AgentCalled":
            seat.activity = RINGING
            self._ringing_legs[event.get("DestUniqueid", "")] = agent
        elif name == "AgentRingNoAnswer":
            seat.unanswered += 1
            self._ringing_legs.pop(event.get("DestUniqueid", ""), None)
            if seat.activity == RINGING:
                seat.activity = ""
        elif name == "AgentConnect":
            seat.activity, seat.unanswered = TALKING, 0
            self._ringing_legs.pop(event.get("DestUniqueid", ""), None)
        elif name == "AgentComplete":
            wrap = self.wrapup_seconds.get(queue, 0)
            seat.activity = WRAP_UP if wrap > 0 else ""
            seat.wrap_up_until = at + wrap if wrap > 0 else None
            seat.wrap_up_extended = False
        elif name == "AgentDump" and seat.activity == RINGING:  # caller hung up while it rang
            seat.activity = ""
        return self._settle(seat, at)

    def end_wrap_up(self, agent: str, at: float) -> list[SeatChanged]:
        seat = self.seats.get(agent)
        if seat is None or seat.activity != WRAP_UP or seat.wrap_up_until is None:
            return []
        if at < seat.wrap_up_until:
            return []
        seat.activity, seat.wrap_up_until, seat.wrap_up_extended = "", None, False
        return self._settle(seat, at)

    def extend_wrap_up(self, agent: str, seconds: float) -> float:
        """Lengthen the seat's wrap-up (延长话后整理) by `seconds`, once; its new end.
        WrapUpRefused outside wrap-up or for a second time. Keeping the agent out of the
        queue meanwhile is the service's (it pauses the member with WRAP_UP_PAUSE_REASON)."""
        seat = self.seats.get(agent)
        if seat is None or seat.state != WRAP_UP or seat.wrap_up_until is None:
            raise WrapUpRefused(f"agent {agent} is not wrapping up a call")
        if seat.wrap_up_extended:
            raise WrapUpRefused(f"agent {agent} has extended this wrap-up already")
        seat.wrap_up_until += seconds
        seat.wrap_up_extended = True
        return seat.wrap_up_until

    def resync(self, members: list[dict[str, str]], at: float) -> list[SeatChanged]:
        """Match Asterisk's QueueMember list after a reconnect."""
        present: dict[str, list[dict[str, str]]] = {}
        for member in members:
            agent = agent_of(member)
            if agent:
                present.setdefault(agent, []).append(member)
        out: list[SeatChanged] = []
        for agent in set(self.seats) | set(present):
            seat = self.seat(agent)
            rows = present.get(agent, [])
            seat.queues = {row.get("Queue", "") for row in rows}
            seat.paused = any(row.get("Paused") == "1" for row in rows)
            seat.pause_reason = next((row.get("PausedReason", "") for row in rows
                                      if row.get("Paused") == "1"), "")
            if rows:  # what the seat is logged in with, for a pause or a login again
                seat.device = BROWSER if any(
                    (row.get("Location") or row.get("Interface", "")).endswith(BROWSER_SUFFIX)
                    for row in rows) else PHONE
            in_call = any(row.get("InCall") == "1" for row in rows)
            seat.activity = TALKING if in_call else ""
            out += self._settle(seat, at)
        return out

    def _settle(self, seat: Seat, at: float) -> list[SeatChanged]:
        state, reason = seat.derived_state()
        if (state, reason) == (seat.state, seat.state_reason):
            return []
        previous = seat.state
        at = max(at, seat.since)  # a late event never makes a negative interval
        lasted = round(at - seat.since, 3) if seat.since else 0.0
        if seat.since and previous != LOGGED_OUT:
            seat.totals[previous] = round(seat.totals.get(previous, 0.0) + lasted, 3)
            self.intervals.append(Interval(seat.agent, previous, seat.state_reason,
                                           seat.since, at))
        seat.state, seat.state_reason, seat.since = state, reason, at
        return [SeatChanged(at=at, agent=seat.agent, state=state, reason=reason,
                            previous_state=previous, previous_seconds=lasted)]


_HANDLED = {"QueueMemberAdded", "QueueMemberRemoved", "QueueMemberPause", "AgentCalled",
            "AgentRingNoAnswer", "AgentConnect", "AgentComplete", "AgentDump"}


def interface(agent: str, device: str = PHONE) -> str:
    """The PJSIP endpoint the queue rings: the desk phone, or the desk page's softphone."""
    return f"PJSIP/{agent}{BROWSER_SUFFIX if device == BROWSER else ''}"


def login_actions(agent: str, queues: list[tuple[str, int]], paused: bool = False,
                  reason: str = "", device: str = PHONE) -> list[dict[str, str]]:
    """QueueAdd for each (queue, penalty) the agent answers, on the device they chose."""
    return [{"Action": "QueueAdd", "Queue": queue, "Interface": interface(agent, device),
             "Penalty": str(penalty), "MemberName": agent,
             "StateInterface": interface(agent, device),
             "Paused": "true" if paused else "false", "Reason": reason}
            for queue, penalty in queues]


def logout_actions(agent: str, queues: list[str], device: str = PHONE) -> list[dict[str, str]]:
    return [{"Action": "QueueRemove", "Queue": queue, "Interface": interface(agent, device)}
            for queue in queues]


def pause_action(agent: str, paused: bool, reason: str = "",
                 device: str = PHONE) -> dict[str, str]:
    """Pause or resume the agent in every queue at once."""
    return {"Action": "QueuePause", "Interface": interface(agent, device),
            "Paused": "true" if paused else "false", "Reason": reason}
