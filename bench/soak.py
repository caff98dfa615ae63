"""A soak (稳定性压测): a steady call rate through IVR, queue and kit agents for a long time,
watching what must stay flat. Issue 15's target: 30 minutes with no failed call; the
telephony service's memory and open files flat (growth <= 5 % after warm-up); every Redis
stream's length bounded.

    .venv/bin/python -m bench.soak                       (30 minutes at 2 calls/s, as root)
    .venv/bin/python -m bench.soak --minutes 6 --warmup 2   (a shorter look)

The world is bench/call_rate.py's (its own sandbox PBX, agents on SIPp phones, kit callers
keying 1 into the hotline's FastAGI menu, the centre without the web API in this process),
on its own data directory and ports so a call-rate run is not disturbed. Each minute is
one step of arrivals at `--rate`; after it, the step's calls are judged as call_rate judges
them (a SIP error, or no agent within `--max-wait` of the key, is a failed call) and the
process is measured: resident memory (VmRSS), open file descriptors (the fewest of a few
readings a second apart: what a call in progress holds for a moment is not growth), threads (the
telephony service, the IVR and the workers all run here), every Redis stream's length, and
Asterisk's resident memory. The baseline row is the first minute after `--warmup`; every
later row prints its ratio to it, and the summary says whether the targets hold.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import ctypes.util
import dataclasses
import gc
import os
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from agent_desk import feed
from bench import call_rate
from bench.call_rate import Bench, Options
from core import outbox
from core.events import STREAM
from core.live import failing_fast
from core.memory import CollectorStops
from telephony import commands

SOAK_PORTS = {
    "HOTLINE_PBX_SIP_PORT": "27160",
    "HOTLINE_PBX_AMI_PORT": "27138",
    "HOTLINE_PBX_RTP_PORT_START": "34000",
    "HOTLINE_PBX_RTP_PORT_END": "34999",
    "HOTLINE_IVR_FASTAGI_PORT": "26673",
    "HOTLINE_WEB_PORT": "28519",
    "HOTLINE_PBX_WEBRTC_PORT": "28189",  # call_rate leaves the default 8089
}
GROWTH_LIMIT = 1.05
FD_READINGS = 3  # open files are read this many times a second apart after each step


@dataclasses.dataclass
class Sample:
    minute: int
    calls: int
    failed: int
    rss_mib: float
    fds: int
    threads: int
    streams: dict[str, int]
    added: int  # entries appended to the event stream since the previous sample
    last_id: str  # the newest of them
    asterisk_mib: float
    sqlite_mib: float = 0.0
    malloc_used_mib: float = 0.0  # handed out by the C allocator and not freed
    malloc_free_mib: float = 0.0  # freed but kept by it (fragments of its arenas)
    fd_kinds: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    gc_pause_ms: float = 0.0  # the collector's longest stop of this process in the minute


def _status(pid: int | str, field: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except (FileNotFoundError, ValueError, IndexError):
        pass
    return 0.0


def _sqlite_library() -> ctypes.CDLL | None:
    """The SQLite library Python's sqlite3 module runs on (the same shared object, so the
    same process-wide counters)."""
    import sqlite3  # noqa: F401  (loads the library first)

    name = ctypes.util.find_library("sqlite3")
    try:
        library = ctypes.CDLL(name or "libsqlite3.so.0")
        library.sqlite3_memory_used.restype = ctypes.c_int64
        return library
    except (OSError, AttributeError):
        return None


_SQLITE = _sqlite_library()


def _sqlite_mib() -> float:
    """Memory SQLite holds in this process (sqlite3_memory_used): mostly the page cache of
    each pooled connection, which fills up to `PRAGMA cache_size` (2000 KiB by default) as
    the database grows, then stays."""
    return _SQLITE.sqlite3_memory_used() / 2**20 if _SQLITE is not None else 0.0


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _malloc_mib() -> tuple[float, float]:
    """glibc's own account of this process's heap (mallinfo2, every arena): bytes in use
    (including mmapped blocks) and bytes free but kept; (0, 0) elsewhere."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return 0.0, 0.0
    return (info.uordblks + info.hblkhd) / 2**20, info.fordblks / 2**20


def _socket_peers() -> dict[str, str]:
    """Socket inode -> what it is: "tcp :PORT" for a TCP socket (its local port when it
    listens, else its peer's port), "unix PATH" (or "unix") for a Unix socket."""
    peers: dict[str, str] = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/self/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            listening = state == "0A"
            port = int((local if listening else remote).rsplit(":", 1)[1], 16)
            peers[inode] = f"tcp {'listen ' if listening else ''}:{port}"
    try:
        for line in Path("/proc/self/net/unix").read_text().splitlines()[1:]:
            fields = line.split()
            peers[fields[6]] = f"unix {fields[7]}" if len(fields) > 7 else "unix"
    except OSError:
        pass
    return peers


