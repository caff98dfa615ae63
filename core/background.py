"""An asyncio loop in a daemon thread, for synchronous callers (CLI, tests) of async services."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
CANCEL_GRACE_S = 1.0  # what a cancelled task may take to unwind when its loop stops


class BackgroundLoop:
    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name=name)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, timeout: float = 5) -> None:
        """Cancel what still runs on the loop and let it unwind, then stop the loop, within
        about `timeout` seconds. A task left pending on a closed loop unwound later, when
        the collector found it, with no loop to run on (the desk push's reader logged
        "no running event loop" from the tests' stops)."""
        if self._thread.is_alive():
            grace = min(CANCEL_GRACE_S, max(timeout / 2, 0.1))
            with contextlib.suppress(Exception):  # the loop stopping meanwhile, or stuck
                self.run(_cancel_all(grace), grace + 0.5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
        with contextlib.suppress(RuntimeError):
            self.loop.close()


async def _cancel_all(grace: float) -> None:
    """Cancel every other task of this loop; wait up to `grace` seconds for them to end."""
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=grace)
