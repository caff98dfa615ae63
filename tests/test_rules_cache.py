"""The order loop keeps the work calendar and the time limits per process (tickets.in_force)
and hears of an operator's change on the version's channel, or at once when this process
made it: a change made by another engine and Redis client here, or the `hotline calendar
set` command, is in force at this process's next step; one made by another OS process as
soon as its bump is heard; while nothing changed a step reads neither table and asks Redis
nothing; while Redis is away every step reads them again, never what it kept; a channel
lost and regained is followed again.

Each test runs a redis-server of its own (tests.redis_server), so another run's changes on
the machine's shared Redis cannot move the version under it. Due times are worked by hand on
the 2026 schedule (Asia/Shanghai, 08:30-12:00 and 13:30-17:30): Tue 24 November to Mon 30
November are ordinary days, Saturday 28 and Sunday 29 off.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from click.testing import CliRunner
from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, session_factory, transaction, upgrade
from core.events import EventBus, follow_bumps, publish_on_commit
from core.outbox import Relay
from hotline.cli import cli
from tests.conftest import wait_until
from tests.redis_server import RedisServer
from tickets import catalogue, deadlines, service, workflow
from tickets.in_force import RulesCache
from tickets.models import Category, TimeLimit, WorkOrder
from tickets.rule_changes import VERSION_KEY, RulesChanged
from tickets.workcalendar import set_day

SH = ZoneInfo("Asia/Shanghai")
ROOT = Path(__file__).resolve().parent.parent
ROLE = {a.name: a.roles[0] for a in workflow.ACTIONS.values()}
LIMITS = [  # (step, amount, clock)
    ("open", 1, "working_hours"),
    ("dispatch", 1, "working_hours"),
    ("sign", 1, "working_hours"),
    ("handle", 1, "working_days"),
    ("check", 1, "working_hours"),
    ("complete", 3, "working_days"),
]


def sh(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=SH)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as running:
        yield running


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    upgrade(engine)
    factory = session_factory(engine)
    with transaction(factory) as session:
        session.add(Category(code="01", kind="event", name="市容环境", active=True))
        session.add(Category(code="0102", kind="event", name="暴露垃圾", active=True))
        for step, amount, clock in LIMITS:
            session.add(TimeLimit(step=step, category_prefix="", appeal_type="", urgency="",
                                  amount=amount, clock=clock))
    yield factory
    engine.dispose()


class Elsewhere:
    """Another process: its own engine and sessions, publishing its commits' events on its
    own Redis client, as `hotline.compose.build` wires every process."""

    def __init__(self, database_url: str, redis_url: str) -> None:
        self.engine = make_engine(database_url)
        self.sessions = session_factory(self.engine)
        self.client = redis.Redis.from_url(redis_url, socket_connect_timeout=1)
        publish_on_commit(self.sessions, EventBus(self.client))

    def close(self) -> None:
        self.client.close()
        self.engine.dispose()


@pytest.fixture
def elsewhere(database_url: str, server: RedisServer) -> Iterator[Elsewhere]:
    other = Elsewhere(database_url, server.url)
    yield other
    other.close()


def _policy(redis_url: str) -> service.Policy:
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=1)
    return replace(service.Policy(), rules=RulesCache(lambda: client))


def _open(sessions: sessionmaker[Session], policy: service.Policy, at: datetime) -> str:
    with transaction(sessions) as session:
        order = service.open_order(
            session, appeal_type="complaint", description="人民路口暴露垃圾，三天没人清理",
            channel="phone", actor="受理员小王", category_code="0102", policy=policy,
            now=at.astimezone(UTC))
        return order.case_number


def _move(sessions: sessionmaker[Session], policy: service.Policy, number: str, action: str,
          at: datetime) -> None:
    with transaction(sessions) as session:
        service.transition(session, number, action, actor="t", role=ROLE[action],
                           policy=policy, now=at.astimezone(UTC))


def _last_clock(sessions: sessionmaker[Session], number: str) -> tuple[str, datetime]:
    with sessions() as session:
        last = deadlines.deadlines(session, number)[-1]
    return last.step, last.due_at.astimezone(SH).replace(tzinfo=None)


def _calendar_cli(database_url: str, redis_url: str, tmp_path: Path, *args: str) -> None:
    done = CliRunner().invoke(cli, ["calendar", "set", *args], env={
        "DATABASE_URL": database_url, "REDIS_URL": redis_url,
        "HOTLINE_STORAGE_DATA_DIR": str(tmp_path / "cli")}, catch_exceptions=False)
    assert done.exit_code == 0, done.output


def test_a_limit_and_days_changed_elsewhere_are_in_force_at_the_next_step(
        sessions: sessionmaker[Session], elsewhere: Elsewhere, server: RedisServer,
        database_url: str, tmp_path: Path) -> None:
    policy = _policy(server.url)
    number = _open(sessions, policy, sh(11, 24, 9))
    _move(sessions, policy, number, "open", sh(11, 24, 9, 5))  # the cache holds the old rules
    assert _last_clock(sessions, number) == ("dispatch", datetime(2026, 11, 24, 10, 5))

    with transaction(elsewhere.sessions) as session:
        catalogue.set_limit(session, "sign", 4, "working_hours")
    _move(sessions, policy, number, "dispatch", sh(11, 24, 16))
    # 4 working hours from Tue 16:00: 1.5 h to 17:30, 2.5 h from Wed 08:30 -> Wed 11:00
    # (the old limit, 1 working hour: Tue 17:00)
    assert _last_clock(sessions, number) == ("sign", datetime(2026, 11, 25, 11))

    # Thursday made a holiday with the operator's command
    _calendar_cli(database_url, server.url, tmp_path, "2026-11-26", "--holiday")
    _move(sessions, policy, number, "sign", sh(11, 25, 9))
    # 1 working day (7.5 h) from Wed 09:00: 3 h to 12:00, 4 h 13:30-17:30, the last 0.5 h
    # on the next working day, Friday now: Fri 09:00 (on the old calendar: Thu 09:00)
    assert _last_clock(sessions, number) == ("handle", datetime(2026, 11, 27, 9))

    _move(sessions, policy, number, "feedback", sh(11, 27, 17))
    # Saturday made a working day (调休) by another process
    with transaction(elsewhere.sessions) as session:
        set_day(session, date(2026, 11, 28), workday=True, note="调休")
    _move(sessions, policy, number, "request_check", sh(11, 27, 17))
    # 1 working hour from Fri 17:00: 0.5 h to 17:30, 0.5 h from Sat 08:30 -> Sat 09:00
    # (Saturday off: Mon 09:00)
    assert _last_clock(sessions, number) == ("check", datetime(2026, 11, 28, 9))


def _table_reads(engine: Any) -> tuple[list[str], Any]:
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        lowered = statement.lower()
        if "from time_limits" in lowered or "from calendar_days" in lowered:
            seen.append("time_limits" if "from time_limits" in lowered else "calendar_days")

    event.listen(engine, "before_cursor_execute", before)
    return seen, before


def test_a_step_reads_neither_table_while_nothing_changed(
        sessions: sessionmaker[Session], elsewhere: Elsewhere, server: RedisServer) -> None:
    policy = _policy(server.url)
    engine = sessions.kw["bind"]
    number = _open(sessions, policy, sh(11, 24, 9))  # the first step reads both, once
    seen, listener = _table_reads(engine)
    try:
        _move(sessions, policy, number, "open", sh(11, 24, 9, 5))
        _move(sessions, policy, number, "dispatch", sh(11, 24, 10))
        assert seen == []
        with transaction(elsewhere.sessions) as session:
            catalogue.set_limit(session, "handle", 2, "working_days")
        _move(sessions, policy, number, "sign", sh(11, 24, 11))  # starts handle
        assert sorted(seen) == ["calendar_days", "time_limits"]  # once each, then kept
        _move(sessions, policy, number, "feedback", sh(11, 24, 15))
        _move(sessions, policy, number, "request_check", sh(11, 24, 15))
        assert sorted(seen) == ["calendar_days", "time_limits"]
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    # handle, 2 working days from Tue 11:00: Thu 11:00
    with sessions() as session:
        handle = [d for d in deadlines.deadlines(session, number) if d.step == "handle"]
    assert handle[0].due_at == sh(11, 26, 11)


def test_an_order_step_reads_the_limits_once_however_many_clocks_it_starts(
        sessions: sessionmaker[Session]) -> None:
    """Without a cache (the default policy) a step still reads each table once: an opening
    starts two clocks (open, complete) on one read of the limits."""
    engine = sessions.kw["bind"]
    seen, listener = _table_reads(engine)
    try:
        _open(sessions, service.Policy(), sh(11, 24, 9))
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert sorted(seen) == ["calendar_days", "time_limits"]


def test_with_redis_away_every_step_reads_the_tables_and_follows_a_change(
        sessions: sessionmaker[Session], elsewhere: Elsewhere, server: RedisServer,
        database_url: str, tmp_path: Path) -> None:
    policy = _policy(server.url)
    number = _open(sessions, policy, sh(11, 24, 9))
    _move(sessions, policy, number, "open", sh(11, 24, 9, 5))  # the cache holds the old rules
    server.stop()
    # the changes are committed; their events wait in the outbox, the version cannot move
    with transaction(elsewhere.sessions) as session:
        catalogue.set_limit(session, "sign", 4, "working_hours")
    _calendar_cli(database_url, server.url, tmp_path, "2026-11-25", "--holiday")
    _move(sessions, policy, number, "dispatch", sh(11, 24, 16))
    # 4 working hours from Tue 16:00: 1.5 h to 17:30, Wednesday a holiday now, 2.5 h from
    # Thu 08:30 -> Thu 11:00
    assert _last_clock(sessions, number) == ("sign", datetime(2026, 11, 26, 11))
    server.start()  # back, the version as before the change: what was kept is gone
    with transaction(sessions) as session:
        order = session.scalar(select(WorkOrder).where(WorkOrder.case_number == number))
        assert deadlines.limit_for(session, order, "sign").amount == 4  # type: ignore[union-attr]
    _move(sessions, policy, number, "return", sh(11, 24, 16, 30))  # re-dispatch
    _move(sessions, policy, number, "dispatch", sh(11, 24, 16, 30))
    # 4 working hours from Tue 16:30: 1 h to 17:30, 3 h from Thu 08:30 -> Thu 11:30
    assert _last_clock(sessions, number) == ("sign", datetime(2026, 11, 26, 11, 30))


def test_a_change_by_a_process_without_a_relay_is_published_by_the_centres_relay(
        sessions: sessionmaker[Session], server: RedisServer, database_url: str) -> None:
    """A writer that does not publish on commit (a script on its own engine): its change's
    event waits in the outbox until the centre's relay thread gets it out, and the next step
    after that follows the change."""
    policy = _policy(server.url)
    number = _open(sessions, policy, sh(11, 24, 9))
    _move(sessions, policy, number, "open", sh(11, 24, 9, 5))  # the cache holds the old rules
    client = redis.Redis.from_url(server.url, socket_connect_timeout=1)
    relay = Relay(sessions, EventBus(client)).start()  # the centre's
    script = make_engine(database_url)
    try:
        before = client.get(VERSION_KEY)
        with transaction(session_factory(script)) as session:
            catalogue.set_limit(session, "sign", 4, "working_hours")
        wait_until(lambda: client.get(VERSION_KEY) != before, 10, "the relay's bump")
    finally:
        relay.stop()
        script.dispose()
        client.close()
    _move(sessions, policy, number, "dispatch", sh(11, 24, 16))
    assert _last_clock(sessions, number) == ("sign", datetime(2026, 11, 25, 11))


OTHER_PROCESS = """
import sys
import redis
from core.db import make_engine, session_factory, transaction
from core.events import EventBus, follow_bumps, publish_on_commit
from tickets import catalogue
sessions = session_factory(make_engine(sys.argv[1]))
publish_on_commit(sessions, EventBus(redis.Redis.from_url(sys.argv[2])))
with transaction(sessions) as session:
    catalogue.set_limit(session, "sign", int(sys.argv[3]), "working_hours")
