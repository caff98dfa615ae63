"""Domain events of the telephony room, published once on the event bus.

Each is an explicit type; consumers (wallboard, work orders, KPIs) read them from Redis.
Times are Unix epoch seconds as Asterisk stamped the AMI event, not the moment we read it.
An event's id (core.events) is what it is about: the call it started or ended, the
agent rung at a moment, the seat's new state and since when; so the same fact seen again
(a call adopted at a resync after a restart) is not published again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from core.events import DomainEvent


@dataclass(frozen=True)
class CallEvent(DomainEvent):
    call_id: str = ""


@dataclass(frozen=True)
class CallStarted(CallEvent):
    """A citizen's call reached the hotline (来电)."""

    type: ClassVar[str] = "call.started"
    caller_number: str = ""
    caller_name: str = ""
    entry_number: str = ""

    def identity(self) -> tuple[object, ...]:
        return (self.call_id,)


@dataclass(frozen=True)
class IvrStep(CallEvent):
    """The caller moved through the IVR (语音导航): a digit, a choice, a route."""

    type: ClassVar[str] = "call.ivr_step"
    node: str = ""
    value: str = ""

    def identity(self) -> tuple[object, ...]:
        return (self.call_id, f"{self.at:.6f}", self.node, self.value)


@dataclass(frozen=True)
class QueueJoined(CallEvent):
    """The caller is waiting in a queue (排队)."""

    type: ClassVar[str] = "call.queue_joined"
    queue: str = ""
    position: int = 0

    def identity(self) -> tuple[object, ...]:
        return (self.call_id, self.queue)


@dataclass(frozen=True)
class AgentRinging(CallEvent):
    type: ClassVar[str] = "call.agent_ringing"
    queue: str = ""
    agent: str = ""

    def identity(self) -> tuple[object, ...]:
        return (self.call_id, self.agent, f"{self.at:.6f}")


@dataclass(frozen=True)
class AgentNoAnswer(CallEvent):
    type: ClassVar[str] = "call.agent_no_answer"
    queue: str = ""
    agent: str = ""
    ring_seconds: float = 0.0

    def identity(self) -> tuple[object, ...]:
        return (self.call_id, self.agent, f"{self.at:.6f}")


@dataclass(frozen=True)
class AgentConnected(CallEvent):
    """An agent answered (接通)."""

    type: ClassVar[str] = "call.agent_connected"
    queue: str = ""
    agent: str = ""
    wait_seconds: float = 0.0

    def identity(self) -> tuple[object, ...]:
        return (self.call_id,)


@dataclass(frozen=True)
class CallAbandoned(CallEvent):
    """The caller hung up while waiting (放弃); short abandons are counted apart."""

    type: ClassVar[str] = "call.abandoned"
    queue: str = ""
    wait_seconds: float = 0.0
    short: bool = False

    def identity(self) -> tuple[object, ...]:
        return (self.call_id,)


@dataclass(frozen=True)
class CallEnded(CallEvent):
    """Every leg has hung up; `record` is the call record as stored."""

    type: ClassVar[str] = "call.ended"
    record: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> tuple[object, ...]:
        return (self.call_id,)


@dataclass(frozen=True)
class SeatChanged(DomainEvent):
    """An agent seat (坐席) changed state: logged_out, ready, ringing, talking, wrap_up or
    paused (with its reason); `previous_seconds` is how long the previous state lasted."""

    type: ClassVar[str] = "seat.changed"
    agent: str = ""
    state: str = ""
    reason: str = ""
    previous_state: str = ""
    previous_seconds: float = 0.0

    def identity(self) -> tuple[object, ...]:
        return (self.agent, self.state, self.reason, f"{self.at:.6f}")


@dataclass(frozen=True)
class WrapUpExtended(DomainEvent):
    """An agent extended their wrap-up (延长话后整理), once for the call: the seat stays
    wrap_up until `wrap_up_until`, and its live state (SEATS_KEY) says so."""

    type: ClassVar[str] = "seat.wrap_up_extended"
    agent: str = ""
    wrap_up_until: float = 0.0

    def identity(self) -> tuple[object, ...]:
        return (self.agent, f"{self.wrap_up_until:.6f}")


@dataclass(frozen=True)
class OutboundCallFailed(DomainEvent):
    """A call the hotline placed (a survey, a callback) was not answered: busy, no answer,
    congestion, or it could not be placed; `reference` is the caller's own id for it."""

    type: ClassVar[str] = "outbound.failed"
    purpose: str = ""
    reference: str = ""
    number: str = ""
    reason: str = ""

    def identity(self) -> tuple[object, ...]:
        return (self.reference,)
