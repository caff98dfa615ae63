"""The desk room's own tables: the display wall's tokens (大屏令牌, agent_desk.displays)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UtcDateTime


class DisplayToken(Base):
    """One display token issued: the wall it is for, who issued it and when, until when it
    is good, and when it was revoked (None: it was not). The token itself is signed, never
    stored: it names this row's id, and the row says whether it still opens the wall."""

    __tablename__ = "display_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))  # which wall, e.g. 指挥大厅
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    revoked_by: Mapped[str] = mapped_column(String(64), default="")
