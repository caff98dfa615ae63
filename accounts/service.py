"""Who is calling the API: named users with bearer tokens, their workflow roles and whether
they may see citizens' phone numbers (查看号码权限). Tokens are kept only as SHA-256.

Kept deliberately small until the agent desk brings logins; `hotline users add` makes one.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Boolean, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.db import Base, UtcDateTime
from core.errors import HotlineError


class ApiUser(Base):
    __tablename__ = "api_users"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    roles: Mapped[str] = mapped_column(String(200))  # comma-separated workflow roles
    see_phone: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


@dataclass(frozen=True)
class Identity:
    """Who is asking, for every adapter: a person signed in or a machine client's token."""

    name: str
    roles: tuple[str, ...]
    see_phone: bool  # may see citizens' full numbers (查看号码权限)
    department: str | None = None  # a department handler's department code
    agent: str | None = None  # the agent number (directory) a person works as, if any

    @property
    def known(self) -> bool:
        return bool(self.name)


ANONYMOUS = Identity("", (), False)
# Roles of accounts: the workflow's human roles (tickets.workflow, same names) and two more.
OPERATOR, SUPERVISOR, SHIFT_CHIEF = "operator", "supervisor", "shift_chief"
DISPATCHER, DEPARTMENT, ADMIN, AUDITOR = "dispatcher", "department", "admin", "auditor"
ROLES = (OPERATOR, SUPERVISOR, SHIFT_CHIEF, DISPATCHER, DEPARTMENT, ADMIN, AUDITOR)


class AuthError(HotlineError):
    pass


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_user(session: Session, name: str, roles: list[str], see_phone: bool,
             known_roles: tuple[str, ...], *, now: datetime) -> str:
    """Create (or re-key) a user; returns the new token, shown once."""
    if not re.fullmatch(r"[^\x00-\x1f\x7f,]{1,50}", name):
        raise AuthError("name: 1-50 printable characters")
    unknown = [r for r in roles if r not in known_roles]
    if not roles or unknown:
        raise AuthError(f"roles: one or more of {', '.join(known_roles)}")
    token = secrets.token_urlsafe(24)
    user = session.get(ApiUser, name) or ApiUser(name=name, created_at=now)
    user.token_sha256, user.roles, user.see_phone = _digest(token), ",".join(roles), see_phone
    session.add(user)
    session.flush()
    return token


def identify(session: Session, authorization: str | None) -> Identity | None:
    """The user behind an `Authorization: Bearer <token>` header; ANONYMOUS without one,
    None for a token nobody holds."""
    if not authorization:
        return ANONYMOUS
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    user = session.scalar(select(ApiUser).where(
        ApiUser.token_sha256 == _digest(token.strip())))
    if user is None:
        return None
    return Identity(user.name, tuple(user.roles.split(",")), user.see_phone)
