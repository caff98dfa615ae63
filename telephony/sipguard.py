"""SIP security (SIP 安全): addresses that keep failing to authenticate are banned for a while.

Asterisk reports every failed attempt as a security event on AMI (`InvalidPassword`,
`ChallengeResponseFailed`, `FailedACL`, `InvalidAccountID`). The telephony service counts
them per source address (`FailureCounter`); an address that fails `sip.ban_threshold` times
within `sip.ban_window_seconds` is banned for `sip.ban_seconds` (`ban`): a row in sip_bans,
an audit entry and a `SipAddressBanned` event that alerts supervisors. The standing bans are
the deny lines of one global PJSIP ACL, [hotline-bans] in pjsip_bans.conf, which the service
rewrites through AMI `UpdateConfig` and a res_pjsip reload (no restart, no firewall):
Asterisk then answers every request from a banned address with 403 Forbidden. A ban ends when
it expires (by the injected clock) or when `hotline sip unban` lifts it.
"""

from __future__ import annotations

import ipaddress
import weakref
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from accounts import audit
from core.config import Settings
from core.errors import HotlineError
from core.events import DomainEvent
from core.metrics import SIP_GUARD_ADDRESSES, SIP_GUARD_FORGOTTEN
from telephony.models import SipBan

# The security events that count as a failure (a ChallengeSent or SuccessfulAuth does not).
FAILURES = ("InvalidPassword", "ChallengeResponseFailed", "FailedACL", "InvalidAccountID")
BANS_FILE = "pjsip_bans.conf"
BANS_ACL = "hotline-bans"
GUARD = "sip-guard"  # the audit log's actor for bans the service makes itself
# Addresses counted at once. Each holds fewer than ban_threshold times; an address whose
# last failure left the window is forgotten first. Past the cap (failures from more
# addresses than this within one window: a spread-out attack) the least recently failed
# address starts afresh: it gets a few more tries, and memory stays bounded.
MAX_ADDRESSES = 10_000


class SipGuardError(HotlineError):
    """A ban or unban that cannot be done as asked."""


@dataclass(frozen=True)
class SipAddressBanned(DomainEvent):
    """An address failed too often: Asterisk refuses it until `until` (Unix seconds)."""

    type: ClassVar[str] = "sip.banned"
    address: str = ""
    failures: int = 0
    reason: str = ""
    until: float = 0.0

    def identity(self) -> tuple[object, ...]:
        return (self.address, self.at)


def remote_address(field: str) -> str | None:
    """The IP of a security event's RemoteAddress ("IPV4/UDP/127.0.0.9/5060"), or None."""
    parts = field.split("/")
    if len(parts) < 3:
        return None
    try:
        return str(ipaddress.ip_address(parts[2].strip("[]")))
    except ValueError:
        return None


def address(text: str) -> str:
    """An IP address as typed by a person, checked and normalised; SipGuardError if it is not."""
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise SipGuardError(f"address {text!r}: an IPv4 or IPv6 address, e.g. 192.0.2.7"
                            ) from None


_counters: weakref.WeakSet[FailureCounter] = weakref.WeakSet()
SIP_GUARD_ADDRESSES.set_function(lambda: sum(len(c) for c in list(_counters)))


class FailureCounter:
    """Failures per address in a sliding window; says when an address reaches the threshold.
    At most `limit` addresses are counted at once (MAX_ADDRESSES)."""

    def __init__(self, threshold: int, window_seconds: float, never_ban: Iterable[str] = (),
                 limit: int = MAX_ADDRESSES) -> None:
        self.threshold, self.window, self.limit = threshold, window_seconds, limit
        self.never_ban = tuple(ipaddress.ip_network(n, strict=False) for n in never_ban)
        # least recently failed first: an address is moved to the end on each failure
        self._seen: dict[str, deque[float]] = {}
        _counters.add(self)

    def __len__(self) -> int:
        return len(self._seen)

    @classmethod
    def from_settings(cls, settings: Settings) -> FailureCounter:
        sip = settings.sip
        return cls(sip.ban_threshold, sip.ban_window_seconds, sip.never_ban)

    def failed(self, where: str, at: float) -> int | None:
        """Count one failure from `where` at `at`; the count when it reaches the threshold
        (and the address starts afresh), else None."""
        ip = ipaddress.ip_address(where)
        if any(ip in net for net in self.never_ban):
            return None
        seen = self._seen.pop(where, None)
        if seen is None:
            self._make_room(at)
            seen = deque()
        self._seen[where] = seen
        seen.append(at)
        while seen and seen[0] <= at - self.window:
            seen.popleft()
        if len(seen) < self.threshold:
            return None
        count = len(seen)
        del self._seen[where]
        return count

    def forget(self, where: str) -> None:
        self._seen.pop(where, None)

    def _make_room(self, at: float) -> None:
        """Drop the addresses whose failures all left the window, then, while the counter is
        full, the least recently failed ones (counted: hotline_sip_guard_forgotten)."""
        while self._seen:
            oldest = next(iter(self._seen))
            current = self._seen[oldest][-1] > at - self.window
            if current and len(self._seen) < self.limit:
                return
            del self._seen[oldest]
            if current:
                SIP_GUARD_FORGOTTEN.inc()


