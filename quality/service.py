"""The door of quality review (质检): forms, samples, reviews and their reports.

- **Forms.** An administrator defines a scoring form (评分表): criteria, each with a weight
  and its top points. Defining it again under the same name is a new version; the old one
  is retired but kept, so every past review still shows the criteria it was scored on.
- **Samples.** `draw` picks, for one ISO week of the centre's time zone, a share of each
  agent's answered inbound calls at random, reproducibly: the same seed, week and agent pick
  the same calls. It adds every call of a complaint (投诉) order, every call of an order its
  citizen rated low on the survey, and every call flagged (`flag_call`: a keyword heard by
  the speech side, a reviewer's own pick). A call is sampled once, with all its reasons.
- **Reviews.** A reviewer scores a sampled call on the active form: the weighted score
  (0-100) is sum(weight x points / top) / sum(weight) x 100, worked out once. The agent
  reads their own reviews (never another's); reports average per agent, per queue (the
  centre's teams: the calls answered from that queue) and for the whole centre, and per
  criterion.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.config import Calendar, Quality
from core.errors import HotlineError, NotFound
from quality.models import (
    QualityCriterion,
    QualityFlag,
    QualityForm,
    QualityReview,
    QualitySample,
    QualityScore,
)
from telephony import directory, records
from tickets import call_facts

RANDOM, COMPLAINT, LOW_RATING, FLAG = "random", "complaint", "low_rating", "flag"
MAX_CRITERIA = 20
_ALL_CALLS = 1_000_000  # a week's calls are read whole


class QualityError(HotlineError):
    """A form, sample or review that cannot be taken; says why."""

    status = 400


class AlreadyScored(QualityError):
    status = 409


class NotYours(QualityError):
    status = 403


@dataclass(frozen=True)
class CriterionIn:
    title: str
    weight: int
    max_points: int


# --- forms ----------------------------------------------------------------------------------

def _clean(text: str, field: str, limit: int) -> str:
    text = (text or "").strip()
    if not text:
        raise QualityError(f"{field}: required")
    if len(text) > limit:
        raise QualityError(f"{field}: at most {limit} characters")
    if any(ord(ch) < 32 for ch in text):
        raise QualityError(f"{field}: no control characters")
    return text


def define_form(session: Session, name: str, criteria: Iterable[CriterionIn], *, actor: str,
                now: datetime) -> QualityForm:
    """A new version of the form `name` (version 1 for a new name), which becomes the one
    reviewers score on; the previous version is retired, its criteria untouched."""
    name = _clean(name, "name", 100)
    items = list(criteria)
    if not items:
        raise QualityError("criteria: at least one")
    if len(items) > MAX_CRITERIA:
        raise QualityError(f"criteria: at most {MAX_CRITERIA}")
    titles = set()
    for i, item in enumerate(items, 1):
        title = _clean(item.title, f"criteria[{i}].title", 100)
        if title in titles:
            raise QualityError(f"criteria[{i}].title: {title} is named twice")
        titles.add(title)
        if not 1 <= item.weight <= 100:
            raise QualityError(f"criteria[{i}].weight: a whole number from 1 to 100")
        if not 1 <= item.max_points <= 100:
            raise QualityError(f"criteria[{i}].max_points: a whole number from 1 to 100")
    last = session.scalar(select(QualityForm).where(QualityForm.name == name)
                          .order_by(QualityForm.version.desc()).limit(1))
    for old in session.scalars(select(QualityForm).where(QualityForm.name == name,
                                                         QualityForm.active.is_(True))):
        old.active = False
    form = QualityForm(name=name, version=(last.version + 1) if last else 1, active=True,
                       created_by=actor[:64], created_at=now)
    session.add(form)
    session.flush()
    for position, item in enumerate(items, 1):
        session.add(QualityCriterion(form_id=form.id, position=position,
                                     title=item.title.strip(), weight=item.weight,
                                     max_points=item.max_points))
    session.flush()
    return form


def criteria_of(session: Session, form_id: int) -> list[QualityCriterion]:
    return list(session.scalars(select(QualityCriterion).where(
        QualityCriterion.form_id == form_id).order_by(QualityCriterion.position)))


def form_view(session: Session, form: QualityForm) -> dict[str, Any]:
    return {"id": form.id, "name": form.name, "version": form.version, "active": form.active,
            "created_by": form.created_by, "created_at": form.created_at,
            "criteria": [{"id": c.id, "title": c.title, "weight": c.weight,
                          "max_points": c.max_points} for c in criteria_of(session, form.id)]}


def forms(session: Session, *, active_only: bool = False) -> list[QualityForm]:
    query = select(QualityForm).order_by(QualityForm.name, QualityForm.version.desc())
    if active_only:
        query = query.where(QualityForm.active.is_(True))
    return list(session.scalars(query))


# --- samples --------------------------------------------------------------------------------

def week(day: date, zone: ZoneInfo) -> tuple[str, datetime, datetime]:
    """The ISO week holding `day` in the centre's zone: its name (2026-W48), start, end."""
    year, number, weekday = day.isocalendar()
    monday = day - timedelta(days=weekday - 1)
    start = datetime.combine(monday, time(0), zone).astimezone(UTC)
    end = datetime.combine(monday + timedelta(days=7), time(0), zone).astimezone(UTC)
    return f"{year}-W{number:02d}", start, end


