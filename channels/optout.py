"""Opting out of the hotline's text messages (短信退订) and back in (订阅), per number.

A citizen who texts only an opt-out word (退订, TD, STOP ...: `sms.opt_out_words`) gets no
more notices or survey messages (`WITHHELD`) until they text a resubscribe word. What they
ask for themselves still reaches them: a verification code, the answer to a report they
just sent, the confirmation of the opt-out itself.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from channels.models import SmsOptOut
from core.db import insert_on_conflict

# The purposes an opted-out number no longer gets: what the hotline sends unasked.
WITHHELD = frozenset({"notice", "survey"})


def keyword(text: str) -> str:
    """The message as a keyword: full-width folded (NFKC), case folded, without spaces or
    punctuation around or inside ("  退订。" and "ＴＤ" are "退订" and "td")."""
    folded = unicodedata.normalize("NFKC", text or "").casefold()
    return "".join(c for c in folded if not (c.isspace() or unicodedata.category(c)[0] == "P"))


def is_word(text: str, words: Iterable[str]) -> bool:
    """Whether the whole message is one of `words` (never a word inside a longer text: "T"
    ends nobody's notices by starting a sentence)."""
    said = keyword(text)
    return bool(said) and said in {keyword(w) for w in words}


def is_opted_out(session: Session, phone: str) -> bool:
    """`phone` in its stored form (E.164)."""
    return session.get(SmsOptOut, phone) is not None


def opt_out(session: Session, phone: str, word: str, gateway_id: str, now: datetime) -> None:
    """Remember the opt-out; a number already out stays out from its first time."""
    table = SmsOptOut.__table__
    session.execute(insert_on_conflict(session, table).values(
        phone=phone, word=word[:20], gateway_id=gateway_id[:80], opted_out_at=now)
        .on_conflict_do_nothing(index_elements=[table.c.phone]))


def resubscribe(session: Session, phone: str) -> bool:
    """Forget the opt-out; False if the number was not opted out."""
    return bool(session.execute(delete(SmsOptOut).where(SmsOptOut.phone == phone)).rowcount)


def opted_out_since(session: Session, phone: str) -> datetime | None:
    return session.scalar(select(SmsOptOut.opted_out_at).where(SmsOptOut.phone == phone))
