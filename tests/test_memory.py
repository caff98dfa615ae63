"""core.memory: the centre caps glibc's malloc arenas (bench/soak.py's memory growth); the
collector's stops are timed (the soak and the tests tell the longest); a started process's
heap is kept out of later collections."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.memory import CollectorStops

# Eight threads, all alive at once, each allocate blocks too big for Python's small-object
# allocator, so each goes to glibc malloc from its own thread; malloc_stats() then lists the
# arenas on stderr.
SCRIPT = """
import ctypes, sys, threading
from core.memory import limit_malloc_arenas
if sys.argv[1] == "limit":
    assert limit_malloc_arenas(2)
kept = []
together = threading.Barrier(8)
def allocate():
    together.wait()  # all alive at once: none takes over an arena another left
    kept.append([bytes(4096) for _ in range(50)])
    together.wait()
threads = [threading.Thread(target=allocate) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL(None).malloc_stats()
"""


def arenas(mode: str, env: dict[str, str] | None = None) -> int:
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=root, check=True,
                          capture_output=True, text=True,
                          env={**{k: v for k, v in os.environ.items()
                                  if k != "MALLOC_ARENA_MAX"}, **(env or {})})
    return sum(line.startswith("Arena ") for line in done.stderr.splitlines())


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")


def test_threads_share_two_arenas_once_limited() -> None:
    assert arenas("free") > 2  # glibc's default: an arena per allocating thread
    assert arenas("limit") == 2


def test_the_operators_malloc_arena_max_wins() -> None:
    assert arenas("free", {"MALLOC_ARENA_MAX": "3"}) == 3


def test_the_collectors_stops_are_timed_until_taken() -> None:
    stops = CollectorStops().watch()
    try:
        assert stops.take() == 0.0
        gc.collect()
        assert 0.0 < stops.take() < 5.0
        assert stops.take() == 0.0
    finally:
        gc.callbacks.remove(stops)


# A started centre's heap (~300,000 objects in the bench's process): a full collection walks
# it all until it is settled, afterwards only what was made since.
SETTLE = """
import gc, time
from core.memory import settle_heap
held = [{"n": i, "of": [i]} for i in range(400_000)]
def full():
    started = time.perf_counter()
    gc.collect()
    return time.perf_counter() - started
before = min(full() for _ in range(3))
frozen = settle_heap()
after = min(full() for _ in range(3))
print(frozen, before, after, gc.get_freeze_count())
"""


def test_a_settled_heap_is_left_out_of_full_collections() -> None:
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", SETTLE], cwd=root, check=True,
                          capture_output=True, text=True)
    frozen, before, after, still = done.stdout.split()
    assert int(frozen) >= 800_000 and int(still) == int(frozen)  # the dicts and their lists
    assert float(after) < float(before) / 10, (before, after)  # ~50 ms -> well under 5
