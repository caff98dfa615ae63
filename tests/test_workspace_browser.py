"""The case workspaces and an order's page in Debian's Chromium against the real web app
(waitress), as issue 11 asks it shown: an order taken in on a call (its record stored with a
real WAV recording) is opened by the shift chief, dispatched by the dispatcher, signed and
answered with a photo by the sanitation department's handler, sent to check by the
dispatcher, passed by the supervisor and closed by the shift chief, four people in four
browser contexts, each offered only their own steps. A handler of another department
cannot open the order; forged forms are refused with the workflow's reason; the recording
plays in the page over an HTTP Range request (206) and the play is audited. Screenshots of
the dispatcher's workspace and the closed order's page are kept as artefacts.

The clock is pinned: Tuesday 2026-11-24, 10:00 in Beijing, a working day; the dispatch step
has 30 working minutes and turns yellow at 80% (24 minutes), as tickets/catalogue.yaml says.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import threading
import wave
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect
from sqlalchemy import select
from waitress.server import create_server

from accounts import service as accounts
from accounts.audit import AuditEntry
from core.clock import FixedClock
from core.db import make_engine, session_factory, transaction, upgrade
from core.live import connect_redis
from hotline.web import create_app, stop_web_server
from telephony import records
from tests import isolation
from tests.api_world import DEMO_GRIDS, NOW
from tests.browser import MEDIA_FLAGS, chromium, screenshot
from tests.conftest import REDIS_SERVER_URL, make_settings
from tickets import catalogue, geo, service

PASSWORD = "workspace-密码-1"
CHIEF, DISPATCHER, HANDLER, SUPERVISOR = "值班长老李", "派遣员小张", "环卫处置员", "监督员老王"
OTHER_HANDLER = "市政处置员"  # of the municipal department
CALL_ID = "1764381000.7"
CALLER = "13912345678"
MINUTE = timedelta(minutes=1)


@dataclass
class Site:
    url: str
    sessions: Any
    clock: FixedClock
    case: str  # taken in on the call, in intake
    late: str  # opened at 09:20: its dispatch was due at 09:50
    near: str  # opened at 09:35: due at 10:05, yellow from 09:59


def _wav(path: Path) -> None:
    """Two seconds of a 440 Hz tone, 8 kHz 16-bit mono: a real, playable recording."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i
                                                                          / 8000)))
                                 for i in range(16000)))


def _png() -> bytes:
    """A 2x2 red PNG, written by hand."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    settings = make_settings(tmp_path_factory.mktemp("workspace"), REDIS_URL=REDIS_SERVER_URL)
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    clock = FixedClock(NOW)
    recording = settings.storage.recordings_dir / "2026" / "11" / "24" / f"{CALL_ID}.wav"
    _wav(recording)
    at = NOW - timedelta(minutes=60)  # 09:00
    with transaction(sessions) as session:
        catalogue.seed(session)
        geo.load_grids(session, geo.read_geojson(DEMO_GRIDS))
        for name, roles, department in (
                (CHIEF, ["shift_chief"], None), (DISPATCHER, ["dispatcher"], None),
                (HANDLER, ["department"], "sanitation"), (SUPERVISOR, ["supervisor"], None),
                (OTHER_HANDLER, ["department"], "municipal")):
            accounts.create_account(session, name, roles, password=PASSWORD,
                                    department=department, actor="测试", now=at)
        late = service.open_order(
            session, appeal_type="complaint", description="路灯不亮", channel="web",
            actor="受理员", category_code="0102", address="道里区经纬街5号", now=at)
        service.transition(session, late.case_number, "open", actor=CHIEF, role="shift_chief",
                           now=at + 20 * MINUTE)
        near = service.open_order(
            session, appeal_type="complaint", description="井盖缺失", channel="web",
            actor="受理员", category_code="0102", address="香坊区红旗大街8号",
            now=at + 30 * MINUTE)
        service.transition(session, near.case_number, "open", actor=CHIEF,
                           role="shift_chief", now=at + 35 * MINUTE)
        started = (at + 45 * MINUTE).timestamp()
        records.store_call(session, {
            "call_id": CALL_ID, "caller_number": CALLER, "caller_name": "",
            "entry_number": "12319", "started_at": started, "ended_at": started + 300,
            "duration_seconds": 300, "outcome": "answered", "queue": "intake",
            "queue_position": 1, "wait_seconds": 5, "short_abandon": False, "agent": "8001",
            "connected_at": started + 5, "talk_seconds": 295, "hold_seconds": 0,
            "hangup_cause": 16, "hangup_cause_text": "", "ivr_path": [],
            "agent_attempts": [], "transfers": [],
            "legs": [{"uniqueid": CALL_ID, "channel": "PJSIP/trunk-00000007",
                      "role": "caller", "number": CALLER, "name": "", "created_at": started}],
            "recording": str(recording), "incomplete": False})
        case = service.open_order(
            session, appeal_type="complaint", description="小区门口垃圾堆放三天没人清",
            channel="phone", actor="受理员", citizen_phone=CALLER, category_code="0102",
            address="南岗区示范街1号", latitude=45.7504, longitude=126.6306, call_id=CALL_ID,
            now=at + 50 * MINUTE)
        service.link_call(session, case.case_number, CALL_ID, actor="受理员", how="intake",
                          recordings_dir=settings.storage.recordings_dir,
                          now=at + 50 * MINUTE)
        assert case.department_code == "sanitation"
        numbers = (case.case_number, late.case_number, near.case_number)
    app = create_app(settings, sessions, connect_redis(settings), clock)
    port = isolation.free_port()
    server = create_server(app, host="127.0.0.1", port=port, threads=4)
    thread = threading.Thread(target=server.run, daemon=True, name="workspace-web")
    thread.start()
    try:
        yield Site(f"http://127.0.0.1:{port}", sessions, clock, *numbers)
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


def _offered(page: Page) -> list[str]:
    return [f.get_attribute("data-action") or ""
            for f in page.locator("#actions form.order-action").all()]


def _take(page: Page, action: str, note: str = "") -> None:
    form = page.locator(f"#actions form[data-action='{action}']")
    if note:
        form.locator("textarea[name=note]").fill(note)
    form.locator("button[type=submit]").click()


def _forge(page: Page, site: Site, action: str, role: str) -> Any:
    """A form the page never offered, posted with the person's session and CSRF token."""
    token = page.locator("input[name=csrf_token]").first.get_attribute("value") or ""
    return page.request.post(f"{site.url}/orders/{site.case}/act", form={
        "csrf_token": token, "action": action, "role": role, "note": "伪造"})


