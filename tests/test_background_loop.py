"""core.background: a loop stopped with tasks still on it cancels them and lets them unwind
on the loop, so none is left pending to be unwound later by the collector with no loop."""

from __future__ import annotations

import asyncio
import time

from core.background import BackgroundLoop


def test_a_stopped_loop_unwinds_the_tasks_left_on_it() -> None:
    background = BackgroundLoop("test")
    unwound: list[str] = []

    async def reader() -> None:  # as the desk push's: retries what fails, until cancelled
        try:
            while True:
                try:
                    await asyncio.sleep(3600)
                except Exception:
                    await asyncio.sleep(1)
        finally:
            unwound.append("reader")
            await asyncio.sleep(0)  # unwinding may await: the loop still runs

    async def begin() -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(reader())

    task = background.run(begin(), 5)
    started = time.monotonic()
    background.stop(5)
    assert time.monotonic() - started < 1.5
    assert unwound == ["reader"]
    assert task.cancelled()


def test_a_task_that_will_not_end_delays_the_stop_by_the_grace_only() -> None:
    background = BackgroundLoop("test")

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue  # refuses to end

    async def begin() -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(stubborn())

    background.run(begin(), 5)
    started = time.monotonic()
    background.stop(5)
    assert time.monotonic() - started < 2.0  # one second's grace, then the loop stops
