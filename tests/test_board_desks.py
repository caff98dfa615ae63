"""The wallboard's alerts on supervisors' desks, and the live seats page, against the real
centre (issue 11: "alerts on the board and to supervisors' desks"; the supervisor's seats
pushed, not rendered once): real Asterisk, kit callers, the pages in Chromium.

- A kit caller waits in the queue with no agent ready, past the test's small
  board.waiting_alert_seconds: the supervisor's desk shows the alert in words (Chinese, the
  board's own words) with its time; when the caller hangs up, it is taken off again. An
  operator's desk, open all along and live, has no notices panel and hears no alert.
- /supervise/seats: an agent paused and made ready again changes its row (state, reason,
  buttons) with no reload of the page.
- /board/displays: an admin issues a display token and revokes it; the wall open with it
  loses its live updates at once and is refused when loaded again.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace

import pytest
from playwright.sync_api import expect

from accounts.service import ADMIN, OPERATOR, SUPERVISOR, create_account
from agent_desk import feed
from core.db import transaction
from hotline.centre import Centre
from sipkit.kit import Call, Dtmf, Hangup, SipKit, Wait
from telephony import commands
from telephony.ami import EventTap
from tests.browser import chromium, screenshot, sign_in
from tests.conftest import WEB_PORT, wait_until

SITE = f"http://127.0.0.1:{WEB_PORT}"
AGENTS = ("8101", "8102")
WAITING_ALERT_SECONDS = 3
# every "desk:notice" the page hears, in order
LISTEN = """() => {
  window.__notices = [];
  document.addEventListener("desk:notice", (e) => window.__notices.push(e.detail));
}"""


@pytest.fixture(scope="module")
def centre(pbx: object, pbx_settings: object) -> Iterator[Centre]:
    """The module's centre, with a caller-waiting alert after WAITING_ALERT_SECONDS."""
    settings = replace(pbx_settings, web=replace(pbx_settings.web, port=WEB_PORT),  # type: ignore[type-var]
                       board=replace(pbx_settings.board,  # type: ignore[attr-defined]
                                     waiting_alert_seconds=WAITING_ALERT_SECONDS))
    with Centre(settings) as running:
        yield running


def _account(centre: Centre, name: str, role: str) -> str:
    password = f"{name}-密码-12345"
    with transaction(centre.sessions) as session:
        create_account(session, name, [role], password=password, actor="test",
                       now=centre.clock.now())
    return password


def _pause_all(centre: Centre) -> None:
    for agent in AGENTS:
        commands.send(centre.bus.client, "seat.pause", {"agent": agent, "reason": "meal"})
    wait_until(lambda: all(centre.telephony.board.seat(a).state == "paused" for a in AGENTS),
               10, "the test agents are not paused")


def _resume_all(centre: Centre) -> None:
    for agent in AGENTS:
        commands.send(centre.bus.client, "seat.resume", {"agent": agent})


def test_a_waiting_alert_reaches_the_supervisors_desk_and_not_the_operators(
        centre: Centre, kit: SipKit, ami: EventTap) -> None:
    chief = _account(centre, "告警值班长", SUPERVISOR)
    operator = _account(centre, "告警受理员", OPERATOR)
    _pause_all(centre)
    try:
        with chromium() as browser:
            boss = browser.new_context(locale="zh-CN").new_page()
            sign_in(boss, SITE, "告警值班长", chief)
            agent = browser.new_context(locale="zh-CN").new_page()
            sign_in(agent, SITE, "告警受理员", operator)
            for page in (boss, agent):
                expect(page.locator("#push-state")).to_have_attribute(
                    "data-state", "open", timeout=10_000)
                page.evaluate(LISTEN)
            expect(boss.locator("#notices-title")).to_have_text("告警通知")
            assert agent.locator("#notices").count() == 0  # no panel on an operator's desk
            waiting = boss.locator('#notices-list li[data-key="waiting:intake"]')
            expect(waiting).to_have_count(0)

            run = kit.start_calls(Call(caller_id="13600000301", max_seconds=60, script=(
                Wait(1.0), Dtmf("1"), Wait(14.0), Hangup())))
            # over 3 s waiting: the board loop raises it at its next update (5 s at most)
            expect(waiting).to_have_count(1, timeout=15_000)
            expect(waiting.locator(".notices-text")).to_have_text("intake: 有来电等待超过3秒")
            assert re.fullmatch(r"\d\d:\d\d:\d\d", waiting.locator("time").inner_text())
            assert waiting.get_attribute("data-kind") == "waiting"
            # newest first: it is the top of the list
            assert boss.locator("#notices-list li").first.get_attribute(
                "data-key") == "waiting:intake"
            screenshot(boss, "desk-notices-waiting")
            run.wait()
            expect(waiting).to_have_count(0, timeout=10_000)  # the alert cleared
            heard = boss.evaluate("window.__notices")
            assert [(n["alert"]["key"], bool(n.get("cleared"))) for n in heard
                    if n.get("alert", {}).get("key") == "waiting:intake"] == [
                ("waiting:intake", False), ("waiting:intake", True)]

            # the operator's desk is live (it hears a notice for every desk) but heard no alert
            feed.publish(centre.bus.client, feed.EVERY_DESK, "notice", {"text": "全体注意"})
            wait_until(lambda: agent.evaluate("window.__notices.length") >= 1, 5,
                       "the operator's desk heard nothing")
            assert agent.evaluate("window.__notices") == [{"text": "全体注意"}]
    finally:
        _resume_all(centre)


