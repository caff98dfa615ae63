"""Caller screening (来电甄别): blocked numbers, VIP numbers and repeat callers.

A blocked caller is told so and let go; VIP and repeat callers wait with a higher queue
priority. Entries expire; repeat callers are found in the stored call records.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.orm import Session

from core import phones
from telephony.directory import DirectoryError
from telephony.models import CallerListEntry, CallRecord

KINDS = ("block", "vip")
VIP_PRIORITY, REPEAT_PRIORITY = 10, 5


@dataclass(frozen=True)
class Screening:
    blocked: bool
    vip: bool
    recent_calls: int
    repeat: bool

    @property
    def priority_bonus(self) -> int:
        return VIP_PRIORITY if self.vip else REPEAT_PRIORITY if self.repeat else 0


def screen(session: Session, number: str, now: datetime, repeat_window: timedelta,
           repeat_threshold: int) -> Screening:
    """What the lists and the call records say of a caller; a withheld or unreadable caller
    ID is on no list and never a repeat."""
    caller = phones.normalise_or_empty(number)
    if not caller:
        return Screening(blocked=False, vip=False, recent_calls=0, repeat=False)
    # every call is screened twice (the IVR, the screen pop): the statements are built
    # once and run on the session's connection, a fifth of the ORM's cost a call
    connection = session.connection()
    kinds = set(connection.execute(_LISTED, {"caller": caller, "now": now}).scalars())
    recent = connection.execute(_RECENT, {"caller": caller,
                                          "since": now - repeat_window}).scalar() or 0
    return Screening(blocked="block" in kinds, vip="vip" in kinds, recent_calls=recent,
                     repeat=recent >= repeat_threshold)


_LISTED = select(CallerListEntry.kind).where(
    CallerListEntry.number == bindparam("caller"),
    or_(CallerListEntry.expires_at.is_(None), CallerListEntry.expires_at > bindparam("now")))
_RECENT = select(func.count(CallRecord.id)).where(
    CallRecord.citizen_number == bindparam("caller"), CallRecord.direction == "inbound",
    CallRecord.started_at >= bindparam("since"))


def add_entry(session: Session, number: str, kind: str, expires_at: datetime | None = None,
              note: str = "", *, now: datetime) -> CallerListEntry:
    if kind not in KINDS:
        raise DirectoryError(f"list {kind!r}: one of {', '.join(KINDS)}")
    try:
        caller = phones.normalise(number)
    except phones.PhoneError as exc:
        raise DirectoryError(str(exc)) from None
    if expires_at is not None and expires_at <= now:
        raise DirectoryError("the expiry must be in the future")
    entry = session.scalar(select(CallerListEntry).where(
        CallerListEntry.number == caller, CallerListEntry.kind == kind))
    if entry is None:
        entry = CallerListEntry(number=caller, kind=kind, created_at=now)
        session.add(entry)
    entry.expires_at, entry.note = expires_at, note[:200]
    session.flush()
    return entry


def remove_entry(session: Session, number: str, kind: str) -> bool:
    entry = session.scalar(select(CallerListEntry).where(
        CallerListEntry.number == phones.normalise_or_empty(number),
        CallerListEntry.kind == kind))
    if entry is None:
        return False
    session.delete(entry)
    session.flush()
    return True
