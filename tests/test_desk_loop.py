"""The agent desk's whole loop, as issue 10 asks it to be shown: Chromium signs in as an
agent, logs the seat in from the seat panel (on the page's softphone, or on a kit desk phone),
a kit call to 12319 keys 1 and rings; the screen pop shows the caller's earlier order before
anyone answers; the agent answers (in the page, or at the desk phone) and files the order
while the citizen talks; after the hang-up the call record carries the case number, the
order lists the call with its recording, and the recording is filed under the case. With the
softphone, the recording holds the caller's tone and the browser's fake microphone, each
audible. Screenshots of the desk idle, ringing, and in the call with the order half-filled
are kept as artefacts.

Expected values are written by hand: the caller, the seeded order's case number as the
centre numbered it, the demo grid 23010300100101 and its department (tickets/demo_grids.geojson).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from accounts.service import OPERATOR, create_account
from asterisk_conf.render import render
from asterisk_conf.sandbox import Sandbox
from core.config import Settings
from core.db import transaction
from hotline.centre import Centre
from recordings.audio import wav_stats
from recordings.catalogue import recordings_of_case
from sipkit.kit import Call, Dtmf, Hangup, Say, SipKit, Wait
from telephony import commands, directory
from telephony.models import CallRecord
from tests.audio import band_rms, tone
from tests.browser import MEDIA_FLAGS, chromium, screenshot, sign_in
from tests.conftest import AGENT_PORT, TEST_AGENTS, WEB_PORT, agent_ip, api, wait_until
from tests.test_desk_order import GRID_01, _choose, _pin
from tickets import geo, service

SITE = f"http://127.0.0.1:{WEB_PORT}"
BROWSER_AGENT = "8107"  # answers on the page's softphone
PHONE_AGENT = "8102"  # answers on a kit desk phone
PASSWORD = "desk-loop-测试-密码-1"
CALLER_HZ, BROWSER_HZ = 440, 1500


def _earlier_order(centre: Centre, caller: str) -> str:
    """An order the caller reported before, still open: the pop must show it."""
    with transaction(centre.sessions) as session:
        geo.load_grids(session, geo.read_geojson(geo.DEMO_GRIDS))
        order = service.open_order(
            session, appeal_type="complaint", description="夜市油烟扰民", channel="phone",
            actor="test", citizen_phone=caller, category_code="0104", address="示范街12号",
            now=centre.clock.now())
        return order.case_number


def _account(centre: Centre, name: str, agent: str) -> None:
    with transaction(centre.sessions) as session:
        create_account(session, name, [OPERATOR], password=PASSWORD, agent=agent,
                       see_phone=True, actor="test", now=centre.clock.now())


def _sign_in(page: Page, name: str) -> None:
    sign_in(page, SITE, name, PASSWORD)


def _log_seat_in(page: Page, centre: Centre, agent: str, device: str) -> None:
    """The seat panel logs the seat in on `device`; the page then says ready."""
    page.locator(f"#seat-login input[name='device'][value='{device}']").check()
    page.locator("#seat-login-button").click()
    expect(page.locator("#seat-state")).to_have_attribute("data-state", "ready",
                                                          timeout=10_000)
    wait_until(lambda: centre.telephony.board.seat(agent).state == "ready", 10,
               f"{agent} is not ready")


def _others_paused(centre: Centre, agents: list[str]) -> None:
    for agent in agents:
        if not centre.telephony.board.seat(agent).queues:
            commands.send(centre.bus.client, "seat.login", {"agent": agent})
        commands.send(centre.bus.client, "seat.pause", {"agent": agent, "reason": "meal"})
    wait_until(lambda: all(centre.telephony.board.seat(a).state == "paused" for a in agents),
               10, "the other agents are not paused")


def _ringing_pop(page: Page, caller: str, earlier_case: str) -> None:
    """The pop, before anyone answers: the caller in full (this agent may see numbers),
    the IVR key 1, and the caller's earlier open order."""
    expect(page.locator("#pop-number")).to_have_text(caller, timeout=20_000)
    expect(page.locator("#pop-keys")).to_contain_text("1")
    expect(page.locator("#pop-orders")).to_contain_text(earlier_case)


