"""Erlang C (话务量排班公式): how many agents a half-hour needs to answer a share of its calls
within a target wait. Pure arithmetic, no storage, no clock.

For `calls` arriving in a period of `period_seconds`, each handled for `aht_seconds` on
average (talk and wrap-up), the offered traffic is A = calls x AHT / period (in Erlangs).
With N agents (N > A), the chance a caller has to wait at all is Erlang C:

    C(N, A) = (A^N / N! x N / (N - A)) / (sum_{k=0}^{N-1} A^k / k!  +  A^N / N! x N / (N - A))

and the service level, the share answered within T seconds, is

    SL = 1 - C(N, A) x exp(-(N - A) x T / AHT).

With N <= A the queue grows without end: C = 1 and SL = 0. The sum is kept by the
recurrence A^k/k! = A^(k-1)/(k-1)! x A/k, so large N neither overflows nor loses precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HALF_HOUR = 1800
TARGET_LEVEL = 0.8  # 80 % ...
TARGET_SECONDS = 15.0  # ... answered within 15 s
MAX_AGENTS = 2000  # a half-hour no centre staffs beyond


class ErlangError(ValueError):
    """Figures Erlang C cannot take (negative calls, no handle time, a level of 100 %)."""


def traffic(calls: float, aht_seconds: float, period_seconds: float = HALF_HOUR) -> float:
    """Offered traffic in Erlangs: the agents kept busy on average."""
    if calls < 0 or aht_seconds < 0 or period_seconds <= 0:
        raise ErlangError("calls and handle time not below zero, a period above zero")
    return calls * aht_seconds / period_seconds


def erlang_c(agents: int, erlangs: float) -> float:
    """The chance a caller waits at all (0-1) with `agents` agents for `erlangs` traffic."""
    if agents < 0 or erlangs < 0:
        raise ErlangError("agents and traffic not below zero")
    if erlangs == 0:
        return 0.0
    if agents <= erlangs:
        return 1.0
    term, below = 1.0, 0.0  # A^k / k!, and the sum of the terms for k < agents
    for k in range(agents):
        below += term
        term *= erlangs / (k + 1)
    waiting = term * agents / (agents - erlangs)
    return waiting / (below + waiting)


def service_level(agents: int, erlangs: float, aht_seconds: float,
                  within_seconds: float = TARGET_SECONDS) -> float:
    """Share of calls answered within `within_seconds` (0-1)."""
    if erlangs == 0:
        return 1.0
    if agents <= erlangs:
        return 0.0
    if aht_seconds <= 0:
        raise ErlangError("handle time above zero")
    waits = erlang_c(agents, erlangs)
    return max(0.0, 1.0 - waits * math.exp(-(agents - erlangs) * within_seconds / aht_seconds))


def average_speed_of_answer(agents: int, erlangs: float, aht_seconds: float) -> float | None:
    """ASA in seconds: C(N, A) x AHT / (N - A); None when the queue never empties."""
    if erlangs == 0:
        return 0.0
    if agents <= erlangs:
        return None
    return erlang_c(agents, erlangs) * aht_seconds / (agents - erlangs)


@dataclass(frozen=True)
class Need:
    """What one period needs: its traffic, the fewest agents reaching the target, and the
    service level and ASA those agents give."""

    calls: float
    aht_seconds: float
    erlangs: float
    agents: int
    service_level: float
    asa_seconds: float | None


def agents_needed(calls: float, aht_seconds: float, *, target: float = TARGET_LEVEL,
                  within_seconds: float = TARGET_SECONDS,
                  period_seconds: float = HALF_HOUR) -> Need:
    """The fewest agents answering `target` of `calls` within `within_seconds`."""
    if not 0 < target < 1:
        raise ErlangError("target: a share above 0 and below 1")
    if within_seconds < 0:
        raise ErlangError("within_seconds: not below zero")
    erlangs = traffic(calls, aht_seconds, period_seconds)
    if erlangs == 0:
        return Need(calls, aht_seconds, 0.0, 0, 1.0, 0.0)
    agents = math.floor(erlangs) + 1
    while service_level(agents, erlangs, aht_seconds, within_seconds) < target:
        agents += 1
        if agents > MAX_AGENTS:
            raise ErlangError(f"more than {MAX_AGENTS} agents for one period")
    return Need(calls, aht_seconds, erlangs, agents,
                service_level(agents, erlangs, aht_seconds, within_seconds),
                average_speed_of_answer(agents, erlangs, aht_seconds))
