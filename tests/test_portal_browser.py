"""The citizens' portal in Debian's Chromium (Playwright) at a phone's 390x844, against the
real web app served by waitress: a citizen reports with a photo and a map pin, types the
SMS code (read from the outbox), gets a case number; the order has the category, grid and
department written here by hand from tickets/catalogue.yaml and tickets/demo_grids.geojson;
after a dispatcher acts, the tracking page says it was dispatched. Nothing is asked of any
host but 127.0.0.1."""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib import request
from urllib.parse import urlsplit

import pytest
from PIL import Image
from waitress.server import create_server

from accounts.service import add_user
from channels import sms
from core.clock import FixedClock
from core.db import make_engine, session_factory, transaction, upgrade
from core.live import connect_redis
from hotline.web import create_app, stop_web_server
from tests import isolation
from tests.api_world import DEMO_GRIDS
from tests.browser import chromium, screenshot
from tests.conftest import make_settings
from tickets import catalogue, geo, service

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # 10:00 in Beijing


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, object]]:
    settings = make_settings(tmp_path)
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        catalogue.seed(session)
        geo.load_grids(session, geo.read_geojson(DEMO_GRIDS))
    app = create_app(settings, sessions, connect_redis(settings), FixedClock(NOW))
    port = isolation.free_port()
    server = create_server(app, host="127.0.0.1", port=port, threads=2)
    thread = threading.Thread(target=server.run, daemon=True, name="portal-web")
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", sessions
    finally:
        stop_web_server(server, thread)
        engine.dispose()



def test_a_citizen_reports_with_a_photo_and_a_pin_and_sees_it_dispatched(
        site: tuple[str, object], tmp_path: Path) -> None:
    url, sessions = site
    picture = tmp_path / "car.jpg"
    out = io.BytesIO()
    Image.new("RGB", (800, 600), (200, 40, 40)).save(out, "JPEG")
    picture.write_bytes(out.getvalue())
    hosts: list[str] = []
    with chromium() as browser:
        context = browser.new_context(locale="zh-CN", viewport={"width": 390, "height": 844},
                                      is_mobile=True, has_touch=True)
        page = context.new_page()
        page.on("request", lambda r: hosts.append(urlsplit(r.url).netloc)
                if r.url.startswith(("http:", "https:")) else None)
        page.goto(f"{url}/portal")
        assert page.title() == "我要反映问题 · 12319公众服务门户"
        page.wait_for_function(
            "() => document.getElementById('portal-map').dataset.gridsShown === '4'")
        page.get_by_label("问题类型").select_option(label="汽车乱停乱放")
        page.get_by_label("问题描述").fill("学府路口汽车乱停，堵住了人行道")
        # the pin: a tap on the middle of demo grid 04 (45.75135, 126.63195) on the map
        page.locator("path.pin-grid-23010300100104").tap()
        page.wait_for_function("() => document.getElementById('portal-place').dataset.code"
                               " === '23010300100104'")
        page.get_by_label("照片（最多6张）").set_input_files(str(picture))
        page.get_by_label("手机号码").fill("13900003333")
        screenshot(page, "portal-report-390x844")
        page.get_by_role("button", name="获取验证码").click()
        page.wait_for_url(re.compile(r".*/portal/confirm/.*"))
        assert "139****3333" in page.content()
        with sessions() as session:  # type: ignore[operator]
            text = [m.text for m in sms.outbox(session) if m.purpose == "code"][-1]
        code = re.search(r"验证码是(\d{6})", text).group(1)  # type: ignore[union-attr]
        page.get_by_label("验证码").fill(code)
        screenshot(page, "portal-code-390x844")
        page.get_by_role("button", name="确认提交").click()
        page.wait_for_url(re.compile(r".*/portal/track/.*"))
        case = page.locator("#portal-case").inner_text()
        assert re.fullmatch(r"20261124\d{4}", case)
        screenshot(page, "portal-received-390x844")
        with sessions() as session:  # type: ignore[operator]
            order = service.get_order(session, case)
            assert (order.channel, order.category_kind, order.category_code, order.grid_code,
                    order.department_code, order.citizen_phone) == (
                "web", "event", "0505", "23010300100104", "demo-street", "+8613900003333")
            assert abs(order.latitude - 45.75135) < 0.0003  # type: ignore[operator]
            assert abs(order.longitude - 126.63195) < 0.0004  # type: ignore[operator]
            assert len([a for a in service.attachments(session, case) if a.kind == "photo"]) == 1
        # the shift chief opens it and the dispatcher dispatches it, through the API
        with transaction(sessions) as session:  # type: ignore[arg-type]
            chief = add_user(session, "值班长老王", ["shift_chief"], False, now=NOW)
            dispatcher = add_user(session, "派遣员老李", ["dispatcher"], False, now=NOW)
        for action, token in (("open", chief), ("dispatch", dispatcher)):
            moved = request.Request(
                f"{url}/api/v1/orders/{case}/actions/{action}", method="POST",
                data=json.dumps({"note": "内部：车主姓王"}).encode(),
                headers={"Authorization": f"Bearer {token}",
                         "Content-Type": "application/json"})
            with request.urlopen(moved, timeout=10) as answer:
                assert answer.status == 200
        page.reload()
        assert page.locator("#portal-state").get_attribute("data-state") == "dispatched"
        timeline = page.locator("#portal-timeline").inner_text()
        assert "已派遣至处置部门: 示范街道综合执法队" in timeline
        for secret in ("老李", "老王", "内部", "车主"):
            assert secret not in page.content()
        screenshot(page, "portal-dispatched-390x844")
        context.close()
    assert set(hosts) == {urlsplit(url).netloc}
