"""Listen, whisper, barge (监听 / 耳语 / 强插): a supervisor joins an agent's live call.

The telephony service places a call to the supervisor's own phone (their desk phone or the
desk page's softphone) that runs ChanSpy on the agent's channel (service.SPY_MODES); here the
request goes to it over the command stream and each session started is written to the audit
log (accounts.audit.CALL_SPIED): who, which agent, which call, which mode. One row per
session started; a refused request (no live call, unknown agent) starts nothing and writes
nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import redis
from sqlalchemy.orm import Session, sessionmaker

from accounts import audit
from core.db import transaction
from telephony import commands

MODES = ("listen", "whisper", "barge")


class NoPhone(commands.CommandError):
    """The supervisor has no agent number, so no phone to be called on."""


def start(client: redis.Redis, sessions: sessionmaker[Session], *, agent: str, mode: str,
          supervisor: str | None, device: str, actor: str, now: datetime,
          address: str = "", detail: dict[str, Any] | None = None,
          timeout: float = 8) -> dict[str, Any]:
    """Start a `mode` session on `agent`'s live call, calling `supervisor`'s phone (their
    agent number) on `device`; returns {mode, call_id, channel, supervisor, device}. Raises
    commands.CommandError when refused, commands.Unavailable when nobody could do it now."""
    if not supervisor:
        raise NoPhone(f"{actor} has no agent number: no phone to listen on")
    result = commands.send(client, "seat.spy", {"agent": agent, "mode": mode,
                                                 "supervisor": supervisor, "device": device},
                           timeout=timeout)
    with transaction(sessions) as session:
        audit.record(session, audit.CALL_SPIED, actor=actor, now=now, target=agent,
                     address=address,
                     detail={**(detail or {}), "agent": agent, "mode": mode,
                             "call_id": result.get("call_id", ""),
                             "supervisor": supervisor, "device": device})
    return result
