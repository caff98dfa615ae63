"""The audit log (审计日志): who signed in (or failed to), who changed whose roles and
privileges, who saw a citizen's full number, played or downloaded a recording, exported data.

Append-only: this module only adds and reads rows; there is no path in the code that changes
or deletes one, and the database itself refuses UPDATE and DELETE on the table (triggers made
by migration 0015). `record()` adds its row to the caller's session, so it commits or rolls
back with the act it records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, Text, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.db import Base, UtcDateTime
from core.errors import HotlineError

# What is audited. Sign-ins and accounts:
LOGIN, LOGIN_FAILED, LOGOUT = "login", "login_failed", "logout"
ACCOUNT_CREATED, ACCOUNT_DISABLED, ACCOUNT_ENABLED = (
    "account_created", "account_disabled", "account_enabled")
ROLES_CHANGED, PASSWORD_CHANGED = "roles_changed", "password_changed"
TOKEN_ISSUED, TOKEN_REVOKED = "token_issued", "token_revoked"
# ... and reads of personal data:
PHONE_SHOWN = "phone_shown"  # a citizen's number shown unmasked
RECORDING_PLAYED, RECORDING_DOWNLOADED = "recording_played", "recording_downloaded"
EXPORT = "export"
# ... and switches of the centre: surge mode (突发事件模式) on and off
SURGE_ON, SURGE_OFF = "surge_on", "surge_off"
# ... and a supervisor listening, whispering or barging in on an agent's call (监听 / 耳语 /
# 强插): the target is the agent, the detail the call and the mode.
CALL_SPIED = "call_spied"
ACTIONS = (LOGIN, LOGIN_FAILED, LOGOUT, ACCOUNT_CREATED, ACCOUNT_DISABLED, ACCOUNT_ENABLED,
           ROLES_CHANGED, PASSWORD_CHANGED, TOKEN_ISSUED, TOKEN_REVOKED, PHONE_SHOWN,
           RECORDING_PLAYED, RECORDING_DOWNLOADED, EXPORT, SURGE_ON, SURGE_OFF, CALL_SPIED)
# ... and legal holds on recordings (法律保全), placed and released: the target is the call
RECORDING_HELD, RECORDING_RELEASED = "recording_held", "recording_released"
ACTIONS = (*ACTIONS, RECORDING_HELD, RECORDING_RELEASED)
# ... and a transcript shown with its personal data unmasked (通话转写明文), by call and leg
TRANSCRIPT_SHOWN = "transcript_shown"
ACTIONS += (TRANSCRIPT_SHOWN,)
# ... and what retention deletes with a call's recording (the mixed file has its own log,
# recording_deletions): each leg's file and each transcript, with its checksum and why
RECORDING_FILE_DELETED, TRANSCRIPT_DELETED = "recording_file_deleted", "transcript_deleted"
ACTIONS += (RECORDING_FILE_DELETED, TRANSCRIPT_DELETED)
# ... and SIP security: an address banned after failed registrations (by the telephony
# service, actor "sip-guard") or lifted by hand; a desk phone's SIP password shown or rotated
SIP_BANNED, SIP_UNBANNED = "sip_banned", "sip_unbanned"
SIP_PASSWORD_SHOWN, SIP_PASSWORD_ROTATED = "sip_password_shown", "sip_password_rotated"
ACTIONS += (SIP_BANNED, SIP_UNBANNED, SIP_PASSWORD_SHOWN, SIP_PASSWORD_ROTATED)
# ... and the alert keywords (告警关键词) edited: the target is the word, the detail the change
KEYWORDS_CHANGED = "speech_keywords_changed"
ACTIONS += (KEYWORDS_CHANGED,)
MAX_PAGE = 500


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(64), index=True)  # account name; "" anonymous
    action: Mapped[str] = mapped_column(String(32), index=True)
    target: Mapped[str] = mapped_column(String(200), index=True)  # whose / what, e.g. a case
    address: Mapped[str] = mapped_column(String(64))  # the client's address, "" from the CLI
    detail: Mapped[str] = mapped_column(Text)  # JSON object


class AuditError(HotlineError):
    pass


def record(session: Session, action: str, *, actor: str, now: datetime, target: str = "",
           address: str = "", detail: dict[str, Any] | None = None) -> AuditEntry:
    """Add one row to the log in the caller's transaction (flushed, not committed): if the
    act fails and rolls back, so does its row."""
    if action not in ACTIONS:
        raise AuditError(f"audit: unknown action {action!r}")
    entry = AuditEntry(at=now, actor=actor[:64], action=action, target=target[:200],
                       address=address[:64],
                       detail=json.dumps(detail or {}, ensure_ascii=False, sort_keys=True))
    session.add(entry)
    session.flush()
    return entry


@dataclass(frozen=True)
class AuditQuery:
    actor: str | None = None
    action: str | None = None
    target: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    limit: int = 100
    offset: int = 0


def find(session: Session, query: AuditQuery) -> tuple[int, list[AuditEntry]]:
    """(how many match, one page of them, newest first)."""
    if query.action is not None and query.action not in ACTIONS:
        raise AuditError(f"action: one of {', '.join(ACTIONS)}")
    if not 1 <= query.limit <= MAX_PAGE or query.offset < 0:
        raise AuditError(f"limit: 1-{MAX_PAGE}; offset: 0 or more")
    where = []
    if query.actor is not None:
        where.append(AuditEntry.actor == query.actor)
    if query.action is not None:
        where.append(AuditEntry.action == query.action)
    if query.target is not None:
        where.append(AuditEntry.target == query.target)
    if query.since is not None:
        where.append(AuditEntry.at >= query.since)
    if query.until is not None:
        where.append(AuditEntry.at < query.until)
    total = session.scalar(select(func.count(AuditEntry.id)).where(*where)) or 0
    rows = session.scalars(select(AuditEntry).where(*where)
                           .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
                           .limit(query.limit).offset(query.offset)).all()
    return total, list(rows)


def entry_view(entry: AuditEntry) -> dict[str, Any]:
    return {"id": entry.id, "at": entry.at.isoformat(), "actor": entry.actor,
            "action": entry.action, "target": entry.target, "address": entry.address,
            "detail": json.loads(entry.detail)}
