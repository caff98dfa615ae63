"""People and machine clients (账户): accounts with roles, passwords and bearer tokens, and who
is asking (`Identity`) for every adapter.

People sign in with a name and a password (argon2id); after `attempts` wrong passwords in a
row an account is locked for a while (锁定). Machine clients (the city platform, Open311
clients, SMS gateways) have no password: they call with bearer tokens, each scoped to some
of the account's roles, of which only a SHA-256 is kept. Every change to an account is written
to the audit log in the same transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from accounts import audit
from accounts.models import Account, ApiToken
from core.config import Settings
from core.errors import HotlineError


@dataclass(frozen=True)
class Identity:
    """Who is asking, for every adapter: a person signed in or a machine client's token."""

    name: str
    roles: tuple[str, ...]
    see_phone: bool  # may see citizens' full numbers (查看号码权限)
    department: str | None = None  # a department handler's department code
    agent: str | None = None  # the agent number (directory) a person works as, if any
    account_id: int | None = None
    token_id: str | None = None  # the bearer token it came with; None: a signed-in person

    @property
    def known(self) -> bool:
        return bool(self.name)


ANONYMOUS = Identity("", (), False)
# Roles of accounts: the workflow's human roles (tickets.workflow, same names) and two more.
# operator is the hotline agent (话务员/受理员).
OPERATOR, SUPERVISOR, SHIFT_CHIEF = "operator", "supervisor", "shift_chief"
DISPATCHER, DEPARTMENT, ADMIN, AUDITOR = "dispatcher", "department", "admin", "auditor"
ROLES = (OPERATOR, SUPERVISOR, SHIFT_CHIEF, DISPATCHER, DEPARTMENT, ADMIN, AUDITOR)
MIN_PASSWORD, MAX_PASSWORD = 10, 256


class AuthError(HotlineError):
    pass


@dataclass(frozen=True)
class Lockout:
    """How many wrong passwords in a row lock an account, and for how long."""

    attempts: int = 5
    minutes: int = 15

    @classmethod
    def from_settings(cls, settings: Settings) -> Lockout:
        return cls(settings.accounts.lockout_attempts, settings.accounts.lockout_minutes)


_hasher = PasswordHasher()  # argon2id with the library's recommended parameters


@cache
def _decoy_hash() -> str:
    """Verified against when the name is unknown, so a wrong name takes as long as a wrong
    password and does not tell which names exist."""
    return _hasher.hash(secrets.token_hex(16))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[^\x00-\x20\x7f,:.][^\x00-\x1f\x7f,:]{0,48}[^\x00-\x20\x7f,:]|"
                        r"[^\x00-\x20\x7f,:.]", name):
        raise AuthError("name: 1-50 printable characters, no comma or colon, no space at "
                        "either end")
    return name


def _check_roles(roles: list[str] | tuple[str, ...], allowed: tuple[str, ...] = ROLES,
                 what: str = "roles") -> tuple[str, ...]:
    unknown = [r for r in roles if r not in allowed]
    if not roles or unknown:
        raise AuthError(f"{what}: one or more of {', '.join(allowed)}")
    return tuple(r for r in allowed if r in roles)  # one order, no repeats


def _check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD or "\x00" in password:
        raise AuthError(f"password: {MIN_PASSWORD}-{MAX_PASSWORD} characters")
    return password


def _check_binding(roles: tuple[str, ...], department: str | None, agent: str | None,
                   strict: bool = True) -> None:
    if (department and DEPARTMENT not in roles) or (strict and DEPARTMENT in roles
                                                     and not department):
        raise AuthError("department: a department handler needs its department code "
                        "(and only they have one)")
    if department is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", department):
        raise AuthError("department: a department code, e.g. sanitation")
    if agent is not None and not re.fullmatch(r"[0-9]{2,20}", agent):
        raise AuthError("agent: an agent number, e.g. 8001")


def get_account(session: Session, name: str) -> Account:
    account = session.scalar(select(Account).where(Account.name == name))
    if account is None:
        raise AuthError(f"no account {name!r}")
    return account


