"""Settings: defaults, file, environment, validation, masking, and the CLI's error line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.config import load_settings
from core.errors import ConfigError
from tests.conftest import make_settings


def test_defaults_are_embedded_storage_under_the_data_dir(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    assert settings.storage.database_url == f"sqlite:///{tmp_path / 'data' / 'hotline.db'}"
    assert settings.storage.redis_url == ""
    assert settings.storage.recordings_dir == tmp_path / "data" / "recordings"
    assert settings.pbx.bind_address == "127.0.0.1"
    assert settings.hotline.entry_number == "12319"
    assert settings.ivr.flow_file == ""  # the shipped flow
    assert settings.calendar.timezone == "Asia/Shanghai"


def test_generated_secrets_are_stable_and_private(tmp_path: Path) -> None:
    first = make_settings(tmp_path)
    second = make_settings(tmp_path)
    assert len(first.pbx.ami_secret) == 48
    assert first.pbx.ami_secret == second.pbx.ami_secret
    assert (tmp_path / "secrets.toml").stat().st_mode & 0o077 == 0


def test_file_then_environment_then_conventional_urls(tmp_path: Path) -> None:
    config = tmp_path / "hotline.toml"
    config.write_text(
        '[storage]\ndata_dir = "state"\n[pbx]\nsip_port = 15060\nami_port = 15038\n'
        '[seats]\npause_reasons = { break = "小休", lunch = "午餐" }\n', encoding="utf-8")
    env = {"HOTLINE_PBX_AMI_PORT": "16038",
           "DATABASE_URL": "postgresql://hotline:s3cret@db.example:5432/hotline",
           "REDIS_URL": "redis://127.0.0.1:6379/2"}
    settings = load_settings(config, env)
    assert settings.storage.data_dir == tmp_path / "state"  # relative to the file
    assert settings.pbx.sip_port == 15060
    assert settings.pbx.ami_port == 16038
    assert settings.seats.pause_reasons == (("break", "小休"), ("lunch", "午餐"))
    assert settings.storage.database_url.startswith("postgresql://hotline:s3cret@")
    shown = settings.as_dict()
    assert shown["storage"]["database_url"] == "postgresql://hotline:********@db.example:5432/hotline"
    assert shown["pbx"]["ami_secret"] == "********"
    assert settings.as_dict(mask_secrets=False)["pbx"]["ami_secret"] == settings.pbx.ami_secret


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"HOTLINE_PBX_SIP_PORT": "70000"}, "pbx.sip_port"),
        ({"HOTLINE_PBX_SIP_PORT": "five"}, "pbx.sip_port"),
        ({"HOTLINE_PBX_BIND_ADDRESS": "localhost:5060"}, "pbx.bind_address"),
        ({"HOTLINE_PBX_MODE": "docker"}, "pbx.mode"),
        ({"HOTLINE_PBX_SIP_PROT": "5060"}, "pbx.sip_prot"),
        ({"HOTLINE_HOTLINE_DEFAULT_QUEUE": "general"}, "hotline.default_queue"),
        ({"HOTLINE_SEATS_PAUSE_REASONS": "no-answer=x"}, "seats.pause_reasons"),
        ({"HOTLINE_CALENDAR_WORKING_HOURS": "09:00-08:00"}, "calendar.working_hours"),
        ({"HOTLINE_CALENDAR_TIMEZONE": "Mars/Olympus"}, "calendar.timezone"),
        ({"DATABASE_URL": "mysql://root@localhost/x"}, "storage.database_url"),
        ({"HOTLINE_PBX_RTP_PORT_START": "20000", "HOTLINE_PBX_RTP_PORT_END": "10000"},
         "pbx.rtp_port_start"),
    ],
)
def test_a_wrong_setting_names_its_key(tmp_path: Path, env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings(tmp_path, **env)
    assert names in str(caught.value)


@pytest.mark.parametrize(
    ("content", "names"),
    [("[pbx]\nsip_port = 'x'\n", "pbx.sip_port"), ("[nonsense]\na = 1\n", "[nonsense]"),
     ("[pbx\n", "not valid TOML"), ("[pbx]\nfoo = 1\n", "pbx.foo")],
)
def test_a_wrong_file_names_what_is_wrong(tmp_path: Path, content: str, names: str) -> None:
    config = tmp_path / "hotline.toml"
    config.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, {"HOTLINE_STORAGE_DATA_DIR": str(tmp_path)})
    assert names in str(caught.value)


def _hotline(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hotline", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=60)


def test_cli_prints_settings_with_secrets_masked(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOTLINE_STORAGE_DATA_DIR": str(tmp_path),
           "DATABASE_URL": "postgresql://u:topsecret@127.0.0.1/db"}
    proc = _hotline("config", "show", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "topsecret" not in proc.stdout
    assert (tmp_path / "secrets.toml").read_text().split('"')[1] not in proc.stdout
    assert 'ami_secret = "********"' in proc.stdout
    assert 'sip_port = 5060' in proc.stdout


def test_cli_bad_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOTLINE_STORAGE_DATA_DIR": str(tmp_path),
           "HOTLINE_PBX_AMI_PORT": "-1"}
    proc = _hotline("pbx", "status", env=env, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "pbx.ami_port" in proc.stderr and "$HOTLINE_PBX_AMI_PORT" in proc.stderr
