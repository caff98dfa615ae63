"""Tables of the telephony room: queues, agents and who answers which queue."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    false,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import Base, UtcDateTime

# When a row was written: bookkeeping the database stamps with its own clock, never read by
# domain logic (which is given "now").
_WRITTEN = func.now()


class CallQueue(Base):
    """A call queue (呼叫队列), e.g. general intake or complaints."""

    __tablename__ = "call_queues"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    title: Mapped[str] = mapped_column(String(100))
    strategy: Mapped[str] = mapped_column(String(20), default="rrmemory")
    ring_seconds: Mapped[int] = mapped_column(Integer, default=15)
    retry_seconds: Mapped[int] = mapped_column(Integer, default=2)
    wrapup_seconds: Mapped[int] = mapped_column(Integer, default=0)
    max_waiting: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=_WRITTEN)

    members: Mapped[list[QueueMember]] = relationship(
        back_populates="queue", cascade="all, delete-orphan"
    )


class Agent(Base):
    """An agent (坐席) and the SIP phone at the desk.

    A desk phone either registers with its number and password, or (test kit phones,
    fixed IP phones) is reached at a static contact URI.
    """

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    sip_password: Mapped[str] = mapped_column(String(64))
    static_contact: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=_WRITTEN)

    memberships: Mapped[list[QueueMember]] = relationship(
        back_populates="agent", cascade="all, delete-orphan"
    )


class QueueMember(Base):
    """An agent's place in a queue; lower penalty is offered calls first."""

    __tablename__ = "queue_members"
    __table_args__ = (UniqueConstraint("queue_id", "agent_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    queue_id: Mapped[int] = mapped_column(ForeignKey("call_queues.id", ondelete="CASCADE"))
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    penalty: Mapped[int] = mapped_column(Integer, default=0)

    queue: Mapped[CallQueue] = relationship(back_populates="members")
    agent: Mapped[Agent] = relationship(back_populates="memberships")


class CallRecord(Base):
    """A finished call (通话记录), written once when its last leg hangs up."""

    __tablename__ = "call_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(String(64), unique=True)
    direction: Mapped[str] = mapped_column(String(10), default="inbound")  # | outbound
    purpose: Mapped[str] = mapped_column(String(20), default="")  # outbound: survey | callback
    caller_number: Mapped[str] = mapped_column(String(40), index=True)  # as Asterisk gave it
    citizen_number: Mapped[str] = mapped_column(String(24), index=True, default="")  # E.164
    caller_name: Mapped[str] = mapped_column(String(100), default="")
    entry_number: Mapped[str] = mapped_column(String(40), default="")
    started_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    duration_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    outcome: Mapped[str] = mapped_column(String(20), index=True)
    queue: Mapped[str | None] = mapped_column(String(40), nullable=True)
    queue_position: Mapped[int | None] = mapped_column(Integer, nullable=True)
    wait_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    short_abandon: Mapped[bool] = mapped_column(Boolean, default=False)
    agent: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    connected_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    talk_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    hold_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    hangup_by: Mapped[str] = mapped_column(String(10), default="")  # citizen|agent|transfer|system
    hangup_cause: Mapped[int | None] = mapped_column(Integer, nullable=True)
    hangup_cause_text: Mapped[str] = mapped_column(String(80), default="")
    recording_path: Mapped[str | None] = mapped_column(String(500), nullable=True)
    recording_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    recording_bytes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    incomplete: Mapped[bool] = mapped_column(Boolean, default=False)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The case number (案件编号) of the work order this call belongs to, written by the
    # tickets room through this room's door (records.mark_case) when it links the call.
    case_number: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    # What the call was (话后小结): a code of settings seats.dispositions, and who chose it.
    disposition: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # the database's default only: a Core insert written for an older schema stays valid
    disposition_by: Mapped[str] = mapped_column(String(50), server_default="")
    stored_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=_WRITTEN)
    # The caller (citizen_number) had called in before, within the repeat window: set when
    # the record is stored (telephony.rollups), the rule of telephony.measures' repeat calls.
    # (the database's default only: a Core insert written for an older schema stays valid)
    repeat_caller: Mapped[bool] = mapped_column(Boolean, server_default=false())

    # the call an agent had connected by a moment (telephony.measures: a wrap-up's call)
    __table_args__ = (Index("ix_call_records_agent_connected_at", "agent", "connected_at"),)


class PendingCallDisposition(Base):
    """A disposition chosen before its call's record was stored; applied when it is, if
    `agent` took the call ("" when a supervisor chose it)."""

    __tablename__ = "pending_call_dispositions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(String(64), unique=True)
    code: Mapped[str] = mapped_column(String(40))
    agent: Mapped[str] = mapped_column(String(40))
    chosen_by: Mapped[str] = mapped_column(String(50))
    chosen_at: Mapped[datetime] = mapped_column(UtcDateTime())


class SeatLogin(Base):
    """An agent who should be logged in (签入), kept so a restarted Asterisk gets them back."""

    __tablename__ = "seat_logins"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_number: Mapped[str] = mapped_column(String(20), unique=True)
    logged_in_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=_WRITTEN)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    pause_reason: Mapped[str] = mapped_column(String(40), default="")