def standing(session: Session, now: datetime) -> list[SipBan]:
    """The bans in force at `now`, oldest first."""
    return list(session.scalars(
        select(SipBan).where(SipBan.lifted_at.is_(None), SipBan.until > now)
        .order_by(SipBan.banned_at, SipBan.id)))


def ban(session: Session, where: str, failures: int, reason: str, now: datetime,
        seconds: int) -> SipBan | None:
    """Ban `where` from `now` for `seconds`; None if a ban on it stands already."""
    where = address(where)
    if any(b.address == where for b in standing(session, now)):
        return None
    row = SipBan(address=where, failures=failures, reason=reason[:200], banned_at=now,
                 until=now + timedelta(seconds=seconds), lifted_by="")
    session.add(row)
    session.flush()
    audit.record(session, audit.SIP_BANNED, actor=GUARD, now=now, target=where,
                 detail={"failures": failures, "reason": reason[:200],
                         "until": row.until.isoformat()})
    return row


def unban(session: Session, where: str, *, actor: str, now: datetime) -> SipBan:
    """Lift the standing ban on `where` now, by `actor` (audited)."""
    where = address(where)
    row = next((b for b in standing(session, now) if b.address == where), None)
    if row is None:
        raise SipGuardError(f"{where} is not banned")
    row.lifted_at, row.lifted_by = now, actor[:64]
    session.flush()
    audit.record(session, audit.SIP_UNBANNED, actor=actor, now=now, target=where,
                 detail={"banned_at": row.banned_at.isoformat(), "until": row.until.isoformat()})
    return row


def expire(session: Session, now: datetime) -> list[str]:
    """Mark the bans whose time is up as lifted (at their `until`, by nobody)."""
    due = list(session.scalars(
        select(SipBan).where(SipBan.lifted_at.is_(None), SipBan.until <= now)))
    for row in due:
        row.lifted_at = row.until
    session.flush()
    return [row.address for row in due]


def acl_rules(addresses: Sequence[str]) -> list[tuple[str, str]]:
    """The [hotline-bans] ACL's lines: (option, value), one deny per banned address."""
    rules = [("type", "acl")]
    for where in sorted(set(addresses)):
        ip = ipaddress.ip_address(where)
        rules.append(("deny", f"{ip}/{ip.max_prefixlen}"))
    return rules


def acl_update(addresses: Sequence[str]) -> dict[str, str]:
    """The AMI UpdateConfig action that makes pjsip_bans.conf's ACL deny exactly
    `addresses` and reloads res_pjsip, which reads it."""
    action = {"Action": "UpdateConfig", "SrcFilename": BANS_FILE, "DstFilename": BANS_FILE,
              "Reload": "res_pjsip.so",
              "Action-000000": "EmptyCat", "Cat-000000": BANS_ACL}
    for n, (option, value) in enumerate(acl_rules(addresses), start=1):
        action.update({f"Action-{n:06d}": "Append", f"Cat-{n:06d}": BANS_ACL,
                       f"Var-{n:06d}": option, f"Value-{n:06d}": value})
    return action


def acl_read() -> dict[str, str]:
    """The AMI GetConfig action that reads pjsip_bans.conf as Asterisk has it now."""
    return {"Action": "GetConfig", "Filename": BANS_FILE, "Category": BANS_ACL}


def denied(answer: Mapping[str, object]) -> frozenset[str] | None:
    """The addresses a GetConfig answer's [hotline-bans] denies; None if Asterisk has no
    such ACL (an older rendering, a file removed): then it must be written."""
    if answer.get("Response") != "Success":
        return None
    found = set()
    for key, value in answer.items():
        if not key.lower().startswith("line-") or not isinstance(value, str):
            continue
        option, _, rule = value.partition("=")
        if option.strip() != "deny":
            continue
        try:
            found.add(str(ipaddress.ip_network(rule.strip(), strict=False).network_address))
        except ValueError:
            return None  # a line we did not write: rewrite the file
    return frozenset(found)