def _state(site: Site) -> str:
    with site.sessions() as session:
        return service.get_order(session, site.case).state


def test_four_people_take_an_order_from_the_call_to_closed(site: Site) -> None:
    order_url = f"{site.url}/orders/{site.case}"
    with chromium(*MEDIA_FLAGS) as browser:
        chief_context, chief = _sign_in(browser, site, CHIEF)
        dispatcher_context, dispatcher = _sign_in(browser, site, DISPATCHER)
        handler_context, handler = _sign_in(browser, site, HANDLER)
        supervisor_context, supervisor = _sign_in(browser, site, SUPERVISOR)
        other_context, other = _sign_in(browser, site, OTHER_HANDLER)

        # 10:00 the shift chief's queue holds the order taken in on the call, and opens it
        rows = chief.locator("#queue-shift_chief tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-case", site.case)
        rows.first.get_by_role("link", name=site.case).click()
        chief.wait_for_url(order_url)
        expect(chief.locator("#order-state")).to_have_text("受理")
        assert _offered(chief) == ["open", "void", "merge", "supervise"]
        expect(chief.locator("#order-citizen")).to_contain_text("139****5678")
        _take(chief, "open", "属实，立案")
        expect(chief.locator("#done")).to_have_text("已完成：立案")
        expect(chief.locator("#order-state")).to_have_text("已立案")

        # 10:02 the dispatcher's queue, soonest due first: red, yellow, then this order
        site.clock.advance(2 * MINUTE)
        dispatcher.reload()
        rows = dispatcher.locator("#queue-dispatcher tbody tr")
        expect(rows).to_have_count(3)
        assert [(r.get_attribute("data-case"), r.get_attribute("data-colour"))
                for r in rows.all()] == [(site.late, "red"), (site.near, "yellow"),
                                         (site.case, "green")]
        expect(rows.nth(0).locator(".work-due")).to_have_text("2026-11-24 09:50")
        expect(rows.nth(1).locator(".work-due")).to_have_text("2026-11-24 10:05")
        expect(rows.nth(2).locator(".work-due")).to_have_text("2026-11-24 10:30")
        screenshot(dispatcher, "workspace-dispatcher-queue")
        dispatcher.goto(order_url)
        assert _offered(dispatcher) == ["dispatch"]
        # not the department's step, and not a role the dispatcher holds: refused, why said
        refused = _forge(dispatcher, site, "sign", "dispatcher")
        assert refused.status == 403
        assert "workflow: sign (签收) is for department, not &#39;dispatcher&#39;" \
            in refused.text()
        refused = _forge(dispatcher, site, "close", "shift_chief")
        assert refused.status == 403
        assert f"role: {DISPATCHER} does not act as &#39;shift_chief&#39;" in refused.text()
        assert _state(site) == "opened"
        expect(dispatcher.locator("#actions select[name=department]")).to_have_value(
            "sanitation")
        _take(dispatcher, "dispatch")
        expect(dispatcher.locator("#order-state")).to_have_text("已派遣")
        expect(dispatcher.locator("#order-department")).to_have_text("市容环卫局")
        expect(dispatcher.locator("#no-actions")).to_be_visible()

        # a handler of another department sees neither the order nor it in their queue
        assert other.request.get(order_url).status == 403
        other.reload()
        expect(other.locator("#queue-department tbody tr")).to_have_count(0)

        # 10:04 the sanitation handler signs, then answers with a photo
        site.clock.advance(2 * MINUTE)
        handler.reload()
        rows = handler.locator("#queue-department tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-case", site.case)
        handler.goto(order_url)
        assert _offered(handler) == ["sign", "return"]
        _take(handler, "sign")
        expect(handler.locator("#order-state")).to_have_text("处置中")
        assert _offered(handler) == ["return", "request_extension", "request_park",
                                     "feedback"]
        site.clock.advance(2 * MINUTE)  # 10:06
        feedback = handler.locator("#actions form[data-action='feedback']")
        feedback.locator("input[name=photo]").set_input_files(
            {"name": "cleared.png", "mimeType": "image/png", "buffer": _png()})
        _take(handler, "feedback", "垃圾已清运")
        expect(handler.locator("#order-state")).to_have_text("已反馈")
        expect(handler.locator("#photos img")).to_have_count(1)
        assert handler.locator("#photos img").evaluate("img => img.naturalWidth") == 2
        refused = _forge(handler, site, "request_check", "department")
        assert refused.status == 403
        assert "request_check (转核查) is for dispatcher" in refused.text()

        # 10:08 the dispatcher sends it to check with one click in the queue's row
        site.clock.advance(2 * MINUTE)
        dispatcher.reload()
        assert _offered(dispatcher) == ["request_check"]
        dispatcher.goto(f"{site.url}/work")
        row = dispatcher.locator(f"#queue-dispatcher tr[data-case='{site.case}']")
        expect(row.locator("td.work-actions button")).to_have_text(["转核查"])
        row.get_by_role("button", name="转核查").click()
        expect(dispatcher.locator("#queue-dispatcher tbody tr")).to_have_count(2)
        assert dispatcher.url == f"{site.url}/work"
        assert _state(site) == "checking"

        # 10:10 the supervisor listens to the call and passes the check
        site.clock.advance(2 * MINUTE)
        supervisor.reload()
        expect(supervisor.locator("#queue-supervisor tbody tr")).to_have_count(1)
        supervisor.goto(order_url)
        assert _offered(supervisor) == ["check_passed", "rework"]
        statuses: list[tuple[int, str]] = []
        supervisor.on("response", lambda r: statuses.append(
            (r.status, r.request.headers.get("range", ""))) if "/recording" in r.url else None)
        audio = supervisor.locator(f"#calls li[data-call='{CALL_ID}'] audio")
        audio.evaluate("a => a.play()")
        supervisor.wait_for_function(
            "a => a.currentTime > 0.3", arg=audio.element_handle(), timeout=10_000)
        assert statuses and statuses[0] == (206, "bytes=0-")
        _take(supervisor, "check_passed", "现场已清理干净")
        expect(supervisor.locator("#order-state")).to_have_text("核查通过")
        refused = _forge(supervisor, site, "check_passed", "supervisor")
        assert refused.status == 409
        assert "cannot be taken from &#39;checked&#39;; only from checking" in refused.text()

        # 10:12 the shift chief closes it; the timeline tells the whole story
        site.clock.advance(2 * MINUTE)
        chief.goto(order_url)
        assert _offered(chief) == ["close", "supervise"]
        _take(chief, "close", "办结")
        expect(chief.locator("#order-state")).to_have_text("已结案")
        assert _offered(chief) == ["reopen"]
        timeline = chief.locator("#timeline li")
        assert [li.get_attribute("data-action") for li in timeline.all()] == [
            "create", "open", "dispatch", "sign", "feedback", "request_check",
            "check_passed", "close"]
        assert [t.inner_text() for t in chief.locator("#timeline li time").all()] == [
            "2026-11-24 09:50", "2026-11-24 10:00", "2026-11-24 10:02", "2026-11-24 10:04",
            "2026-11-24 10:06", "2026-11-24 10:08", "2026-11-24 10:10", "2026-11-24 10:12"]
        expect(timeline.nth(4)).to_contain_text(HANDLER)
        expect(timeline.nth(4)).to_contain_text("垃圾已清运")
        expect(timeline.nth(6)).to_contain_text(SUPERVISOR)
        screenshot(chief, "workspace-order-page-closed")
        for context in (chief_context, dispatcher_context, handler_context,
                        supervisor_context, other_context):
            context.close()

    assert _state(site) == "closed"
    with site.sessions() as session:
        played = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "recording_played")).all()
        assert [(e.actor, e.target, json.loads(e.detail)) for e in played] == [
            (SUPERVISOR, CALL_ID, {"case_number": site.case})]
        history = service.history(session, site.case)
        assert [(e.action, e.actor) for e in history[1:]] == [
            ("open", CHIEF), ("dispatch", DISPATCHER), ("sign", HANDLER),
            ("feedback", HANDLER), ("request_check", DISPATCHER),
            ("check_passed", SUPERVISOR), ("close", CHIEF)]
        photos = [a for a in service.attachments(session, site.case) if a.kind == "photo"]
        assert [(p.bytes, p.sha256) for p in photos] == [
            (len(_png()), hashlib.sha256(_png()).hexdigest())]