def _zone(zone: str | None) -> ZoneInfo:
    return ZoneInfo(zone or Calendar().timezone)


def _add(session: Session, call: dict[str, Any], reasons: list[str], period: str) -> bool:
    """Sample the call with `reasons`, or add the reasons it lacks; True for a new sample."""
    existing = session.scalar(select(QualitySample).where(
        QualitySample.call_id == call["call_id"]))
    if existing is None:
        row = QualitySample(call_id=call["call_id"], agent=call["agent"],
                            call_started_at=records.as_time(float(call["started_at"])),
                            period=period, reasons=list(reasons), state="pending")
        try:
            with session.begin_nested():  # two draws at once: one inserts, one adds reasons
                session.add(row)
            return True
        except IntegrityError:
            existing = session.scalar(select(QualitySample).where(
                QualitySample.call_id == call["call_id"]))
            if existing is None:
                raise
    missing = [r for r in reasons if r not in (existing.reasons or [])]
    if missing:
        existing.reasons = [*(existing.reasons or []), *missing]
    return False


def _reviewable(call: dict[str, Any] | None) -> bool:
    return bool(call and call.get("agent") and call.get("outcome") == "answered"
                and call.get("started_at") is not None)


def draw(session: Session, day: date, *, now: datetime, zone: str | None = None,
         settings: Quality | None = None) -> list[QualitySample]:
    """Sample the ISO week holding `day`; returns the samples new in this draw. Drawing a
    week again adds what is new (calls since, flags, complaints, ratings) and repeats the
    random pick exactly for the calls it had."""
    rules = settings or Quality()
    period, start, end = week(day, _zone(zone))
    _total, calls = records.find_calls(session, records.CallQuery(
        since=start.timestamp(), until=min(end, now).timestamp(), outcome="answered",
        direction="inbound", limit=_ALL_CALLS))
    calls = [c for c in calls if _reviewable(c)]
    ids = [c["call_id"] for c in calls]
    reasons: dict[str, list[str]] = defaultdict(list)
    by_agent: dict[str, list[str]] = defaultdict(list)
    for call in calls:
        by_agent[call["agent"]].append(call["call_id"])
    for agent, agent_calls in sorted(by_agent.items()):
        picked = _random_pick(sorted(agent_calls), rules.sample_percent, rules.sample_seed,
                              period, agent)
        for call_id in picked:
            reasons[call_id].append(RANDOM)
    for part in _chunks(ids):  # a busy week has more calls than one IN (...) may name
        for call_id, case in call_facts.complaint_calls(session, part).items():
            reasons[call_id].append(f"{COMPLAINT}:{case}")
        for call_id, rating in call_facts.low_rated_calls(session, part,
                                                          rules.low_ratings).items():
            reasons[call_id].append(f"{LOW_RATING}:{rating}")
        for flag in session.scalars(select(QualityFlag).where(QualityFlag.call_id.in_(part))
                                    .order_by(QualityFlag.id)):
            reasons[flag.call_id].append(f"{FLAG}:{flag.reason}")
    by_id = {c["call_id"]: c for c in calls}
    new = [call_id for call_id in sorted(reasons)
           if _add(session, by_id[call_id], reasons[call_id], period)]
    session.flush()
    return [sample for part in _chunks(new) for sample in session.scalars(
        select(QualitySample).where(QualitySample.call_id.in_(part))
        .order_by(QualitySample.call_started_at, QualitySample.id))]


def _chunks(items: list[str], size: int = 500) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _random_pick(call_ids: list[str], percent: int, seed: str, period: str,
                 agent: str) -> list[str]:
    """`percent` of the agent's calls of the period (at least one when there are any and
    the share is above zero), by a generator seeded with the seed, the period and the agent:
    the same inputs pick the same calls on any machine."""
    if not call_ids or percent <= 0:
        return []
    count = min(len(call_ids), max(1, math.ceil(len(call_ids) * percent / 100)))
    return random.Random(f"{seed}|{period}|{agent}").sample(call_ids, count)