def fd_kinds() -> collections.Counter[str]:
    """This process's open file descriptors by kind: the file (temporary directories'
    names made alike), or the socket's peer (_socket_peers), pipe, eventpoll..."""
    kinds: collections.Counter[str] = collections.Counter()
    peers: dict[str, str] | None = None
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor among them)
        if target.startswith("socket:["):
            peers = _socket_peers() if peers is None else peers
            target = peers.get(target[8:-1], "socket (not in /proc/net)")
        elif target.startswith(("pipe:[", "anon_inode:")):
            target = target.split("[", 1)[0] if target.startswith("pipe") else target
        kinds[target] += 1
    return kinds


def redis_clients(bench: Bench, younger_than: float) -> list[str]:
    """The centre's Redis server's client connections made less than `younger_than`
    seconds ago: the last command each ran and its idle time (what opened them)."""
    assert bench.centre is not None
    return [f"{c.get('cmd')} age {c.get('age')} s idle {c.get('idle')} s"
            for c in bench.centre.bus.client.client_list()
            if int(c.get("age", 0)) < younger_than]


def _streams(bench: Bench) -> dict[str, int]:
    """Every Redis stream of the centre and its length."""
    assert bench.centre is not None
    client = bench.centre.bus.client
    lengths = {}
    for key in client.scan_iter(_type="STREAM"):
        name = key.decode() if isinstance(key, bytes) else str(key)
        lengths[name] = int(client.xlen(name))
    return lengths


def _added(bench: Bench, after: str) -> tuple[int, str]:
    """Entries appended to the event stream after the id `after`, and the newest id. (XINFO's
    entries-added would say it at once, but the embedded server is Redis 6; the entries of
    one minute are all still there, the trim keeps more than a minute's.)"""
    assert bench.centre is not None
    entries = bench.centre.bus.client.xrange(STREAM, min=f"({after}")
    if not entries:
        return 0, after
    newest = entries[-1][0]
    return len(entries), newest.decode() if isinstance(newest, bytes) else str(newest)


def settled_fds(readings: int = FD_READINGS, apart: float = 1.0) -> collections.Counter[str]:
    """The open files (fd_kinds) of the fewest of `readings` taken `apart` seconds apart: a
    connection held for a moment by a call in progress (a database pool's overflow, a
    second AMI socket) is not growth, and a leak raises the fewest too."""
    fewest: collections.Counter[str] | None = None
    for reading in range(readings):
        if reading:
            time.sleep(apart)
        kinds = fd_kinds()
        if fewest is None or kinds.total() < fewest.total():
            fewest = kinds
    assert fewest is not None
    return fewest


def pool_connections(bench: Bench) -> str:
    """The centre's two Redis pools' connections, the shared client's and the failing-fast
    one's: redis-py opens one whenever more threads use a pool at once than ever before."""
    assert bench.centre is not None
    sizes = []
    for client in (bench.centre.bus.client, failing_fast(bench.centre.bus.client)):
        pool = client.connection_pool
        sizes.append(len(pool._available_connections) + len(pool._in_use_connections))
    return f"shared {sizes[0]}, failing-fast {sizes[1]}"


def sample(bench: Bench, minute: int, calls: int, failed: int, after: str,
           gc_pause_ms: float = 0.0) -> Sample:
    pid = bench.asterisk_pid()
    added, last_id = _added(bench, after)
    kinds = settled_fds()
    return Sample(minute=minute, calls=calls, failed=failed, added=added, last_id=last_id,
                  rss_mib=_status("self", "VmRSS") / 1024,
                  fds=kinds.total(), fd_kinds=kinds, gc_pause_ms=gc_pause_ms,
                  threads=int(_status("self", "Threads")),
                  streams=_streams(bench),
                  asterisk_mib=_status(pid, "VmRSS") / 1024 if pid else 0.0,
                  sqlite_mib=_sqlite_mib(), **dict(zip(
                      ("malloc_used_mib", "malloc_free_mib"), _malloc_mib(), strict=True)))


HEADER = (f"{'min':>4} {'calls':>6} {'failed':>6} {'RSS MiB':>8} {'ratio':>6} {'fds':>5} "
          f"{'ratio':>6} {'threads':>7} {'streams':>8} {'Asterisk MiB':>12} {'SQLite MiB':>10} "
          f"{'RSS-SQLite':>10} {'C used':>8} {'C free':>8} {'GC stop ms':>10}")


