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
    assert ("MixMonitor(${HOTLINE_RECORDING},br(${HOTLINE_RECORDING:0:-4}-caller.wav)"
            "t(${HOTLINE_RECORDING:0:-4}-agent.wav))") in ext


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


def test_every_agent_also_has_a_webrtc_endpoint_for_the_desk_page(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, HOTLINE_PBX_WEBRTC_PORT="18089")
    files = render(settings, _directory())
    pjsip = files["pjsip.conf"]
    sections = _sections(pjsip)
    for number in ("8001", "8002"):  # registering or static desk phone, each has one
        assert sections.count(f"{number}-webrtc") == 2  # endpoint and aor
        assert f"{number}-webrtc-auth" in sections
        endpoint = pjsip.split(f"[{number}-webrtc]\ntype = endpoint\n", 1)[1].split("\n\n")[0]
        for line in ("webrtc = yes", "dtls_auto_generate_cert = yes", "allow = opus,ulaw,alaw",
                     "direct_media = no", "media_address = 127.0.0.1",
                     "bind_rtp_to_media_address = yes", "context = from-agents"):
            assert line in endpoint, (number, line)
        aor = pjsip.split(f"[{number}-webrtc]\ntype = aor\n", 1)[1].split("\n\n")[0]
        assert "max_contacts = 1" in aor and "remove_existing = yes" in aor
        assert f"username = {number}-webrtc\npassword = pw-{number}" in pjsip
    assert "[transport-wss]\ntype = transport\nprotocol = wss\n" in pjsip
    http = files["http.conf"]
    assert "tlsenable = yes" in http and "tlsbindaddr = 127.0.0.1:18089" in http
    assert "bindaddr = " not in http.replace("tlsbindaddr", "")  # no plain HTTP at all
    assert "icesupport = yes" in files["rtp.conf"]
    for module in ("res_http_websocket.so", "res_pjsip_transport_websocket.so", "res_srtp.so",
                   "codec_opus_open_source.so", "res_pjsip_pubsub.so"):
        assert f"load = {module}" in files["modules.conf"]
    # a blind transfer to an agent rings whichever of their devices is there
    # and its INVITE names the call (X-Hotline-Call-Id) through the pre-dial handler
    assert (" same => n,Dial(PJSIP/8001&PJSIP/8001-webrtc,30,b(hotline-agent-leg^s^1))"
            in files["extensions.conf"])
    assert "Set(PJSIP_HEADER(add,X-Hotline-Call-Id)=" in files["extensions.conf"]


def test_only_the_sandbox_maps_host_addresses_to_loopback_for_ice(tmp_path: Path,
                                                                  monkeypatch) -> None:
    monkeypatch.setattr("asterisk_conf.render.host_addresses", lambda: ["192.0.2.7"])
    sandbox = render(make_settings(tmp_path), _directory())["rtp.conf"]
    assert "[ice_host_candidates]\n" in sandbox and "192.0.2.7 => 127.0.0.1" in sandbox
    external = render(make_settings(tmp_path, HOTLINE_PBX_MODE="external"), _directory())
    assert "ice_host_candidates" not in external["rtp.conf"]
