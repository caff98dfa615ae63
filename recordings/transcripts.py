"""Transcripts (通话转写): what the engine heard on each leg of a call, stored, indexed, searched.

A transcript belongs to one recording file (by its SHA-256) and so to one leg of one call: the
caller's (市民) or the agent's (话务员). Its segments (utterances) keep the raw text with word
timings and confidences; every view shows them masked (`recordings.privacy`) unless the viewer
may see personal data, and the search index holds only the masked text cut into words by jieba
(the masked numbers left out). Masked always with the leg's other utterances at hand: a number
read in groups may be cut over several of them (`privacy.find_each`). The index is SQLite's
FTS5 (ranked by bm25) or, on PostgreSQL, a tsvector of the same words taken as they are
(ranked by ts_rank): no parser of either database cuts Chinese, so both index the segmenter's
words.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import jieba
from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text, bindparam, select, text
from sqlalchemy import delete as sql_delete
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.db import Base, UtcDateTime
from core.errors import HotlineError
from core.events import DomainEvent
from recordings import privacy
from recordings.speech import Utterance, join_words

MAX_QUERY = 100
MAX_TERM = 40
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


class TranscriptError(HotlineError):
    status = 400


class Transcript(Base):
    __tablename__ = "transcripts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    call_id: Mapped[str] = mapped_column(String(64), index=True)
    leg: Mapped[str] = mapped_column(String(8))
    engine: Mapped[str] = mapped_column(String(20))
    model: Mapped[str] = mapped_column(String(100))
    text: Mapped[str] = mapped_column(Text)  # raw: shown masked unless privileged
    audio_seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Segment(Base):
    __tablename__ = "transcript_segments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transcript_id: Mapped[int] = mapped_column(
        ForeignKey("transcripts.id", ondelete="CASCADE"), index=True)
    call_id: Mapped[str] = mapped_column(String(64), index=True)
    leg: Mapped[str] = mapped_column(String(8))  # the speaker: caller | agent
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    text: Mapped[str] = mapped_column(Text)
    confidence: Mapped[float] = mapped_column(Float)
    words: Mapped[list[list[Any]]] = mapped_column(JSON)  # [word, start, end, confidence]


# --- segmentation (分词) ----------------------------------------------------------------------

_tokenizer: jieba.Tokenizer | None = None
_tokenizer_lock = threading.Lock()


def load_segmenter() -> None:
    """Load jieba's dictionary now (a worker before it forks), not at the first search."""
    _segmenter()


def _segmenter() -> jieba.Tokenizer:
    """jieba with its own dictionary only, never the alert keywords: every process cuts the
    index and the queries alike whatever keywords it was given (a keyword kept whole, 煤气泄漏,
    would be one query word and miss the calls where 煤气 and 泄漏 were said apart)."""
    global _tokenizer
    if _tokenizer is None:
        with _tokenizer_lock:
            if _tokenizer is None:
                jieba.setLogLevel(logging.WARNING)
                tokenizer = jieba.Tokenizer()
                tokenizer.initialize()
                _tokenizer = tokenizer
    return _tokenizer


def _normal(value: str) -> str:
    return unicodedata.normalize("NFKC", _CONTROL.sub(" ", value)).lower()


def _useful(word: str) -> bool:
    return (0 < len(word) <= MAX_TERM and "*" not in word
            and any(unicodedata.category(c)[0] in "LN" for c in word))


def index_terms(left_out: str) -> list[str]:
    """What the index holds of a segment: its text with the numbers left out
    (`privacy.for_index_each`) cut in jieba's search mode (a long word and the shorter words
    in it), in order, repeats kept (a word said three times counts three times in the
    ranking)."""
    spoken = join_words(_normal(left_out).split())  # vosk spaces every word
    return [w for w in (w.strip() for w in _segmenter().cut_for_search(spoken, HMM=False))
            if _useful(w)]


def _lexeme(word: str) -> str:
    return "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"


def tsvector_literal(terms: list[str]) -> str:
    """PostgreSQL's tsvector of `terms` with their positions, as its text form."""
    positions: dict[str, list[int]] = {}
    for position, term in enumerate(terms[:16_000], start=1):
        positions.setdefault(term, []).append(position)
    return " ".join(f"{_lexeme(t)}:{','.join(map(str, p[:200]))}" for t, p in positions.items())


def query_words(query: str) -> list[str]:
    """The query cut as precisely as jieba cuts (each of its words is one the index holds)."""
    masked = _normal(privacy.for_index(query))
    seen: dict[str, None] = {}
    for part in masked.split():
        for word in _segmenter().cut(part, HMM=False):
            word = word.strip()
            if _useful(word):
                seen.setdefault(word, None)
    return list(seen)