def accounts(session: Session) -> list[Account]:
    return list(session.scalars(select(Account).order_by(Account.name)))


def roles_of(account: Account) -> tuple[str, ...]:
    return tuple(r for r in account.roles.split(",") if r)


def identity_of(account: Account, scope: tuple[str, ...] | None = None,
                token_id: str | None = None) -> Identity:
    roles = roles_of(account)
    if scope is not None:
        roles = tuple(r for r in roles if r in scope)
    return Identity(account.name, roles, account.see_phone, account.department,
                    account.agent, account.id, token_id)


def check_account(name: str, roles: list[str] | tuple[str, ...], department: str | None,
                  agent: str | None) -> None:
    """What create_account refuses without looking at the database (the CLI asks before
    it prompts for a password)."""
    _check_name(name)
    _check_binding(_check_roles(roles), department, agent)


def create_account(session: Session, name: str, roles: list[str] | tuple[str, ...], *,
                   password: str | None, see_phone: bool = False, department: str | None = None,
                   agent: str | None = None, actor: str, now: datetime,
                   address: str = "", strict: bool = True) -> Account:
    """A person (with a password) or a machine client (password None)."""
    checked = _check_roles(roles)
    _check_binding(checked, department, agent, strict)
    if session.scalar(select(Account.id).where(Account.name == _check_name(name))):
        raise AuthError(f"name: an account {name!r} exists already")
    account = Account(name=name, roles=",".join(checked), see_phone=see_phone,
                      department=department, agent=agent, disabled=False, failed_logins=0,
                      session_epoch=0, created_at=now,
                      password_hash=None if password is None
                      else _hasher.hash(_check_password(password)))
    session.add(account)
    session.flush()
    audit.record(session, audit.ACCOUNT_CREATED, actor=actor, now=now, target=name,
                 address=address, detail={"roles": list(checked), "see_phone": see_phone,
                                          "department": department, "agent": agent,
                                          "machine": password is None})
    return account


def set_password(session: Session, name: str, password: str, *, actor: str, now: datetime,
                 address: str = "") -> None:
    """A new password; it also lifts a lockout and ends the account's sessions."""
    account = get_account(session, name)
    account.password_hash = _hasher.hash(_check_password(password))
    account.failed_logins, account.locked_until = 0, None
    account.session_epoch += 1
    audit.record(session, audit.PASSWORD_CHANGED, actor=actor, now=now, target=name,
                 address=address)


def set_roles(session: Session, name: str, roles: list[str] | tuple[str, ...], *,
              see_phone: bool, department: str | None, agent: str | None, actor: str,
              now: datetime, address: str = "", strict: bool = True) -> Account:
    """Replace an account's roles, its privilege to see numbers and what it is bound to."""
    account = get_account(session, name)
    checked = _check_roles(roles)
    _check_binding(checked, department, agent, strict)
    before = {"roles": list(roles_of(account)), "see_phone": account.see_phone,
              "department": account.department, "agent": account.agent}
    after = {"roles": list(checked), "see_phone": see_phone, "department": department,
             "agent": agent}
    account.roles, account.see_phone = ",".join(checked), see_phone
    account.department, account.agent = department, agent
    audit.record(session, audit.ROLES_CHANGED, actor=actor, now=now, target=name,
                 address=address, detail={"before": before, "after": after})
    return account


def set_disabled(session: Session, name: str, disabled: bool, *, actor: str, now: datetime,
                 address: str = "") -> None:
    """A disabled account is nobody: it cannot sign in, its sessions end, its tokens fail."""
    account = get_account(session, name)
    account.disabled = disabled
    account.session_epoch += 1
    audit.record(session, audit.ACCOUNT_DISABLED if disabled else audit.ACCOUNT_ENABLED,
                 actor=actor, now=now, target=name, address=address)


