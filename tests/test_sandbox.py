"""The sandbox's life cycle and its operator errors, through the `hotline` command.

Each test runs its own instance (own data directory and ports) beside the session's PBX.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from asterisk_conf.sandbox import Sandbox
from tests import isolation
from tests.conftest import make_settings

_RTP = isolation.rtp_range(100)
INSTANCE_PORTS = {"HOTLINE_PBX_SIP_PORT": str(isolation.free_port(socket.SOCK_DGRAM)),
                  "HOTLINE_PBX_AMI_PORT": str(isolation.free_port()),
                  "HOTLINE_PBX_WEBRTC_PORT": str(isolation.free_port()),
                  "HOTLINE_PBX_RTP_PORT_START": str(_RTP[0]),
                  "HOTLINE_PBX_RTP_PORT_END": str(_RTP[1])}


def _hotline(*args: str, env: dict[str, str], user: str | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "hotline", *args]
    if user:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    full_env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(Path(__file__).parents[1]), **env}
    return subprocess.run(command, capture_output=True, text=True, env=full_env,
                          timeout=timeout)


def _one_line_error(proc: subprocess.CompletedProcess[str], expected: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0], lines[0]


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as info:
        return [line.split()[4] for line in info if line.split()[4].startswith(str(path))]


def _processes_rooted_in(path: Path) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/root").startswith(str(path)):
                found.append(int(pid))
        except OSError:
            continue
    return found


def test_up_is_quick_on_a_cached_root_idempotent_and_down_leaves_nothing(
        pbx: Sandbox, tmp_path: Path) -> None:
    env = {"HOTLINE_STORAGE_DATA_DIR": str(tmp_path / "data"), **INSTANCE_PORTS}
    # the session's PBX built the cached root if this machine had none
    assert Sandbox(make_settings(tmp_path / "data", **INSTANCE_PORTS)).status().cached
    started = time.monotonic()
    first = _hotline("pbx", "up", env=env)
    elapsed = time.monotonic() - started
    try:
        assert first.returncode == 0, first.stderr
        assert elapsed < 15, f"up on a cached root took {elapsed:.1f} s"
        second = _hotline("pbx", "up", env=env)
        assert second.returncode == 0 and "already running" in second.stdout
        status = _hotline("pbx", "status", "--json", env=env)
        assert status.returncode == 0 and '"running": true' in status.stdout
        root = tmp_path / "data" / "pbx" / "root"
        assert len(_mounts_under(root)) == 4  # overlay, logs, recordings, prompts
        assert _processes_rooted_in(root)
    finally:
        down = _hotline("pbx", "down", env=env)
    assert down.returncode == 0, down.stderr
    root = tmp_path / "data" / "pbx" / "root"
    assert _mounts_under(root) == []
    assert _processes_rooted_in(root) == []
    again = _hotline("pbx", "down", env=env)
    assert again.returncode == 0 and "was not running" in again.stdout
    assert _hotline("pbx", "status", env=env).returncode == 3


def test_not_root_is_one_line() -> None:
    # outside the run's directory, which (like pytest's) only root may enter
    with tempfile.TemporaryDirectory(prefix="hotline-nobody-", dir=isolation.SYSTEM_TMP) as data:
        os.chmod(data, 0o777)
        proc = _hotline("pbx", "up", env={"HOTLINE_STORAGE_DATA_DIR": data, **INSTANCE_PORTS},
                        user="65534")
    _one_line_error(proc, "needs root")


def test_no_debootstrap_and_no_cache_is_one_line(tmp_path: Path) -> None:
    env = {"HOTLINE_STORAGE_DATA_DIR": str(tmp_path / "data"),
           "HOTLINE_PBX_CACHE_DIR": str(tmp_path / "empty-cache"), **INSTANCE_PORTS}
    bin_dir = tmp_path / "bin"  # everything the command needs except debootstrap
    bin_dir.mkdir()
    for tool in ("espeak-ng", "sox", "mount", "umount", "chroot", "chown", "chmod"):
        found = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        (bin_dir / tool).symlink_to(found)
    env["PATH"] = str(bin_dir)
    proc = subprocess.run([sys.executable, "-m", "hotline", "pbx", "up"], capture_output=True,
                          text=True, env={**env, "PYTHONPATH": str(Path(__file__).parents[1])},
                          timeout=60)
    _one_line_error(proc, "debootstrap is not installed")


def test_sid_unreachable_with_no_cache_is_one_line(tmp_path: Path) -> None:
    env = {"HOTLINE_STORAGE_DATA_DIR": str(tmp_path / "data"),
           "HOTLINE_PBX_CACHE_DIR": str(tmp_path / "empty-cache"),
           "HOTLINE_PBX_DEBIAN_MIRROR": "http://127.0.0.1:9/debian", **INSTANCE_PORTS}
    proc = _hotline("pbx", "up", env=env)
    _one_line_error(proc, "cannot build the Asterisk root from http://127.0.0.1:9/debian")
    assert "no cached root" in proc.stderr
    assert not (tmp_path / "empty-cache" / "asterisk-root").exists()


@pytest.mark.parametrize(("kind", "key"), [(socket.SOCK_DGRAM, "pbx.sip_port"),
                                           (socket.SOCK_STREAM, "pbx.ami_port")])
def test_a_port_already_taken_is_one_line(tmp_path: Path, kind: int, key: str) -> None:
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            holder.listen()
        port = str(holder.getsockname()[1])
        env = {"HOTLINE_STORAGE_DATA_DIR": str(tmp_path / "data"), **INSTANCE_PORTS,
               "HOTLINE_" + key.upper().replace(".", "_"): port}
        proc = _hotline("pbx", "up", env=env)
    _one_line_error(proc, f"port 127.0.0.1:{port}")
    assert key in proc.stderr
    assert _mounts_under(tmp_path / "data" / "pbx" / "root") == []


def test_external_mode_refuses_to_start_a_sandbox(tmp_path: Path) -> None:
    env = {"HOTLINE_STORAGE_DATA_DIR": str(tmp_path / "data"), "HOTLINE_PBX_MODE": "external",
           **INSTANCE_PORTS}
    _one_line_error(_hotline("pbx", "up", env=env), "pbx.mode is 'external'")