# --- storing --------------------------------------------------------------------------------


def find_transcript(session: Session, sha256: str) -> Transcript | None:
    return session.scalar(select(Transcript).where(Transcript.sha256 == sha256))


def store(session: Session, *, sha256: str, call_id: str, leg: str, engine: str, model: str,
          utterances: list[Utterance], audio_seconds: float, now: datetime) -> Transcript:
    """Store a recording's transcript and index it, once: a checksum stored already keeps
    the transcript it has."""
    have = find_transcript(session, sha256)
    if have is not None:
        return have
    transcript = Transcript(sha256=sha256, call_id=call_id, leg=leg, engine=engine,
                            model=model, text="\n".join(u.text for u in utterances),
                            audio_seconds=audio_seconds, created_at=now)
    session.add(transcript)
    session.flush()
    for utterance, left_out in zip(utterances, privacy.for_index_each(utterances),
                                   strict=True):
        segment = Segment(transcript_id=transcript.id, call_id=call_id, leg=leg,
                          start=utterance.start, end=utterance.end, text=utterance.text,
                          confidence=round(utterance.confidence, 3),
                          words=[[w.text, w.start, w.end, w.confidence]
                                 for w in utterance.words])
        session.add(segment)
        session.flush()
        terms = index_terms(left_out)
        if not terms:
            continue
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("INSERT INTO transcript_index (segment_id, terms, tsv) "
                                 "VALUES (:id, :terms, CAST(:tsv AS tsvector))"),
                            {"id": segment.id, "terms": " ".join(terms),
                             "tsv": tsvector_literal(terms)})
        else:
            session.execute(text("INSERT INTO transcript_index (segment_id, terms) "
                                 "VALUES (:id, :terms)"),
                            {"id": segment.id, "terms": " ".join(terms)})
    return transcript


# --- reading --------------------------------------------------------------------------------


def call_transcripts(session: Session, call_id: str, *, unmasked: bool = False
                     ) -> list[dict[str, Any]]:
    """The call's transcripts, one per leg, each with its segments in time order: masked
    unless `unmasked` (for a viewer allowed to see personal data; the caller audits it).
    A masked transcript's whole text is its masked segments, one a line."""
    out = []
    for transcript in session.scalars(select(Transcript).where(Transcript.call_id == call_id)
                                      .order_by(Transcript.leg)):
        segments = segments_of(session, transcript)
        found = [[] for _ in segments] if unmasked else privacy.find_each(segments)
        texts = [s.text if unmasked else privacy.mask_found(s.text, f)
                 for s, f in zip(segments, found, strict=True)]
        out.append({
            "leg": transcript.leg, "sha256": transcript.sha256, "engine": transcript.engine,
            "model": transcript.model, "audio_seconds": transcript.audio_seconds,
            "created_at": transcript.created_at,
            "text": transcript.text if unmasked else "\n".join(texts),
            "segments": [{"speaker": s.leg, "start": s.start, "end": s.end,
                          "text": shown, "confidence": s.confidence,
                          "words": [] if f else [  # the words would give the digits away
                              {"word": w[0], "start": w[1], "end": w[2], "confidence": w[3]}
                              for w in s.words]}
                         for s, f, shown in zip(segments, found, texts, strict=True)]})
    return out


@dataclass(frozen=True)
class Hit:
    call_id: str
    leg: str
    sha256: str
    offset_seconds: float  # where the matching utterance starts in the leg's recording
    end_seconds: float
    text: str  # masked
    score: float  # higher is better


def search(session: Session, query: str, *, limit: int = 20, offset: int = 0
           ) -> tuple[list[str], list[Hit]]:
    """(the query's words, the utterances having all of them, best first)."""
    if len(query) > MAX_QUERY:
        raise TranscriptError(f"q: at most {MAX_QUERY} characters")
    words = query_words(query)
    if not words:
        return [], []
    if session.get_bind().dialect.name == "postgresql":
        tsquery = " & ".join(_lexeme(w) for w in words)
        rows = session.execute(text(
            "SELECT i.segment_id, ts_rank(i.tsv, CAST(:q AS tsquery), 1) AS score "
            "FROM transcript_index i WHERE i.tsv @@ CAST(:q AS tsquery) "
            "ORDER BY score DESC, i.segment_id LIMIT :limit OFFSET :offset"),
            {"q": tsquery, "limit": limit, "offset": offset}).all()
        scored = [(r[0], float(r[1])) for r in rows]
    else:
        match = " AND ".join('"' + w.replace('"', '""') + '"' for w in words)
        rows = session.execute(text(
            "SELECT segment_id, bm25(transcript_index) AS rank FROM transcript_index "
            "WHERE transcript_index MATCH :q ORDER BY rank, segment_id "
            "LIMIT :limit OFFSET :offset"),
            {"q": match, "limit": limit, "offset": offset}).all()
        scored = [(int(r[0]), -float(r[1])) for r in rows]  # bm25: lower is better
    if not scored:
        return words, []
    segments = {s.id: s for s in session.scalars(
        select(Segment).where(Segment.id.in_([sid for sid, _ in scored])))}
    shas = {t.id: t.sha256 for t in session.scalars(select(Transcript).where(
        Transcript.id.in_({s.transcript_id for s in segments.values()})))}
    excerpts = _masked_with_their_legs(session, set(shas))
    hits = []
    for sid, score in scored:
        s = segments.get(sid)
        if s is not None:
            hits.append(Hit(call_id=s.call_id, leg=s.leg, sha256=shas[s.transcript_id],
                            offset_seconds=s.start, end_seconds=s.end,
                            text=excerpts[sid], score=round(score, 6)))
    return words, hits