def flag_call(session: Session, call_id: str, reason: str, *,
              zone: str | None = None) -> QualitySample | None:
    """Flag a call for review (the speech side's keyword alert, 关键词命中): kept, and the
    call sampled at once when its record is stored (answered by an agent); a call still up
    is sampled at the next draw of its week. Flagging again with the same reason changes
    nothing. The sample, or None while there is none yet."""
    call_id = _clean(call_id, "call_id", 64)
    reason = _clean(reason, "reason", 200)
    if session.scalar(select(QualityFlag.id).where(QualityFlag.call_id == call_id,
                                                   QualityFlag.reason == reason)) is None:
        try:
            with session.begin_nested():
                session.add(QualityFlag(call_id=call_id, reason=reason))
        except IntegrityError:
            pass  # flagged at the same moment by another process: once is enough
    call = records.get_call(session, call_id)
    if not _reviewable(call):
        return None
    assert call is not None
    started = records.as_time(float(call["started_at"]))
    period, _start, _end = week(started.astimezone(_zone(zone)).date(), _zone(zone))
    _add(session, call, [f"{FLAG}:{reason}"], period)
    session.flush()
    return session.scalar(select(QualitySample).where(QualitySample.call_id == call_id))


def pending(session: Session, limit: int = 200, offset: int = 0) -> list[QualitySample]:
    """The reviewer's queue: samples not yet scored, flagged and complained ones first,
    then oldest call first."""
    rows = list(session.scalars(select(QualitySample).where(
        QualitySample.state == "pending").order_by(QualitySample.call_started_at,
                                                   QualitySample.id)))
    rows.sort(key=lambda s: 0 if any(r != RANDOM for r in s.reasons or []) else 1)
    return rows[offset:offset + limit]


def get_sample(session: Session, sample_id: int) -> QualitySample:
    sample = session.get(QualitySample, sample_id)
    if sample is None:
        raise NotFound(f"no sample {sample_id}")
    return sample


def sample_view(sample: QualitySample) -> dict[str, Any]:
    return {"id": sample.id, "call_id": sample.call_id, "agent": sample.agent,
            "call_started_at": sample.call_started_at, "period": sample.period,
            "reasons": list(sample.reasons or []), "state": sample.state}


# --- reviews --------------------------------------------------------------------------------

def score(session: Session, sample_id: int, *, form_id: int, points: dict[int, int],
          comment: str = "", notes: dict[int, str] | None = None, reviewer: str,
          reviewer_agent: str | None = None, now: datetime) -> QualityReview:
    """Score the sampled call on the active form `form_id`: every criterion's points, from
    0 to its top. A sample is scored once (409 after); nobody scores their own call (403)."""
    sample = get_sample(session, sample_id)
    if sample.state != "pending":
        raise AlreadyScored(f"sample {sample_id}: scored already")
    if reviewer_agent and reviewer_agent == sample.agent:
        raise NotYours(f"sample {sample_id}: a reviewer does not score their own call")
    form = session.get(QualityForm, form_id)
    if form is None or not form.active:
        raise QualityError(f"form_id: no active form {form_id}")
    criteria = criteria_of(session, form.id)
    notes = notes or {}
    unknown = set(points) - {c.id for c in criteria}
    if unknown:
        raise QualityError(f"points: {sorted(unknown)[0]} is no criterion of this form")
    total_weight = sum(c.weight for c in criteria)
    weighted = 0.0
    for c in criteria:
        if c.id not in points:
            raise QualityError(f"points.{c.id}: required ({c.title})")
        given = points[c.id]
        if isinstance(given, bool) or not isinstance(given, int) or \
                not 0 <= given <= c.max_points:
            raise QualityError(f"points.{c.id}: a whole number from 0 to {c.max_points}")
        weighted += c.weight * given / c.max_points
    comment = (comment or "").strip()
    if len(comment) > 2000:
        raise QualityError("comment: at most 2000 characters")
    if any(len((notes.get(c.id) or "").strip()) > 500 for c in criteria):
        raise QualityError("notes: at most 500 characters each")
    review = QualityReview(sample_id=sample.id, form_id=form.id, call_id=sample.call_id,
                           agent=sample.agent, reviewer=reviewer[:64],
                           score=round(100 * weighted / total_weight, 1), comment=comment,
                           reviewed_at=now)
    try:
        with session.begin_nested():  # two reviewers at once: one review stands
            session.add(review)
    except IntegrityError:
        raise AlreadyScored(f"sample {sample_id}: scored already") from None
    for c in criteria:
        session.add(QualityScore(review_id=review.id, criterion_id=c.id, points=points[c.id],
                                 comment=(notes.get(c.id) or "").strip()))
    sample.state = "scored"
    session.flush()
    return review


