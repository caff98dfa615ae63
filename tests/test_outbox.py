"""The event outbox (core.outbox) against a redis-server of the test's own that it stops and
starts: events committed while Redis is away are kept with their change and arrive once,
in order, when it returns; a rolled-back change publishes nothing; a relay that died after
its XADD doubles nothing; a consumer group skips an event id it handled; the stream is
trimmed only below what every group acknowledged."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core import events, outbox
from core.clock import FixedClock
from core.db import make_engine, session_factory, transaction, upgrade
from core.events import EventBus, announce, publish, publish_on_commit
from core.outbox import OutboxEvent, Relay, backlog
from telephony.events import OutboundCallFailed
from tests.redis_server import RedisServer

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


def _failed(n: int) -> OutboundCallFailed:
    return OutboundCallFailed(at=NOW.timestamp() + n, purpose="survey", reference=f"sv-{n}",
                              reason="busy")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as running:
        yield running


def _bus(server: RedisServer) -> EventBus:
    return EventBus(redis.Redis.from_url(server.url, socket_connect_timeout=1,
                                         socket_timeout=2))


def test_events_committed_while_redis_is_away_arrive_once_in_order(
        server: RedisServer, database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    bus = _bus(server)
    clock = FixedClock(NOW)
    relay = publish_on_commit(sessions, bus, clock)
    with transaction(sessions) as session:  # Redis up: out right after the commit
        announce(session, _failed(1))
    assert [e["reference"] for _id, e in bus.read()] == ["sv-1"]
    server.stop()
    with transaction(sessions) as session:  # Redis away: the commit goes through
        announce(session, _failed(2))
        announce(session, _failed(3))
        announce(session, _failed(2))  # the same event again: stored once
    with transaction(sessions) as session:
        announce(session, _failed(4))
    with pytest.raises(RuntimeError), transaction(sessions) as session:
        announce(session, _failed(5))
        raise RuntimeError("the change fails: its event goes with it")
    assert relay.redis_away
    with sessions() as session:
        assert backlog(session) == 3
    server.start()
    relay.start()
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=20)
        while len(bus.read()) < 4:
            assert datetime.now(UTC) < deadline, bus.read()
            time.sleep(0.2)
    finally:
        relay.stop()
    assert [e["reference"] for _id, e in bus.read()] == ["sv-1", "sv-2", "sv-3", "sv-4"]
    with sessions() as session:
        assert backlog(session) == 0
        stamped = session.scalars(select(OutboxEvent.relayed_at)).all()
    assert stamped == [NOW] * 4
    assert relay.relay_pending() == 0  # nothing is relayed twice
    assert len(bus.read()) == 4
    # past the retention the relayed rows go
    clock.advance(timedelta(days=3))
    assert relay.forget_relayed() == 4
    engine.dispose()


def test_events_stored_before_a_savepoint_go_out_at_the_commit_not_at_the_savepoint(
        server: RedisServer, database_url: str) -> None:
    """A savepoint released or rolled back inside the transaction (a link racing another
    desk, a call's recordings failing to file) is not its end: the events stored before it
    go out when the whole transaction commits, with the relay thread not running."""
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    bus = _bus(server)
    publish_on_commit(sessions, bus, FixedClock(NOW))
    with transaction(sessions) as session:
        announce(session, _failed(1))
        with session.begin_nested():
            pass  # released
        assert bus.read() == []  # not before the commit
    with transaction(sessions) as session:
        announce(session, _failed(2))
        with pytest.raises(RuntimeError), session.begin_nested():
            announce(session, _failed(3))
            raise RuntimeError("rolled back to the savepoint: event 3 goes with it")
    assert [e["reference"] for _id, e in bus.read()] == ["sv-1", "sv-2"]
    with sessions() as session:
        assert backlog(session) == 0
    engine.dispose()


def test_a_relay_that_died_after_its_xadd_doubles_nothing(
        server: RedisServer, tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'h.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    bus = _bus(server)
    with transaction(sessions) as session:  # stored with no relay attached
        announce(session, _failed(1))
        announce(session, _failed(2))
    bus.append(_failed(1).id, "outbound.failed", _failed(1).as_dict())  # XADD, then died
    relay = publish_on_commit(sessions, bus, FixedClock(NOW))
    assert relay.relay_pending() == 1
    assert [e["reference"] for _id, e in bus.read()] == ["sv-1", "sv-2"]
    engine.dispose()


def test_a_group_skips_an_event_id_it_handled(server: RedisServer) -> None:
    bus = _bus(server)
    bus.ensure_group("g")
    first = _failed(1)
    bus.publish(first)
    [(entry, _event)] = list(bus.consume("g", "c"))
    bus.ack("g", entry)
    # the id is forgotten by the stream's guard (its week is over) and published again
    bus.client.delete(f"{bus.stream}:seen:{first.id}")
    assert bus.publish(first) is not None
    bus.publish(_failed(2))
    assert [e["reference"] for _id, e in bus.consume("g", "c")] == ["sv-2"]
    assert bus.client.xpending(bus.stream, "g")["pending"] == 1  # sv-1 acked, sv-2 not


def test_trimming_never_drops_an_entry_a_group_has_not_acknowledged(
        server: RedisServer) -> None:
    bus = _bus(server)
    bus.ensure_group("fast")
    bus.ensure_group("slow")
    ids = [bus.publish(_failed(n)) for n in range(1, 7)]  # entries 1..6
    fast = list(bus.consume("fast", "f"))
    for entry, _event in fast[:4]:  # fast: read all six, acknowledged 1-4
        bus.ack("fast", entry)
    slow = list(bus.consume("slow", "s", count=3))  # slow: read 1-3, acknowledged 1 only
    bus.ack("slow", slow[0][0])
    # slow's oldest unacknowledged is entry 2: only entry 1 may go
    assert bus.trim(keep=0) == 1
    assert [entry for entry, _f in bus.client.xrange(bus.stream)] == [
        i.encode() for i in ids[1:]]  # type: ignore[union-attr]
    for entry, _event in slow[1:]:
        bus.ack("slow", entry)
    # slow acknowledged 1-3 and read nothing more; fast holds 5 and 6: entries 2, 3 go
    assert bus.trim(keep=0) == 2
    for entry, _event in fast[4:]:
        bus.ack("fast", entry)
    # fast is done; slow has not read 4-6: they stay
    assert bus.trim(keep=0) == 0
    assert len(list(bus.consume("slow", "s"))) == 3
    for entry, _event in bus.consume("slow", "s"):
        bus.ack("slow", entry)
    # every group has everything: the newest `keep` stay
    assert bus.trim(keep=1) == 2
    assert [entry for entry, _f in bus.client.xrange(bus.stream)] == [ids[5].encode()]  # type: ignore[union-attr]


def test_the_trim_keeps_the_newest_and_reads_only_what_lies_beyond_them(
        server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    bus = _bus(server)
    bus.ensure_group("g")
    ids = [bus.publish(_failed(n)) for n in range(1, 11)]  # entries 1..10
    for entry, _event in bus.consume("g", "c"):
        bus.ack("g", entry)
    monkeypatch.setattr(events, "TRIM_CHUNK", 2)  # the 7 beyond the newest 3: 4 reads
    read: list[int] = []
    xrange = bus.client.xrange

    def counted(*args: object, **kwargs: object) -> list:
        got = xrange(*args, **kwargs)
        read.append(len(got))
        return got

    bus.client.xrange = counted  # type: ignore[method-assign]
    assert bus.trim(keep=3) == 7
    assert read == [2, 2, 2, 1]  # never the 3 kept
    assert [entry for entry, _f in xrange(bus.stream)] == [i.encode() for i in ids[7:]]  # type: ignore[union-attr]
    assert bus.trim(keep=3) == 0


def test_a_group_that_acknowledges_while_the_trim_looks_is_trimmed_as_done(
        server: RedisServer) -> None:
    """The trim reads the groups (one pending) and then asks for the oldest pending entry;
    the consumer acknowledged it in between, so Redis answers with none (seen in the soak:
    the relay's trim failed on it)."""
    bus = _bus(server)
    bus.ensure_group("g")
    ids = [bus.publish(_failed(n)) for n in range(1, 4)]
    read = list(bus.consume("g", "c"))  # all three delivered, none acknowledged yet
    groups = bus.client.xinfo_groups

    def groups_then_ack(stream: str) -> list:
        seen = groups(stream)  # pending: 3 ...
        for entry, _event in read:  # ... then the consumer acknowledges them
            bus.ack("g", entry)
        return seen

    bus.client.xinfo_groups = groups_then_ack  # type: ignore[method-assign]
    assert bus.trim(keep=1) == 2  # entries 1 and 2 go; the newest stays
    assert [entry for entry, _f in bus.client.xrange(bus.stream)] == [ids[2].encode()]  # type: ignore[union-attr]


def test_the_cli_relays_what_waits(server: RedisServer, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from core.live import connect_redis
    from hotline import cli
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "data", REDIS_URL=server.url)
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    with transaction(session_factory(engine)) as session:  # a process with no relay
        announce(session, _failed(1))
        announce(session, _failed(2))
    monkeypatch.setattr(cli, "load_settings", lambda _path=None: settings)
    result = CliRunner().invoke(cli.cli, ["events", "relay"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "2 events relayed; 0 waiting"
    bus = EventBus(connect_redis(settings))
    assert [e["reference"] for _id, e in bus.read()] == ["sv-1", "sv-2"]
    engine.dispose()


def test_events_of_no_stored_change_go_straight_out_or_wait_behind_stored_ones(
        server: RedisServer, tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'h.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    bus = _bus(server)
    relay = publish_on_commit(sessions, bus, FixedClock(NOW))

    def stored() -> list[str]:
        with sessions() as session:
            return list(session.scalars(select(OutboxEvent.event_id).order_by(OutboxEvent.seq)))

    publish(sessions, _failed(1))  # Redis answers, nothing waits: straight to the stream
    assert stored() == []
    server.stop()
    publish(sessions, _failed(2))  # Redis away: kept in the outbox
    server.start()
    publish(sessions, _failed(3))  # Redis back, but sv-2 waits: sv-3 goes behind it
    assert stored() == [_failed(2).id, _failed(3).id]
    assert [e["reference"] for _id, e in bus.read()] == ["sv-1"]
    assert relay.relay_pending() == 2
    publish(sessions, _failed(4))  # nothing waits any more: straight out again
    assert stored() == [_failed(2).id, _failed(3).id]
    assert [e["reference"] for _id, e in bus.read()] == ["sv-1", "sv-2", "sv-3", "sv-4"]
    engine.dispose()


def test_a_loop_turns_events_go_out_in_one_round_trip_in_order_each_once(
        server: RedisServer, tmp_path: Path) -> None:
    """publish_all: the AMI loop's events of one turn. One command reaches Redis for all
    of them (counted by Redis itself), they keep their order, an id already published
    (before, or twice in the batch) is in the stream once; with Redis away they wait in
    the outbox, in order, and the relay brings them out once."""
    engine = make_engine(f"sqlite:///{tmp_path / 'h.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    bus = _bus(server)
    relay = publish_on_commit(sessions, bus, FixedClock(NOW))
    publish(sessions, _failed(2))
    counter = redis.Redis.from_url(server.url)

    def calls() -> dict[str, int]:  # what Redis ran, by command (a script's own included)
        return {name.removeprefix("cmdstat_"): int(stats["calls"])
                for name, stats in counter.info("commandstats").items()}

    before = calls()
    events.publish_all(sessions, [_failed(1), _failed(2), _failed(3), _failed(1), _failed(4)])
    after = calls()
    assert {name: n - before.get(name, 0) for name, n in after.items()
            if n != before.get(name, 0)} == {"evalsha": 1, "set": 5, "xadd": 3, "info": 1}
    assert [e["reference"] for _id, e in bus.read()] == ["sv-2", "sv-1", "sv-3", "sv-4"]
    server.stop()
    events.publish_all(sessions, [_failed(5), _failed(6)])  # kept, in order
    with sessions() as session:
        assert list(session.scalars(select(OutboxEvent.event_id).order_by(
            OutboxEvent.seq))) == [_failed(5).id, _failed(6).id]
    server.start()
    assert relay.relay_pending() == 2
    assert [e["reference"] for _id, e in bus.read()] == [
        "sv-2", "sv-1", "sv-3", "sv-4", "sv-5", "sv-6"]
    engine.dispose()


def test_a_committing_thread_never_waits_for_another_writers_lock(
        server: RedisServer, tmp_path: Path) -> None:
    """On SQLite, a commit's relay (`after_commit`) meets a writer holding the lock (which
    may be waiting for that very thread, the centre's loop): it leaves the rows to the relay
    thread at once instead of waiting out the lock; the rows go out when the lock is free."""
    engine = make_engine(f"sqlite:///{tmp_path / 'h.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    bus = _bus(server)
    with transaction(sessions) as session:  # a process with no relay stored an event
        announce(session, _failed(1))
    relay = publish_on_commit(sessions, bus, FixedClock(NOW))
    with transaction(sessions):  # another writer holds the write lock meanwhile
        started = time.monotonic()
        relay.after_commit()
        assert time.monotonic() - started < 1.0  # not the engine's 30 s lock wait
        assert bus.read() == []
        with pytest.raises(OperationalError), transaction(sessions, wait=False):
            pass
    relay.after_commit()
    assert [e["reference"] for _id, e in bus.read()] == ["sv-1"]
    engine.dispose()


def _relay_thread_running(server: RedisServer, url: str
                          ) -> tuple[Engine, sessionmaker[Session], EventBus, Relay]:
    engine = make_engine(url)
    upgrade(engine)
    sessions = session_factory(engine)
    bus = _bus(server)
    return engine, sessions, bus, publish_on_commit(sessions, bus, FixedClock(NOW)).start()


def _backlog(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return backlog(session)


def test_while_the_relay_thread_runs_a_commit_appends_at_once_and_the_thread_stamps(
        server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the centre's relay thread running, a committing thread appends its events in a
    read (no write transaction of its own: the SQLite write lock is not taken once more per
    commit); the thread stamps them when it next looks. Commits from several threads reach
    the stream in their commit order, and a relay that never saw the appends (another
    process, or this one restarted before the stamp) doubles nothing."""
    monkeypatch.setattr("core.outbox.POLL_SECONDS", 3600.0)  # the thread looks when woken
    engine, sessions, bus, relay = _relay_thread_running(server, f"sqlite:///{tmp_path / 'h.db'}")

    def waiting() -> int:
        return _backlog(sessions)

    try:
        with transaction(sessions) as session:
            announce(session, _failed(1))
        assert [e["reference"] for _id, e in bus.read()] == ["sv-1"]  # out at the commit
        assert waiting() == 1  # not stamped by the committing thread
        relay._wake.set()
        deadline = time.monotonic() + 10
        while waiting():
            assert time.monotonic() < deadline, "the thread never stamped the row"
            time.sleep(0.05)

        def commit(first: int) -> None:
            for n in range(first, first + 40, 4):
                with transaction(sessions) as session:
                    announce(session, _failed(n))

        threads = [threading.Thread(target=commit, args=(first,)) for first in (2, 3, 4, 5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        relay._wake.set()
        deadline = time.monotonic() + 10
        while waiting():
            assert time.monotonic() < deadline, "the thread never stamped the rows"
            time.sleep(0.05)
        with sessions() as session:  # SQLite: writers one at a time, seq in commit order
            in_commit_order = list(session.scalars(
                select(OutboxEvent.event_id).order_by(OutboxEvent.seq)))
        assert len(in_commit_order) == 41
        assert [e["id"] for _id, e in bus.read(count=1000)] == in_commit_order

        with transaction(sessions) as session:  # appended; the process dies before the stamp
            announce(session, _failed(42))
        assert waiting() == 1
    finally:  # the thread dies: neither its stamp nor stop's
        relay._stop.set()
        relay._wake.set()
        assert relay._thread is not None
        relay._thread.join(5)
    with transaction(sessions):  # a committing thread now meets a writer holding the lock:
        started = time.monotonic()  # it leaves the stamp, as any relay, instead of waiting
        relay.after_commit()
        assert time.monotonic() - started < 1.0
    assert waiting() == 1
    again = publish_on_commit(sessions, bus, FixedClock(NOW))
    assert again.relay_pending() == 0  # already in the stream: stamped, not appended
    assert waiting() == 0
    assert len(bus.read(count=1000)) == 42
    engine.dispose()


def test_a_commits_relay_reads_only_the_rows_no_commit_appended_yet(
        server: RedisServer, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both databases: rows a commit appended wait for the relay thread's stamp (once a
    second in the centre); the next commits' relays pass over them by their seq and read
    (and decode) only their own rows, where each read every waiting row's payload again
    (a call's record in its CallEnded: at 8 calls/s, a second's worth at every commit).
    Every event still reaches the stream once, in commit order, and is stamped later."""
    monkeypatch.setattr("core.outbox.POLL_SECONDS", 3600.0)  # the thread stamps when woken
    engine, sessions, bus, relay = _relay_thread_running(server, database_url)
    read_by_commit: list[list[str]] = []
    waiting_rows = relay._waiting

    def spied(session: Session) -> tuple[list[int], Any]:
        seqs, rows = waiting_rows(session)
        read_by_commit.append([row.event_id for row in rows])
        return seqs, rows
    monkeypatch.setattr(relay, "_waiting", spied)
    try:
        for n in range(1, 6):
            with transaction(sessions) as session:
                announce(session, _failed(n))
        assert read_by_commit == [[_failed(n).id] for n in range(1, 6)]
        assert [e["reference"] for _id, e in bus.read()] == [f"sv-{n}" for n in range(1, 6)]
        assert _backlog(sessions) == 5  # appended, not yet stamped
        relay._wake.set()
        deadline = time.monotonic() + 10
        while _backlog(sessions):
            assert time.monotonic() < deadline, "the thread never stamped the rows"
            time.sleep(0.05)
        assert read_by_commit[5:] == []  # the thread stamped them by their seqs alone
        assert len(bus.read()) == 5
    finally:
        relay.stop()
    engine.dispose()


def test_events_published_between_two_commits_go_out_between_their_rows(
        server: RedisServer, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both databases: the AMI loop's events (no stored change) published while a commit's
    relay is still at work, before a second commit, reach the stream after the first
    commit's rows and before the second's, though the second's relay was turned away and
    the first relay ends first. (Handing them to the relay at work, to spare the loop a
    transaction, sent them after the second commit's rows: a call's connect after its
    end on the agent's desk.)"""
    monkeypatch.setattr("core.outbox.POLL_SECONDS", 3600.0)
    engine, sessions, bus, relay = _relay_thread_running(server, database_url)
    waking = relay._wake
    monkeypatch.setattr(relay, "_wake", threading.Event())  # the thread is never woken
    real_append_all = relay.bus.append_all
    entered, gate = threading.Event(), threading.Event()

    def gated(items: Any) -> Any:  # sv-1's relay waits for the gate
        if any(event_id == _failed(1).id for event_id, _type, _payload in items):
            entered.set()
            gate.wait(10)
        return real_append_all(items)
    monkeypatch.setattr(relay.bus, "append_all", gated)

    def commit(n: int) -> None:
        with transaction(sessions) as session:
            announce(session, _failed(n))
    try:
        first = threading.Thread(target=commit, args=(1,))
        first.start()
        assert entered.wait(10)
        events.publish_all(sessions, [_failed(2)])  # the loop's, between the two commits
        commit(3)  # its relay is turned away
        gate.set()
        first.join(10)
        relay.relay_pending()
        assert [e["reference"] for _id, e in bus.read()] == ["sv-1", "sv-2", "sv-3"]
    finally:
        gate.set()
        relay._stop.set()
        waking.set()  # what the thread waits on
        relay.stop()
    engine.dispose()


def test_with_the_relay_thread_a_commit_appends_and_leaves_it_to_another_process_relaying(
        server: RedisServer, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both databases: with the thread running, a commit's events are in the stream at the
    commit and stamped when the thread looks. On PostgreSQL, while another process's relay
    holds the relay lock, a commit appends nothing (rows go out in order, one relay at a
    time) and the thread gets them out once the lock is free."""
    monkeypatch.setattr("core.outbox.POLL_SECONDS", 3600.0)  # the thread looks when woken
    engine, sessions, bus, relay = _relay_thread_running(server, database_url)

    def waiting() -> int:
        return _backlog(sessions)

    def until(done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 10
        while not done():
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    try:
        with transaction(sessions) as session:
            announce(session, _failed(1))
        assert [e["reference"] for _id, e in bus.read()] == ["sv-1"]
        assert waiting() == 1
        relay._wake.set()
        until(lambda: waiting() == 0, "the thread never stamped the row")
        if engine.dialect.name == "postgresql":
            with transaction(sessions) as other:  # another process's relay at work
                other.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                              {"key": outbox._LOCK_KEY})
                with transaction(sessions) as session:
                    announce(session, _failed(2))
                assert [e["reference"] for _id, e in bus.read()] == ["sv-1"]
            until(lambda: len(bus.read()) == 2, "the thread never relayed the row")
            until(lambda: waiting() == 0, "the thread never stamped the row")
    finally:
        relay.stop()
    engine.dispose()
