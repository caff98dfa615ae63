"""The C allocator's arenas (glibc malloc). By default glibc gives each thread that
allocates an arena of its own, up to 8 per core; the centre's threads (event loops,
asyncio.to_thread workers, the IVR's lookups) free in one arena what they allocated, and
the freed pieces are kept, fragmented, instead of going back to the system. bench/soak.py
measured it: at 1 call/s the centre's resident memory grew ~2.5 MiB a minute, all of it
glibc's free-but-kept memory (mallinfo2 fordblks) while the memory in use, the Python
objects and SQLite's cache stayed flat; with two arenas it stayed flat.

Also the garbage collector's stops, which every thread of the process waits out, and what
a started process does about them (`settle_heap`)."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import time

log = logging.getLogger(__name__)

ARENAS = 2  # what the soak ran flat with
_M_ARENA_MAX = -8  # mallopt's parameter, from glibc's malloc.h


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's arenas at `arenas`, unless MALLOC_ARENA_MAX already set it (the
    operator's word wins). Takes effect for the threads that allocate afterwards: call it
    before starting them. False where there is no glibc (musl, macOS)."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if mallopt(_M_ARENA_MAX, arenas) != 1:
        log.warning("mallopt(M_ARENA_MAX, %d) refused", arenas)
        return False
    return True


def settle_heap() -> int:
    """Keep what a started process holds (modules, the web app, the mappers, templates,
    message catalogues: ~300,000 objects) out of every later collection: collect once,
    then gc.freeze(). A full collection walked them all each time, a stop of 130-200 ms in
    the soak (bench/soak.py) that every thread waits out, and the p95 of a report at city
    scale (bench/kpi_queries.py: +100 ms on one run in five); afterwards it walks only what
    was made since. Returns the objects frozen.

    For a serving process, once: what is frozen is never collected, so a process that
    starts and stops centres (the tests) would keep each one's cycles (and their
    connections) for good."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class CollectorStops:
    """The garbage collector's longest stop since the last `take` (installed with
    `watch`). Every thread waits for it, the IVR's too: a key the caller presses while the
    IVR is between two AGI commands is dropped by Asterisk, so a long stop there loses it."""

    def __init__(self) -> None:
        self._started = 0.0
        self.longest = 0.0  # seconds

    def __call__(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.longest = max(self.longest, time.perf_counter() - self._started)

    def watch(self) -> CollectorStops:
        gc.callbacks.append(self)
        return self

    def take(self) -> float:
        """The longest stop in seconds, and start again."""
        longest, self.longest = self.longest, 0.0
        return longest
