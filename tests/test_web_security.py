"""Web security (issue 15 item 6): TLS on the web app and the desk push server with a
generated certificate, the security headers on every response, the sign-in and API rate
limits, and secrets that stay in mode-600 files and out of logs and `config show`.

Expected values are written out here by hand: the header values as the README states them,
the certificate's names from the settings given, the limits from the counts configured."""

from __future__ import annotations

import os
import re
import ssl
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from playwright.sync_api import expect

from accounts import service
from agent_desk import feed
from agent_desk.push import PushServer
from core import tls
from core.background import BackgroundLoop
from core.clock import FixedClock
from core.config import load_settings
from core.db import make_engine, session_factory, transaction, upgrade
from core.errors import ConfigError
from core.live import connect_redis
from hotline.web import create_app
from hotline.webserver import WebServer
from tests import isolation
from tests.browser import chromium, screenshot, sign_in
from tests.conftest import make_settings

NOW = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)  # 09:00 in Beijing
PASSWORD = "值班长的密码-2026"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self' data:; font-src 'self'; object-src 'none'; base-uri 'self'; "
       "form-action 'self'; frame-ancestors 'none'")
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=(), payment=(), usb=(), "
                          "display-capture=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class TlsSite:
    def __init__(self, settings: Any, sessions: Any, client: Any, web: WebServer,
                 push_port: int) -> None:
        self.settings, self.sessions, self.client, self.web = settings, sessions, client, web
        self.url = web.url
        self.push_port = push_port
        self.cert = settings.storage.data_dir / "tls/server.crt"


@pytest.fixture(scope="module")
def tls_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsSite]:
    """The web app (cheroot) and the push server (aiohttp), both over TLS with the
    certificate generated for web.tls = generated; one supervisor account."""
    data = tmp_path_factory.mktemp("websec")
    push_port = isolation.free_port()
    settings = make_settings(data, HOTLINE_WEB_TLS="generated",
                             HOTLINE_WEB_PORT=str(isolation.free_port()),
                             HOTLINE_WEB_PUSH_PORT=str(push_port))
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        service.create_account(session, "老周", ["supervisor"], password=PASSWORD,
                               actor="测试", now=NOW)
    clock = FixedClock(NOW)
    client = connect_redis(settings)
    web = WebServer(create_app(settings, sessions, client, clock), settings).start()
    loop = BackgroundLoop("websec-push")
    push = PushServer(settings, sessions, client, clock)
    loop.run(push.start(), 15)
    try:
        yield TlsSite(settings, sessions, client, web, push_port)
    finally:
        loop.run(push.close(), 5)
        loop.stop()
        web.stop()


def _trusting(cert: Path) -> ssl.SSLContext:
    """A client that trusts the generated certificate alone and checks the host name."""
    return ssl.create_default_context(cafile=str(cert))


def _get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, context=context, timeout=10) as answer:
            return answer.status, answer.headers
    except urllib.error.HTTPError as refused:
        return refused.code, refused.headers


# ------------------------------------------------------------------------------ TLS


