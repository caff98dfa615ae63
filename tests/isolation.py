"""Each test run on this machine keeps to itself: its own directory and its own free ports.

Everything a run starts lives under its run directory: the test PBX's overlay root and data,
pytest's temporary directories, the SIP kit's work directories, embedded Redis servers. So a
second run beside the first disturbs nothing, and what a run killed half-way leaves behind
(Asterisk, sipp, redis-server, mounts) is found by its directory and stopped by the next run.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

SYSTEM_TMP = Path(tempfile.gettempdir())
PREFIX = "hotline-test-run-"
OWNER = "owner"


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a process: with the pid, it names one process for good."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def new_run_dir() -> Path:
    run = Path(tempfile.mkdtemp(prefix=PREFIX, dir=SYSTEM_TMP))
    (run / OWNER).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
    (run / "tmp").mkdir()
    return run


def owner_alive(run: Path) -> bool:
    try:
        pid_text, started = (run / OWNER).read_text().split()
    except (OSError, ValueError):
        return False
    return _start_time(int(pid_text)) == started


def processes_under(path: Path) -> list[tuple[int, str]]:
    """(pid, command line) of every process but this one whose working directory or root
    lies under `path`: Asterisk in its chroot, sipp in its work directory, redis-server in
    its data directory."""
    prefix = str(path.resolve())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        places = []
        for link in ("cwd", "root"):
            with contextlib.suppress(OSError):
                places.append(os.readlink(f"/proc/{entry}/{link}"))
        if any(p == prefix or p.startswith(prefix + "/") for p in places):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as raw:
                    command = raw.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                command = "?"
            found.append((int(entry), command))
    return found


def kill_all(processes: list[tuple[int, str]]) -> None:
    for pid, _command in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_start_time(pid) for pid, _ in processes):
        time.sleep(0.05)


def mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    with open("/proc/self/mountinfo") as info:
        points = [line.split()[4].replace("\\040", " ") for line in info]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def unmount_all(path: Path) -> None:
    import subprocess

    for point in sorted(mounts_under(path), key=len, reverse=True):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)


def reap_stale_runs() -> list[Path]:
    """Stop and remove what runs whose pytest is gone left behind; returns their dirs."""
    reaped = []
    for run in SYSTEM_TMP.glob(f"{PREFIX}*"):
        if not run.is_dir() or owner_alive(run):
            continue
        kill_all(processes_under(run))
        unmount_all(run)
        if not mounts_under(run):
            shutil.rmtree(run, ignore_errors=True)
        reaped.append(run)
    return reaped


_handed_out: set[int] = set()


def free_port(kind: int = socket.SOCK_STREAM, hosts: tuple[str, ...] = ("127.0.0.1",)
              ) -> int:
    """A port free on every one of `hosts` now, outside the ranges the kit and the PBX pick
    media ports from (20000-60000), and never one this run was given before."""
    for _ in range(200):
        port = random.randrange(10000, 19999)
        if port in _handed_out:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for host in hosts:
                    probe = stack.enter_context(socket.socket(socket.AF_INET, kind))
                    probe.bind((host, port))
            except OSError:
                continue
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port on {', '.join(hosts)}")


def rtp_range(size: int = 1000) -> tuple[int, int]:
    """A block of RTP ports for the test PBX; another run's block may overlap, and
    Asterisk then picks another port of its range."""
    start = random.randrange(20000, 60000 - size, 2)
    return start, start + size - 1
