"""The web shell in Debian's Chromium against the real web app served by waitress: every file
a page loads comes from the app itself (no CDN, nothing elsewhere), htmx 2, its SSE extension
and Alpine run under a Content-Security-Policy of 'self' only, the pages are Chinese by
default and English by the switch, and the wheel carries the vendored files so a production
install needs no npm."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from babel.support import Translations
from flask import Blueprint, Flask, Response, render_template
from playwright.sync_api import Page
from waitress.server import create_server

from core.clock import FixedClock
from core.db import make_engine, session_factory, upgrade
from core.live import connect_redis
from hotline.web import create_app, stop_web_server
from tests import isolation
from tests.browser import chromium, screenshot
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[1]
# The pages are visited under a name, not 127.0.0.1: Swagger UI (and others) behave
# differently on localhost, e.g. its validator badge is only fetched for other hosts.
HOST = "hotline.test"
NOW = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self' data:; font-src 'self'; object-src 'none'; base-uri 'self'; "
       "form-action 'self'; frame-ancestors 'none'")
# Collect the policy's refusals and the page's script errors before any page script runs.
WATCH = """
window.__refused = [];
document.addEventListener('securitypolicyviolation',
    (e) => window.__refused.push(e.violatedDirective + ' ' + e.blockedURI));
"""


def _probe() -> Blueprint:
    """Test-only routes on the real app: a page on base.html, an htmx fragment, an SSE feed."""
    probe = Blueprint("probe", __name__, template_folder=str(ROOT / "tests/data/templates"))

    @probe.get("/probe")
    def page() -> str:
        return render_template("shell_probe.html")

    @probe.get("/probe/fragment")
    def fragment() -> str:
        return "<p id='swapped'>htmx 换上的片段</p>"

    @probe.get("/probe/stream")
    def stream() -> Response:
        # one event, then the stream ends; retry far off so the browser does not hammer
        return Response("retry: 600000\nevent: greeting\ndata: <b id='hello'>推送到了</b>\n\n",
                        mimetype="text/event-stream")

    return probe


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Flask]]:
    settings = make_settings(tmp_path_factory.mktemp("shell"))
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    app = create_app(settings, session_factory(engine), connect_redis(settings), FixedClock(NOW))
    app.register_blueprint(_probe())
    port = isolation.free_port()
    server = create_server(app, host="127.0.0.1", port=port, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{port}", app
    finally:
        stop_web_server(server, thread)
        engine.dispose()


class Watched:
    """A page whose every request and script error is recorded."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.add_init_script(WATCH)

    def elsewhere(self, origin: str) -> list[str]:
        return [url for url in self.requests if not url.startswith(origin + "/")]

    def refused(self) -> list[str]:
        return self.page.evaluate("window.__refused")


@pytest.fixture
def browser_page(site: tuple[str, Flask]) -> Iterator[Watched]:
    with chromium(f"--host-resolver-rules=MAP {HOST} 127.0.0.1") as browser:
        # A browser that asks for English: the shell stays Chinese until the person chooses.
        context = browser.new_context(locale="en-US", viewport={"width": 1200, "height": 800})
        yield Watched(context.new_page())
        context.close()