def _half_fill(page: Page, call_id: str) -> None:
    expect(page.locator("#order-call")).to_have_attribute("data-call-id", call_id,
                                                          timeout=10_000)
    page.locator("#order-appeal-type").select_option("complaint")
    _choose(page, "dlbj", "0104")  # 道路不洁
    page.locator("#order-address").fill("示范街与人民路交口")
    _pin(page, *GRID_01)
    expect(page.locator("#order-grid")).to_have_attribute("data-code", "23010300100101")


def _save(page: Page, centre: Centre, call_id: str) -> str:
    page.locator("#order-description").fill("路面油污一大片，行人滑倒")
    page.locator("#order-save").click()
    result = page.locator("#order-result")
    expect(result).to_contain_text("已保存")
    case = result.get_attribute("data-case") or ""
    assert len(case) == 12 and case.isdigit(), case
    assert centre.telephony.live_calls() == [call_id]  # saved while the citizen talks
    return case


def _call_id(centre: Centre, after: str, caller: str) -> str:
    found: list[str] = []

    def started() -> bool:
        found[:] = [e["call_id"] for _id, e in centre.bus.read(after, count=10_000)
                    if e.get("type") == "call.started" and e.get("caller_number") == caller]
        return bool(found)

    wait_until(started, 20, "the call never started")
    return found[0]


def _filed(centre: Centre, case: str, call_id: str, agent: str) -> Path:
    """After the hang-up: the record carries the case, the order lists the call with its
    recording, the catalogue files it under the case. The recording's path."""

    def record() -> dict[str, Any]:
        status, call = api(f"/api/v1/calls/{call_id}")
        return call if status == 200 else {}

    wait_until(lambda: record().get("case_number") == case, 20,
               "the call record never showed the case number")
    assert (record()["agent"], record()["outcome"]) == (agent, "answered")
    status, order = api(f"/api/v1/orders/{case}")
    assert status == 200
    assert (order["call_id"], order["category_code"], order["grid_code"],
            order["department_code"]) == (call_id, "0104", "23010300100101", "sanitation")
    [call] = order["calls"]
    assert (call["call_id"], call["how"], call["pending"], call["agent"]) == (
        call_id, "intake", False, agent)
    with centre.sessions() as session:
        path = session.scalar(select(CallRecord.recording_path).where(
            CallRecord.call_id == call_id))
    assert path is not None
    audio = Path(path).read_bytes()
    assert call["recording"] == {"sha256": hashlib.sha256(audio).hexdigest(),
                                 "bytes": len(audio)}
    assert [p.name for p in recordings_of_case(centre.settings.storage.recordings_dir,
                                                 case)] == [f"{call_id}.wav"]
    return Path(path)


@pytest.fixture
def browser_seat(centre: Centre, pbx: Sandbox, pbx_settings: Settings) -> Iterator[str]:
    """Agent 8107 in the directory (Asterisk renders its WebRTC endpoint) with an account;
    the desk-phone agents paused, so the queue offers the call to the page."""
    with transaction(centre.sessions) as session:
        directory.add_agent(session, BROWSER_AGENT, "全流程网页坐席",
                            queues=(pbx_settings.hotline.default_queue,))
        snapshot = directory.snapshot(session)
    _account(centre, "全流程网页坐席", BROWSER_AGENT)
    pbx.reload(render(pbx_settings, snapshot))
    _others_paused(centre, list(TEST_AGENTS))
    try:
        yield BROWSER_AGENT
    finally:
        if centre.telephony.board.seat(BROWSER_AGENT).queues:
            commands.send(centre.bus.client, "seat.logout", {"agent": BROWSER_AGENT})
        for agent in TEST_AGENTS:
            commands.send(centre.bus.client, "seat.resume", {"agent": agent})


