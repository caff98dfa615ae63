"""The alert keywords (告警关键词): the list the operator edits, read by both alert paths.

What a caller says that alerts supervisors (煤气泄漏, 坍塌, 跳楼, 火 ...) is a table, seeded
once from `speech.alert_keywords` when it has never held a word, then edited by the operator
(`hotline speech keywords`, `/api/v1/speech/keywords`). A removed word keeps its row (inactive,
who removed it and when), so an emptied list stays empty and is not seeded again. The live
receiver and the stored transcripts' pass read it through `KeywordCache`, which re-reads the
table when the list's version in Redis moved (each change bumps it).
"""

from __future__ import annotations

import threading
import time
import unicodedata
from collections.abc import Callable
from datetime import datetime

import redis
from sqlalchemy import Boolean, Integer, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from core.db import Base, UtcDateTime, transaction
from core.errors import HotlineError

MAX_WORD = 40
MAX_WORDS = 500
VERSION_KEY = "hotline:speech:keywords:version"
CHECK_SECONDS = 1.0  # how often a cache asks Redis whether the list moved


class KeywordError(HotlineError):
    status = 400


class AlertKeyword(Base):
    __tablename__ = "speech_keywords"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    word: Mapped[str] = mapped_column(String(MAX_WORD), unique=True)
    active: Mapped[bool] = mapped_column(Boolean)
    changed_at: Mapped[datetime] = mapped_column(UtcDateTime())
    changed_by: Mapped[str] = mapped_column(String(64))  # "" for the seeding


def clean(word: str) -> str:
    """A keyword as stored: NFKC, trimmed, one line of letters or digits, bounded."""
    word = unicodedata.normalize("NFKC", str(word)).strip()
    if not word or len(word) > MAX_WORD:
        raise KeywordError(f"word: 1 to {MAX_WORD} characters")
    if any(unicodedata.category(c)[0] in "CZ" for c in word) or not any(
            unicodedata.category(c)[0] in "LN" for c in word):
        raise KeywordError("word: letters or digits, one word without spaces or controls")
    return word


def seed(session: Session, words: tuple[str, ...], now: datetime) -> None:
    """Fill an empty table from the settings' list (once: a table with any row, active or
    removed, is the operator's)."""
    if session.scalar(select(AlertKeyword.id).limit(1)) is not None:
        return
    for word in dict.fromkeys(clean(w) for w in words):
        session.add(AlertKeyword(word=word, active=True, changed_at=now, changed_by=""))
    session.flush()


def current(session: Session) -> tuple[str, ...]:
    """The active keywords, in the order they were added."""
    return tuple(session.scalars(select(AlertKeyword.word).where(
        AlertKeyword.active.is_(True)).order_by(AlertKeyword.id)))


def listing(session: Session) -> list[AlertKeyword]:
    return list(session.scalars(select(AlertKeyword).order_by(AlertKeyword.id)))


def add(session: Session, word: str, *, actor: str, now: datetime) -> bool:
    """Add (or restore) a keyword; whether the list changed."""
    word = clean(word)
    row = session.scalar(select(AlertKeyword).where(AlertKeyword.word == word))
    if row is not None and row.active:
        return False
    if row is None:
        if len(current(session)) >= MAX_WORDS:
            raise KeywordError(f"at most {MAX_WORDS} keywords")
        session.add(AlertKeyword(word=word, active=True, changed_at=now, changed_by=actor))
    else:
        row.active, row.changed_at, row.changed_by = True, now, actor
    session.flush()
    return True


def remove(session: Session, word: str, *, actor: str, now: datetime) -> bool:
    """Remove a keyword (its row stays, inactive); whether the list changed."""
    row = session.scalar(select(AlertKeyword).where(AlertKeyword.word == clean(word)))
    if row is None or not row.active:
        return False
    row.active, row.changed_at, row.changed_by = False, now, actor
    session.flush()
    return True


def changed(client: redis.Redis) -> None:
    """Tell every cache the list moved (after the change is committed)."""
    client.incr(VERSION_KEY)


def seeded(sessions: sessionmaker[Session], words: tuple[str, ...], now: datetime
           ) -> tuple[str, ...]:
    """The active keywords, the table seeded first if it never held one."""
    try:
        with transaction(sessions) as session:
            seed(session, words, now)
    except IntegrityError:  # another process seeded it at the same moment
        pass
    with sessions() as session:
        return current(session)


class KeywordCache:
    """The active keywords for a loop that asks often (each partial text of every live
    stream): re-read from the table when the version in Redis moved, looked at no more than
    once a CHECK_SECONDS."""

    def __init__(self, sessions: sessionmaker[Session], client: redis.Redis,
                 defaults: tuple[str, ...], now: Callable[[], datetime]) -> None:
        self.sessions, self.client, self.defaults, self.now = sessions, client, defaults, now
        self._words: tuple[str, ...] | None = None
        self._version: bytes | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> tuple[str, ...]:
        with self._lock:
            moment = time.monotonic()
            if self._words is not None and moment - self._checked < CHECK_SECONDS:
                return self._words
            self._checked = moment
            version = self.client.get(VERSION_KEY)
            if self._words is None or version != self._version:
                self._version = version
                self._words = seeded(self.sessions, self.defaults, self.now())
            return self._words
