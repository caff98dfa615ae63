"""How the `hotline` command stops (停止): on SIGTERM, as systemd sends it, or on Ctrl-C.

The first signal interrupts the command where it stands (Ctrl-C as KeyboardInterrupt, SIGTERM
as SystemExit) and its cleanup runs: the centre's loops and workers, its web and push servers,
the IVR, the Asterisk sandbox it started, the embedded Redis. Every later signal only says that
the stop is under way: a second Ctrl-C (an impatient hand, or a terminal sending two at once)
used to land inside that cleanup and break it off half-way, leaving the process waiting on
loops nobody had stopped, with Asterisk running.

A stop is bounded: if the process is still there `FORCE_AFTER` seconds after the first signal,
what it started outside itself is killed (the `on_overrun` actions: Asterisk, redis-server)
and it exits at once with `OVERRUN_EXIT`, so `hotline` is gone within `STOP_BOUND` seconds of
SIGTERM whatever hangs, and systemd's own SIGKILL (TimeoutStopSec) is never needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)

STOP_BOUND = 10.0  # seconds from the first signal to the end of the process, at most
FORCE_AFTER = 8.5  # then what is left is killed (which takes well under a second)
OVERRUN_EXIT = 70  # EX_SOFTWARE: the stop did not finish by itself

_lock = threading.Lock()
_received: int | None = None  # the first stop signal, once one came
_overrun: list[Callable[[], None]] = []  # what to kill when the stop overruns


def install() -> None:
    """Handle SIGTERM and SIGINT in this (main) thread as described above."""
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def received() -> int | None:
    """The signal that asked the process to stop, if one did."""
    return _received


def exit_code(code: object) -> object:
    """The process's exit status: 128 + the signal after a stop by signal (143 for
    SIGTERM, 130 for Ctrl-C), whatever the interrupted command would have returned."""
    return 128 + _received if _received is not None else code


def on_overrun(action: Callable[[], None]) -> Callable[[], None]:
    """Run `action` (quick: kill, never wait) if a stop overruns; returns its remover."""
    with _lock:
        _overrun.append(action)

    def remove() -> None:
        with _lock, contextlib.suppress(ValueError):
            _overrun.remove(action)

    return remove


def set_on_signal(stop: asyncio.Event) -> None:
    """For a command that is one asyncio loop (`hotline telephony`, `hotline ivr`): the
    first SIGTERM or Ctrl-C sets `stop`, so the service ends its own way (a call record
    being written is finished, not cancelled); later ones are ignored, and the same bound
    holds. Call it on the running loop. (Not loop.add_signal_handler: the loop puts the
    default handlers back when it closes, and a late Ctrl-C killed the process then.)"""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if _first(signum):
            loop.call_soon_threadsafe(stop.set)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)


def finish() -> None:
    """The command is over: once a stop signal came, ignore the others for good. Python
    puts the default handlers back while the interpreter shuts down, and one more SIGTERM
    then killed the process with no exit status of its own."""
    if _received is not None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)


def _first(signum: int) -> bool:
    """Note a stop signal; True for the first, which starts the watch on the bound."""
    global _received
    with _lock:
        first = _received is None
        if first:
            _received = signum
    if first:
        threading.Thread(target=_watch, args=(time.monotonic(),), daemon=True,
                         name="stop-watch").start()
    else:
        _say(f"hotline: already stopping (at most {STOP_BOUND:.0f} s); "
             f"{signal.Signals(signum).name} ignored")
    return first


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    if not _first(signum):
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def _watch(started: float) -> None:
    time.sleep(max(0.0, started + FORCE_AFTER - time.monotonic()))
    with _lock:
        actions = list(_overrun)
    _say(f"hotline: the stop overran {FORCE_AFTER:.1f} s; killing what is left")
    for action in actions:
        try:
            action()
        except Exception as exc:  # the next one still runs: this is the last word
            _say(f"hotline: while forcing the stop: {type(exc).__name__}: {exc}")
    os._exit(OVERRUN_EXIT)


def _say(text: str) -> None:
    # not print(): a signal handler may run while the main thread writes to stderr
    with contextlib.suppress(OSError):
        os.write(sys.stderr.fileno(), (text + "\n").encode())