def _masked_with_their_legs(session: Session, transcript_ids: set[int]) -> dict[int, str]:
    """segment id -> its text masked, each transcript's utterances together: a number may
    run on from the one before (`privacy.find_each`). Their texts and times only."""
    legs: dict[int, list[Any]] = {}
    for row in session.execute(select(
            Segment.id, Segment.transcript_id, Segment.text, Segment.start, Segment.end).where(
            Segment.transcript_id.in_(transcript_ids))):
        legs.setdefault(row.transcript_id, []).append(row)
    return {row.id: masked for said in legs.values()
            for row, masked in zip(said, privacy.mask_each(said), strict=True)}


def index_rows(session: Session) -> list[str]:
    """Every term list in the search index (for the checks that nothing personal is in it)."""
    return [r[0] for r in session.execute(text("SELECT terms FROM transcript_index"))]


def forget_call(session: Session, call_id: str) -> list[Transcript]:
    """Delete the call's transcripts, their segments and their rows of the search index
    (retention deleted the recordings they were heard from); the transcripts deleted. The
    index rows go by hand: SQLite's FTS5 table knows no foreign key."""
    gone = list(session.scalars(select(Transcript).where(Transcript.call_id == call_id)))
    if not gone:
        return []
    segment_ids = list(session.scalars(select(Segment.id).where(
        Segment.transcript_id.in_([t.id for t in gone]))))
    for i in range(0, len(segment_ids), 500):
        session.execute(delete_index, {"ids": segment_ids[i:i + 500]})
    session.execute(sql_delete(Segment).where(Segment.id.in_(segment_ids))
                    .execution_options(synchronize_session=False))
    for transcript in gone:
        session.delete(transcript)
    session.flush()
    return gone


delete_index = text("DELETE FROM transcript_index WHERE segment_id IN :ids").bindparams(
    bindparam("ids", expanding=True))


# --- keyword alerts (关键词告警) ----------------------------------------------------------------


@dataclass(frozen=True)
class KeywordHeard(DomainEvent):
    """A configured keyword (煤气泄漏, 坍塌, 跳楼 ...) was said in a call: supervisors are
    alerted. Once per call and keyword: heard live (`live`, recordings.live) during the call,
    the stored transcript's pass later raises no second alert."""

    type: ClassVar[str] = "speech.keyword"
    call_id: str = ""
    leg: str = ""
    sha256: str = ""
    keyword: str = ""
    offset_seconds: float = 0.0
    excerpt: str = ""  # the utterance, masked
    live: bool = False  # heard on the live stream (no recording yet: sha256 empty)

    def identity(self) -> tuple[object, ...]:
        return (self.call_id, self.keyword)


def keyword_hits(transcript: Transcript, segments: list[Segment], keywords: tuple[str, ...],
                 at: float) -> list[KeywordHeard]:
    """One event per keyword heard, at the first utterance that has it."""
    events: dict[str, KeywordHeard] = {}
    in_order = sorted(segments, key=lambda s: s.start)
    for segment, masked in zip(in_order, privacy.mask_each(in_order), strict=True):
        spoken = join_words(_normal(segment.text).split())
        for keyword in keywords:
            if keyword not in events and _normal(keyword) in spoken:
                events[keyword] = KeywordHeard(
                    at=at, call_id=transcript.call_id, leg=transcript.leg,
                    sha256=transcript.sha256, keyword=keyword,
                    offset_seconds=segment.start, excerpt=masked[:200])
    return list(events.values())


def segments_of(session: Session, transcript: Transcript) -> list[Segment]:
    return list(session.scalars(select(Segment).where(
        Segment.transcript_id == transcript.id).order_by(Segment.start, Segment.id)))
