"""Signing in as a person does it: Debian's Chromium (Playwright) against the real web app
served by waitress. The login page in Chinese (kept as a screenshot), a wrong password, the
lockout, CSRF rejection and sessions ending on the app's clock."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import Browser, Page
from waitress.server import create_server

from accounts import service
from core.clock import FixedClock
from core.db import make_engine, session_factory, transaction, upgrade
from core.live import connect_redis
from hotline.web import create_app, stop_web_server
from tests import isolation
from tests.browser import chromium, screenshot
from tests.conftest import REDIS_SERVER_URL, make_settings

NOW = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)  # 09:00 in Beijing
PASSWORD = "话务员的密码-2026"


class Site:
    def __init__(self, url: str, clock: FixedClock, sessions: Any) -> None:
        self.url, self.clock, self.sessions = url, clock, sessions


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The web app on a free loopback port: 3 wrong passwords lock an account for 15
    minutes; a session lasts 1 hour, 30 minutes without a request end it."""
    data = tmp_path_factory.mktemp("login")
    settings = make_settings(data, REDIS_URL=REDIS_SERVER_URL,
                             HOTLINE_ACCOUNTS_LOCKOUT_ATTEMPTS="3",
                             HOTLINE_ACCOUNTS_LOCKOUT_MINUTES="15",
                             HOTLINE_ACCOUNTS_SESSION_HOURS="1",
                             HOTLINE_ACCOUNTS_IDLE_MINUTES="30")
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        for name, role in (("小王", "operator"), ("老李", "dispatcher"), ("小张", "operator"),
                           ("小赵", "operator")):
            service.create_account(session, name, [role], password=PASSWORD, actor="测试",
                                   now=NOW)
    clock = FixedClock(NOW)
    app = create_app(settings, sessions, connect_redis(settings), clock)
    port = isolation.free_port()
    server = create_server(app, host="127.0.0.1", port=port, threads=2)
    thread = threading.Thread(target=server.run, daemon=True, name="login-web")
    thread.start()
    try:
        yield Site(f"http://127.0.0.1:{port}", clock, sessions)
    finally:
        stop_web_server(server, thread)
        engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


@pytest.fixture
def page(browser: Browser, site: Site) -> Iterator[Page]:
    site.clock.set(NOW)
    context = browser.new_context(locale="zh-CN")
    try:
        yield context.new_page()
    finally:
        context.close()


def _sign_in(page: Page, site: Site, name: str, password: str = PASSWORD) -> None:
    page.goto(f"{site.url}/login")
    page.get_by_label("用户名").fill(name)
    page.get_by_label("密码").fill(password)
    page.get_by_role("button", name="登录").click()
    page.wait_for_load_state()


