"""The desk push ticket (推送凭证): how the push server knows who opened a desk.

The push server listens on a port of its own, another origin for the browser, and reads no
session cookie. The desk page (and `GET /desk/push-ticket`, which renews it) hands the page a
short-lived ticket signed with the app's session secret for the audience "desk-push": the
account, its sign-in session (when it came from one), its agent number, whether it may see
citizens' numbers, and the page's origin (the only origin the push server then answers for
it). The push server checks the signature and the age, then checks the account again: still
enabled, its session not ended, still holding desk.use, still that agent.
"""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from core.clock import Clock

AUDIENCE = "desk-push"
TICKET_SECONDS = 300  # a ticket's life; the page renews it well before (desk/push.js)


@dataclass(frozen=True)
class Ticket:
    account_id: int
    session_user: str  # the sign-in session it came from ("id:epoch"), "" for a token
    agent: str  # "" for a desk user with no agent number: only every desk's entries
    see_phone: bool
    origin: str  # the desk page's origin, e.g. http://127.0.0.1:8319
    issued_at: float


class TicketError(Exception):
    """A ticket that is not ours, altered or expired."""


def _serializer(secret: str, clock: Clock) -> URLSafeTimedSerializer:
    class _ClockSigner(TimestampSigner):
        def get_timestamp(self) -> int:  # the injected clock, never the wall clock
            return int(clock.time())

    return URLSafeTimedSerializer(secret, salt=AUDIENCE, signer=_ClockSigner)


def issue(secret: str, clock: Clock, *, account_id: int, session_user: str, agent: str,
          see_phone: bool, origin: str) -> str:
    return str(_serializer(secret, clock).dumps(
        {"a": account_id, "s": session_user, "g": agent, "p": see_phone, "o": origin}))


def verify(secret: str, clock: Clock, ticket: str, max_age: int | None = None) -> Ticket:
    """The ticket's content if we signed it for the desk push less than `max_age` (by
    default TICKET_SECONDS) ago."""
    try:
        body, issued = _serializer(secret, clock).loads(
            ticket, max_age=TICKET_SECONDS if max_age is None else max_age,
            return_timestamp=True)
    except SignatureExpired:
        raise TicketError("the push ticket has expired") from None
    except BadSignature:
        raise TicketError("not a push ticket") from None
    try:
        return Ticket(int(body["a"]), str(body["s"]), str(body["g"]), bool(body["p"]),
                      str(body["o"]), issued.timestamp())
    except (KeyError, TypeError, ValueError):
        raise TicketError("not a push ticket") from None