def row(s: Sample, base: Sample | None) -> str:
    def ratio(value: float, baseline: float) -> str:
        return f"{value / baseline:6.3f}" if base is not None and baseline else "     -"

    return (f"{s.minute:>4} {s.calls:>6} {s.failed:>6} {s.rss_mib:>8.1f} "
            f"{ratio(s.rss_mib, base.rss_mib if base else 0)} {s.fds:>5} "
            f"{ratio(s.fds, base.fds if base else 0)} {s.threads:>7} "
            f"{sum(s.streams.values()):>8} {s.asterisk_mib:>12.1f} {s.sqlite_mib:>10.1f} "
            f"{s.rss_mib - s.sqlite_mib:>10.1f} {s.malloc_used_mib:>8.1f} "
            f"{s.malloc_free_mib:>8.1f} {s.gc_pause_ms:>10.0f}")


def verdict(samples: list[Sample], warmup: int, bounds: dict[str, int]) -> list[str]:
    """The targets, each a line saying whether it holds."""
    after = [s for s in samples if s.minute > warmup]
    failed = sum(s.failed for s in samples)
    lines = [f"failed calls: {failed} of {sum(s.calls for s in samples)} "
             f"({'ok' if failed == 0 else 'FAILED'})"]
    if len(after) < 2:
        return [*lines, "too short after warm-up to judge growth"]
    base, last = after[0], after[-1]
    for name, first, final in (("telephony service memory (VmRSS)", base.rss_mib, last.rss_mib),
                               ("open files", base.fds, last.fds)):
        growth = final / first if first else 1.0
        lines.append(f"{name}: {first:.1f} -> {final:.1f}, x{growth:.3f} "
                     f"({'ok' if growth <= GROWTH_LIMIT else 'GREW'} against "
                     f"<= x{GROWTH_LIMIT})")
    lines.append(f"longest garbage-collector stop: "
                 f"{max(s.gc_pause_ms for s in samples):.0f} ms")
    changed = {kind: (base.fd_kinds.get(kind, 0), last.fd_kinds.get(kind, 0))
               for kind in base.fd_kinds.keys() | last.fd_kinds.keys()
               if base.fd_kinds.get(kind, 0) != last.fd_kinds.get(kind, 0)}
    if changed:
        lines.append("  open files that changed: " + "; ".join(
            f"{kind} {a} -> {b}" for kind, (a, b) in sorted(changed.items())))
    for name in sorted({n for s in samples for n in s.streams}):
        limit = bounds.get(name)
        longest = max(s.streams.get(name, 0) for s in samples)
        if limit is None:
            lines.append(f"stream {name}: longest {longest} entries (no bound declared)")
            continue
        lines.append(f"stream {name}: longest {longest} entries "
                     f"({'ok' if longest <= limit else 'OVER'} against its bound {limit})")
    return lines


def stream_bounds(keep: int, per_minute: int) -> dict[str, int]:
    """The most entries each stream may hold: the event stream is trimmed to `keep` once a
    TRIM_EVERY_SECONDS (never below an unacknowledged entry), so it holds at most `keep`
    plus what arrives between two trims; the desk and command streams are capped on XADD
    (approximately: Redis trims whole nodes of up to 100 entries)."""
    between_trims = per_minute * (int(outbox.TRIM_EVERY_SECONDS) // 60 + 1)
    return {STREAM: keep + between_trims, feed.DESK_STREAM: feed.MAXLEN + 100,
            commands.STREAM: commands.MAXLEN + 100}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5,
                        help="minutes before the baseline row (default %(default)s)")
    parser.add_argument("--rate", type=float, default=2.0, help="calls per second")
    parser.add_argument("--agents", type=int, default=40)
    parser.add_argument("--phones", type=int, default=10)
    parser.add_argument("--talk", type=float, default=2.0)
    parser.add_argument("--max-wait", type=float, default=5.0)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--stream-keep", type=int, default=5000,
                        help="entries the event stream keeps after a trim (default "
                             "%(default)s, so that the trim is reached within the run)")
    parser.add_argument("--lane", type=int, default=0, choices=range(0, 8),
                        help="run beside another soak: ports +1000 per lane, loopback "
                             "127.0.(2+lane).x and its own data directory")
    parser.add_argument("--objects", action="store_true",
                        help="print each minute the object types whose count grew most")
    parser.add_argument("--trace", action="store_true",
                        help="tracemalloc: print each minute the allocation sites that grew "
                             "most since the previous minute (slows the centre)")
    args = parser.parse_args(argv)
    if args.minutes <= args.warmup + 1 or args.rate <= 0:
        parser.error("--minutes must exceed --warmup by 2 or more; --rate positive")
    return args


TRACE_TOP = 10