def test_the_generated_certificate_names_the_loopback_and_its_key_is_the_owners(
        tls_site: TlsSite) -> None:
    folder = tls_site.settings.storage.data_dir / "tls"
    loaded = x509.load_pem_x509_certificate(tls_site.cert.read_bytes())
    alt = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(a) for a in alt.get_values_for_type(x509.IPAddress)} == {"127.0.0.1"}
    assert set(alt.get_values_for_type(x509.DNSName)) == {"localhost"}
    assert stat.S_IMODE((folder / "server.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    # made once: a second start keeps the same certificate
    before = tls_site.cert.read_bytes()
    tls.generated_certificate(tls_site.settings)
    assert tls_site.cert.read_bytes() == before


def test_the_web_app_answers_over_tls_only_with_hsts(tls_site: TlsSite) -> None:
    # both host names the certificate carries are checked by a strict client
    for host in ("127.0.0.1", "localhost"):
        status, headers = _get(f"https://{host}:{tls_site.web.port}/login",
                               _trusting(tls_site.cert))
        assert status == 200
        assert headers["Strict-Transport-Security"] == "max-age=31536000"
        assert headers["Content-Security-Policy"] == CSP
    # a client that does not trust it is refused the handshake: a real certificate check
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        _get(f"{tls_site.url}/login", ssl.create_default_context())
    # plain http on the TLS port gets no page
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        _get(f"http://127.0.0.1:{tls_site.web.port}/login")


def test_the_push_server_answers_over_tls(tls_site: TlsSite) -> None:
    status, _ = _get(f"https://127.0.0.1:{tls_site.push_port}/desk/push?agent=8101"
                           "&ticket=nonsense", _trusting(tls_site.cert))
    assert status == 401  # the push server's own refusal, over TLS


def test_tls_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"web.tls = \"files\" needs web.tls_cert_file"):
        make_settings(tmp_path, HOTLINE_WEB_TLS="files")
    with pytest.raises(ConfigError, match=r"read only with web.tls = \"files\""):
        make_settings(tmp_path, HOTLINE_WEB_TLS_CERT_FILE="/etc/x.pem")
    # files relative to the settings file's folder
    config = tmp_path / "hotline.toml"
    config.write_text('[web]\ntls = "files"\ntls_cert_file = "certs/web.pem"\n'
                      'tls_key_file = "certs/web.key"\n', encoding="utf-8")
    settings = load_settings(config, {})
    assert settings.web.tls_cert_file == tmp_path / "certs/web.pem"
    assert settings.web.tls_key_file == tmp_path / "certs/web.key"
    with pytest.raises(ConfigError, match=r"web\.tls_cert_file .*certs/web\.pem.* not a readable"):
        WebServer(None, settings)


# ------------------------------------------------------------------------------ headers


@pytest.fixture(scope="module")
def plain_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The app as served by waitress on loopback (web.tls off), tried with Flask's client;
    sign-in limited to 3 posts a minute an address, the API to 2 requests a minute a token
    and 4 a minute an address."""
    settings = make_settings(tmp_path_factory.mktemp("websec-plain"),
                             HOTLINE_ACCOUNTS_SIGN_IN_PER_ADDRESS="3/minute",
                             HOTLINE_ACCOUNTS_API_PER_TOKEN="2/minute",
                             HOTLINE_ACCOUNTS_API_PER_ADDRESS="4/minute")
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        service.create_account(session, "老吴", ["auditor"], password=PASSWORD,
                               actor="测试", now=NOW)
        tokens = [service.issue_token(session, "老吴", None, actor="测试", now=NOW)
                  for _ in range(2)]
    app = create_app(settings, sessions, connect_redis(settings), FixedClock(NOW))
    app.config["hotline.test_tokens"] = tokens
    return app


@pytest.mark.parametrize("path", ["/login", "/api/v1/openapi.json", "/static/shell.css",
                                  "/no/such/page", "/desk"])
def test_every_response_carries_the_security_headers(plain_app: Any, path: str) -> None:
    answer = plain_app.test_client().get(path)
    assert answer.status_code in (200, 302, 404)
    assert answer.headers["Content-Security-Policy"] == CSP
    assert "unsafe-inline" not in answer.headers["Content-Security-Policy"]
    assert "unsafe-eval" not in answer.headers["Content-Security-Policy"]
    for name, value in HEADERS.items():
        assert answer.headers[name] == value, name
    # plain http: no HSTS (browsers ignore it there, and loopback development needs http)
    assert "Strict-Transport-Security" not in answer.headers


def test_the_display_walls_page_keeps_its_stricter_referrer_policy(plain_app: Any) -> None:
    answer = plain_app.test_client().get("/board/wall?token=nonsense")
    assert answer.headers["X-Frame-Options"] == "DENY"
    if answer.status_code == 200:  # (a bad token is refused before the page)
        assert answer.headers["Referrer-Policy"] == "no-referrer"


# ------------------------------------------------------------------------------ limits


def _guess(client: Any, address: str) -> Any:
    """A wrong password posted as the login form does, its CSRF token and all (without one
    the post is refused before any password is checked)."""
    page = client.get("/login", environ_base={"REMOTE_ADDR": address}).get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert token, "the login form carries a CSRF token"
    return client.post("/login", data={"name": "老吴", "password": "wrong",
                                       "csrf_token": token.group(1)},
                       environ_base={"REMOTE_ADDR": address})


def test_sign_in_posts_from_one_address_are_limited(plain_app: Any) -> None:
    client = plain_app.test_client()
    assert [_guess(client, "192.0.2.7").status_code for _ in range(3)] == [401, 401, 401]
    refused = _guess(client, "192.0.2.7")
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # another address is counted apart
    assert _guess(plain_app.test_client(), "192.0.2.8").status_code == 401


def test_api_requests_are_limited_per_token_and_per_address(plain_app: Any) -> None:
    first, second = plain_app.config["hotline.test_tokens"]
    client = plain_app.test_client()
    here = {"REMOTE_ADDR": "198.51.100.5"}

    def ask(token: str) -> Any:
        return client.get("/api/v1/audit", headers={"Authorization": f"Bearer {token}"},
                          environ_base=here)

    assert [ask(first).status_code for _ in range(2)] == [200, 200]
    refused = ask(first)
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    assert ask(second).status_code == 200  # the other token has its own count ...
    # ... but the address has had its 4 bearer requests this minute: guessed tokens too
    guessed = client.get("/api/v1/audit", headers={"Authorization": "Bearer 00.nothing"},
                         environ_base=here)
    assert guessed.status_code == 429


# ------------------------------------------------------------------------------ secrets


SECRET_VALUES = {"ami_secret": "ami-Secret-7f3a91", "webhook_secret": "hook-Secret-22b8c4",
                 "session_secret": "session-Secret-9d1e05"}


def test_secrets_files_are_the_owners_and_config_show_masks_them(tmp_path: Path) -> None:
    """Generated secrets land in mode 600; rendered Asterisk configs holding the AMI secret
    and agents' SIP passwords in 640 at most; `hotline -v` logs and `config show` print
    none of them."""
    data = tmp_path / "var"
    config = tmp_path / "hotline.toml"
    config.write_text(
        f'[storage]\ndata_dir = "{data}"\n'
        f'[pbx]\nami_secret = "{SECRET_VALUES["ami_secret"]}"\n'
        f'[exchange]\nwebhook_secret = "{SECRET_VALUES["webhook_secret"]}"\n'
        f'[accounts]\nsession_secret = "{SECRET_VALUES["session_secret"]}"\n',
        encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")
           and k not in ("DATABASE_URL", "REDIS_URL")}
    hotline = [sys.executable, "-m", "hotline", "-v", "--config", str(config)]
    shown = subprocess.run([*hotline, "config", "show"], capture_output=True, text=True,
                           env=env, timeout=120)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout + shown.stderr
    for value in SECRET_VALUES.values():
        assert value not in out
    assert out.count("********") >= 3
    secrets_file = data / "secrets.toml"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    generated = dict(re.findall(r'(\w+) = "([^"]+)"', secrets_file.read_text()))
    assert set(generated) == {"ami_secret", "webhook_secret", "session_secret"}
    # the Asterisk configuration as rendered for an existing Asterisk
    out_dir = tmp_path / "asterisk"
    rendered = subprocess.run([*hotline, "pbx", "render", "--out", str(out_dir)],
                              capture_output=True, text=True, env=env, timeout=120)
    assert rendered.returncode == 0, rendered.stderr
    manager = out_dir / "manager.conf"
    assert SECRET_VALUES["ami_secret"] in manager.read_text()  # it is the file that holds it
    for name in ("manager.conf", "pjsip.conf"):
        mode = stat.S_IMODE((out_dir / name).stat().st_mode)
        assert mode & 0o007 == 0, f"{name} is readable by others: {oct(mode)}"
    log = rendered.stdout + rendered.stderr + shown.stderr
    for value in [*SECRET_VALUES.values(), *generated.values()]:
        assert value not in log


# ------------------------------------------------------------------------------ browser


def test_a_supervisor_signs_in_over_https_and_the_board_streams_over_tls(
        tls_site: TlsSite) -> None:
    with chromium() as browser:
        context = browser.new_context(ignore_https_errors=True)
        page = context.new_page()
        sign_in(page, tls_site.url, "老周", PASSWORD, then="/board")
        cookie = next(c for c in context.cookies() if c["name"] == "hotline_session")
        assert cookie["secure"] and cookie["httpOnly"]
        indicator = page.locator("#push-state")
        assert (indicator.get_attribute("data-url") or "").startswith(
            f"https://127.0.0.1:{tls_site.push_port}/")
        expect(indicator).to_have_attribute("data-state", "open", timeout=15_000)
        entry = feed.publish(tls_site.client, feed.BOARD, "board", {"websec": 1})
        expect(indicator).to_have_attribute("data-last-id", entry, timeout=15_000)
        screenshot(page, "board-over-tls")
        context.close()

