"""The desk push path under load: screen-pop latency with 30 open desks, and how many open
desks the push server holds.

    .venv/bin/python -m bench.desk_push [--desks 30] [--rings 60]
                                        [--capacity 50,100,200,300,500]

No Asterisk: the bench starts, in this process, the desk push server (agent_desk.push) on
its own loop, as the centre does, and the screen pop composer on another, over a fresh
SQLite database and an embedded Redis in a temporary directory (--redis-url for a Redis
server: it writes to that server's hotline:events and hotline:desk streams). The desks are
async SSE clients (aiohttp) in a second process, each with a push ticket of its own agent's
machine account, so the server's memory is the server's alone. Times on both sides are
time.monotonic() (CLOCK_MONOTONIC: one clock for every process on the machine).

(a) Screen pop: `call.started` then `call.agent_ringing` published on the event bus for one
    of the open desks' agents, timed from the ringing's publish to the desk receiving its
    "pop" message: through the bus, the composer's consumer group, the composition, the desk
    feed, the push server's one reader and the desk's stream (run after (b)). The composer
    is the real one (agent_desk.pop.ScreenPop) when it is there; before it was merged, a
    stand-in that pops the ringing as it is ("stand-in" in the table). Baseline: the same
    rings with 1 desk.
(b) Capacity: N desks open at once; entries published on the desk feed for random open
    desks (50 a second for 4 s) and 5 entries for every desk (EVERY_DESK), each timed from
    its publish to its arrival at the desk. A row "holds" when both p95 are at most 300 ms,
    no entry was lost and every desk opened. Baseline: 1 desk (the ratio is of the worse
    p95). Memory per open desk: the server process's RSS growth while the most desks
    opened, divided by their number, measured first on the fresh server.

The clients share the machine's cores with the server: on a busy machine (load average
printed) every latency here is an upper bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

DESK_AGENTS_FROM = 9001  # the bench's agents: 9001, 9002, ...
HOLD_P95_MS = 300.0
TARGET_DESKS = 500
ORIGIN = "http://bench.invalid"


def _raise_open_files() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- the desks: SSE clients in their own process ------------------------------------------

async def _listen(session: Any, url: str, agent: str, ticket: str,
                  heard: list[tuple[str, str, str, float]], opened: asyncio.Future[int]) -> None:
    import aiohttp

    try:
        async with session.get(url, params={"agent": agent, "ticket": ticket},
                               headers={"Origin": ORIGIN},
                               timeout=aiohttp.ClientTimeout(total=None)) as reply:
            opened.set_result(reply.status)
            if reply.status != 200:
                return
            kind, data = "message", []
            async for raw in reply.content:
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if data:
                        body = json.loads("\n".join(data))
                        key = str(body.get("probe") or body.get("call_id") or "")
                        heard.append((agent, kind, key, time.monotonic()))
                    kind, data = "message", []
                elif line.startswith(":"):
                    continue
                else:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "event":
                        kind = value
                    elif name == "data":
                        data.append(value)
    except (aiohttp.ClientError, asyncio.CancelledError, ConnectionError):
        if not opened.done():
            opened.set_result(0)


async def _client(url: str) -> None:
    """Reads commands (JSON lines) on stdin, answers on stdout: open desks, report what
    they heard, close them."""
    import aiohttp

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)  # an "open" of 500 tickets is long
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    heard: list[tuple[str, str, str, float]] = []
    tasks: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        while line := await reader.readline():
            command = json.loads(line)
            if "open" in command:
                futures = []
                for agent, ticket in command["open"]:
                    opened: asyncio.Future[int] = loop.create_future()
                    futures.append(opened)
                    tasks.append(asyncio.create_task(
                        _listen(session, url, agent, ticket, heard, opened)))
                statuses = await asyncio.gather(*futures)
                answer: dict[str, Any] = {"opened": statuses.count(200),
                                          "failed": len(statuses) - statuses.count(200)}
            elif "report" in command:
                answer = {"heard": heard[:]}
                heard.clear()
            else:  # close
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                answer = {"closed": len(tasks)}
                tasks.clear()
            print(json.dumps(answer), flush=True)


class Desks:
    """The client process."""

    def __init__(self, url: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.desk_push", "--client", url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())  # type: ignore[no-any-return]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


# --- the server side ----------------------------------------------------------------------

class StandInPop:
    """Until the screen pop composer is there: the ringing popped as it is."""

    name = "stand-in"

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        bus.ensure_group("bench-pop")

    async def run(self, stop: asyncio.Event) -> None:
        from agent_desk import feed

        def tick() -> None:
            for entry_id, event in self.bus.consume("bench-pop", "bench", block_ms=300):
                if event.get("type") == "call.agent_ringing":
                    feed.publish(self.bus.client, event["agent"], "pop",
                                 {"call_id": event["call_id"], "queue": event.get("queue")})
                self.bus.ack("bench-pop", entry_id)

        while not stop.is_set():
            await asyncio.to_thread(tick)


@dataclass
class World:
    settings: Any
    parts: Any
    tickets: dict[str, str]  # agent -> push ticket
    push: Any
    url: str


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _composer(world: World) -> Any:
    try:
        from agent_desk.pop import ScreenPop
    except ImportError:
        return StandInPop(world.parts.bus)
    composer = ScreenPop(world.settings, world.parts.sessions, world.parts.bus,
                         world.parts.clock)
    composer.name = "ScreenPop"
    return composer


def pop_latency(world: World, desks: Desks, count: int, rings: int) -> list[float]:
    """Seconds from each ringing's publish to its pop's arrival."""
    from telephony.events import AgentRinging, CallStarted

    agents = sorted(world.tickets)[:count]
    assert desks.ask({"open": [[a, world.tickets[a]] for a in agents]})["opened"] == count
    bus, sent = world.parts.bus, {}
    for k in range(rings):
        agent, call_id = agents[k % count], f"bench-{count}-{k}-{random.randrange(10**9)}"
        bus.publish(CallStarted(at=time.time(), call_id=call_id,
                                caller_number=f"1380013{k % 10000:04d}"))
        time.sleep(0.02)  # the caller's IVR, shortened
        sent[call_id] = time.monotonic()
        bus.publish(AgentRinging(at=time.time(), call_id=call_id, queue="intake",
                                 agent=agent))
        time.sleep(0.1)
    time.sleep(2.0)
    heard = desks.ask({"report": True})["heard"]
    desks.ask({"close": True})
    _wait_closed(world)
    arrived = {key: at for _agent, kind, key, at in heard if kind == "pop"}
    lost = len(sent) - len(set(sent) & set(arrived))
    if lost:
        print(f"  {lost} of {len(sent)} pops never arrived")
    return [arrived[c] - t for c, t in sent.items() if c in arrived]


def _wait_closed(world: World) -> None:
    deadline = time.monotonic() + 30
    while world.push.open_desks and time.monotonic() < deadline:
        time.sleep(0.1)


@dataclass
class Capacity:
    desks: int
    opened: int
    unicast: list[float]
    broadcast: list[float]
    lost: int
    bytes_per_desk: float
    open_seconds: float


def capacity(world: World, desks: Desks, count: int) -> Capacity:
    from agent_desk import feed

    agents = sorted(world.tickets)[:count]
    client = world.parts.bus.client
    before = _rss_bytes()
    began = time.monotonic()
    opened = desks.ask({"open": [[a, world.tickets[a]] for a in agents]})["opened"]
    open_seconds = time.monotonic() - began
    time.sleep(1.0)
    grown = _rss_bytes() - before
    sent: dict[str, float] = {}
    for k in range(200):  # 50 a second for 4 s, each to one desk
        probe = f"u{count}-{k}"
        sent[probe] = time.monotonic()
        feed.publish(client, random.choice(agents), "notice", {"probe": probe})
        time.sleep(0.02)
    everyone: dict[str, float] = {}
    for k in range(5):
        probe = f"b{count}-{k}"
        everyone[probe] = time.monotonic()
        feed.publish(client, feed.EVERY_DESK, "notice", {"probe": probe})
        time.sleep(0.5)
    time.sleep(2.0)
    heard = desks.ask({"report": True})["heard"]
    desks.ask({"close": True})
    _wait_closed(world)
    unicast = [at - sent[key] for _a, kind, key, at in heard if key in sent]
    broadcast = [at - everyone[key] for _a, kind, key, at in heard if key in everyone]
    lost = (len(sent) - len(unicast)) + (len(everyone) * opened - len(broadcast))
    return Capacity(count, opened, unicast, broadcast, lost,
                    grown / max(1, opened), open_seconds)


def _world(redis_url: str, directory: str, desks: int) -> World:
    from accounts.service import OPERATOR, create_account
    from agent_desk import push_ticket
    from agent_desk.push import PushServer
    from core.clock import SYSTEM_CLOCK
    from core.config import load_settings
    from core.db import transaction
    from hotline.compose import build

    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HOTLINE_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"HOTLINE_STORAGE_DATA_DIR": directory,
                "HOTLINE_WEB_PUSH_PORT": str(_free_port())})
    if redis_url:
        env["REDIS_URL"] = redis_url
    settings = load_settings(None, env)
    parts = build(settings, SYSTEM_CLOCK)
    tickets = {}
    with transaction(parts.sessions) as session:
        for k in range(desks):
            agent = str(DESK_AGENTS_FROM + k)
            account = create_account(session, f"bench-desk-{agent}", [OPERATOR],
                                     password=None, agent=agent, actor="bench",
                                     now=SYSTEM_CLOCK.now())
            tickets[agent] = push_ticket.issue(
                settings.accounts.session_secret, SYSTEM_CLOCK, account_id=account.id,
                session_user="", agent=agent, see_phone=False, origin=ORIGIN)
    push = PushServer(settings, parts.sessions, parts.redis, SYSTEM_CLOCK)
    url = f"http://{settings.web.host}:{settings.web.push_port}/desk/push"
    return World(settings, parts, tickets, push, url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--desks", type=int, default=30, help="open desks for the pop run")
    parser.add_argument("--rings", type=int, default=60, help="rings timed in each pop run")
    parser.add_argument("--capacity", default="50,100,200,300,500",
                        help="open desks tried, comma-separated")
    parser.add_argument("--redis-url", default="", help="a Redis server instead of embedded")
    parser.add_argument("--client", help=argparse.SUPPRESS)  # the desks' process
    args = parser.parse_args()
    _raise_open_files()
    if args.client:
        asyncio.run(_client(args.client))
        return

    from core.background import BackgroundLoop
    from core.live import stop_embedded

    steps = [int(n) for n in args.capacity.split(",") if n.strip()]
    most = max([args.desks, *steps])
    with tempfile.TemporaryDirectory(prefix="bench-desk-push-") as directory:
        world = _world(args.redis_url, directory, most)
        push_loop, pop_loop = BackgroundLoop("desk-push"), BackgroundLoop("centre")
        push_loop.run(world.push.start(), 15)
        stop = pop_loop.run(_event())
        composer = _composer(world)
        running = asyncio.run_coroutine_threadsafe(composer.run(stop), pop_loop.loop)
        desks = Desks(world.url)
        try:
            _report(world, desks, composer.name, args.desks, args.rings, steps)
        finally:
            desks.close()
            pop_loop.loop.call_soon_threadsafe(stop.set)
            with contextlib.suppress(Exception):
                running.result(10)
            push_loop.run(world.push.close(), 10)
            push_loop.stop()
            pop_loop.stop()
            stop_embedded()  # while its directory is still there to save into


async def _event() -> asyncio.Event:
    return asyncio.Event()


def _report(world: World, desks: Desks, composer: str, count: int, rings: int,
            steps: list[int]) -> None:
    print(f"desk push, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} "
          f"at the start")
    # the most desks first, on the fresh server: its RSS growth is theirs alone (later,
    # smaller runs reuse what the allocator kept)
    runs = {n: capacity(world, desks, n) for n in sorted(set(steps), reverse=True)}
    baseline = capacity(world, desks, 1)
    biggest = runs[max(runs)]
    print(f"\n(b) push capacity: entries on the desk feed -> the desk (200 to single desks "
          f"at 50/s, 5 to every desk); holds = both p95 <= {HOLD_P95_MS:.0f} ms")
    print(f"{'open desks':<14}{'opened':>7}{'open s':>8}{'one p50':>9}{'one p95':>9}"
          f"{'all p95':>9}{'all max':>9}{'lost':>6}{'p95 ratio':>11}  holds")
    holding = 0
    for row in [baseline, *(runs[n] for n in sorted(runs))]:
        worst = max(pct(row.unicast, .95), pct(row.broadcast, .95))
        holds = worst * 1000 <= HOLD_P95_MS and row.opened == row.desks and not row.lost
        if holds and row is not baseline:
            holding = max(holding, row.desks)
        ratio = worst / max(pct(baseline.unicast, .95), pct(baseline.broadcast, .95))
        name = f"{row.desks} (baseline)" if row is baseline else str(row.desks)
        print(f"{name:<14}{row.opened:>7}{row.open_seconds:>8.2f}"
              f"{pct(row.unicast, .5) * 1000:>9.1f}{pct(row.unicast, .95) * 1000:>9.1f}"
              f"{pct(row.broadcast, .95) * 1000:>9.1f}"
              f"{max(row.broadcast, default=float('nan')) * 1000:>9.1f}{row.lost:>6}"
              f"{ratio:>11.2f}  {'yes' if holds else 'no'}")
    print(f"holds {holding} open desks with p95 <= {HOLD_P95_MS:.0f} ms (target "
          f"{TARGET_DESKS}); memory per open desk {biggest.bytes_per_desk / 1024:.1f} KiB "
          f"(the server's RSS growth opening {biggest.desks} desks, fresh)")

    print(f"\n(a) screen pop latency, ringing on the bus -> desk:pop at the desk "
          f"(composer: {composer}, {rings} rings)")
    print(f"{'open desks':<14}{'pops':>6}{'p50 ms':>9}{'p95 ms':>9}{'p50 ratio':>11}"
          f"{'p95 ratio':>11}")
    base = pop_latency(world, desks, 1, rings)
    loaded = pop_latency(world, desks, count, rings)
    for name, values in (("1 (baseline)", base), (str(count), loaded)):
        print(f"{name:<14}{len(values):>6}{pct(values, .5) * 1000:>9.1f}"
              f"{pct(values, .95) * 1000:>9.1f}{pct(values, .5) / pct(base, .5):>11.2f}"
              f"{pct(values, .95) / pct(base, .95):>11.2f}")
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    if world.push.open_desks:
        print(f"({world.push.open_desks} streams still open)")


if __name__ == "__main__":
    main()
