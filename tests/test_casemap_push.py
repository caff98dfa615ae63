"""The case map pushed (案件地图实时更新), against the real centre (its web app, the desk relay
following the event bus and the desk push server) in Debian's Chromium: a dispatcher's map
is open; an order opened through the API appears on it within 2 s, without a reload, and
disappears within 2 s when the shift chief voids it. A handler of another department has
their map open too: their stream hears nothing of an order that is not theirs, and their
map never shows it."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from accounts.service import DISPATCHER, OPERATOR, ROLES, add_user, create_account
from core.db import transaction
from hotline.centre import Centre
from tests.browser import chromium, screenshot, sign_in
from tests.conftest import WEB_PORT, api
from tickets import geo

SITE = f"http://127.0.0.1:{WEB_PORT}"
PASSWORD = "地图推送-测试-密码"
WATCHER, OTHER = "地图派遣员", "园林地图处置员"
INSIDE_GRID_01 = (45.7504, 126.6306)  # 0102 暴露垃圾 here: the sanitation department's
# every desk:map event the page hears (an init script: CDP, not the page's CSP)
COLLECT = """
window.mapHeard = [];
document.addEventListener("desk:map", (e) => window.mapHeard.push(e.detail));
"""


@pytest.fixture(scope="module")
def operator(centre: Centre) -> dict[str, str]:
    with transaction(centre.sessions) as session:
        geo.load_grids(session, geo.read_geojson(geo.DEMO_GRIDS))
        create_account(session, WATCHER, [DISPATCHER], password=PASSWORD, actor="test",
                       now=centre.clock.now())
        create_account(session, OTHER, ["department"], password=PASSWORD,
                       department="landscape", actor="test", now=centre.clock.now())
        token = add_user(session, "地图受理员", [OPERATOR], False, ROLES,
                         now=centre.clock.now())
    return {"Authorization": f"Bearer {token}"}


def _open_map(browser: Any, name: str) -> Page:
    page = browser.new_context(locale="zh-CN", viewport={"width": 1366, "height": 900}
                               ).new_page()
    page.add_init_script(COLLECT)
    sign_in(page, SITE, name, PASSWORD, then="/map")
    expect(page.locator("#push-state")).to_have_attribute("data-state", "open",
                                                          timeout=10_000)
    expect(page.locator("#casemap")).to_have_attribute("data-loaded", re.compile(r"^[0-9]+$"),
                                                       timeout=10_000)
    time.sleep(0.5)  # the first view settled (fitting the grids reloads once more)
    return page


def _heard(page: Page, case: str) -> list[tuple[str, str]]:
    return [(e["event"], e["action"]) for e in page.evaluate("window.mapHeard")
            if e.get("case_number") == case]


@pytest.fixture
def maps(centre: Centre, operator: dict[str, str]) -> Iterator[tuple[Page, Page]]:
    with chromium() as browser:
        yield _open_map(browser, WATCHER), _open_map(browser, OTHER)


def test_an_order_opened_through_the_api_appears_on_an_open_map_within_2_s(
        maps: tuple[Page, Page], operator: dict[str, str]) -> None:
    watcher, other = maps
    loads = other.locator("#casemap").get_attribute("data-loaded")
    started = time.monotonic()
    status, order = api("/api/v1/orders", {
        "appeal_type": "complaint", "description": "示范街路口暴露垃圾", "channel": "phone",
        "category_code": "0102", "address": "南岗区示范街1号",
        "latitude": INSIDE_GRID_01[0], "longitude": INSIDE_GRID_01[1]}, operator)
    assert status == 201, order
    case = order["case_number"]
    assert order["department_code"] == "sanitation"
    circle = watcher.locator(f".casemap-case-{case}")
    expect(circle).to_have_count(1, timeout=2_000)
    assert time.monotonic() - started < 2.0
    assert "casemap-order-green" in (circle.get_attribute("class") or "")
    screenshot(watcher, "casemap-pushed-order")

    # voided by the shift chief (the centre fixture's account): gone within 2 s
    started = time.monotonic()
    status, moved = api(f"/api/v1/orders/{case}/actions/void",
                        {"role": "shift_chief", "note": "重复上报"})
    assert status == 200 and moved["state"] == "voided", moved
    expect(circle).to_have_count(0, timeout=2_000)
    assert time.monotonic() - started < 2.0
    assert _heard(watcher, case) == [("opened", "create"), ("moved", "void")]

    # the landscape department's handler: nothing heard of it, nothing shown
    assert _heard(other, case) == []
    assert other.locator(f".casemap-case-{case}").count() == 0
    assert other.locator("#casemap").get_attribute("data-loaded") == loads  # not reloaded