def test_the_login_page_speaks_chinese_and_a_person_signs_in_and_out(
        page: Page, site: Site) -> None:
    page.goto(f"{site.url}/home/operator")
    assert page.url == f"{site.url}/login?next=/home/operator"
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    assert page.title() == "登录 · 12319 城市管理服务热线"
    assert page.get_by_role("heading", level=2).inner_text() == "登录"
    shot = screenshot(page, "login-page-zh")
    assert shot.stat().st_size > 5_000  # the page as drawn, Chinese glyphs and all
    page.get_by_label("用户名").fill("小王")
    page.get_by_label("密码").fill("不是这个密码")
    page.get_by_role("button", name="登录").click()
    assert page.get_by_role("alert").inner_text() == "用户名或密码错误"
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(f"{site.url}/home/operator")  # where the person was going
    assert page.locator("#who").inner_text() == "小王"
    assert page.locator("#role").inner_text() == "话务员"
    cookie = next(c for c in page.context.cookies() if c["name"] == "hotline_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    page.goto(f"{site.url}/")
    assert page.url == f"{site.url}/home/operator"
    page.get_by_role("button", name="退出登录").click()
    page.wait_for_url(f"{site.url}/login")
    page.goto(f"{site.url}/home/operator")
    assert page.url.startswith(f"{site.url}/login")
    page.get_by_role("link", name="English").click()  # the shell's switch
    assert page.get_by_role("heading", level=2).inner_text() == "Sign in"
    page.get_by_label("User name").fill("小王")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    assert page.locator("#role").inner_text() == "Hotline agent"


def test_repeated_wrong_passwords_lock_the_account_for_a_while(page: Page, site: Site) -> None:
    for _ in range(3):
        _sign_in(page, site, "老李", "猜一个密码试试")
        assert page.get_by_role("alert").inner_text() == "用户名或密码错误"
    _sign_in(page, site, "老李")  # the right password, but locked
    assert page.get_by_role("alert").inner_text() == "账户已暂时锁定，请稍后再试或联系管理员"
    assert page.url.startswith(f"{site.url}/login")
    site.clock.advance(timedelta(minutes=15))
    _sign_in(page, site, "老李")
    assert page.url == f"{site.url}/home/dispatcher"
    assert page.locator("#role").inner_text() == "派遣员"


def test_a_form_without_its_csrf_token_is_refused(page: Page, site: Site) -> None:
    _sign_in(page, site, "小张")
    assert page.url == f"{site.url}/home/operator"
    page.locator("form[action='/logout'] input[name=csrf_token]").evaluate(
        "field => field.value = 'forged-by-another-site'")
    with page.expect_response(f"{site.url}/logout") as answer:
        page.get_by_role("button", name="退出登录").click()
    assert answer.value.status == 400
    assert page.get_by_role("heading", level=1).inner_text() == "请求已被拒绝"
    page.goto(f"{site.url}/home/operator")  # refused: still signed in
    assert page.locator("#who").inner_text() == "小张"
    # the login form too: without its token nobody is signed in, not even with the password
    fresh = page.context.browser.new_context().new_page()  # type: ignore[union-attr]
    fresh.goto(f"{site.url}/login")
    fresh.locator("input[name=csrf_token]").evaluate("field => field.remove()")
    fresh.get_by_label("用户名").fill("小张")
    fresh.get_by_label("密码").fill(PASSWORD)
    with fresh.expect_response(lambda r: r.request.method == "POST") as refused:
        fresh.get_by_role("button", name="登录").click()
    assert refused.value.status == 400
    fresh.goto(f"{site.url}/home/operator")
    assert fresh.url.startswith(f"{site.url}/login")
    fresh.context.close()


def test_a_session_ends_when_idle_and_after_its_lifetime(page: Page, site: Site) -> None:
    _sign_in(page, site, "小赵")
    site.clock.advance(timedelta(minutes=31))  # no request for 31 minutes
    page.reload()
    assert page.url == f"{site.url}/login?next=/home/operator"
    assert page.get_by_role("alert").inner_text() == "登录已过期，请重新登录"
    _sign_in(page, site, "小赵")
    assert page.url == f"{site.url}/home/operator"
    for _ in range(3):  # busy all along: 60 minutes after signing in it still stands ...
        site.clock.advance(timedelta(minutes=20))
        page.reload()
        assert page.locator("#who").inner_text() == "小赵"
    site.clock.advance(timedelta(minutes=1))  # ... and not a minute more
    page.reload()
    assert page.url == f"{site.url}/login?next=/home/operator"
    assert page.get_by_role("alert").inner_text() == "登录已过期，请重新登录"


def test_a_session_cookie_replayed_after_signing_out_is_nobody(page: Page, site: Site,
                                                               browser: Browser) -> None:
    _sign_in(page, site, "小王")
    kept = page.context.cookies()
    page.get_by_role("button", name="退出登录").click()
    page.wait_for_url(f"{site.url}/login")
    thief = browser.new_context()
    thief.add_cookies(kept)  # type: ignore[arg-type]
    stolen = thief.new_page()
    stolen.goto(f"{site.url}/home/operator")
    assert stolen.url.startswith(f"{site.url}/login")
    thief.close()


def test_the_pages_htmx_requests_carry_the_csrf_token(page: Page, site: Site) -> None:
    _sign_in(page, site, "小张")
    page.wait_for_function("() => window.htmx !== undefined")
    with page.expect_response(f"{site.url}/logout") as answer:  # htmx, as a page would
        page.evaluate("() => htmx.ajax('POST', '/logout', {source: document.body})")
    assert answer.value.status == 302 and answer.value.request.headers["x-csrftoken"]
    page.goto(f"{site.url}/home/operator")
    assert page.url.startswith(f"{site.url}/login")  # signed out by it
