"""`hotline systemd` writes units for a production host: checked key by key against what a
person would write by hand, and by `systemd-analyze verify` (on this machine; it also
warns, with status 0, about a key it cannot parse, so its output must be empty)."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

VENV_HOTLINE = Path(sys.prefix) / "bin" / "hotline"


def _systemd(config: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [sys.executable, "-m", "hotline"]
    if config is not None:
        command += ["--config", str(config)]
    return subprocess.run([*command, "systemd", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep case
    parser.read_string(path.read_text())
    return parser


def _verify(paths: list[Path]) -> None:
    verify = shutil.which("systemd-analyze")
    assert verify, "systemd-analyze is on this machine (systemd package)"
    proc = subprocess.run([verify, "verify", *map(str, paths)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stderr


def test_units_for_a_sandbox_host_with_postgresql_and_redis(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "hotline.toml"
    config.parent.mkdir()
    config.write_text('[storage]\ndata_dir = "/var/lib/hotline"\n'
                      'database_url = "postgresql://hotline@127.0.0.1:5432/hotline"\n'
                      'redis_url = "redis://localhost:6379/0"\n')
    out = tmp_path / "units"
    proc = _systemd(config, "--user", "www-data", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["hotline-pbx.service", "hotline.service"]
    run = f"{VENV_HOTLINE} --config {config}"

    centre = _unit(out / "hotline.service")
    assert centre["Unit"]["After"].split() == ["network-online.target", "postgresql.service",
                                               "redis-server.service", "hotline-pbx.service"]
    assert centre["Unit"]["Wants"].split() == centre["Unit"]["After"].split()
    assert "Requires" not in centre["Unit"]  # a restart of one must not restart the centre
    service = centre["Service"]
    assert service["ExecStart"] == f"{run} serve"
    assert service["ExecStartPre"] == f"{run} db upgrade"
    assert service["Environment"] == f"HOTLINE_CONFIG={config}"
    assert (service["User"], service["Group"]) == ("www-data", "www-data")
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed"
    assert service["TimeoutStopSec"] == "15"
    assert service["SuccessExitStatus"] == "143"
    assert centre["Install"]["WantedBy"] == "multi-user.target"

    pbx = _unit(out / "hotline-pbx.service")
    assert pbx["Service"]["Type"] == "forking"
    assert pbx["Service"]["PIDFile"] == "/var/lib/hotline/pbx/asterisk.pid"
    assert pbx["Service"]["ExecStart"] == f"{run} pbx up"
    assert pbx["Service"]["ExecStop"] == f"{run} pbx down"
    assert pbx["Service"]["Restart"] == "on-failure"
    assert pbx["Service"]["KillSignal"] == "SIGTERM"
    assert "User" not in pbx["Service"]  # chroot and mounts need root
    _verify([out / "hotline.service", out / "hotline-pbx.service"])


def test_units_for_an_existing_asterisk_and_embedded_storage(tmp_path: Path) -> None:
    config = tmp_path / "hotline.toml"
    config.write_text('[pbx]\nmode = "external"\n')
    out = tmp_path / "units"
    proc = _systemd(config, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in out.iterdir()] == ["hotline.service"]
    centre = _unit(out / "hotline.service")
    assert centre["Unit"]["After"].split() == ["network-online.target", "asterisk.service"]
    assert "User" not in centre["Service"]
    _verify([out / "hotline.service"])


def test_no_settings_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./hotline.toml here; the next tests' directory restored
    proc = _systemd(None, "--out", str(tmp_path / "units"))
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "hotline: systemd: the units run with a settings file: pass --config FILE "
        "(or set HOTLINE_CONFIG)"]
    assert not (tmp_path / "units").exists()
