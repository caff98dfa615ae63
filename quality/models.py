"""Tables of the quality review room (质检).

A scoring form (质检评分表) is versioned: defining a form again under its name makes a new
version and retires the old one, whose criteria stay as they were, so a review keeps
pointing at the exact criteria it was scored on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UtcDateTime


class QualityForm(Base):
    __tablename__ = "quality_forms"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class QualityCriterion(Base):
    """One criterion of a form version: its weight among the form's, and its top points."""

    __tablename__ = "quality_criteria"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    form_id: Mapped[int] = mapped_column(ForeignKey("quality_forms.id", ondelete="CASCADE"),
                                         index=True)
    position: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(100))
    weight: Mapped[int] = mapped_column(Integer)
    max_points: Mapped[int] = mapped_column(Integer)


class QualitySample(Base):
    """A call chosen for review, once, with every reason it was chosen."""

    __tablename__ = "quality_samples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(String(64), unique=True)
    agent: Mapped[str] = mapped_column(String(40), index=True)
    call_started_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    period: Mapped[str] = mapped_column(String(10), index=True)  # ISO week, 2026-W48
    reasons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    state: Mapped[str] = mapped_column(String(10), default="pending", index=True)  # | scored
    # bookkeeping the database stamps with its own clock; never read by domain logic
    sampled_at: Mapped[datetime] = mapped_column(UtcDateTime(), server_default=func.now())


class QualityFlag(Base):
    """A call flagged for review (a keyword heard, a reviewer's hunch) before or after its
    record is stored; the next sampling of its week turns it into a sample."""

    __tablename__ = "quality_flags"
    __table_args__ = (UniqueConstraint("call_id", "reason"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(String(200))
    # bookkeeping the database stamps with its own clock; never read by domain logic
    flagged_at: Mapped[datetime] = mapped_column(UtcDateTime(), server_default=func.now())


class QualityReview(Base):
    """A reviewer's scoring of a sampled call on one form version: the weighted score
    (0-100) is worked out once, when scored, and never again."""

    __tablename__ = "quality_reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("quality_samples.id", ondelete="CASCADE"),
                                           unique=True)
    form_id: Mapped[int] = mapped_column(ForeignKey("quality_forms.id"))
    call_id: Mapped[str] = mapped_column(String(64), index=True)
    agent: Mapped[str] = mapped_column(String(40), index=True)
    reviewer: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    comment: Mapped[str] = mapped_column(Text, default="")
    reviewed_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class QualityScore(Base):
    """The points one criterion got in a review."""

    __tablename__ = "quality_scores"
    __table_args__ = (UniqueConstraint("review_id", "criterion_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    review_id: Mapped[int] = mapped_column(ForeignKey("quality_reviews.id", ondelete="CASCADE"),
                                           index=True)
    criterion_id: Mapped[int] = mapped_column(ForeignKey("quality_criteria.id"))
    points: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(String(500), default="")
