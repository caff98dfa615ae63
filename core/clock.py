"""Where "now" comes from.

Domain code never reads the wall clock: it takes `now` as a parameter. The processes that
run it (the IVR, the telephony service, the tickets worker, the web app, the CLI) each hold
one `Clock` and pass its reading down, so a test pins "now" by handing them a `FixedClock`
and the suite gives the same answers on a Sunday night or a Spring Festival holiday.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The present moment, time-zone aware, in UTC."""
        ...

    def time(self) -> float:
        """The present moment in Unix seconds."""
        ...


class SystemClock:
    """The machine's clock: what every process uses in production."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def time(self) -> float:
        return time.time()


SYSTEM_CLOCK = SystemClock()


class FixedClock:
    """A clock that stands still until it is moved; thread-safe, for tests."""

    def __init__(self, at: datetime) -> None:
        self._lock = threading.Lock()
        self._at = _aware(at)

    def now(self) -> datetime:
        with self._lock:
            return self._at

    def time(self) -> float:
        return self.now().timestamp()

    def set(self, at: datetime) -> None:
        with self._lock:
            self._at = _aware(at)

    def advance(self, by: timedelta) -> datetime:
        with self._lock:
            self._at += by
            return self._at


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"a time-zone aware datetime is needed, got {moment!r}")
    return moment.astimezone(UTC)
