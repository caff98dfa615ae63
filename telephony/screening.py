"""Caller screening (来电甄别): blocked numbers, VIP numbers and repeat callers.

A blocked caller is told so and let go; VIP and repeat callers wait with a higher queue
priority. Entries expire; repeat callers are found in the stored call records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from telephony.directory import DirectoryError
from telephony.models import CallerListEntry, CallRecord

KINDS = ("block", "vip")
VIP_PRIORITY, REPEAT_PRIORITY = 10, 5
_NUMBER = re.compile(r"\+?[0-9]{3,20}")


@dataclass(frozen=True)
class Screening:
    blocked: bool
    vip: bool
    recent_calls: int
    repeat: bool

    @property
    def priority_bonus(self) -> int:
        return VIP_PRIORITY if self.vip else REPEAT_PRIORITY if self.repeat else 0


def normalise(number: str) -> str:
    """Digits only; China's +86/0086 prefix dropped, so one caller is one number."""
    digits = re.sub(r"[^0-9+]", "", number)
    for prefix in ("+86", "0086"):
        if digits.startswith(prefix):
            digits = digits[len(prefix):]
    return digits.lstrip("+")


def screen(session: Session, number: str, now: datetime, repeat_window: timedelta,
           repeat_threshold: int) -> Screening:
    caller = normalise(number)
    kinds = set(session.scalars(select(CallerListEntry.kind).where(
        CallerListEntry.number == caller,
        or_(CallerListEntry.expires_at.is_(None), CallerListEntry.expires_at > now))))
    recent = session.scalar(select(func.count(CallRecord.id)).where(
        CallRecord.caller_number.in_({caller, number}),
        CallRecord.started_at >= now - repeat_window)) or 0
    return Screening(blocked="block" in kinds, vip="vip" in kinds, recent_calls=recent,
                     repeat=bool(caller) and recent >= repeat_threshold)


def add_entry(session: Session, number: str, kind: str, expires_at: datetime | None = None,
              note: str = "", *, now: datetime) -> CallerListEntry:
    caller = normalise(number)
    if kind not in KINDS:
        raise DirectoryError(f"list {kind!r}: one of {', '.join(KINDS)}")
    if not _NUMBER.fullmatch(caller):
        raise DirectoryError(f"number {number!r}: 3-20 digits")
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
        CallerListEntry.number == normalise(number), CallerListEntry.kind == kind))
    if entry is None:
        return False
    session.delete(entry)
    session.flush()
    return True
