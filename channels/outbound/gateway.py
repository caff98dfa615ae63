"""The provider interface (短信网关接口): what the worker asks of a gateway, and what a gateway
may answer.

A provider sends one message at a time, as the parts `channels.outbound.parts` cut, from the
part `first` on (the parts before were taken on an earlier try), and tells each part's id as
the gateway takes it (`on_part`), so a worker that dies mid-message has recorded what went.
It raises one of three errors:

- `TemporaryError`: the gateway provably did not take the part (it refused it with a retry
  code, or it was never handed over: no connection, no bind) -> tried again later;
- `PermanentError`: refused for good (bad number, bad account) -> failed;
- `UncertainError`: handed over, but no answer came (the connection dropped, a timeout):
  the gateway may or may not have taken it. Such a message is never resent by itself (a
  citizen should not get it twice): it is held as `unknown` for a person to look at
  (`hotline sms retry ID`).

Delivery receipts come back to `report`, a callable the worker gives the provider:
report(provider_id, delivered, at).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from channels.outbound.parts import Split, split
from core.errors import HotlineError


@dataclass(frozen=True)
class Outgoing:
    id: int
    phone: str  # E.164, e.g. +8613800138000
    text: str
    first: int = 1  # the first part still to send (1-based)

    @property
    def split(self) -> Split:
        return split(self.text)


class GatewayError(HotlineError):
    """A part the gateway did not take; `.reason` for the outbox."""


class TemporaryError(GatewayError):
    pass


class PermanentError(GatewayError):
    pass


class UncertainError(GatewayError):
    pass


OnPart = Callable[[int, str], None]  # (seq, provider id) as each part is taken
Report = Callable[[str, bool, datetime], None]  # (provider id, delivered, at)


class Provider(Protocol):
    name: str  # twilio | smpp: stored with each part, receipts are matched by it

    def send(self, message: Outgoing, on_part: OnPart) -> int:
        """Send the message's parts from `message.first`; the number of parts in all."""
        ...

    def ready(self) -> bool:
        """Whether a send may start now (an SMPP bind is up); False: try later."""
        ...

    def close(self) -> None: ...
