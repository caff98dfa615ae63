"""The case map (案件地图) as a dispatcher and a department handler see it: Debian's Chromium
(Playwright) against the real web app served by waitress, with no base-map tiles. Orders
placed by hand in the demo grids, their ages chosen so their first clock (urgent 立案: 10
natural minutes, yellow at 8) is green, yellow or red at the pinned clock; four of one
category within 60 m make a hotspot. Nothing is asked of any host but 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page
from waitress.server import create_server

from accounts import service as accounts
from core.clock import FixedClock
from core.db import make_engine, session_factory, transaction, upgrade
from core.live import connect_redis
from hotline.web import create_app, stop_web_server
from tests import isolation
from tests.api_world import DEMO_GRIDS
from tests.browser import chromium, screenshot
from tests.conftest import REDIS_SERVER_URL, make_settings
from tickets import catalogue, geo, service

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # 10:00 in Beijing, a Tuesday
PASSWORD = "调度员的密码-2026"
NORTH_M = 1 / 111_195  # a metre north at latitude 45.75, in degrees
EAST_M = NORTH_M / 0.6980  # and east
CENTRE_01 = (45.75045, 126.63065)  # the middle of demo grid 01
CENTRE_04 = (45.75135, 126.63195)  # the middle of demo grid 04
FILL = {"green": "#2da44e", "yellow": "#f2c12e", "red": "#cf222e"}


class Site:
    def __init__(self, url: str, cases: dict[str, str]) -> None:
        self.url, self.cases = url, cases


def _open(session: Any, minutes_ago: int, place: tuple[float, float], north_m: float,
          east_m: float, code: str) -> str:
    return service.open_order(
        session, appeal_type="complaint", description="路边堆着垃圾", channel="phone",
        actor="话务员", category_code=code, urgency="urgent",
        latitude=place[0] + north_m * NORTH_M, longitude=place[1] + east_m * EAST_M,
        now=NOW - timedelta(minutes=minutes_ago)).case_number


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data = tmp_path_factory.mktemp("casemap")
    settings = make_settings(data, REDIS_URL=REDIS_SERVER_URL,
                             HOTLINE_TICKETS_HOTSPOT_RADIUS_M="80",
                             HOTLINE_TICKETS_HOTSPOT_MIN_COUNT="3")
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        catalogue.seed(session)
        geo.load_grids(session, geo.read_geojson(DEMO_GRIDS))
        accounts.create_account(session, "老李", ["dispatcher"], password=PASSWORD,
                                actor="测试", now=NOW)
        accounts.create_account(session, "园林局小赵", ["department"], password=PASSWORD,
                                department="landscape", actor="测试", now=NOW)
        cases = {  # 暴露垃圾 (0102) around the middle of grid 01, all within 60 m
            "rubbish-green": _open(session, 5, CENTRE_01, 0, 0, "0102"),
            "rubbish-yellow": _open(session, 9, CENTRE_01, 25, 0, "0102"),
            "rubbish-red": _open(session, 15, CENTRE_01, 0, 30, "0102"),
            "rubbish-green-2": _open(session, 2, CENTRE_01, -20, -25, "0102"),
            # 道路不洁 (0104) in grid 04: two, not enough for a hotspot
            "street-green": _open(session, 3, CENTRE_04, 0, 0, "0104"),
            "street-red": _open(session, 30, CENTRE_04, 20, 10, "0104"),
        }
    app = create_app(settings, sessions, connect_redis(settings), FixedClock(NOW))
    port = isolation.free_port()
    server = create_server(app, host="127.0.0.1", port=port, threads=2)
    thread = threading.Thread(target=server.run, daemon=True, name="casemap-web")
    thread.start()
    try:
        yield Site(f"http://127.0.0.1:{port}", cases)
    finally:
        stop_web_server(server, thread)
        engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


@pytest.fixture
def seen(browser: Browser) -> Iterator[tuple[Page, list[str]]]:
    context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
    hosts: list[str] = []
    page = context.new_page()
    page.on("request", lambda request: hosts.append(urlsplit(request.url).netloc)
            if request.url.startswith(("http:", "https:", "ws:", "wss:")) else None)
    try:
        yield page, hosts
    finally:
        context.close()


def _sign_in(page: Page, site: Site, name: str) -> None:
    page.goto(f"{site.url}/login")
    page.get_by_label("用户名").fill(name)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.wait_for_load_state()


def _loaded(page: Page, category: str = "") -> None:
    """Until the map has drawn the answer for `category` ("" all, else kind:code)."""
    page.wait_for_function(
        "c => { const d = document.getElementById('casemap').dataset;"
        " return Number(d.loaded || 0) > 0 && d.shown === c; }", arg=category)


def _fills(page: Page, colour: str) -> list[str]:
    return page.locator(f"path.casemap-order-{colour}").evaluate_all(
        "nodes => nodes.map(n => n.getAttribute('fill'))")


def test_the_dispatcher_sees_orders_in_their_colours_and_a_hotspot(seen, site: Site) -> None:
    page, hosts = seen
    _sign_in(page, site, "老李")
    page.get_by_role("link", name="案件地图").click()  # from the dispatcher's home page
    page.wait_for_url(f"{site.url}/map")
    assert page.title() == "案件地图 · 12319"
    _loaded(page)
    assert page.locator("#casemap").get_attribute("data-grids-shown") == "4"
    assert _fills(page, "green") == [FILL["green"]] * 3
    assert _fills(page, "yellow") == [FILL["yellow"]]
    assert _fills(page, "red") == [FILL["red"]] * 2
    for name, case in site.cases.items():
        colour = name.split("-")[1]
        assert page.locator(f"path.casemap-order-{colour}.casemap-case-{case}").count() == 1
    assert page.locator("path.casemap-hotspot").count() == 1
    items = page.locator("#casemap-hotspots li.casemap-hotspot-item")
    assert items.count() == 1
    assert (items.get_attribute("data-category"), items.get_attribute("data-count")) == (
        "0102", "4")
    for name in ("rubbish-green", "rubbish-yellow", "rubbish-red", "rubbish-green-2"):
        assert site.cases[name] in items.inner_text()
    assert page.locator("#casemap-count").inner_text() == "6 个未办结工单已显示 (共 6)"
    assert page.locator(".leaflet-tile").count() == 0  # no tiles: the grids are the ground
    shot = screenshot(page, "case-map-dispatcher")
    assert shot.stat().st_size > 10_000
    # the category filter: 道路不洁 only, two orders and no hotspot
    page.get_by_label("分类", exact=True).select_option("event:0104")
    _loaded(page, "event:0104")
    assert (_fills(page, "green"), _fills(page, "yellow"), _fills(page, "red")) == (
        [FILL["green"]], [], [FILL["red"]])
    assert page.locator("path.casemap-hotspot").count() == 0
    assert page.locator("#casemap-hotspots").inner_text() == "暂无热点"
    assert {host.rsplit(":", 1)[0] for host in hosts} == {"127.0.0.1"}


def test_a_department_sees_only_its_own_orders(seen, site: Site) -> None:
    page, hosts = seen
    _sign_in(page, site, "园林局小赵")  # landscape: none of these orders is theirs
    page.goto(f"{site.url}/map")
    _loaded(page)
    assert page.locator("path.casemap-order").count() == 0
    assert page.locator("path.casemap-hotspot").count() == 0
    assert page.locator("#casemap-category option").count() == 1  # "all categories" alone
    assert {host.rsplit(":", 1)[0] for host in hosts} == {"127.0.0.1"}