def issue_token(session: Session, name: str, scope: list[str] | tuple[str, ...] | None, *,
                actor: str, now: datetime, address: str = "") -> str:
    """A new bearer token for the account, acting in `scope` (some of its roles; None: all
    of them). Returned once: only its SHA-256 is kept."""
    account = get_account(session, name)
    granted = roles_of(account)
    checked = granted if scope is None else _check_roles(scope, granted, "scope")
    token_id = secrets.token_hex(8)
    token = f"{token_id}.{secrets.token_urlsafe(32)}"
    session.add(ApiToken(id=token_id, account_id=account.id, token_sha256=_digest(token),
                         scope=",".join(checked), created_at=now))
    audit.record(session, audit.TOKEN_ISSUED, actor=actor, now=now, target=name,
                 address=address, detail={"token": token_id, "scope": list(checked)})
    session.flush()
    return token


def revoke_token(session: Session, token_id: str, *, actor: str, now: datetime,
                 address: str = "") -> None:
    row = session.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None:
        raise AuthError(f"no token {token_id!r} in force")
    row.revoked_at = now
    owner = session.get(Account, row.account_id)
    audit.record(session, audit.TOKEN_REVOKED, actor=actor, now=now,
                 target=owner.name if owner else "", address=address,
                 detail={"token": token_id})


def tokens_of(session: Session, name: str) -> list[ApiToken]:
    account = get_account(session, name)
    return list(session.scalars(select(ApiToken).where(ApiToken.account_id == account.id)
                                .order_by(ApiToken.created_at, ApiToken.id)))


def add_user(session: Session, name: str, roles: list[str], see_phone: bool,
             known_roles: tuple[str, ...] = ROLES, *, now: datetime,
             department: str | None = None, agent: str | None = None) -> str:
    """A machine client with these roles (created, or given these roles and a new token
    with its old ones revoked); returns the token, shown once. For scripts and tests: a
    department handler made here may lack its department (and then sees no department's
    orders)."""
    checked = _check_roles(roles, tuple(r for r in ROLES if r in known_roles))
    actor = "add_user"
    if session.scalar(select(Account.id).where(Account.name == _check_name(name))) is None:
        create_account(session, name, checked, password=None, see_phone=see_phone,
                       department=department, agent=agent, actor=actor, now=now,
                       strict=False)
    else:
        account = get_account(session, name)
        set_roles(session, name, checked, see_phone=see_phone, department=department,
                  agent=agent, actor=actor, now=now, strict=False)
        session.execute(update(ApiToken).where(ApiToken.account_id == account.id,
                                               ApiToken.revoked_at.is_(None))
                        .values(revoked_at=now))
    return issue_token(session, name, None, actor=actor, now=now)


_TOKEN_ID = re.compile(r"[0-9a-f]{16}")


def identify(session: Session, authorization: str | None) -> Identity | None:
    """The account behind an `Authorization: Bearer <token>` header; ANONYMOUS without one,
    None for a token nobody holds (or revoked, or its account disabled)."""
    if not authorization:
        return ANONYMOUS
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    # New tokens carry their row's id before the dot; tokens from before migration 0015
    # have none, and their row's id is the start of their SHA-256.
    digest = _digest(token)
    token_id = token.split(".", 1)[0] if "." in token else digest[:16]
    if not _TOKEN_ID.fullmatch(token_id):
        return None
    row = session.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None \
            or not hmac.compare_digest(row.token_sha256, digest):
        return None
    account = session.get(Account, row.account_id)
    if account is None or account.disabled:
        return None
    return identity_of(account, tuple(row.scope.split(",")), token_id)


# ------------------------------------------------------------------------------ signing in

@dataclass(frozen=True)
class SignIn:
    """What a sign-in attempt came to: the account, or why it was refused."""

    account: Account | None
    refusal: str = ""  # "credentials" (wrong name or password) or "locked"
    locked_until: datetime | None = None


