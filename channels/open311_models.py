"""Tables of the Open311 GeoReport v2 channel: the clients' API keys and what each request
posted through it brought beyond the work order itself."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UtcDateTime


class Open311Key(Base):
    """An API key (`api_key`) of one Open311 client (an app, a city platform): `<id>.<secret>`;
    the id is not secret and finds the row, only the SHA-256 of the whole key is kept."""

    __tablename__ = "open311_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    client: Mapped[str] = mapped_column(String(60), index=True)
    key_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class Open311Request(Base):
    """A service request posted over Open311: the work order it became (its case number is
    the `service_request_id`), the token a client may look it up by, and the fields the
    order has no place for. The e-mail, device and account ids are the client's and the
    citizen's: kept, never shown to another client."""

    __tablename__ = "open311_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_number: Mapped[str] = mapped_column(String(16), unique=True)
    token: Mapped[str] = mapped_column(String(32), unique=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("open311_keys.id"), index=True)
    service_code: Mapped[str] = mapped_column(String(20))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON)
    email: Mapped[str] = mapped_column(String(200), default="")
    device_id: Mapped[str] = mapped_column(String(100), default="")
    account_id: Mapped[str] = mapped_column(String(100), default="")
    media_url: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