"""


def _in_another_process(database_url: str, redis_url: str, sign_hours: int) -> None:
    done = subprocess.run([sys.executable, "-c", OTHER_PROCESS, database_url, redis_url,
                           str(sign_hours)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def _sign_hours(sessions: sessionmaker[Session], policy: service.Policy) -> int:
    """The sign limit as the cache has it (asking Redis only if a bump was heard)."""
    with sessions() as session:
        return policy.in_force(session).limits["sign"][0].amount


def test_a_step_asks_redis_nothing_until_a_change_is_heard_on_the_channel(
        sessions: sessionmaker[Session], server: RedisServer, database_url: str) -> None:
    """A change by another OS process reaches this one on the channel alone: the cache's
    clock never moves, so it never asks Redis on its own (RECHECK_SECONDS). After Redis
    went away and came back, the channel is followed again."""
    client = redis.Redis.from_url(server.url, socket_connect_timeout=1)
    cache = RulesCache(lambda: client, clock=lambda: 0.0)
    policy = replace(service.Policy(), rules=cache)
    number = _open(sessions, policy, sh(11, 24, 9))  # asks, reads, starts following
    wait_until(lambda: cache.follows, 10, "the channel followed")
    _move(sessions, policy, number, "open", sh(11, 24, 9, 5))  # asks once: just followed
    asked, reads = cache.asked, cache.reads
    _move(sessions, policy, number, "dispatch", sh(11, 24, 10))  # starts sign: 1 h
    assert _last_clock(sessions, number) == ("sign", datetime(2026, 11, 24, 11))
    assert _sign_hours(sessions, policy) == 1
    assert (cache.asked, cache.reads) == (asked, reads)

    _in_another_process(database_url, server.url, 4)
    wait_until(lambda: _sign_hours(sessions, policy) == 4, 10, "the change heard")
    assert (cache.asked, cache.reads) == (asked + 1, reads + 1)
    _move(sessions, policy, number, "return", sh(11, 24, 16))
    _move(sessions, policy, number, "dispatch", sh(11, 24, 16))
    # 4 working hours from Tue 16:00: 1.5 h to 17:30, 2.5 h from Wed 08:30 -> Wed 11:00
    assert _last_clock(sessions, number) == ("sign", datetime(2026, 11, 25, 11))
    assert (cache.asked, cache.reads) == (asked + 1, reads + 1)

    server.stop()
    wait_until(lambda: not cache.follows, 10, "the channel's loss noticed")
    server.start()
    wait_until(lambda: cache.follows, 30, "the channel followed again")
    assert _sign_hours(sessions, policy) == 4  # asks once: followed again
    _in_another_process(database_url, server.url, 2)
    wait_until(lambda: _sign_hours(sessions, policy) == 2, 10, "the change heard again")
    client.close()


def test_a_quiet_channel_is_checked_every_few_seconds(
        sessions: sessionmaker[Session], server: RedisServer) -> None:
    """Even followed, the cache asks Redis once RECHECK_SECONDS have passed without a bump
    (a channel lost without a word), on the cache's own clock."""
    client = redis.Redis.from_url(server.url, socket_connect_timeout=1)
    now = [0.0]
    cache = RulesCache(lambda: client, clock=lambda: now[0])
    policy = replace(service.Policy(), rules=cache)
    assert _sign_hours(sessions, policy) == 1
    wait_until(lambda: cache.follows, 10, "the channel followed")
    assert _sign_hours(sessions, policy) == 1
    asked = cache.asked
    now[0] += 4.9
    assert _sign_hours(sessions, policy) == 1
    assert cache.asked == asked
    now[0] += 0.2  # 5.1 s after the last answer
    assert _sign_hours(sessions, policy) == 1
    assert cache.asked == asked + 1
    assert _sign_hours(sessions, policy) == 1
    assert cache.asked == asked + 1
    client.close()