def test_shell_runs_htmx_sse_and_alpine_from_its_own_origin(site: tuple[str, Flask],
                                                            browser_page: Watched) -> None:
    origin, _ = site
    page = browser_page.page
    reply = page.goto(f"{origin}/probe")
    assert reply is not None and reply.status == 200
    assert reply.headers["content-security-policy"] == CSP

    assert page.evaluate("window.htmx.version").startswith("2.0.")
    page.locator("#pushed #hello").wait_for(timeout=10_000)  # the SSE extension swapped it in
    assert page.text_content("#pushed") == "推送到了"
    assert page.text_content("#count") == "0"
    page.click("#more")
    page.click("#more")
    page.wait_for_function("document.querySelector('#count').textContent === '2'",
                           timeout=5_000)
    page.click("#load")
    page.locator("#fragment #swapped").wait_for(timeout=5_000)
    assert page.text_content("#swapped") == "htmx 换上的片段"
    # the vendored packages no shell page loads yet work as shipped (JsSIP is our bundle)
    assert page.evaluate("[JsSIP.version, typeof JsSIP.UA, typeof echarts.init, L.version]") \
        == ["3.13.8", "function", "function", "1.9.4"]
    assert page.evaluate("echarts.init(document.createElement('div'), null, "
                         "{width: 200, height: 100}).getWidth()") == 200

    screenshot(page, "web-shell-zh")
    assert browser_page.errors == []
    assert browser_page.refused() == []
    assert browser_page.elsewhere(origin) == []
    loaded = {url.removeprefix(origin) for url in browser_page.requests}
    assert {"/static/shell.css", "/static/vendor/htmx.org/htmx.min.js",
            "/static/vendor/htmx-ext-sse/sse.min.js", "/static/vendor/alpinejs-csp/alpine.min.js",
            "/static/vendor/jssip/jssip.min.js", "/probe/fragment",
            "/probe/stream"} <= loaded


def test_chinese_by_default_english_by_the_switch(site: tuple[str, Flask],
                                                   browser_page: Watched) -> None:
    origin, _ = site
    page = browser_page.page
    page.goto(f"{origin}/api/v1/docs")
    assert page.get_attribute("html", "lang") == "zh-CN"
    assert page.title() == "接口文档 · 12319"
    assert page.text_content(".shell-brand small") == "城市管理服务热线"

    page.click(".shell-language a[lang=en]")
    page.wait_for_url(f"{origin}/api/v1/docs")
    assert page.get_attribute("html", "lang") == "en"
    assert page.title() == "API documentation · 12319"
    assert page.text_content(".shell-brand small") == "City-service hotline"
    page.reload()  # the choice is kept
    assert page.text_content("h1") == "API documentation"
    screenshot(page, "web-shell-en")

    page.click(".shell-language a[lang=zh-CN]")
    page.wait_for_url(f"{origin}/api/v1/docs")
    assert page.text_content("h1") == "接口文档"
    assert browser_page.elsewhere(origin) == []


def test_api_docs_are_served_locally(site: tuple[str, Flask], browser_page: Watched) -> None:
    origin, _ = site
    page = browser_page.page
    reply = page.goto(f"{origin}/api/v1/docs")
    assert reply is not None and reply.headers["content-security-policy"] == CSP
    page.locator(".swagger-ui .info .title").wait_for(timeout=15_000)
    assert page.text_content(".swagger-ui .info .title").startswith("12319 hotline API")
    page.locator(".opblock-summary-path[data-path='/api/v1/calls']").first.wait_for()
    page.wait_for_load_state("networkidle")
    screenshot(page, "web-shell-api-docs")
    assert browser_page.errors == []
    assert browser_page.refused() == []
    assert browser_page.elsewhere(origin) == []
    assert f"{origin}/api/v1/openapi.json" in browser_page.requests


@pytest.mark.parametrize("accept", [None, "en-US,en;q=0.9"])
def test_accept_language_does_not_override_chinese(site: tuple[str, Flask],
                                                   accept: str | None) -> None:
    client = site[1].test_client()
    headers = {"Accept-Language": accept} if accept else {}
    page = client.get("/api/v1/docs", headers=headers).get_data(as_text=True)
    assert '<html lang="zh-CN">' in page and "接口文档" in page
    client.set_cookie("hotline_lang", "en")
    page = client.get("/api/v1/docs", headers=headers).get_data(as_text=True)
    assert '<html lang="en">' in page and "API documentation" in page


