"""The live wallboard against the real centre (issue 11 item 1's must-show lines): real
Asterisk, kit callers and agent phones, a supervisor's board in Chromium.

- Five kit callers wait with no agent ready: the board shows 5 waiting and the longest wait
  growing; one caller gives up: the abandon is in the 24-hour abandoned count and rate; an
  agent goes ready and the count falls, one by one, as the calls are answered. Every change
  of the waiting count is on the page within a second of the AMI event that made it
  (Asterisk's own Timestamp against the page's Date.now() at the change, one machine clock).
- The telephony service and the web app are stopped mid-call and started again: the
  waiting caller is on the new board (Asterisk's queue state), and the 24-hour figures the
  page shows equal those counted here from the stored call records, before and after that
  caller leaves.
- The display wall's page, opened with a display token and no login form, at 1920x1080 and
  3840x2160 (screenshots kept as artefacts).

Expected figures are counted by hand from what the test did (and, for the restart, from
the call records' columns with plain Python), never from the board's code. The figures are
read relative to the board before the test's calls: other tests' calls share the database.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from playwright.sync_api import Page, expect
from sqlalchemy import select

from accounts.service import SUPERVISOR, create_account
from agent_desk import displays
from core.clock import SYSTEM_CLOCK
from core.db import transaction
from hotline.centre import Centre
from sipkit.kit import Call, Dtmf, Hangup, SipKit, Wait
from telephony import commands
from telephony.ami import EventTap
from telephony.models import CallRecord
from tests.browser import chromium, screenshot
from tests.conftest import AGENT_PORT, WEB_PORT, agent_ip, ensure_ready, wait_until

PASSWORD = "board-supervisor-pw-1"
SUPERVISOR_NAME = "大屏班长"
SITE = f"http://127.0.0.1:{WEB_PORT}"
AGENTS = ("8101", "8102")
# records every change of the waiting count with the moment it was seen (Unix seconds)
WATCH = """() => {
  window.__waiting = [];
  const el = document.getElementById("board-waiting");
  let last = el.textContent;
  new MutationObserver(() => {
    if (el.textContent !== last) {
      last = el.textContent;
      window.__waiting.push([Date.now() / 1000, Number(last)]);
    }
  }).observe(el, {childList: true, characterData: true, subtree: true});
}"""


def _cell(page: Page, window: str, figure: str) -> Any:
    return page.locator(f'#board-centre td[data-window="{window}"][data-figure="{figure}"]')


def _number(page: Page, window: str, figure: str) -> int:
    return int(_cell(page, window, figure).inner_text())


def _percent(part: int, whole: int) -> str:
    return "—" if not whole else f"{part / whole * 100:.1f}%"


def _sign_in(page: Page) -> None:
    page.goto(f"{SITE}/login?next=/board")
    page.get_by_label("用户名").fill(SUPERVISOR_NAME)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(f"{SITE}/board")
    expect(page.locator("#push-state")).to_have_attribute("data-state", "open",
                                                          timeout=10_000)


def _pause_all(centre: Centre) -> None:
    for agent in AGENTS:
        commands.send(centre.bus.client, "seat.pause", {"agent": agent, "reason": "meal"})
    wait_until(lambda: all(centre.telephony.board.seat(a).state == "paused" for a in AGENTS),
               10, "the test agents are not paused")


def test_five_callers_wait_one_gives_up_an_agent_answers_the_rest(
        centre: Centre, kit: SipKit, ami: EventTap) -> None:
    with transaction(centre.sessions) as session:
        create_account(session, SUPERVISOR_NAME, [SUPERVISOR], password=PASSWORD,
                       actor="test", now=centre.clock.now())
    ensure_ready(centre)
    _pause_all(centre)
    callers = [f"1360000010{n}" for n in range(5)]
    try:
        with chromium() as browser:
            context = browser.new_context(locale="zh-CN",
                                          viewport={"width": 1600, "height": 1000})
            page = context.new_page()
            _sign_in(page)
            expect(page.locator("#board-waiting")).to_have_text("0")
            offered0, answered0 = _number(page, "24h", "offered"), _number(page, "24h",
                                                                           "answered")
            abandoned0 = _number(page, "24h", "abandoned")
            page.evaluate(WATCH)
            started_at = time.time()
            # four callers who wait as long as it takes, one a second; a fifth who gives up
            # about 14 s after keying 1 (well past the 5 s of a short abandon)
            stayers = kit.start_calls(Call(caller_id=callers[0], max_seconds=120, script=(
                Wait(1.0), Dtmf("1"), Wait(90.0), Hangup())), count=4, rate=1.0,
                caller_ids=callers[:4])
            leaver = kit.start_calls(Call(caller_id=callers[4], script=(
                Wait(1.0), Dtmf("1"), Wait(15.0), Hangup())))
            expect(page.locator("#board-waiting")).to_have_text("5", timeout=15_000)
            longest = page.locator("#board-longest")
            first = int(longest.get_attribute("data-seconds") or "0")
            time.sleep(3.5)
            later = int(longest.get_attribute("data-seconds") or "0")
            assert later >= first + 2  # the longest wait grows while nobody answers
            intake = page.locator('#board-queues tr[data-queue="intake"]')
            expect(intake.locator('td[data-field="waiting"]')).to_have_text("5")
            screenshot(page, "wallboard-five-waiting")

            [gave_up] = leaver.wait()
            assert gave_up.hangup_by == "caller"  # the kit's "answered": the IVR took it
            expect(page.locator("#board-waiting")).to_have_text("4", timeout=5_000)
            expect(_cell(page, "24h", "abandoned")).to_have_text(str(abandoned0 + 1),
                                                                 timeout=5_000)
            expect(_cell(page, "24h", "offered")).to_have_text(str(offered0 + 1))
            expect(_cell(page, "24h", "abandon_rate")).to_have_text(
                _percent(abandoned0 + 1, offered0 + 1))
            screenshot(page, "wallboard-one-abandoned")

            # an agent goes ready: each call is answered, talked for 2 s, and the next
            with kit.agent_phone("8101", agent_ip("8101"), port=AGENT_PORT,
                                 answer_after=0.5, talk_seconds=2.0):
                commands.send(centre.bus.client, "seat.resume", {"agent": "8101"})
                expect(page.locator("#board-waiting")).to_have_text("0", timeout=40_000)
                stayers.wait()
            expect(_cell(page, "24h", "answered")).to_have_text(str(answered0 + 4),
                                                                timeout=10_000)
            expect(_cell(page, "24h", "offered")).to_have_text(str(offered0 + 5))
            screenshot(page, "wallboard-all-answered")
            seen = page.evaluate("window.__waiting")
            context.close()
    finally:
        commands.send(centre.bus.client, "seat.resume", {"agent": "8102"})
        commands.send(centre.bus.client, "seat.resume", {"agent": "8101"})

    # the count went up to 5 as they joined, then down one at a time
    values = [value for _at, value in seen]
    assert values[values.index(5):] == [5, 4, 3, 2, 1, 0]
    assert max(values) == 5
    # each AMI event that moves the count is on the page within a second
    moves = [e for e in ami.snapshot()
             if e.get("Event") in ("QueueCallerJoin", "AgentConnect", "QueueCallerAbandon")
             and e.get("Queue") == "intake" and float(e.get("Timestamp", 0)) >= started_at]
    assert [e["Event"] for e in moves].count("QueueCallerJoin") == 5
    assert [e["Event"] for e in moves].count("QueueCallerAbandon") == 1
    assert [e["Event"] for e in moves].count("AgentConnect") == 4
    late = []
    for event in moves:
        at = float(event["Timestamp"])
        shown = next((seen_at for seen_at, _v in seen if seen_at >= at), None)
        if shown is None or shown - at > 1.0:
            late.append((event["Event"], at, shown))
    assert late == []


def _by_hand(centre: Centre, since: float) -> dict[str, int]:
    """The 24-hour centre figures counted from the stored records with plain Python."""
    with centre.sessions() as session:
        rows = session.scalars(select(CallRecord)).all()
    counts = {"offered": 0, "answered": 0, "abandoned": 0, "short_abandons": 0}
    for row in rows:
        if row.direction != "inbound" or row.queue is None:
            continue
        if row.started_at.timestamp() < since:
            continue
        if row.short_abandon:
            counts["short_abandons"] += 1
            continue
        counts["offered"] += 1
        if row.outcome in ("answered", "abandoned"):
            counts[row.outcome] += 1
    return counts


def _shown(page: Page) -> dict[str, int]:
    return {key: _number(page, "24h", key)
            for key in ("offered", "answered", "abandoned", "short_abandons")}


def test_after_a_restart_the_board_is_the_records_and_asterisks_state(
        centre: Centre, kit: SipKit, ami: EventTap) -> None:
    """Runs last in this module: it stops the module's centre and starts another."""
    _pause_all(centre)
    settings = replace(centre.settings, web=replace(centre.settings.web, port=WEB_PORT))
    run = kit.start_calls(Call(caller_id="13600000200", max_seconds=60, script=(
        Wait(1.0), Dtmf("1"), Wait(25.0), Hangup())))
    wait_until(lambda: any(e.get("Event") == "QueueCallerJoin" for e in ami.snapshot()),
               15, "the caller did not reach the queue")
    centre.stop()  # telephony service, web app, push server and board loop all stop
    time.sleep(1.0)
    with Centre(settings, clock=SYSTEM_CLOCK) as again, chromium() as browser:
        page = browser.new_context(locale="zh-CN", viewport={"width": 1600, "height": 1000}
                                   ).new_page()
        _sign_in(page)
        # the caller still waiting, from Asterisk's queue state at the resync
        expect(page.locator("#board-waiting")).to_have_text("1", timeout=5_000)
        since = time.time() - 24 * 3600
        assert _shown(page) == _by_hand(again, since)
        run.wait()
        expect(page.locator("#board-waiting")).to_have_text("0", timeout=10_000)
        wait_until(lambda: again.telephony.stored >= 1, 10, "the call was not stored")
        page.reload()
        expect(page.locator("#push-state")).to_have_attribute("data-state", "open",
                                                              timeout=10_000)
        assert _shown(page) == _by_hand(again, time.time() - 24 * 3600)
        screenshot(page, "wallboard-after-restart")

        # the display wall: a display token, no login form, large type
        with transaction(again.sessions) as session:
            _row, token = displays.issue(session, settings.accounts.session_secret, "指挥大厅",
                                         days=30, actor="test", now=SYSTEM_CLOCK.now())
        for width, height in ((1920, 1080), (3840, 2160)):
            wall = browser.new_context(locale="zh-CN",
                                       viewport={"width": width, "height": height}).new_page()
            wall.goto(f"{SITE}/board/wall?token={token}")
            expect(wall.locator("#push-state")).to_have_attribute("data-state", "open",
                                                                  timeout=10_000)
            assert wall.locator("form").count() == 0  # no login form, no buttons
            expect(wall.locator("#board-waiting")).to_have_text("0")
            size = float(wall.locator("#board-waiting").evaluate(
                "el => parseFloat(getComputedStyle(el).fontSize)"))
            assert size >= height / 20  # a number the far end of the hall can read
            screenshot(wall, f"wallboard-wall-{width}x{height}")
        refused = browser.new_context().new_page()
        reply = refused.goto(f"{SITE}/board/wall?token=forged")
        assert reply is not None and reply.status == 401  # no board, and no login form
        assert refused.locator("#board, form").count() == 0
        for agent in AGENTS:
            commands.send(again.bus.client, "seat.resume", {"agent": agent})
