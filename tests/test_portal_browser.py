"""The citizens' portal in Debian's Chromium (Playwright) at a phone's 390x844, against a
running centre (its web app on waitress, the real Asterisk) whose SMS goes out through the
outbox worker to the fake Twilio-compatible gateway (tests/fake_sms_gateway.py): a citizen
reports with a photo and a map pin, types the SMS code the gateway received, gets a case
number, and the gateway receives the tracking link too; the order has the category, grid and
department written here by hand from tickets/catalogue.yaml and tickets/demo_grids.geojson;
after a dispatcher acts, the tracking page says it was dispatched. Nothing is asked of any
host but 127.0.0.1."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from urllib import request
from urllib.parse import urlsplit

import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from accounts.service import add_user
from asterisk_conf.sandbox import Sandbox
from channels.models import SmsMessage
from core.clock import FixedClock
from core.config import Settings
from core.db import transaction
from hotline.centre import Centre
from tests import isolation
from tests.api_world import DEMO_GRIDS
from tests.browser import chromium, screenshot
from tests.conftest import wait_until
from tests.fake_sms_gateway import FakeSmsGateway
from tickets import geo, service

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # 10:00 in Beijing


PHONE = "+8613900003333"  # the citizen's number as the gateway is told it (E.164)
GATEWAY_SID, GATEWAY_TOKEN = "AC0000portal", "portal-gateway-token"


@dataclass
class Site:
    url: str
    sessions: sessionmaker[Session]
    gateway: FakeSmsGateway


@pytest.fixture
def site(pbx: Sandbox, pbx_settings: Settings) -> Iterator[Site]:
    """A centre on the test PBX, its web app on a port of its own, its SMS sent through the
    fake gateway (which reports delivery back to the centre's signed status callback)."""
    gateway = FakeSmsGateway(GATEWAY_SID, GATEWAY_TOKEN).start()
    port = isolation.free_port()
    url = f"http://127.0.0.1:{port}"
    settings = replace(
        pbx_settings, web=replace(pbx_settings.web, host="127.0.0.1", port=port),
        sms=replace(pbx_settings.sms, provider="twilio", twilio_base_url=gateway.base_url,
                    twilio_account_sid=GATEWAY_SID, twilio_auth_token=GATEWAY_TOKEN,
                    status_callback_url=f"{url}/api/v1/sms/status"))
    try:
        with Centre(settings, clock=FixedClock(NOW)) as centre:
            assert centre.sms_out is not None  # the outbox worker runs
            with transaction(centre.sessions) as session:
                geo.load_grids(session, geo.read_geojson(DEMO_GRIDS))
            yield Site(url, centre.sessions, gateway)
    finally:
        gateway.stop()


def _code_texts(gateway: FakeSmsGateway) -> list[str]:
    return [t for t in gateway.texts_to(PHONE) if "验证码" in t]


def test_a_citizen_reports_with_a_photo_and_a_pin_and_sees_it_dispatched(
        site: Site, tmp_path: Path) -> None:
    url, sessions, gateway = site.url, site.sessions, site.gateway
    assert _code_texts(gateway) == []
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
        # the code as the citizen's phone gets it: sent by the centre's outbox worker
        wait_until(lambda: len(_code_texts(gateway)) == 1, 15, "the code SMS at the gateway")
        [text] = _code_texts(gateway)
        found = re.fullmatch(
            r"【12319城市管理热线】您的验证码是(\d{6})，10分钟内有效。请勿告诉他人。", text)
        assert found, text
        code = found.group(1)
        page.get_by_label("验证码").fill(code)
        screenshot(page, "portal-code-390x844")
        page.get_by_role("button", name="确认提交").click()
        page.wait_for_url(re.compile(r".*/portal/track/.*"))
        case = page.locator("#portal-case").inner_text()
        assert re.fullmatch(r"20261124\d{4}", case)
        # the citizen's own photo, as a thumbnail through their link (800x600 -> 320x240)
        thumbnail = page.locator("#portal-photos img")
        assert thumbnail.count() == 1
        page.wait_for_function("() => document.querySelector('#portal-photos img').complete")
        assert thumbnail.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [320, 240]
        screenshot(page, "portal-received-390x844")
        # the tracking link reaches the phone too, and the gateway's receipt comes back
        wait_until(lambda: len(gateway.texts_to(PHONE)) == 2, 15, "the tracking SMS")
        tracked = re.fullmatch(f"【12319城市管理热线】您反映的问题已受理，案件编号{case}。"
                               r"查看进度：(\S+)", gateway.texts_to(PHONE)[1])
        assert tracked, gateway.texts_to(PHONE)
        link = tracked.group(1)  # the page the citizen was sent to, without its ?new=1
        assert re.fullmatch(re.escape(url) + r"/portal/track/[A-Za-z0-9_-]{32}", link)
        assert page.url == f"{link}?new=1"

        def receipts() -> list[tuple[str, str | None]]:
            with sessions() as session:
                return [(m.purpose, m.delivery) for m in session.scalars(
                    select(SmsMessage).where(SmsMessage.phone == PHONE).order_by(SmsMessage.id))]
        wait_until(lambda: receipts() == [("code", "delivered"), ("portal", "delivered")], 15,
                   "the gateway's delivery receipts")
        assert gateway.callback_errors == []
        with sessions() as session:
            order = service.get_order(session, case)
            assert (order.channel, order.category_kind, order.category_code, order.grid_code,
                    order.department_code, order.citizen_phone) == (
                "web", "event", "0505", "23010300100104", "demo-street", "+8613900003333")
            assert abs(order.latitude - 45.75135) < 0.0003  # type: ignore[operator]
            assert abs(order.longitude - 126.63195) < 0.0004  # type: ignore[operator]
            assert len([a for a in service.attachments(session, case) if a.kind == "photo"]) == 1
        # the shift chief opens it and the dispatcher dispatches it, through the API
        with transaction(sessions) as session:
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
        page.goto(link)  # the citizen follows the SMS's link later
        assert page.locator("#portal-state").get_attribute("data-state") == "dispatched"
        timeline = page.locator("#portal-timeline").inner_text()
        assert "已派遣至处置部门: 示范街道综合执法队" in timeline
        for secret in ("老李", "老王", "内部", "车主"):
            assert secret not in page.content()
        screenshot(page, "portal-dispatched-390x844")
        context.close()
    assert set(hosts) == {urlsplit(url).netloc}
