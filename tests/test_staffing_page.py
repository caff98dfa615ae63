"""The staffing page (排班预测 · 突发事件模式) in Debian's Chromium against the real web app
(waitress): a supervisor reads the forecast of a day against the schedule, switches surge
mode on with a typed announcement and off with one click, then with a recording; each switch
audited. Hostile input is refused with a 4xx and stores nothing. Kept as screenshots.

The forecast's figures (worked by hand in tests/test_staffing_forecast.py, the same data):
Tuesday 2026-11-24 from Tuesdays 11-10 and 11-17; 09:00-09:30 has four calls then two, 3 on
average, each talking 600 s: A = 1.0 Erl, 3 agents give 91.35 % within 15 s (2 give
67.49 %). Scheduled "09:00-10:00=2": 2, so 1 short.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select
from waitress.server import create_server

from accounts import service as accounts
from accounts.audit import AuditEntry
from core.clock import FixedClock
from core.config import Settings
from core.db import make_engine, session_factory, transaction, upgrade
from core.live import connect_redis
from hotline.web import create_app, stop_web_server
from telephony import surge
from telephony.models import CallRecord, SurgeMode
from tests import isolation
from tests.api_world import NOW
from tests.browser import chromium, screenshot
from tests.conftest import REDIS_SERVER_URL, make_settings

PASSWORD = "staffing-班长-密码-1"
SUPERVISOR, CHIEF, OPERATOR = "排班班长", "排班值班长", "排班话务员"


class Site:
    def __init__(self, url: str, sessions: Any, settings: Settings) -> None:
        self.url, self.sessions, self.settings = url, sessions, settings


def _bj(day: int, hour: int, minute: int) -> datetime:
    return datetime(2026, 11, day, hour - 8, minute, tzinfo=UTC)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    settings = make_settings(tmp_path_factory.mktemp("staffing"), REDIS_URL=REDIS_SERVER_URL,
                             HOTLINE_HOTLINE_STAFFING_SCHEDULE="09:00-10:00=2",
                             HOTLINE_HOTLINE_STAFFING_WEEKS="2")
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        for name, roles in ((SUPERVISOR, ["supervisor"]), (CHIEF, ["shift_chief"]),
                            (OPERATOR, ["operator"])):
            accounts.create_account(session, name, roles, password=PASSWORD, actor="测试",
                                    now=NOW)
        for n, started in enumerate([_bj(10, 9, m) for m in (1, 7, 15, 29)]
                                    + [_bj(17, 9, m) for m in (3, 29)]):
            session.add(CallRecord(
                call_id=f"s{n}", caller_number="13800000001", started_at=started,
                outcome="answered", queue="intake", wait_seconds=5, agent="8101",
                connected_at=started + timedelta(seconds=5), talk_seconds=600,
                ended_at=started + timedelta(minutes=11), details={}))
    app = create_app(settings, sessions, connect_redis(settings), FixedClock(NOW))
    port = isolation.free_port()
    server = create_server(app, host="127.0.0.1", port=port, threads=2)
    thread = threading.Thread(target=server.run, daemon=True, name="staffing-web")
    thread.start()
    try:
        yield Site(f"http://127.0.0.1:{port}", sessions, settings)
    finally:
        stop_web_server(server, thread)
        engine.dispose()


@contextlib.contextmanager
def _signed_in(site: Site, name: str) -> Iterator[Page]:
    with chromium() as browser:
        context = browser.new_context(locale="zh-CN", viewport={"width": 1366, "height": 900})
        try:
            page = context.new_page()
            page.goto(f"{site.url}/login?next=/staffing")
            page.get_by_label("用户名").fill(name)
            page.get_by_label("密码").fill(PASSWORD)
            page.get_by_role("button", name="登录").click()
            yield page
        finally:
            context.close()


def _audit(site: Site) -> list[tuple[str, str]]:
    with site.sessions() as session:
        return [(e.action, e.actor) for e in session.scalars(
            select(AuditEntry).where(AuditEntry.action.in_(("surge_on", "surge_off")))
            .order_by(AuditEntry.id))]


def _sounds(site: Site) -> list[Path]:
    folder = site.settings.storage.prompts_dir / surge.SURGE_DIR
    return sorted(folder.glob("*.wav")) if folder.exists() else []


def _modes(site: Site) -> list[tuple[str, bool]]:
    with site.sessions() as session:
        return [(m.title, m.ended_at is None) for m in session.scalars(
            select(SurgeMode).order_by(SurgeMode.id))]


def test_a_supervisor_reads_the_forecast_and_switches_surge_mode(
        site: Site, tmp_path: Path) -> None:
    with _signed_in(site, SUPERVISOR) as page:
        page.wait_for_url(f"{site.url}/staffing")
        expect(page.get_by_role("heading", name="排班预测与突发事件模式")).to_be_visible()
        nine = page.locator('#forecast tr[data-slot="09:00"]')
        expect(nine.locator("td.needed")).to_have_text("3")
        expect(nine.locator("td.scheduled")).to_have_text("2.0")
        expect(nine.locator("td.short")).to_have_text("1.0")
        expect(nine).to_contain_text("91.35%")  # ASA = 0.090909*600/2 = 27.27 s:
        expect(nine).to_contain_text("27.3")
        expect(page.locator('#forecast tr[data-slot="09:30"] td.needed')).to_have_text("0")
        expect(page.locator("#forecast-basis")).to_contain_text("2026-11-10, 2026-11-17")
        expect(page.locator("#forecast-basis")).to_contain_text("平均处理时长：600.0 秒")
        expect(page.locator("#staffing-chart")).to_have_attribute("data-drawn", "true")
        screenshot(page, "staffing-forecast")

        page.get_by_role("textbox", name="突发事件", exact=True).fill("道里区停水")
        page.get_by_label("文字通告（离线合成语音）").fill("因供水管道抢修，道里区今日停水至十八点。")
        page.get_by_role("button", name="开启突发事件模式").click()
        expect(page.locator("#surge-on")).to_contain_text("道里区停水")
        expect(page.locator("#surge-text")).to_have_text("因供水管道抢修，道里区今日停水至十八点。")
        expect(page.locator("#surge-calls")).to_contain_text("收听来电：0")
        screenshot(page, "staffing-surge-on")
        assert _modes(site) == [("道里区停水", True)]
        assert len(_sounds(site)) == 1 and _sounds(site)[0].stat().st_size > 1000

        page.get_by_role("button", name="关闭突发事件模式").click()
        expect(page.locator("#surge")).to_have_attribute("data-state", "off")
        expect(page.locator("#surge-history tbody tr")).to_have_count(1)
        assert _modes(site) == [("道里区停水", False)]

        tone = tmp_path / "tone.wav"
        subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(tone),
                        "synth", "1", "sine", "1000"], check=True)
        page.get_by_role("textbox", name="突发事件", exact=True).fill("暴雪")
        page.set_input_files("#surge-recording", str(tone))
        page.get_by_role("button", name="开启突发事件模式").click()
        expect(page.locator("#surge-on")).to_contain_text("暴雪")
        page.get_by_role("button", name="关闭突发事件模式").click()
        expect(page.locator("#surge")).to_have_attribute("data-state", "off")

        # the water cut again: its earlier announcement played once more, no new file
        page.get_by_role("textbox", name="突发事件", exact=True).fill("道里区停水（续）")
        page.select_option("#surge-reuse", label="道里区停水 · 11-24 10:00")
        page.get_by_role("button", name="开启突发事件模式").click()
        expect(page.locator("#surge-on")).to_contain_text("道里区停水（续）")
        expect(page.locator("#surge-text")).to_have_text("因供水管道抢修，道里区今日停水至十八点。")
        page.get_by_role("button", name="关闭突发事件模式").click()
        expect(page.locator("#surge-history tbody tr")).to_have_count(3)
    assert _audit(site) == [("surge_on", SUPERVISOR), ("surge_off", SUPERVISOR)] * 3
    assert len(_sounds(site)) == 2
    with site.sessions() as session:
        first, _, again = session.scalars(select(SurgeMode).order_by(SurgeMode.id)).all()
        assert again.sound == first.sound


def test_hostile_input_is_refused_and_stores_nothing(site: Site) -> None:
    with _signed_in(site, SUPERVISOR) as page:
        page.wait_for_url(f"{site.url}/staffing")
        token = page.locator('input[name="csrf_token"]').first.get_attribute("value")
        assert token
        before_modes, before_sounds, before_audit = _modes(site), _sounds(site), _audit(site)

        def post(path: str, fields: dict[str, Any], csrf: bool = True) -> int:
            form = {**({"csrf_token": token} if csrf else {}), **fields}
            return page.request.post(f"{site.url}{path}", multipart=form).status

        wav = {"name": "x.wav", "mimeType": "audio/wav", "buffer": b"RIFF0000WAVEjunk"}
        assert post("/staffing/surge", {"title": "停水", "text": "通告"}, csrf=False) == 400
        assert post("/staffing/surge", {"title": "", "text": "通告"}) == 400
        assert post("/staffing/surge", {"text": "通告"}) == 400
        assert post("/staffing/surge", {"title": "停\u202e水", "text": "通告"}) == 400
        assert post("/staffing/surge", {"title": "停水", "text": "通\x00告"}) == 400
        assert post("/staffing/surge", {"title": "停水" * 60, "text": "通告"}) == 400
        assert post("/staffing/surge", {"title": "停水", "text": "通告" * 300}) == 400
        assert post("/staffing/surge", {"title": "停水"}) == 400  # neither text nor recording
        assert post("/staffing/surge", {"title": "停水", "text": "通告", "recording": wav}) == 400
        assert post("/staffing/surge", {"title": "停水", "recording": wav}) == 400  # not a WAV
        assert post("/staffing/surge", {"title": "停水", "text": "x", "extra": "1"}) == 400
        assert post("/staffing/surge/off", {}) == 404  # not on
        assert post("/staffing/surge", {"title": "停水", "reuse": "99999"}) == 404
        assert post("/staffing/surge", {"title": "停水", "reuse": "1x"}) == 400
        assert post("/staffing/surge", {"title": "停水", "reuse": "1", "text": "通告"}) == 400
        assert post("/staffing/surge", {"title": "停水", "reuse": "1" * 12}) == 400
        # a control character the form lets through, refused by the surge itself after the
        # announcement was spoken: the spoken file is removed again
        assert post("/staffing/surge", {"title": "停\x01水", "text": "通告"}) == 400
        big = {"name": "big.wav", "mimeType": "audio/wav", "buffer": b"\0" * (1 << 21)}
        assert post("/staffing/surge", {"title": "停水", "recording": big}) == 413
        for day in ("garbage", "2026-13-45", "9999-01-01", "2026-02-30"):
            assert page.request.get(f"{site.url}/staffing?day={day}").status == 400
        assert (_modes(site), _sounds(site), _audit(site)) == (
            before_modes, before_sounds, before_audit)

        assert post("/staffing/surge", {"title": "停水", "text": "今日停水"}) == 200  # followed
        assert post("/staffing/surge", {"title": "又一件", "text": "再次"}) == 409
        assert len(_sounds(site)) == len(before_sounds) + 1  # the refused one stored none
        assert post("/staffing/surge/off", {}) == 200
        assert post("/staffing/surge/off", {}) == 404


def test_who_may_see_and_switch(site: Site) -> None:
    with _signed_in(site, CHIEF) as page:
        page.wait_for_url(f"{site.url}/staffing")
        expect(page.locator("#forecast")).to_be_visible()
        token = page.locator('input[name="csrf_token"]').first.get_attribute("value")
        status = page.request.post(f"{site.url}/staffing/surge",
                                   multipart={"csrf_token": token or "", "title": "停水",
                                              "text": "通告"}).status
        assert status == 403
    with _signed_in(site, OPERATOR) as page:
        assert page.request.get(f"{site.url}/staffing").status == 403