def review_view(session: Session, review: QualityReview) -> dict[str, Any]:
    form = session.get(QualityForm, review.form_id)
    criteria = {c.id: c for c in criteria_of(session, review.form_id)}
    given = session.scalars(select(QualityScore).where(QualityScore.review_id == review.id))
    sample = session.get(QualitySample, review.sample_id)
    return {"id": review.id, "call_id": review.call_id, "agent": review.agent,
            "reviewer": review.reviewer, "score": review.score, "comment": review.comment,
            "reviewed_at": review.reviewed_at,
            "call_started_at": sample.call_started_at if sample else None,
            "form": {"id": form.id, "name": form.name, "version": form.version}
            if form else None,
            "criteria": [{"title": criteria[s.criterion_id].title,
                          "weight": criteria[s.criterion_id].weight,
                          "max_points": criteria[s.criterion_id].max_points,
                          "points": s.points, "comment": s.comment}
                         for s in sorted(given, key=lambda s: criteria[s.criterion_id].position)
                         if s.criterion_id in criteria]}


def reviews_of_agent(session: Session, agent: str, limit: int = 200) -> list[QualityReview]:
    """The agent's own reviews, newest first: what "my scores" shows."""
    if not agent:
        return []
    return list(session.scalars(select(QualityReview).where(QualityReview.agent == agent)
                                .order_by(QualityReview.reviewed_at.desc(),
                                          QualityReview.id.desc()).limit(limit)))


def report(session: Session, since: datetime, until: datetime) -> dict[str, Any]:
    """Reviews of the calls started in [since, until): per agent, per queue (its team: the
    calls answered from it, as the call's record says; a call that came through none is in
    the whole centre's line only) and for the whole centre ("team"), the number reviewed,
    the average weighted score and, per criterion (by its title, across form versions), the
    average share of its top points in percent."""
    rows = session.execute(
        select(QualityReview, QualityScore, QualityCriterion)
        .join(QualitySample, QualitySample.id == QualityReview.sample_id)
        .join(QualityScore, QualityScore.review_id == QualityReview.id)
        .join(QualityCriterion, QualityCriterion.id == QualityScore.criterion_id)
        .where(QualitySample.call_started_at >= since, QualitySample.call_started_at < until))
    given_by_review: dict[int, list[tuple[str, float]]] = defaultdict(list)
    reviews: dict[int, QualityReview] = {}
    for review, given, criterion in rows:
        reviews[review.id] = review
        given_by_review[review.id].append((criterion.title,
                                           100 * given.points / criterion.max_points))
    queue_of = records.queues_of(session, sorted({r.call_id for r in reviews.values()}))
    # the lines' keys: ("agent", 8001), ("queue", intake), ("team", "")
    per_criterion: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(list))
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    for review in reviews.values():
        keys = [("agent", review.agent), ("team", "")]
        if review.call_id in queue_of:
            keys.append(("queue", queue_of[review.call_id]))
        for key in keys:
            scores[key].append(review.score)
            for title, share in given_by_review[review.id]:
                per_criterion[key][title].append(share)

    def averages(key: tuple[str, str]) -> dict[str, Any]:
        return {"reviews": len(scores[key]),
                "average": round(sum(scores[key]) / len(scores[key]), 1)
                if scores[key] else None,
                "criteria": {title: round(sum(v) / len(v), 1)
                             for title, v in sorted(per_criterion[key].items())}}

    return {"since": since, "until": until,
            "agents": [{"agent": agent, **averages(("agent", agent))}
                       for kind, agent in sorted(scores) if kind == "agent"],
            "queues": [{"queue": queue, "title": directory.queue_title(session, queue),
                        **averages(("queue", queue))}
                       for kind, queue in sorted(scores) if kind == "queue"],
            "team": {"agent": None, **averages(("team", ""))}}


def recording_of(session: Session, sample_id: int, recordings_dir: Path) -> Path | None:
    """The sampled call's recording on this host, if it lies in the recordings directory
    and is still there (retention may have deleted it)."""
    sample = get_sample(session, sample_id)
    call = records.get_call(session, sample.call_id)
    stored = (call or {}).get("recording") or {}
    if not stored.get("path"):
        return None
    root = recordings_dir.resolve()
    path = Path(str(stored["path"])).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


def is_flagged(session: Session, call_id: str) -> bool:
    """Whether anything flagged the call (most calls: nothing, and no write to sample)."""
    return session.scalar(select(QualityFlag.id).where(
        QualityFlag.call_id == call_id).limit(1)) is not None


def sample_flagged(session: Session, call_id: str, *,
                   zone: str | None = None) -> QualitySample | None:
    """A call flagged while it was up, now that its record is stored: sampled with its
    flags' reasons. Nothing for a call nobody flagged."""
    reasons = list(session.scalars(select(QualityFlag.reason).where(
        QualityFlag.call_id == call_id).order_by(QualityFlag.id)))
    sample = None
    for reason in reasons:
        sample = flag_call(session, call_id, reason, zone=zone)
    return sample
