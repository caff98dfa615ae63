"""The desk's knowledge base panel in Debian's Chromium against the real web app (waitress):
an operator searches in the caller's words, reads the article, sees why "answered with this
article" is off without a live call, and once the softphone says it is talking on the call
the screen pop named, closes the consultation with one click and sees its case number; the
order is in the database, closed, with the call. Kept as screenshots."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select
from waitress.server import create_server

from accounts import service as accounts
from core.clock import FixedClock
from core.db import make_engine, session_factory, transaction, upgrade
from core.live import connect_redis
from hotline.web import create_app, stop_web_server
from telephony import records
from tests import isolation
from tests.api_world import NOW
from tests.browser import chromium, screenshot, sign_in
from tests.conftest import REDIS_SERVER_URL, make_settings
from tickets import catalogue, knowledge, service
from tickets.models import WorkOrder

NAME, PASSWORD = "知识库坐席", "knowledge-desk-密码-1"
SUPERVISOR = "知识库班长"
CALL_ID = "1764400000.31"


class Site:
    def __init__(self, url: str, sessions: Any) -> None:
        self.url, self.sessions = url, sessions


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    settings = make_settings(tmp_path_factory.mktemp("knowledge"), REDIS_URL=REDIS_SERVER_URL)
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    epoch = NOW.timestamp() - 120
    with transaction(sessions) as session:
        catalogue.seed(session)
        knowledge.load_file(session, knowledge.DEMO_ARTICLES, actor="知识管理员", now=NOW)
        accounts.create_account(session, NAME, ["operator"], password=PASSWORD, agent="8001",
                                actor="测试", now=NOW)
        accounts.create_account(session, SUPERVISOR, ["supervisor"], password=PASSWORD,
                                agent="8002", actor="测试", now=NOW)
        records.store_call(session, {
            "call_id": CALL_ID, "caller_number": "13700002222", "caller_name": "",
            "entry_number": "12319", "started_at": epoch, "ended_at": epoch + 60,
            "duration_seconds": 60, "outcome": "answered", "queue": "intake",
            "queue_position": 1, "wait_seconds": 2, "short_abandon": False, "agent": "8001",
            "connected_at": epoch + 2, "talk_seconds": 58, "hold_seconds": 0,
            "hangup_cause": 16, "hangup_cause_text": "", "ivr_path": [],
            "agent_attempts": [], "transfers": [],
            "legs": [{"uniqueid": CALL_ID, "channel": "PJSIP/trunk-00000031",
                      "role": "caller", "number": "13700002222", "name": "",
                      "created_at": epoch}],
            "recording": None, "incomplete": False})
    app = create_app(settings, sessions, connect_redis(settings), FixedClock(NOW))
    port = isolation.free_port()
    server = create_server(app, host="127.0.0.1", port=port, threads=2)
    thread = threading.Thread(target=server.run, daemon=True, name="knowledge-web")
    thread.start()
    try:
        yield Site(f"http://127.0.0.1:{port}", sessions)
    finally:
        stop_web_server(server, thread)
        engine.dispose()


@contextlib.contextmanager
def _open_desk(site: Site, name: str) -> Iterator[Page]:
    with chromium() as browser:
        context = browser.new_context(locale="zh-CN", viewport={"width": 1366, "height": 900})
        try:
            page = context.new_page()
            sign_in(page, site.url, name, PASSWORD)
            yield page
        finally:
            context.close()


@pytest.fixture
def desk(site: Site) -> Iterator[Page]:
    with _open_desk(site, NAME) as page:
        yield page


def _event(page: Page, kind: str, detail: dict[str, Any]) -> None:
    """What the softphone and the screen pop tell the panels (the desk's contract)."""
    page.evaluate("([kind, detail]) => document.dispatchEvent("
                  "new CustomEvent(kind, { detail }))", [kind, detail])


def test_an_agent_finds_the_answer_and_closes_the_consultation_on_the_call(
        site: Site, desk: Page) -> None:
    panel = desk.locator("#knowledge")
    expect(panel.get_by_role("heading", name="知识库")).to_be_visible()
    expect(desk.locator("#knowledge-status")).to_have_text("共 12 条")
    expect(desk.locator("#knowledge-results li")).to_have_count(12)
    # 垃圾分类 市容秩序 违法建设 犬只管理 户外广告 渣土运输 市政设施, and "all"
    expect(desk.locator("#knowledge-category option")).to_have_count(8)

    desk.get_by_label("搜索知识库").fill("晚上几点可以倒垃圾")
    expect(desk.locator("#knowledge-status")).to_have_text("找到 4 条")
    first = desk.locator("#knowledge-results li button").first
    expect(first.locator("strong")).to_have_text("垃圾分类投放时间")
    first.click()
    article = desk.locator("#knowledge-article")
    expect(article.locator("h3")).to_have_text("垃圾分类投放时间")
    expect(article.locator("#knowledge-article-body")).to_contain_text("晚上 18:00-21:00")
    expect(article.locator("#knowledge-article-meta")).to_contain_text("知识管理员 编辑于")
    answer = desk.get_by_role("button", name="已按此条答复（直接办结）")
    expect(answer).to_be_disabled()
    expect(desk.locator("#knowledge-answer-why")).to_have_text(
        "当前没有通话：此按钮用于在通话中直接办结来电人的咨询。")
    screenshot(desk, "desk-knowledge-article-no-call")

    # markup typed into the box is text, found nowhere
    desk.get_by_label("搜索知识库").fill("<img src=x onerror=alert(1)>")
    expect(desk.locator("#knowledge-status")).to_have_text("没有匹配的知识，请换个说法。")
    expect(desk.locator("#knowledge-results li")).to_have_count(0)

    _event(desk, "desk:softphone", {"state": "ringing", "caller": "137****2222"})
    expect(desk.locator("#knowledge-answer-why")).to_have_text("请先接听来电。")
    _event(desk, "desk:softphone", {"state": "talking", "caller": "137****2222"})
    expect(desk.locator("#knowledge-answer-why")).to_have_text(
        "正在等待来电信息（弹屏），之后才能将咨询关联到本次通话。")
    expect(answer).to_be_disabled()
    _event(desk, "desk:pop", {"call_id": CALL_ID, "caller_number": "137****2222",
                              "queue": "intake", "ivr": []})
    expect(answer).to_be_enabled()
    answer.click()
    case_line = desk.locator("#knowledge-case")
    expect(case_line).to_have_attribute("data-state", "closed")
    case_number = case_line.get_attribute("data-case") or ""
    assert case_number.startswith("20261124")
    expect(case_line).to_have_text(f"工单 {case_number}：咨询已直接办结。")
    expect(answer).to_be_disabled()
    expect(desk.locator("#knowledge-answer-why")).to_have_text("本次通话的咨询已办结。")
    screenshot(desk, "desk-knowledge-answered-on-the-call")

    with site.sessions() as session:
        order = session.scalar(select(WorkOrder).where(WorkOrder.case_number == case_number))
        assert order is not None
        assert (order.appeal_type, order.state, order.first_call_resolved, order.channel) == (
            "enquiry", "closed", True, "phone")
        assert [c["call_id"] for c in service.calls_of_order(session, case_number)] == [CALL_ID]
        notes = [e.note for e in service.history(session, case_number)]
        assert notes[-1].endswith("《垃圾分类投放时间》") and notes[-1].startswith("知识库答复 #")

    # the call ends: nothing to close any more
    _event(desk, "desk:softphone", {"state": "idle"})
    expect(desk.locator("#knowledge-answer-why")).to_have_text(
        "当前没有通话：此按钮用于在通话中直接办结来电人的咨询。")
    expect(answer).to_be_disabled()
    # the next call is never bound to the last call's id: it waits for its own screen pop
    _event(desk, "desk:softphone", {"state": "talking", "caller": "139****0000"})
    expect(desk.locator("#knowledge-answer-why")).to_have_text(
        "正在等待来电信息（弹屏），之后才能将咨询关联到本次通话。")
    expect(answer).to_be_disabled()



def test_a_supervisor_reads_articles_but_the_answer_is_an_operators(site: Site) -> None:
    with _open_desk(site, SUPERVISOR) as desk:
        desk.get_by_label("搜索知识库").fill("养狗要办证吗")
        first = desk.locator("#knowledge-results li button").first
        expect(first.locator("strong")).to_have_text("养犬登记和犬证办理")
        first.click()
        expect(desk.locator("#knowledge-article h3")).to_have_text("养犬登记和犬证办理")
        _event(desk, "desk:softphone", {"state": "talking", "caller": "137****2222"})
        _event(desk, "desk:pop", {"call_id": "1764400000.32", "queue": "intake", "ivr": []})
        expect(desk.get_by_role("button", name="已按此条答复（直接办结）")).to_be_disabled()
        expect(desk.locator("#knowledge-answer-why")).to_have_text(
            "只有受理员可以受理并办结咨询。")