def test_the_whole_loop_on_the_browser_softphone(
        centre: Centre, pbx: Sandbox, kit: SipKit, browser_seat: str, tmp_path: Path) -> None:
    caller = "13800138107"
    earlier = _earlier_order(centre, caller)
    microphone = tone(tmp_path / "microphone.wav", BROWSER_HZ, 4, 48000)
    voice = tone(tmp_path / "caller.wav", CALLER_HZ, 14, 8000)
    with chromium(*MEDIA_FLAGS, f"--use-file-for-fake-audio-capture={microphone}") as browser:
        context = browser.new_context(ignore_https_errors=True, locale="zh-CN",
                                      viewport={"width": 1366, "height": 768})
        page = context.new_page()
        _sign_in(page, "全流程网页坐席")
        expect(page.locator("#registration")).to_have_attribute("data-state", "registered",
                                                                timeout=15_000)
        _log_seat_in(page, centre, BROWSER_AGENT, "browser")
        screenshot(page, "desk-loop-browser-idle")
        after = centre.bus.last_id()
        run = kit.start_calls(Call(caller_id=caller, max_seconds=70, script=(
            Wait(1.0), Dtmf("1"), Wait(5.0), Say(voice), Wait(50))))
        try:
            expect(page.locator("#call-state")).to_have_attribute("data-state", "ringing",
                                                                  timeout=25_000)
            _ringing_pop(page, caller, earlier)
            screenshot(page, "desk-loop-browser-ringing")
            page.locator("#answer").click()
            expect(page.locator("#call-state")).to_have_attribute("data-state", "talking",
                                                                  timeout=10_000)
            call_id = _call_id(centre, after, caller)
            _half_fill(page, call_id)
            screenshot(page, "desk-loop-browser-in-call-order-half-filled")
            case = _save(page, centre, call_id)
            page.wait_for_timeout(6000)  # both sides talk: the caller's tone, the microphone
            page.locator("#hangup").click()
            expect(page.locator("#call-state")).to_have_attribute("data-state", "idle",
                                                                  timeout=10_000)
            [result] = run.wait()
        except BaseException:
            pbx.cli("channel request hangup all")  # a failed step leaves no call behind
            run.wait()
            raise
        finally:
            context.close()
    assert result.outcome == "answered"
    recording = _filed(centre, case, call_id, BROWSER_AGENT)
    # audio flowed both ways: the caller's tone and the browser's microphone, each audible
    assert wav_stats(recording).seconds > 5
    quiet = band_rms(recording, 2600, 3000, tmp_path)
    caller_band = band_rms(recording, CALLER_HZ - 60, CALLER_HZ + 60, tmp_path)
    browser_band = band_rms(recording, BROWSER_HZ - 100, BROWSER_HZ + 100, tmp_path)
    assert caller_band > 10 * quiet and caller_band > 300, (caller_band, quiet)
    assert browser_band > 10 * quiet and browser_band > 300, (browser_band, quiet)


def test_the_whole_loop_with_the_agent_on_a_desk_phone(
        centre: Centre, pbx: Sandbox, kit: SipKit) -> None:
    caller = "13800138102"
    earlier = _earlier_order(centre, caller)
    _account(centre, "全流程话机坐席", PHONE_AGENT)
    other = [a for a in TEST_AGENTS if a != PHONE_AGENT]
    _others_paused(centre, other)
    if centre.telephony.board.seat(PHONE_AGENT).queues:  # the page logs it in afresh
        commands.send(centre.bus.client, "seat.logout", {"agent": PHONE_AGENT})
    try:
        with chromium() as browser:
            context = browser.new_context(locale="zh-CN",
                                          viewport={"width": 1366, "height": 768})
            page = context.new_page()
            _sign_in(page, "全流程话机坐席")
            _log_seat_in(page, centre, PHONE_AGENT, "phone")
            screenshot(page, "desk-loop-phone-idle")
            after = centre.bus.last_id()
            with kit.agent_phone(PHONE_AGENT, agent_ip(PHONE_AGENT), port=AGENT_PORT,
                                 answer_after=3.0):
                run = kit.start_calls(Call(caller_id=caller, max_seconds=60, script=(
                    Wait(1.0), Dtmf("1"), Wait(22.0), Hangup())))
                try:
                    _ringing_pop(page, caller, earlier)  # while the desk phone rings
                    screenshot(page, "desk-loop-phone-ringing")
                    call_id = _call_id(centre, after, caller)
                    _half_fill(page, call_id)
                    screenshot(page, "desk-loop-phone-in-call-order-half-filled")
                    case = _save(page, centre, call_id)
                    [result] = run.wait()
                except BaseException:
                    pbx.cli("channel request hangup all")
                    run.wait()
                    raise
            context.close()
    finally:
        for agent in other:
            commands.send(centre.bus.client, "seat.resume", {"agent": agent})
    assert result.outcome == "answered"
    recording = _filed(centre, case, call_id, PHONE_AGENT)
    assert wav_stats(recording).seconds > 5
