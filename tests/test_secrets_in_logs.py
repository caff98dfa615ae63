"""Secrets stay out of logs (issue 15 item 6): a real centre against the test Asterisk,
logging at INFO with TLS on, writes none of the AMI secret, the session secret, the webhook
secret or an agent's SIP password; the sandbox's configuration files that hold them, and
the TLS key, are not readable by others."""

from __future__ import annotations

import logging
import stat
import urllib.request
from dataclasses import replace

import pytest

from asterisk_conf.sandbox import Sandbox
from core.config import Settings
from core.db import make_engine, session_factory
from hotline.centre import Centre
from telephony import directory
from tests import isolation


def test_a_centre_logging_at_info_writes_no_secret(
        pbx: Sandbox, pbx_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    with session_factory(make_engine(pbx_settings.storage.database_url))() as session:
        sip_passwords = [a.sip_password for a in directory.snapshot(session).agents]
    assert sip_passwords
    secrets = {"pbx.ami_secret": pbx_settings.pbx.ami_secret,
               "accounts.session_secret": pbx_settings.accounts.session_secret,
               "exchange.webhook_secret": pbx_settings.exchange.webhook_secret,
               **{f"sip password {i}": p for i, p in enumerate(sip_passwords)}}
    settings = replace(pbx_settings, web=replace(
        pbx_settings.web, port=isolation.free_port(), push_port=isolation.free_port(),
        tls="generated"))
    caplog.set_level(logging.INFO)
    with Centre(settings) as centre:
        with urllib.request.urlopen(
                f"https://127.0.0.1:{settings.web.port}/healthz",
                context=_unverified(), timeout=10) as answer:
            assert answer.status == 200
        assert centre.telephony.connected.is_set()
    text = caplog.text + pbx.log_file.read_text(errors="replace")
    assert "centre stopped" in caplog.text  # the capture did hear the centre
    for what, value in secrets.items():
        assert value and value not in text, f"{what} is in the log"
    # the files that hold them: the owner's (and Asterisk's group) only
    etc = pbx.root / "etc/asterisk"
    assert any(p in (etc / "pjsip.conf").read_text() for p in sip_passwords)
    for name in ("manager.conf", "pjsip.conf"):
        mode = stat.S_IMODE((etc / name).stat().st_mode)
        assert mode & 0o007 == 0, f"{name}: {oct(mode)}"
    key = pbx_settings.storage.data_dir / "tls/server.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((pbx_settings.storage.data_dir / "secrets.toml").stat().st_mode) \
        == 0o600


def _unverified() -> object:
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