def test_the_seats_page_follows_a_seat_without_a_reload(centre: Centre, ami: EventTap) -> None:
    password = _account(centre, "坐席监控班长", SUPERVISOR)
    _resume_all(centre)
    wait_until(lambda: centre.telephony.board.seat("8101").state == "ready", 10,
               "8101 not ready")
    try:
        with chromium() as browser:
            page = browser.new_context(locale="zh-CN").new_page()
            sign_in(page, SITE, "坐席监控班长", password, then="/supervise/seats")
            expect(page.locator("#push-state")).to_have_attribute("data-state", "open",
                                                                  timeout=10_000)
            page.evaluate("window.__same_page = true")  # gone if the page were reloaded
            row = page.locator("tr[data-agent='8101']")
            expect(row).to_have_attribute("data-state", "ready")
            commands.send(centre.bus.client, "seat.pause", {"agent": "8101", "reason": "meal"})
            expect(row).to_have_attribute("data-state", "paused", timeout=5_000)
            expect(row.locator(".supervise-state")).to_have_text("示忙 (用餐)")
            expect(row.get_by_role("button", name="监听")).to_be_disabled()
            screenshot(page, "supervise-seats-live-paused")
            commands.send(centre.bus.client, "seat.resume", {"agent": "8101"})
            expect(row).to_have_attribute("data-state", "ready", timeout=5_000)
            expect(row.locator(".supervise-state")).to_have_text("空闲")
            assert page.evaluate("window.__same_page") is True
    finally:
        _resume_all(centre)


def test_an_admin_issues_and_revokes_a_walls_token_and_the_open_wall_goes_dark(
        centre: Centre) -> None:
    """Chromium: the admin issues a token on /board/displays (shown once), the wall opens
    with it and goes live; the admin revokes it: the wall's open stream is closed and not
    let in again (its state goes off), and loading the wall again is a 401."""
    password = _account(centre, "大屏管理员", ADMIN)
    with chromium() as browser:
        admin = browser.new_context(locale="zh-CN").new_page()
        sign_in(admin, SITE, "大屏管理员", password, then="/board/displays")
        expect(admin.locator("h1")).to_have_text("大屏令牌")
        admin.get_by_label("大屏").fill("指挥大厅")
        admin.get_by_role("button", name=re.compile("签发令牌")).click()
        expect(admin.locator("#issued-title")).to_have_text("已为指挥大厅签发令牌")
        wall_address = admin.locator("#issued-wall").inner_text()
        row = admin.locator("#displays tbody tr").first
        expect(row).to_have_attribute("data-state", "active")
        screenshot(admin, "display-tokens-issued")

        wall = browser.new_context(locale="zh-CN",
                                   viewport={"width": 1920, "height": 1080}).new_page()
        assert wall_address.startswith(f"{SITE}/board/wall?token=")
        wall.goto(wall_address)
        state = wall.locator("#push-state")
        expect(state).to_have_attribute("data-state", "open", timeout=10_000)

        admin.goto(f"{SITE}/board/displays")
        admin.locator("#displays tbody tr").first.get_by_role("button", name="吊销").click()
        expect(admin.locator("#displays tbody tr").first).to_have_attribute(
            "data-state", "revoked")
        screenshot(admin, "display-tokens-revoked")
        expect(state).to_have_attribute("data-state", "off", timeout=10_000)
        again = wall.reload()
        assert again is not None and again.status == 401
        assert "revoked" in wall.content()
