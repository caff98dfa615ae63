"""The Asterisk configuration rendered from settings and the directory."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from asterisk_conf.render import FILES, render
from telephony.directory import AgentPhone, Directory, QueueSpec
from tests.conftest import make_settings


def _directory(name: str = "张三") -> Directory:
    return Directory(
        queues=(QueueSpec(name="intake", title="综合受理\n[evil]", strategy="rrmemory",
                          ring_seconds=15, retry_seconds=2, wrapup_seconds=10, max_waiting=0,
                          members=(("8001", 0), ("8002", 1))),),
        agents=(AgentPhone("8001", name, "pw-8001", None),
                AgentPhone("8002", "李四", "pw-8002", "sip:8002@127.0.0.3:5060")),
    )


def _sections(conf: str) -> list[str]:
    return re.findall(r"^\[([^\]]+)\]", conf, flags=re.M)


def test_every_file_is_rendered_and_bound_to_loopback(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    files = render(settings, _directory())
    assert set(files) == set(FILES)
    assert "bind = 127.0.0.1:5060" in files["pjsip.conf"]
    assert "bindaddr = 127.0.0.1" in files["manager.conf"]
    assert f"secret = {settings.pbx.ami_secret}" in files["manager.conf"]
    assert "permit = 127.0.0.1/255.255.255.255" in files["manager.conf"]
    # Asterisk's own times on every event: without them calls are timed as events arrive
    assert "timestampevents = yes" in files["manager.conf"]
    assert "autoload = no" in files["modules.conf"]
    assert "0.0.0.0:" not in "".join(files.values())


def test_agents_queues_and_entry_come_from_the_directory(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, HOTLINE_HOTLINE_ENTRY_NUMBER="12345")
    files = render(settings, _directory())
    pjsip = files["pjsip.conf"]
    assert "password = pw-8001" in pjsip
    assert "contact = sip:8002@127.0.0.3:5060" in pjsip
    assert "max_contacts = 1" in pjsip  # 8001 registers
    assert "match = 127.0.0.3" in pjsip
    assert "match = 127.0.0.2/32" in pjsip  # the citizens' network
    queues = files["queues.conf"]
    assert "member =>" not in queues  # agents log in; nobody is a member by configuration
    assert ";   8002 (penalty 1)" in queues
    assert "wrapuptime = 10" in queues
    ext = files["extensions.conf"]
    assert "exten => 12345,1," in ext
    assert "AGI(agi://127.0.0.1:4573/ivr)" in ext
    assert "MixMonitor(${HOTLINE_RECORDING},b)" in ext


def test_hostile_names_cannot_break_out_of_their_line(tmp_path: Path) -> None:
    files = render(make_settings(tmp_path), _directory('x"\n[citizens]\ncontext=evil;\\'))
    pjsip, queues = files["pjsip.conf"], files["queues.conf"]
    settings_lines = [ln for ln in pjsip.splitlines() if not ln.lstrip().startswith(";")]
    assert not any(re.match(r"\s*context\s*=\s*evil", ln) for ln in settings_lines)
    assert 'callerid = "x [citizens] context=evil,"' in pjsip  # one quoted value, no breakout
    assert _sections(pjsip).count("citizens") == 2  # the endpoint and its identify only
    assert "[evil]" not in _sections(queues)


def test_cli_renders_for_an_existing_asterisk(tmp_path: Path) -> None:
    out = tmp_path / "etc-asterisk"
    env = {"PATH": "/usr/bin:/bin", "HOTLINE_STORAGE_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.run([sys.executable, "-m", "hotline", "pbx", "render", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert "[intake]" in (out / "queues.conf").read_text()
