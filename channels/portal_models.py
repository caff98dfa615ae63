"""Tables of the citizens' portal (公众服务门户): a report waiting for its phone number to be
confirmed, with its photos, and the private tracking links of confirmed reports."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UtcDateTime


class PortalDraft(Base):
    """A report sent from the portal whose phone number is not confirmed yet (待验证). It
    becomes a work order only with the right SMS code; unconfirmed, it expires and goes."""

    __tablename__ = "portal_drafts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 of the link's
    phone: Mapped[str] = mapped_column(String(20), index=True)  # E.164
    code_hash: Mapped[str] = mapped_column(String(64))  # HMAC of the 6-digit code
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # wrong codes so far
    codes_sent: Mapped[int] = mapped_column(Integer, default=1)
    appeal_type: Mapped[str] = mapped_column(String(12))
    category_code: Mapped[str] = mapped_column(String(16))
    category_kind: Mapped[str] = mapped_column(String(10))
    description: Mapped[str] = mapped_column(Text)
    address: Mapped[str] = mapped_column(String(200), default="")
    latitude: Mapped[float | None] = mapped_column(Float, nullable=True)
    longitude: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class PortalDraftPhoto(Base):
    """A checked and re-encoded photo of a draft, kept in the database until the report is
    confirmed (then filed with the order) or expires: never a file without an order."""

    __tablename__ = "portal_draft_photos"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    draft_id: Mapped[int] = mapped_column(ForeignKey("portal_drafts.id", ondelete="CASCADE"),
                                          index=True)
    position: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary)


class PortalTracker(Base):
    """A private tracking link (跟踪链接) of one order: only the SHA-256 of its token is kept."""

    __tablename__ = "portal_trackers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    case_number: Mapped[str] = mapped_column(String(20), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
