"""Stopping the web server (hotline.web.stop_web_server): its loop thread ends without an
exception, its port is free for the next server, and a keep-alive client is cut off. Also
when the loop's wake-up pipe has been taken from it: a CI run found its write end closed
before the stop (by something in the process still unknown) and the stop raised EBADF;
writing to that number could instead have landed in whatever file took it."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from waitress.server import create_server

from hotline.web import stop_web_server


def _hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@pytest.fixture
def thread_errors() -> Iterator[list[BaseException]]:
    """Exceptions that ended a thread while the test ran."""
    caught: list[BaseException] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: caught.append(args.exc_value)  # type: ignore[assignment,arg-type]
    try:
        yield caught
    finally:
        threading.excepthook = previous


def _serving() -> tuple[Any, threading.Thread, httpx.Client]:
    server = create_server(_hello, host="127.0.0.1", port=0, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{server.effective_port}", timeout=5)
    assert client.get("/").text == "hello"  # and the connection stays open (keep-alive)
    return server, thread, client


def _stopped_cleanly(server: Any, thread: threading.Thread, client: httpx.Client,
                     port: int, thread_errors: list[BaseException]) -> None:
    assert not thread.is_alive()
    assert thread_errors == []
    with socket.socket() as again:  # the next server (waitress reuses addresses) can listen
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
    with pytest.raises(httpx.TransportError):  # the kept-alive connection was closed
        client.get("/")
    client.close()


def test_a_stopped_server_ends_its_loop_and_frees_its_port(
        thread_errors: list[BaseException]) -> None:
    server, thread, client = _serving()
    port = int(server.effective_port)
    stop_web_server(server, thread)
    _stopped_cleanly(server, thread, client, port, thread_errors)


def test_a_server_whose_wake_up_pipe_was_closed_stops_and_writes_nowhere(
        thread_errors: list[BaseException], caplog: pytest.LogCaptureFixture) -> None:
    server, thread, client = _serving()
    port, write_end = int(server.effective_port), server.trigger.trigger
    server.trigger.pull_trigger(server.trigger.close)  # closed on its own loop thread
    deadline = time.monotonic() + 5
    while not server.trigger._closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.trigger._closed
    # another file takes the number the pipe's write end had
    taker_read, taker_write = os.pipe()
    os.dup2(taker_write, write_end)
    try:
        with caplog.at_level(logging.ERROR, logger="hotline.web"):
            started = time.monotonic()
            stop_web_server(server, thread)
        assert time.monotonic() - started < 8
        _stopped_cleanly(server, thread, client, port, thread_errors)
        assert "wake-up pipe was closed before its stop" in caplog.text
        os.set_blocking(taker_read, False)
        with pytest.raises(BlockingIOError):  # nothing was written into the other file
            os.read(taker_read, 10)
        os.fstat(write_end)  # ... and it is still open: the stop closed no stale number
    finally:
        for fd in (taker_read, taker_write, write_end):
            with contextlib.suppress(OSError):
                os.close(fd)


def test_a_server_whose_wake_up_pipe_cannot_be_written_stops(
        thread_errors: list[BaseException], caplog: pytest.LogCaptureFixture) -> None:
    server, thread, client = _serving()
    port, trigger = int(server.effective_port), server.trigger
    write_end, read_end = trigger.trigger, trigger._fds[0]
    keeper = os.dup(write_end)  # the pipe keeps a write end: its loop sees no end of file
    # the write end's number now names a file open for reading only: EBADF on write
    read_only = os.open(os.devnull, os.O_RDONLY)
    os.dup2(read_only, write_end)
    os.close(read_only)
    try:
        with caplog.at_level(logging.ERROR, logger="hotline.web"):
            stop_web_server(server, thread)
        _stopped_cleanly(server, thread, client, port, thread_errors)
        assert "cannot be written" in caplog.text
        assert os.fstat(write_end).st_rdev == os.stat(os.devnull).st_rdev  # left alone
    finally:
        for fd in (write_end, read_end, keeper):
            with contextlib.suppress(OSError):
                os.close(fd)
        trigger.socket.close()  # the loop's own copy of the read end
