"""Text messages (短信) with citizens: the outbox the SMS gateway drains, and replies kept
once however often the gateway repeats its webhook."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from channels import optout
from channels.models import SmsMessage
from core import phones
from core.errors import HotlineError
from tickets import surveys

MAX_TEXT = 500
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class SmsError(HotlineError):
    """A message that cannot be taken; the message says which field."""


def _phone(phone: str) -> str:
    try:
        return phones.normalise(phone or "")
    except phones.PhoneError as exc:
        raise SmsError(str(exc)) from None


def queue(session: Session, phone: str, text: str, *, purpose: str = "", reference: str = "",
          now: datetime) -> SmsMessage:
    """A message to a citizen, waiting for the gateway. A notice or survey to a number that
    opted out (channels.optout) is kept as `opted_out` and never sent."""
    body = _CONTROL.sub("", text).strip()
    if not body or len(body) > MAX_TEXT:
        raise SmsError(f"text: 1-{MAX_TEXT} characters")
    number = _phone(phone)
    withheld = purpose in optout.WITHHELD and optout.is_opted_out(session, number)
    message = SmsMessage(direction="out", phone=number, text=body, purpose=purpose[:20],
                         reference=reference[:40], state="opted_out" if withheld else "queued",
                         created_at=now)
    session.add(message)
    session.flush()
    return message


def receive(session: Session, phone: str, text: str, gateway_id: str, *,
            now: datetime) -> tuple[SmsMessage, bool]:
    """A citizen's message as the gateway delivered it; (message, False) for a repeat of a
    gateway id already kept."""
    if not gateway_id or len(gateway_id) > 80:
        raise SmsError("gateway_id: 1-80 characters")
    seen = session.scalar(select(SmsMessage).where(SmsMessage.gateway_id == gateway_id))
    if seen is not None:
        return seen, False
    body = _CONTROL.sub("", text or "").strip()[:MAX_TEXT]
    message = SmsMessage(direction="in", phone=_phone(phone), text=body, state="received",
                         gateway_id=gateway_id, created_at=now)
    try:
        with session.begin_nested():
            session.add(message)
            session.flush()
    except IntegrityError:  # the same webhook, concurrently
        again = session.scalar(select(SmsMessage).where(SmsMessage.gateway_id == gateway_id))
        assert again is not None
        return again, False
    return message, True


def outbox(session: Session, limit: int = 100) -> list[SmsMessage]:
    return list(session.scalars(select(SmsMessage).where(
        SmsMessage.direction == "out", SmsMessage.state == "queued")
        .order_by(SmsMessage.id).limit(limit)))


def mark_sent(session: Session, message_id: int, ok: bool, *, now: datetime) -> bool:
    """The gateway took (or refused) a queued message; False if it was not queued."""
    result = session.execute(update(SmsMessage).where(
        SmsMessage.id == message_id, SmsMessage.state == "queued").values(
        state="sent" if ok else "failed", sent_at=now))
    return bool(result.rowcount)


def about(session: Session, reference: str, limit: int = 50) -> list[SmsMessage]:
    """The messages sent about `reference` (e.g. a case number: its survey's text), oldest
    first; none for an empty reference."""
    if not reference:
        return []
    return list(session.scalars(select(SmsMessage).where(SmsMessage.reference == reference)
                                .order_by(SmsMessage.created_at, SmsMessage.id).limit(limit)))


def _survey_sms(session: Session, phone: str, text: str, case_number: str,
                now: datetime) -> bool:
    """The survey's SMS step (tickets.surveys): queued in the survey's own transaction;
    False when the number opted out (the message is kept, withheld)."""
    message = queue(session, phone, text, purpose="survey", reference=case_number, now=now)
    return message.state != "opted_out"


surveys.send_sms_with(_survey_sms)