def test_this_process_hears_its_own_bump_before_the_append_returns(
        server: RedisServer) -> None:
    """The relay's append of a rules change tells this process's caches itself, before it
    returns: a step right after an edit made here need not wait for the channel. Once per
    event id, as the version moves; other events tell nothing."""

    class Follower:
        def __init__(self) -> None:
            self.heard = 0

        def bumped(self) -> None:
            self.heard += 1

    follower = Follower()
    follow_bumps(VERSION_KEY, follower)
    client = redis.Redis.from_url(server.url, socket_connect_timeout=1)
    bus = EventBus(client, stream="test:events:bumps")
    change = RulesChanged(at=0.0, what="limits", change="c1")
    assert bus.append(change.id, change.type, change.as_dict()) == "1"
    assert follower.heard == 1
    assert bus.append(change.id, change.type, change.as_dict()) is None  # the same again
    other = RulesChanged(at=0.0, what="calendar", change="c2")
    assert bus.append(other.id, other.type, other.as_dict()) == "2"
    assert follower.heard == 2
    assert bus.append("call:1", "call.started", {"type": "call.started"}) is not None
    assert follower.heard == 2 and client.get(VERSION_KEY) == b"2"
    client.close()


def test_a_forked_child_asks_until_it_follows_the_channel_itself(
        sessions: sessionmaker[Session], server: RedisServer) -> None:
    """A child forked from a process whose cache follows the channel has no thread of its
    own: its next step asks Redis, as if a bump had come."""
    client = redis.Redis.from_url(server.url, socket_connect_timeout=1)
    cache = RulesCache(lambda: client, clock=lambda: 0.0)
    policy = replace(service.Policy(), rules=cache)
    _sign_hours(sessions, policy)
    wait_until(lambda: cache.follows, 10, "the channel followed")
    _sign_hours(sessions, policy)
    asked = cache.asked
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report whether it would have asked, and leave at once
        try:
            followed = cache.follows
            sessions.kw["bind"].dispose(close=False)  # the parent's connections stay its own
            with sessions() as session:
                cache.get(session, "Asia/Shanghai", "08:30-12:00,13:30-17:30")
            os.write(writing, f"{followed} {cache.asked - asked}".encode())
        finally:
            os._exit(0)
    os.close(writing)
    answer = os.read(reading, 100).decode()
    os.waitpid(child, 0)
    assert answer == "False 1"
    _sign_hours(sessions, policy)
    assert cache.asked == asked  # the parent still follows it
    client.close()
