"""Each outgoing message's state (短信发送状态), changed only by conditional updates so that
two workers, or a worker that died, never send a message twice:

    queued --claim--> sending --> sent            (every part taken)
                        |-------> queued (later)  (TemporaryError: backoff, attempts left)
                        |-------> failed          (PermanentError, or attempts used up)
                        '-------> unknown         (UncertainError, or a worker died mid-send)

A message is claimed only when every earlier message to the same number is out of the way
(sent, failed or unknown): a later message never overtakes an earlier one. Delivery receipts
mark each part, and the message `delivered` once all its parts are, `undelivered` as soon as
one is not.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from channels.models import SmsMessage, SmsPart

PENDING = ("queued", "sending")


def waiting(session: Session) -> int:
    """Outgoing messages not sent yet (queued or being sent): the gateway's backlog."""
    return session.scalar(select(func.count()).select_from(SmsMessage).where(
        SmsMessage.direction == "out", SmsMessage.state.in_(PENDING))) or 0


def due_phones(session: Session, now: datetime, limit: int = 200) -> list[str]:
    """Numbers whose first pending message may be tried now."""
    first = (select(SmsMessage.phone, func.min(SmsMessage.id).label("first_id"))
             .where(SmsMessage.direction == "out", SmsMessage.state.in_(PENDING))
             .group_by(SmsMessage.phone).subquery())
    rows = session.execute(
        select(SmsMessage.phone).join(first, SmsMessage.id == first.c.first_id)
        .where(SmsMessage.state == "queued",
               (SmsMessage.next_attempt_at.is_(None)) | (SmsMessage.next_attempt_at <= now))
        .order_by(SmsMessage.id).limit(limit))
    return [phone for (phone,) in rows]


def claim_next(session: Session, phone: str, now: datetime) -> SmsMessage | None:
    """The number's first pending message, now `sending`; None if it is not due, or another
    worker has it."""
    first = session.scalar(select(SmsMessage).where(
        SmsMessage.direction == "out", SmsMessage.phone == phone,
        SmsMessage.state.in_(PENDING)).order_by(SmsMessage.id).limit(1))
    if first is None or first.state != "queued":
        return None
    if first.next_attempt_at is not None and first.next_attempt_at > now:
        return None
    taken = session.execute(update(SmsMessage).where(
        SmsMessage.id == first.id, SmsMessage.state == "queued").values(
        state="sending", sending_at=now, attempts=SmsMessage.attempts + 1))
    if not taken.rowcount:
        return None
    session.refresh(first)
    return first


def parts_taken(session: Session, message_id: int) -> int:
    return session.scalar(select(func.count()).select_from(SmsPart)
                          .where(SmsPart.message_id == message_id)) or 0


def record_part(session: Session, message_id: int, seq: int, provider: str,
                provider_id: str) -> None:
    session.add(SmsPart(message_id=message_id, seq=seq, provider=provider,
                        provider_id=provider_id[:80], delivery=""))
    session.flush()


def _leave_sending(session: Session, message_id: int, **values: object) -> bool:
    done = session.execute(update(SmsMessage).where(
        SmsMessage.id == message_id, SmsMessage.state == "sending").values(**values))
    return bool(done.rowcount)


def mark_sent(session: Session, message_id: int, provider: str, parts: int,
              now: datetime) -> bool:
    done = _leave_sending(session, message_id, state="sent", provider=provider, parts=parts,
                          sent_at=now, next_attempt_at=None, error="")
    message = session.get(SmsMessage, message_id)
    if done and message is not None:
        session.refresh(message)
        _settle(session, message)  # receipts may have come before the last part's answer
    return done


def retry_later(session: Session, message: SmsMessage, error: str, now: datetime, *,
                max_attempts: int, retry_seconds: int) -> str:
    """Back to the queue after 30 s, 60 s, 120 s ... (retry_seconds doubled per try), or
    failed once max_attempts are used; the new state."""
    if message.attempts >= max_attempts:
        _leave_sending(session, message.id, state="failed", error=error[:200])
        return "failed"
    wait = timedelta(seconds=retry_seconds * 2 ** (message.attempts - 1))
    _leave_sending(session, message.id, state="queued", next_attempt_at=now + wait,
                   error=error[:200])
    return "queued"


def fail(session: Session, message_id: int, error: str) -> bool:
    return _leave_sending(session, message_id, state="failed", error=error[:200])


def hold(session: Session, message_id: int, error: str) -> bool:
    """Uncertain: the gateway may have it. Never resent without a person."""
    return _leave_sending(session, message_id, state="unknown", error=error[:200])


def recover(session: Session) -> int:
    """After a worker died: each message left `sending` is `sent` if every one of its parts
    was recorded as taken, else `unknown` (a part may have left before the worker died: not
    resent by itself). Run when the (one) worker starts, before it claims anything."""
    from channels.outbound.parts import split

    stuck = list(session.scalars(select(SmsMessage).where(
        SmsMessage.direction == "out", SmsMessage.state == "sending")))
    for message in stuck:
        taken = list(session.scalars(select(SmsPart).where(SmsPart.message_id == message.id)))
        total = len(split(message.text).texts)
        if len(taken) >= total:
            _leave_sending(session, message.id, state="sent", parts=total,
                           provider=taken[0].provider, sent_at=message.sending_at, error="")
        else:
            hold(session, message.id, "the worker stopped while sending: may have gone out")
    return len(stuck)


def requeue(session: Session, message_id: int, now: datetime) -> bool:
    """A person's decision: send an `unknown` or `failed` message (again), whole."""
    message = session.get(SmsMessage, message_id)
    if message is None or message.direction != "out" or message.state not in ("unknown",
                                                                               "failed"):
        return False
    session.query(SmsPart).filter(SmsPart.message_id == message_id).delete()
    message.state, message.attempts, message.next_attempt_at = "queued", 0, None
    message.error, message.parts, message.delivery, message.delivered_at = "", 0, "", None
    message.sending_at = None
    session.flush()
    return True


def record_receipt(session: Session, provider: str, provider_id: str, delivered: bool,
                   at: datetime) -> SmsMessage | None:
    """A delivery receipt for one part; the message it belongs to, None if unknown."""
    part = session.scalar(select(SmsPart).where(SmsPart.provider == provider,
                                                SmsPart.provider_id == provider_id))
    if part is None:
        return None
    part.delivery, part.reported_at = ("delivered" if delivered else "undelivered"), at
    session.flush()
    message = session.get(SmsMessage, part.message_id)
    assert message is not None
    _settle(session, message)
    return message


def _settle(session: Session, message: SmsMessage) -> None:
    """The message's delivery from its parts' receipts."""
    parts = list(session.scalars(select(SmsPart).where(SmsPart.message_id == message.id)))
    failed = [p.reported_at for p in parts if p.delivery == "undelivered" and p.reported_at]
    if failed:
        message.delivery, message.delivered_at = "undelivered", min(failed)
    elif message.parts and len(parts) >= message.parts and all(
            p.delivery == "delivered" for p in parts):
        message.delivery = "delivered"
        message.delivered_at = max(p.reported_at for p in parts if p.reported_at)
    session.flush()


def listing(session: Session, states: tuple[str, ...] = (), limit: int = 50) -> list[SmsMessage]:
    query = select(SmsMessage).where(SmsMessage.direction == "out")
    if states:
        query = query.where(SmsMessage.state.in_(states))
    return list(session.scalars(query.order_by(SmsMessage.id.desc()).limit(limit)))