def sign_in(session: Session, name: str, password: str, *, lockout: Lockout, now: datetime,
            address: str) -> SignIn:
    """Check a person's password. Failures are counted and audited in the caller's
    transaction, which commits either way: a refused sign-in is a fact to keep."""
    name = re.sub(r"[\x00-\x1f\x7f]", "\ufffd", name)[:50]  # kept as typed, but storable
    # FOR UPDATE: two wrong passwords at once count twice (PostgreSQL; SQLite's write
    # transaction holds the whole database already)
    account = session.scalar(select(Account).where(Account.name == name).with_for_update()) \
        if name else None
    if account is not None and account.locked_until is not None \
            and account.locked_until > now:
        audit.record(session, audit.LOGIN_FAILED, actor=name, now=now, target=name,
                     address=address, detail={"reason": "locked"})
        return SignIn(None, "locked", account.locked_until)
    if account is None or account.password_hash is None:
        _verify(_decoy_hash(), password)
        reason = "no such account" if account is None else "no password (machine client)"
        audit.record(session, audit.LOGIN_FAILED, actor=name, now=now, target=name,
                     address=address, detail={"reason": reason})
        return SignIn(None, "credentials")
    if not _verify(account.password_hash, password) or account.disabled:
        reason = "disabled" if account.disabled else "wrong password"
        detail: dict[str, object] = {"reason": reason}
        if not account.disabled:
            account.failed_logins += 1
            if account.failed_logins >= lockout.attempts:
                account.failed_logins, account.locked_until = 0, \
                    now + timedelta(minutes=lockout.minutes)
                detail["locked_until"] = account.locked_until.isoformat()
        audit.record(session, audit.LOGIN_FAILED, actor=name, now=now, target=name,
                     address=address, detail=detail)
        return SignIn(None, "credentials")
    account.failed_logins, account.locked_until = 0, None
    if _hasher.check_needs_rehash(account.password_hash):
        account.password_hash = _hasher.hash(password)
    audit.record(session, audit.LOGIN, actor=name, now=now, target=name, address=address)
    return SignIn(account)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def sign_out(session: Session, account_id: int, *, now: datetime, address: str) -> None:
    """End every session of the account (its cookies carry the old epoch)."""
    account = session.get(Account, account_id)
    if account is None:
        return
    account.session_epoch += 1
    audit.record(session, audit.LOGOUT, actor=account.name, now=now, target=account.name,
                 address=address)


def session_user_id(account: Account) -> str:
    """What a session cookie keeps to name its account: id and epoch."""
    return f"{account.id}:{account.session_epoch}"


def session_identity(session: Session, user_id: str) -> Identity | None:
    """The person a session cookie names, if that session still stands."""
    account_id, _, epoch = user_id.partition(":")
    if not (account_id.isdigit() and epoch.isdigit()) or len(user_id) > 40:
        return None
    account = session.get(Account, int(account_id))
    if account is None or account.disabled or account.session_epoch != int(epoch) \
            or account.password_hash is None:
        return None
    return identity_of(account)


def account_identity(session: Session, account_id: int) -> Identity | None:
    """The account's identity as it stands now (its roles, agent number, privilege to see
    numbers), or None if it is gone or disabled: for a connection that outlives the request
    that allowed it (the desk push), checked again when it connects."""
    account = session.get(Account, account_id)
    if account is None or account.disabled:
        return None
    return identity_of(account)


FIRST_ADMIN = "admin"


def ensure_first_admin(session: Session, *, now: datetime) -> tuple[str, str] | None:
    """The first administrator (系统管理员), when no account holds the admin role: created
    with a random password; (name, password) to be shown once. None when there is one already."""
    if any(ADMIN in roles_of(a) for a in accounts(session)):
        return None
    password = secrets.token_urlsafe(12)
    name = FIRST_ADMIN
    if session.scalar(select(Account.id).where(Account.name == name)) is not None:
        name = f"{FIRST_ADMIN}-{secrets.token_hex(3)}"  # "admin" taken by a non-admin
    create_account(session, name, [ADMIN], password=password, actor="hotline up", now=now)
    return name, password
