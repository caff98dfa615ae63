"""A department's request for more time answered by the dispatcher from their workspace, in
Debian's Chromium against the real web app (waitress): the sanitation department's handler
asks for an extension (申请延期) on the order's page; the request shows in the dispatcher's
queue (and the shift chief's) with its reason; the dispatcher's first answer, more than the
limit allows, is refused with the reason and changes nothing; then they grant two hours
(批准延期) in the row, and the handling deadline moves two working hours later.

By hand: Tuesday 2026-11-24 is a working day with working hours 08:30-12:00 and 13:30-17:30
in Beijing. The order (0102 暴露垃圾: handling in 4 working hours) is signed at 10:00, so
handling is due at 15:30 (10:00-12:00 and 13:30-15:30); two more working hours make 17:30
(15:30-17:30), which is 09:30Z. One extension is at most the original limit: 5 hours are
refused.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect
from waitress.server import create_server

from accounts import service as accounts
from core.clock import FixedClock
from core.db import make_engine, session_factory, transaction, upgrade
from core.live import connect_redis
from hotline.web import create_app, stop_web_server
from tests import isolation
from tests.browser import chromium, screenshot
from tests.conftest import REDIS_SERVER_URL, make_settings
from tickets import catalogue, deadlines, service

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # 10:00 in Beijing, a working Tuesday
PASSWORD = "requests-密码-1"
CHIEF, DISPATCHER, HANDLER = "值班长老李", "派遣员小张", "环卫处置员"


@dataclass
class Site:
    url: str
    sessions: Any
    clock: FixedClock
    case: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    settings = make_settings(tmp_path_factory.mktemp("requests"), REDIS_URL=REDIS_SERVER_URL)
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    clock = FixedClock(NOW)
    with transaction(sessions) as session:
        catalogue.seed(session)
        for name, roles, department in ((CHIEF, ["shift_chief"], None),
                                        (DISPATCHER, ["dispatcher"], None),
                                        (HANDLER, ["department"], "sanitation")):
            accounts.create_account(session, name, roles, password=PASSWORD,
                                    department=department, actor="测试",
                                    now=NOW - timedelta(hours=1))
        order = service.open_order(
            session, appeal_type="complaint", description="小区门口垃圾堆放三天没人清",
            channel="phone", actor="受理员", category_code="0102", address="南岗区示范街1号",
            now=NOW - timedelta(minutes=20))
        for action, role, minutes in (("open", "shift_chief", 15),
                                      ("dispatch", "dispatcher", 10), ("sign", "department", 0)):
            service.transition(session, order.case_number, action, actor=role, role=role,
                               now=NOW - timedelta(minutes=minutes))
        case = order.case_number
    app = create_app(settings, sessions, connect_redis(settings), clock)
    port = isolation.free_port()
    server = create_server(app, host="127.0.0.1", port=port, threads=4)
    thread = threading.Thread(target=server.run, daemon=True, name="requests-web")
    thread.start()
    try:
        yield Site(f"http://127.0.0.1:{port}", sessions, clock, case)
    finally:
        stop_web_server(server, thread)
        engine.dispose()


def _sign_in(browser: Browser, site: Site, name: str) -> tuple[BrowserContext, Page]:
    context = browser.new_context(locale="zh-CN", viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.goto(f"{site.url}/login?next=/work")
    page.get_by_label("用户名").fill(name)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(f"{site.url}/work")
    return context, page


def _handling_due(site: Site) -> datetime:
    with site.sessions() as session:
        [clock] = [c for c in deadlines.deadlines(session, site.case)
                   if c.step == "handle" and c.met_at is None]
        due = clock.due_at
    return due if due.tzinfo else due.replace(tzinfo=UTC)


def test_the_dispatcher_grants_a_departments_extension_from_their_queue(site: Site) -> None:
    assert _handling_due(site) == datetime(2026, 11, 24, 7, 30, tzinfo=UTC)  # 15:30 BJT
    order_url = f"{site.url}/orders/{site.case}"
    row_of = f"tr[data-case='{site.case}']"
    with chromium() as browser:
        _, handler = _sign_in(browser, site, HANDLER)
        _, dispatcher = _sign_in(browser, site, DISPATCHER)
        _, chief = _sign_in(browser, site, CHIEF)
        # the department is at work: nothing to decide for the dispatcher
        expect(dispatcher.locator(f"#queue-dispatcher {row_of}")).to_have_count(0)

        # 10:02 the handler asks for more time, with the reason
        site.clock.advance(timedelta(minutes=2))
        handler.goto(order_url)
        ask = handler.locator("#actions form[data-action='request_extension']")
        ask.locator("textarea[name=note]").fill("需协调吊车")
        ask.locator("button[type=submit]").click()
        expect(handler.locator(".order-done")).to_contain_text("申请延期")

        # the request waits in the dispatcher's queue, and in the chief's above them
        dispatcher.reload()
        row = dispatcher.locator(f"#queue-dispatcher {row_of}")
        expect(row).to_have_count(1)
        expect(row.locator(".work-request")).to_have_text("申请延期中")
        expect(row.locator(".work-request-note")).to_have_text("需协调吊车")
        assert [f.get_attribute("data-action") for f in row.locator("form").all()] == [
            "grant_extension", "refuse_extension"]
        expect(row.locator("form[data-action='grant_extension']")).to_contain_text("小时")
        chief.reload()
        expect(chief.locator(f"#queue-shift_chief {row_of}")).to_have_count(1)
        screenshot(dispatcher, "workspace-dispatcher-extension-request")

        # 10:04 five hours are more than the 4-hour limit allows: refused, nothing changes
        site.clock.advance(timedelta(minutes=2))
        grant = row.locator("form[data-action='grant_extension']")
        grant.locator("input[name=amount]").fill("5")
        grant.locator("button[type=submit]").click()
        expect(dispatcher.locator(".order-refusal")).to_contain_text(
            "at most the handle clock's original limit at a time, 4 hours")
        assert _handling_due(site) == datetime(2026, 11, 24, 7, 30, tzinfo=UTC)

        # two hours, granted in the row
        dispatcher.goto(f"{site.url}/work")
        grant = dispatcher.locator(
            f"#queue-dispatcher {row_of} form[data-action='grant_extension']")
        grant.locator("input[name=amount]").fill("2")
        grant.locator("button[type=submit]").click()
        dispatcher.wait_for_url(f"{site.url}/work")
        expect(dispatcher.locator(f"#queue-dispatcher {row_of}")).to_have_count(0)
        chief.reload()
        expect(chief.locator(f"#queue-shift_chief {row_of}")).to_have_count(0)

        # 15:30 + 2 working hours = 17:30 in Beijing
        assert _handling_due(site) == datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
        dispatcher.goto(order_url)
        expect(dispatcher.locator(".order-clocks")).to_contain_text("2026-11-24 17:30")
        expect(dispatcher.locator(".order-timeline")).to_contain_text("批准延期")
        with site.sessions() as session:
            steps = [(e.action, e.actor, e.role) for e in service.history(session, site.case)]
        assert steps[-2:] == [("request_extension", HANDLER, "department"),
                              ("grant_extension", DISPATCHER, "dispatcher")]
        handler.goto(order_url)
        expect(handler.locator(".order-clocks")).to_contain_text("2026-11-24 17:30")