class SeatInterval(Base):
    """A finished stretch of one seat state, timed by AMI events (occupancy, pause reports)."""

    __tablename__ = "seat_intervals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_number: Mapped[str] = mapped_column(String(20), index=True)
    state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(40), default="")
    started_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    ended_at: Mapped[datetime] = mapped_column(UtcDateTime())
    seconds: Mapped[float] = mapped_column(Float)


class CallerListEntry(Base):
    """A number on the blocklist (黑名单) or the VIP list (重点来电), until it expires."""

    __tablename__ = "caller_list"
    __table_args__ = (UniqueConstraint("number", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(String(10))  # block | vip
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    note: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=_WRITTEN)


class CallbackRequest(Base):
    """A caller who pressed 1 in the queue to be called back and keep their place (预约回电).

    requested -> holding (a placeholder waits in the queue at the caller's place) ->
    dialling (an agent took the placeholder; the caller's phone rings) -> connected | failed;
    failed -> agent (an agent called the caller back by hand from the desk)
    """

    __tablename__ = "callback_requests"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    caller_number: Mapped[str] = mapped_column(String(40), index=True)
    queue: Mapped[str] = mapped_column(String(40))
    position: Mapped[int] = mapped_column(Integer, default=1)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    call_id: Mapped[str] = mapped_column(String(64), default="")
    state: Mapped[str] = mapped_column(String(12), index=True, default="requested")
    detail: Mapped[str] = mapped_column(String(200), default="")
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=_WRITTEN)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=_WRITTEN)


class SurgeMode(Base):
    """An incident's surge mode (突发事件模式): while a row has no `ended_at`, every caller
    hears its announcement before the menu. `sound` names the announcement's WAV under the
    prompts folder's surge/ (a recording uploaded, or the typed `text` spoken)."""

    __tablename__ = "surge_modes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    text: Mapped[str] = mapped_column(String(500), default="")  # "" for a recording
    sound: Mapped[str] = mapped_column(String(80))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    started_by: Mapped[str] = mapped_column(String(64))
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True, index=True)
    ended_by: Mapped[str] = mapped_column(String(64), default="")


class SipBan(Base):
    """An address banned from SIP (SIP 封禁) after repeated failed registrations or calls.
    It stands until `until` or until someone lifts it (`hotline sip unban`); the row stays
    as its history. Kept here, not in Asterisk, so a ban outlives a restart of either."""

    __tablename__ = "sip_bans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(45), index=True)
    failures: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(200), default="")  # the last failure seen
    banned_at: Mapped[datetime] = mapped_column(UtcDateTime())
    until: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    lifted_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True, index=True)
    lifted_by: Mapped[str] = mapped_column(String(64), default="")  # "" when it expired


class CallHourRollup(Base):
    """Sums of the calls that began in one UTC hour, of one queue ("" for calls that reached
    none), kept by telephony.rollups in the transaction that stores each call."""

    __tablename__ = "call_hour_rollups"

    hour: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    queue: Mapped[str] = mapped_column(String(40), primary_key=True)
    calls: Mapped[int] = mapped_column(Integer, default=0)
    offered: Mapped[int] = mapped_column(Integer, default=0)
    answered: Mapped[int] = mapped_column(Integer, default=0)
    abandoned: Mapped[int] = mapped_column(Integer, default=0)
    unanswered: Mapped[int] = mapped_column(Integer, default=0)
    short_abandons: Mapped[int] = mapped_column(Integer, default=0)
    answered_within_10: Mapped[int] = mapped_column(Integer, default=0)
    answered_within_15: Mapped[int] = mapped_column(Integer, default=0)
    answered_within_20: Mapped[int] = mapped_column(Integer, default=0)
    answered_within_30: Mapped[int] = mapped_column(Integer, default=0)
    answered_within_60: Mapped[int] = mapped_column(Integer, default=0)
    wait_seconds: Mapped[float] = mapped_column(Float, default=0.0)  # of answered calls
    talk_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    hold_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    longest_wait_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    known_number_calls: Mapped[int] = mapped_column(Integer, default=0)
    repeat_calls: Mapped[int] = mapped_column(Integer, default=0)
    # the repeat window the flags were set with; -1 when the hour mixes two windows
    repeat_window_seconds: Mapped[int] = mapped_column(Integer, default=0)
    outbound_calls: Mapped[int] = mapped_column(Integer, default=0)
    outbound_answered: Mapped[int] = mapped_column(Integer, default=0)

