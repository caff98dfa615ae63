"""Display tokens (大屏令牌): how the command hall's display wall opens /board/wall with no
login form, each one issued, listed and revoked on its own.

A token is signed with the session secret for the audience "board-display" and names its
row in display_tokens (agent_desk.models.DisplayToken); the row says whether it still opens
the wall: not revoked, not past expires_at (settings board.display_token_days after it was
issued). `check` is asked on every load of the wall, every renewal of its push ticket and
every push stream it opens (agent_desk.push), so a revoked token stops at the next of them;
and its revocation closes the streams its wall holds open (announce_revoked).
Issuing and revoking are audited (accounts.audit, token_issued / token_revoked, target
"display:<id>"). Read-only: a token reads the board and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session

from accounts import audit
from agent_desk import feed
from agent_desk.models import DisplayToken
from core.errors import HotlineError, NotFound

AUDIENCE = "board-display"
SCOPE = "board.read"
MAX_NAME = 50
TARGET = "display:"  # an audit row's target: display:<id>
REVOKED = "display_revoked"  # the desk feed entry that closes a revoked wall's open streams


class DisplayTokenError(HotlineError):
    """Not a display token of ours, or revoked, or expired (a 401 on the wall)."""

    status = 401


class DisplayConflict(HotlineError):
    status = 409


@dataclass(frozen=True)
class Display:
    id: int
    name: str  # which wall, e.g. 指挥大厅


def _serializer(secret: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt=AUDIENCE)


def issue(session: Session, secret: str, name: str, *, days: int, actor: str, now: datetime,
          address: str = "") -> tuple[DisplayToken, str]:
    """Store a new display token for the wall `name`, audited; the row and the token (shown
    once: it is not stored)."""
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise HotlineError(f"name: a display's name, 1 to {MAX_NAME} characters")
    row = DisplayToken(name=name, created_by=actor[:64], created_at=now,
                       expires_at=now + timedelta(days=days), revoked_at=None, revoked_by="")
    session.add(row)
    session.flush()
    audit.record(session, audit.TOKEN_ISSUED, actor=actor, now=now,
                 target=f"{TARGET}{row.id}", address=address,
                 detail={"name": name, "scope": SCOPE, "days": days})
    token = str(_serializer(secret).dumps({"i": row.id, "n": name, "s": SCOPE}))
    return row, token


def standing(session: Session, display_id: int, now: datetime) -> Display | None:
    """The display of row `display_id` if its token still opens the wall, else None."""
    row = session.get(DisplayToken, display_id)
    if row is None or row.revoked_at is not None or now >= row.expires_at:
        return None
    return Display(row.id, row.name)


def check(session: Session, secret: str, token: str, now: datetime) -> Display:
    """The display a token opens the wall for, or DisplayTokenError saying why not."""
    try:
        body = _serializer(secret).loads(token)
    except BadSignature:
        raise DisplayTokenError("not a display token") from None
    if not isinstance(body, dict) or body.get("s") != SCOPE or not isinstance(
            body.get("i"), int):
        raise DisplayTokenError("not a display token")
    row = session.get(DisplayToken, body["i"])
    if row is None or row.name != body.get("n"):
        raise DisplayTokenError("not a display token")
    if row.revoked_at is not None:
        raise DisplayTokenError("the display token was revoked")
    if now >= row.expires_at:
        raise DisplayTokenError("the display token has expired")
    return Display(row.id, row.name)


def listing(session: Session) -> list[DisplayToken]:
    """Every display token issued, newest first."""
    return list(session.scalars(select(DisplayToken).order_by(DisplayToken.id.desc())))


def revoke(session: Session, display_id: int, *, actor: str, now: datetime,
           address: str = "") -> DisplayToken:
    """Revoke one display token, audited: the wall it opened is refused from its next load,
    push-ticket renewal or push stream."""
    row = session.get(DisplayToken, display_id)
    if row is None:
        raise NotFound(f"display_id: no display token {display_id}")
    if row.revoked_at is not None:
        raise DisplayConflict(f"display_id: display token {display_id} was revoked already")
    row.revoked_at, row.revoked_by = now, actor[:64]
    audit.record(session, audit.TOKEN_REVOKED, actor=actor, now=now,
                 target=f"{TARGET}{row.id}", address=address, detail={"name": row.name})
    return row


def announce_revoked(client: Any, display_id: int) -> None:
    """Tell the push server (a board entry of kind REVOKED) to close the streams the wall of
    `display_id` holds open now, after its revocation is committed: it does not wait for
    their reconnect, where it would be refused anyway."""
    feed.publish(client, feed.BOARD, REVOKED, {"display": display_id})


def state(row: DisplayToken, now: datetime) -> str:
    """active, revoked or expired: what the admin page and the CLI list show."""
    if row.revoked_at is not None:
        return "revoked"
    return "expired" if now >= row.expires_at else "active"
