"""A redis-server of a test's own, on a free port, that the test may stop and start again:
the machine's shared server (REDIS_SERVER_URL) is used by other runs and never stopped.

It keeps its data as a production server does (an append-only file, fsynced at each write),
so a stop and a start lose nothing, and only the outage itself is tested.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path

import redis

from tests import isolation


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = isolation.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.directory), "--appendonly", "yes", "--appendfsync", "always",
             "--save", "", "--daemonize", "no", "--logfile", str(self.directory / "log")],
            cwd=self.directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert self.process.poll() is None, f"redis-server on {self.port} ended"
                assert time.monotonic() < deadline, f"redis-server on {self.port} not up"
                time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        """SIGTERM: the server writes what it has and ends; its port is closed after."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
