"""Tables of the channels room."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UtcDateTime


class SmsMessage(Base):
    """One text message (短信), to a citizen (out) or from one (in). Outgoing messages wait
    here until the SMS gateway takes them; incoming ones are kept once per gateway id."""

    __tablename__ = "sms_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    direction: Mapped[str] = mapped_column(String(3))  # out | in
    phone: Mapped[str] = mapped_column(String(20), index=True)
    text: Mapped[str] = mapped_column(String(500))
    purpose: Mapped[str] = mapped_column(String(20), default="")  # e.g. survey
    reference: Mapped[str] = mapped_column(String(40), default="")  # e.g. a case number
    # queued|sent|failed|received; opted_out: a notice withheld from a number that opted out
    state: Mapped[str] = mapped_column(String(10), index=True)
    gateway_id: Mapped[str | None] = mapped_column(String(80), unique=True, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # The way out (channels.outbound): tries so far and when the next may start (exponential
    # backoff), the provider that took it and in how many parts, its delivery receipt.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    sending_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    provider: Mapped[str] = mapped_column(String(10), default="")  # twilio | smpp
    parts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(String(200), default="")
    delivery: Mapped[str] = mapped_column(String(12), default="")  # delivered | undelivered
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class SmsPart(Base):
    """One part of an outgoing message as the provider took it (短信分段回执): the provider's
    id for it, which its delivery receipt names."""

    __tablename__ = "sms_message_parts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("sms_messages.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)  # 1..parts
    provider: Mapped[str] = mapped_column(String(10))
    provider_id: Mapped[str] = mapped_column(String(80), index=True)
    delivery: Mapped[str] = mapped_column(String(12), default="")  # delivered | undelivered
    reported_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class SmsOptOut(Base):
    """A number that texted an opt-out word (退订): no notices or surveys by SMS go to it
    until it texts a resubscribe word (订阅). One row a number, kept while opted out."""

    __tablename__ = "sms_opt_outs"

    phone: Mapped[str] = mapped_column(String(20), primary_key=True)  # E.164
    word: Mapped[str] = mapped_column(String(20))  # what the citizen texted
    gateway_id: Mapped[str] = mapped_column(String(80), default="")  # that message's id
    opted_out_at: Mapped[datetime] = mapped_column(UtcDateTime())
