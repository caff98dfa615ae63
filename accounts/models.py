"""The accounts room's tables: people and machine clients (账户), and their bearer tokens."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UtcDateTime


class Account(Base):
    """A person who signs in with a password, or a machine client (the city platform, an
    Open311 client, an SMS gateway) that has no password and calls with bearer tokens."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)  # the sign-in name
    password_hash: Mapped[str | None] = mapped_column(String(200))  # argon2id; None: machine
    roles: Mapped[str] = mapped_column(String(200))  # comma-separated, from service.ROLES
    see_phone: Mapped[bool] = mapped_column(Boolean, default=False)
    department: Mapped[str | None] = mapped_column(String(40))  # a department handler's code
    agent: Mapped[str | None] = mapped_column(String(20))  # the directory agent they work as
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)  # in a row
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Part of the session cookie's user id: raised on sign-out, password change and
    # disabling, so every session signed before then stops working.
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ApiToken(Base):
    """A bearer token `<id>.<secret>`: the id is not secret and finds the row; only the
    SHA-256 of the whole token is kept, compared in constant time."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(200))  # comma-separated roles it may act in
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