@pytest.mark.parametrize(("next_", "location"), [
    ("/api/v1/docs?x=1", "/api/v1/docs?x=1"),
    ("//evil.example/", "/"),
    ("https://evil.example/", "/"),
    ("/\\evil.example", "/"),
    ("docs", "/"),
])
def test_language_switch_goes_back_on_this_site_only(site: tuple[str, Flask], next_: str,
                                                     location: str) -> None:
    reply = site[1].test_client().get("/lang/en", query_string={"next": next_})
    assert reply.status_code == 303
    assert reply.headers["Location"] == location
    cookie = reply.headers["Set-Cookie"]
    assert cookie.startswith("hotline_lang=en;") and "HttpOnly" in cookie \
        and "SameSite=Lax" in cookie


def test_unknown_language_is_a_404_naming_it(site: tuple[str, Flask]) -> None:
    reply = site[1].test_client().get("/lang/fr")
    assert reply.status_code == 404
    assert reply.json == {"error": "Not Found", "detail": "language: 'fr' is none of zh-CN, en"}
    assert "Set-Cookie" not in reply.headers


def test_static_files_stay_inside_the_static_folder(site: tuple[str, Flask]) -> None:
    client = site[1].test_client()
    assert client.get("/static/shell.css").status_code == 200
    assert client.get("/static/../shell.py").status_code == 404
    assert client.get("/static/%2e%2e/shell.py").status_code == 404


def _copy_sources(into: Path) -> None:
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, into / name)
    packages = ("core", "accounts", "reports", "hotline", "telephony", "ivr", "agent_desk",
                "channels", "tickets", "recordings", "asterisk_conf", "sipkit")
    for package in packages:
        shutil.copytree(ROOT / package, into / package,
                        ignore=shutil.ignore_patterns("__pycache__"))


def test_the_wheel_carries_the_pages_and_their_front_end(tmp_path: Path) -> None:
    """Built from a clean copy of the sources (no stale build/), offline: no dependency is
    fetched, the build backend is the virtualenv's own."""
    source = tmp_path / "source"
    source.mkdir()
    _copy_sources(source)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "--disable-pip-version-check", "-q", "-w", str(tmp_path),
                    str(source)], check=True, timeout=240)
    (wheel,) = tmp_path.glob("hotline12319-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        catalogue = archive.read("hotline/translations/zh_Hans_CN/LC_MESSAGES/messages.mo")
    expected = {
        "hotline/templates/base.html", "hotline/templates/api_docs.html",
        "hotline/static/shell.css", "hotline/static/api_docs.js",
        "hotline/static/vendor/htmx.org/htmx.min.js", "hotline/static/vendor/htmx.org/LICENSE",
        "hotline/static/vendor/htmx-ext-sse/sse.min.js",
        "hotline/static/vendor/alpinejs-csp/alpine.min.js",
        "hotline/static/vendor/alpinejs-csp/LICENSE",
        "hotline/static/vendor/echarts/echarts.min.js", "hotline/static/vendor/echarts/NOTICE",
        "hotline/static/vendor/leaflet/leaflet.js", "hotline/static/vendor/leaflet/leaflet.css",
        "hotline/static/vendor/leaflet/images/marker-icon.png",
        "hotline/static/vendor/jssip/jssip.min.js", "hotline/static/vendor/jssip/LICENSE.md",
        "hotline/static/vendor/jssip/licenses/sdp-transform/LICENSE",
        "hotline/static/vendor/swagger-ui-dist/swagger-ui-bundle.js",
        "hotline/static/vendor/swagger-ui-dist/swagger-ui.css",
        "hotline/static/vendor/swagger-ui-dist/LICENSE",
        "hotline/translations/zh_Hans_CN/LC_MESSAGES/messages.po",
        # the reports page (reports.pages) and its charts' script
        "reports/templates/reports/reports.html", "hotline/static/reports/reports.js",
        "hotline/static/reports/reports.css",
    }
    assert expected - names == set()
    assert not [name for name in names if "node_modules" in name]
    translations: Any = Translations(BytesIO(catalogue))
    assert translations.gettext("City-service hotline") == "城市管理服务热线"