def trace_growth(previous: tracemalloc.Snapshot | None) -> tracemalloc.Snapshot:
    """Print the allocation sites (file:line) that grew most since `previous`; the
    tracemalloc bookkeeping itself is left out."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        (tracemalloc.Filter(False, tracemalloc.__file__),))
    traced = sum(stat.size for stat in snapshot.statistics("filename")) / 2**20
    print(f"     traced by Python: {traced:.1f} MiB", flush=True)
    if previous is not None:
        grown = [stat for stat in snapshot.compare_to(previous, "lineno") if stat.size_diff > 0]
        grown.sort(key=lambda stat: stat.size_diff, reverse=True)
        for stat in grown[:TRACE_TOP]:
            print(f"     {stat}", flush=True)
    return snapshot


def object_growth(previous: collections.Counter[str] | None) -> collections.Counter[str]:
    """Print the object types (tracked by the garbage collector) whose count grew most
    since `previous`."""
    counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    print(f"     gc-tracked objects: {sum(counts.values())}", flush=True)
    if previous is not None:
        grown = sorted(((n - previous.get(k, 0), k) for k, n in counts.items()), reverse=True)
        print("     grew: " + ", ".join(f"{k} +{d}" for d, k in grown[:TRACE_TOP] if d > 0),
              flush=True)
    return counts


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench.soak starts a sandbox Asterisk: run it as root", file=sys.stderr)
        return 2
    # call_rate's world on this bench's own directory and ports
    lane = f"-lane{args.lane}" if args.lane else ""
    call_rate.DATA_DIR = (Path(tempfile.gettempdir())
                          / f"hotline-bench-soak{lane}-{os.getuid()}")
    call_rate.PORTS.update({k: str(int(v) + 1000 * args.lane) for k, v in SOAK_PORTS.items()})
    net = f"127.0.{2 + args.lane}."
    call_rate.CALLER_IP, call_rate.AGENT_NET = f"{net}2", net
    call_rate.PORTS["HOTLINE_PBX_CALLER_NETWORKS"] = f"{net}2/32"
    call_rate.PORTS["HOTLINE_PBX_TRUNK_HOST"] = f"{net}4"
    signal.signal(signal.SIGTERM, _interrupted)
    options = Options(rates=[args.rate], refine=0, resolution=0.1, step_seconds=60,
                      min_calls=1, agents=args.agents, phones=args.phones, talk=args.talk,
                      answer_after=0.5, key_after=1.0, max_wait=args.max_wait, keep=args.keep)
    bench = Bench(options)
    samples: list[Sample] = []
    base: Sample | None = None
    traced: tracemalloc.Snapshot | None = None
    objects: collections.Counter[str] | None = None
    if args.trace:
        tracemalloc.start(1)
    stops = CollectorStops().watch()
    try:
        with bench.running() as centre:
            assert centre.parts.relay is not None
            # a bound the run reaches: the production keep (200,000) takes hours to fill
            centre.parts.relay.trim_keep = args.stream_keep
            print(f"soak: {args.minutes} min at {args.rate}/s, warm-up {args.warmup} min, "
                  f"{args.agents} agents on {len(bench.phones)} phones; load average "
                  f"{os.getloadavg()[0]:.2f}; Redis pools: {pool_connections(bench)}")
            print(HEADER, flush=True)
            for minute in range(1, args.minutes + 1):
                step = bench.step("hotline", args.rate)
                now = sample(bench, minute, step.calls, step.failed,
                             samples[-1].last_id if samples else "0-0", stops.take() * 1000)
                if minute == args.warmup + 1:
                    base = now
                samples.append(now)
                print(row(now, base), flush=True)
                if samples[-2:-1] and now.fd_kinds != samples[-2].fd_kinds:
                    before = samples[-2].fd_kinds
                    print("     open files: " + "; ".join(
                        f"{k} {before.get(k, 0)} -> {now.fd_kinds.get(k, 0)}"
                        for k in sorted(before.keys() | now.fd_kinds.keys())
                        if before.get(k, 0) != now.fd_kinds.get(k, 0)), flush=True)
                    for client in redis_clients(bench, 90):
                        print(f"     new Redis connection: {client}", flush=True)
                    print(f"     Redis pools: {pool_connections(bench)}", flush=True)
                if args.trace:
                    traced = trace_growth(traced)
                if args.objects:
                    objects = object_growth(objects)
    except KeyboardInterrupt:
        print("\ninterrupted: PBX, phones and centre stopped", file=sys.stderr)
        return 130
    # events per minute on the bus: the most appended in one step (the first holds the start)
    per_minute = max((s.added for s in samples[1:]), default=0)
    print("\n".join(verdict(samples, args.warmup, stream_bounds(args.stream_keep, per_minute))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
