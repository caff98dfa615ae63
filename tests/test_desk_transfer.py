"""Attended transfer (咨询转接) from the desk page's softphone, end to end: two Chromium desks
(fake microphones: a tone each) sign in as browser agents A and B; a kit call to 12319 keys 1
and rings A's page; A answers, then consults B: the citizen is put on hold, A's page calls B,
B's page rings with the consultation, B answers, A completes the transfer (REFER with
Replaces) and the citizen talks to B until B hangs up. Asterisk reports the hold and the
attended transfer; the call record says A answered, the citizen was held and transferred;
the recording holds B's voice; both pages told the other panels the softphone's state, with
the citizen's call id, through the "desk:softphone" DOM event."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from accounts.service import OPERATOR, create_account
from asterisk_conf.render import render
from asterisk_conf.sandbox import Sandbox
from core.config import Settings
from core.db import transaction
from hotline.centre import Centre
from recordings.catalogue import host_path
from sipkit.kit import Call, Dtmf, Say, SipKit, Wait
from telephony import commands, directory
from telephony.ami import EventTap
from tests.audio import band_rms, tone
from tests.browser import CHROMIUM, FLAGS, MEDIA_FLAGS, chromium, screenshot, sign_in
from tests.conftest import TEST_AGENTS, WEB_PORT, api, wait_until

FIRST, SECOND = "8105", "8106"  # agent A answers, agent B is consulted and takes the call
ACCOUNTS = {FIRST: ("转接坐席甲", "transfer-test-甲-1"),
            SECOND: ("转接坐席乙", "transfer-test-乙-2")}
CALLER = "13800138093"
CALLER_HZ, FIRST_HZ, SECOND_HZ = 440, 1500, 2300  # each voice's tone, told apart later
LISTEN = """
  window.softphoneStates = [];
  document.addEventListener("desk:softphone", (e) => window.softphoneStates.push(e.detail));
"""  # the other panels' side of the contract, in place before the page's own scripts




@pytest.fixture
def browser_agents(centre: Centre, pbx: Sandbox, pbx_settings: Settings) -> Iterator[None]:
    """Agents A and B in the directory with sign-in accounts; the desk-phone agents paused
    meanwhile, so the queue offers the call to A (B stays out of the queue)."""
    with transaction(centre.sessions) as session:
        known = [a.number for a in directory.snapshot(session).agents]
        for number, (name, password) in ACCOUNTS.items():
            if number not in known:
                directory.add_agent(session, number, name,
                                    queues=(pbx_settings.hotline.default_queue,))
                create_account(session, name, [OPERATOR], password=password, agent=number,
                               actor="test", now=centre.clock.now())
        snapshot = directory.snapshot(session)
    pbx.reload(render(pbx_settings, snapshot))
    for agent in TEST_AGENTS:
        commands.send(centre.bus.client, "seat.pause", {"agent": agent, "reason": "meal"})
    try:
        yield
    finally:
        for number in ACCOUNTS:
            if centre.telephony.board.seat(number).queues:
                commands.send(centre.bus.client, "seat.logout", {"agent": number})
        for agent in TEST_AGENTS:
            commands.send(centre.bus.client, "seat.resume", {"agent": agent})


def _desk(browser: Browser, number: str) -> Page:
    site = f"http://127.0.0.1:{WEB_PORT}"
    context = browser.new_context(ignore_https_errors=True, locale="zh-CN",
                                  viewport={"width": 1366, "height": 900})
    context.add_init_script(LISTEN)
    page = context.new_page()
    sign_in(page, site, *ACCOUNTS[number])
    expect(page.locator("#registration")).to_have_attribute("data-state", "registered",
                                                            timeout=15_000)
    return page


@pytest.fixture
def desks(tmp_path: Path) -> Iterator[tuple[Page, Page]]:
    """A's and B's desks, each in its own Chromium with its own microphone tone."""
    first_mic = tone(tmp_path / "first.wav", FIRST_HZ, 4, 48000)
    second_mic = tone(tmp_path / "second.wav", SECOND_HZ, 4, 48000)
    with chromium(*MEDIA_FLAGS, f"--use-file-for-fake-audio-capture={first_mic}") as one:
        # a second browser of the same Playwright (one Playwright per thread)
        two = one.browser_type.launch(executable_path=CHROMIUM, headless=True, args=[
            *FLAGS, *MEDIA_FLAGS, f"--use-file-for-fake-audio-capture={second_mic}"])
        try:
            yield _desk(one, FIRST), _desk(two, SECOND)
        finally:
            two.close()


def _record(caller: str) -> dict[str, Any] | None:
    status, page = api(f"/api/v1/calls?caller_number={caller}")
    assert status == 200
    return page["items"][0] if page["total"] else None


def _consultations(agent: str, citizens: dict[str, Any]) -> list[dict[str, Any]]:
    """Calls agent `agent`'s own phone placed during the citizen's call `citizens`."""
    status, page = api("/api/v1/calls?limit=50")
    assert status == 200
    return [c for c in page["items"] if c["caller_number"] == agent
            and citizens["started_at"] < c["started_at"] < citizens["ended_at"]]


def _states(page: Page) -> list[dict[str, Any]]:
    return page.evaluate("() => window.softphoneStates")


def test_an_agent_consults_a_colleague_then_hands_the_citizen_over(
        centre: Centre, pbx: Sandbox, pbx_settings: Settings, kit: SipKit, ami: EventTap,
        browser_agents: None, desks: tuple[Page, Page], tmp_path: Path) -> None:
    first, second = desks
    commands.send(centre.bus.client, "seat.login", {"agent": FIRST, "device": "browser"})
    wait_until(lambda: centre.telephony.board.seat(FIRST).state == "ready", 10,
               "agent A is not ready")
    wait_until(lambda: all(centre.telephony.board.seat(a).state == "paused"
                           for a in TEST_AGENTS), 10, "the desk-phone agents are not paused")
    assert not centre.telephony.board.seat(SECOND).queues  # B is reached only by A's call

    voice = tone(tmp_path / "caller.wav", CALLER_HZ, 40, 8000)
    run = kit.start_calls(Call(caller_id=CALLER, max_seconds=90, script=(
        Wait(1.0), Dtmf("1"), Wait(4.0), Say(voice), Wait(30))))
    try:
        expect(first.locator("#call-state")).to_have_attribute("data-state", "ringing",
                                                               timeout=25_000)
        expect(first.locator("#caller")).to_contain_text("138****8093")  # masked
        first.locator("#answer").click()
        expect(first.locator("#call-state")).to_have_attribute("data-state", "talking",
                                                               timeout=10_000)
        connect = ami.wait_for(lambda e: e.get("Event") == "AgentConnect"
                               and e.get("CallerIDNum") == CALLER, 10)
        assert connect["Interface"] == f"PJSIP/{FIRST}-webrtc"
        time.sleep(2)

        # consult: the citizen is held, A's page calls B
        first.locator("#transfer-to").fill(SECOND)
        first.locator("#consult").click()
        hold = ami.wait_for(lambda e: e.get("Event") == "Hold"
                            and e.get("Channel", "").startswith(f"PJSIP/{FIRST}-webrtc-"), 10)
        assert hold["ConnectedLineNum"] == CALLER
        expect(first.locator("#call-state")).to_have_attribute("data-state", "held")
        expect(second.locator("#call-state")).to_have_attribute("data-state", "ringing",
                                                                timeout=15_000)
        expect(second.locator("#caller")).to_contain_text(FIRST)  # A rings B, not the citizen
        screenshot(second, "desk-transfer-consultation-rings")
        second.locator("#answer").click()
        expect(second.locator("#call-state")).to_have_attribute("data-state", "talking",
                                                                timeout=10_000)
        expect(first.locator("#consult-state")).to_have_attribute("data-state", "talking",
                                                                  timeout=10_000)
        screenshot(first, "desk-transfer-consulting")
        time.sleep(2)  # A and B talk while the citizen waits

        first.locator("#consult-complete").click()
        transfer = ami.wait_for(lambda e: e.get("Event") == "AttendedTransfer", 15)
        assert transfer["Result"] == "Success"
        assert transfer["TransfereeCallerIDNum"] == CALLER
        assert transfer["TransferTargetChannel"].startswith(f"PJSIP/{SECOND}-webrtc-")
        expect(first.locator("#call-state")).to_have_attribute("data-state", "idle",
                                                               timeout=10_000)
        expect(second.locator("#call-state")).to_have_attribute("data-state", "talking")
        time.sleep(6)  # the citizen and B talk
        screenshot(second, "desk-transfer-citizen-with-b")
        second.locator("#hangup").click()
        expect(second.locator("#call-state")).to_have_attribute("data-state", "idle",
                                                                timeout=10_000)
        [result] = run.wait()
    except BaseException:
        pbx.cli("channel request hangup all")  # a failed step leaves no call to the next test
        run.wait()
        raise
    assert result.outcome == "answered" and result.hangup_by == "far_end"

    wait_until(lambda: _record(CALLER) is not None, 15, "no call record")
    record = _record(CALLER)
    assert record is not None
    assert record["outcome"] == "answered" and record["agent"] == FIRST
    assert record["hold_seconds"] > 1.5  # held at least while A rang and talked to B
    [handed] = record["transfers"]
    assert (handed["kind"], handed["to"], handed["result"]) == ("attended", SECOND, "Success")
    assert record["hangup_by"] == "transfer"  # A left the citizen's call by the transfer
    channels = [leg["channel"] for leg in record["legs"]]
    assert any(c.startswith(f"PJSIP/{FIRST}-webrtc-") for c in channels), channels

    # A's consultation is the centre's own call, counted apart from citizens' calls
    wait_until(lambda: _consultations(FIRST, record), 15, "no record of the consultation")
    [consultation] = _consultations(FIRST, record)
    assert (consultation["direction"], consultation["purpose"]) == ("outbound", "consult")

    # both pages told the other panels, with the citizen's call id (X-Hotline-Call-Id)
    call_id = record["call_id"]
    a_states = [(s["state"], s.get("call_id"), s["consulting"]) for s in _states(first)]
    assert a_states[0] == ("idle", None, False)
    for expected in [("ringing", call_id, False), ("talking", call_id, False),
                     ("held", call_id, True)]:
        assert expected in a_states, a_states
    assert a_states[-1] == ("idle", None, False)
    assert {s["caller"] for s in _states(first) if s["state"] != "idle"} == {"138****8093"}
    b_states = [(s["state"], s.get("call_id"), s["caller"]) for s in _states(second)]
    assert ("ringing", call_id, FIRST) in b_states, b_states
    assert ("talking", call_id, FIRST) in b_states, b_states
    assert b_states[-1] == ("idle", None, "")

    # the citizen's recording holds B's voice: the citizen talked to B
    caller_leg = ami.wait_for(lambda e: e.get("Event") == "VarSet"
                              and e.get("Variable") == "__HOTLINE_RECORDING"
                              and e.get("CallerIDNum") == CALLER)
    recording = host_path(pbx_settings, caller_leg["Value"])
    assert recording is not None and recording.exists()
    second_band = band_rms(recording, SECOND_HZ - 100, SECOND_HZ + 100, tmp_path)
    quiet_band = band_rms(recording, 3200, 3600, tmp_path)
    assert second_band > 10 * quiet_band and second_band > 300, (second_band, quiet_band)


def test_an_agent_consults_an_outside_number_then_goes_back_to_the_citizen(
        centre: Centre, pbx: Sandbox, pbx_settings: Settings, kit: SipKit, ami: EventTap,
        browser_agents: None, desks: tuple[Page, Page], tmp_path: Path) -> None:
    """The consultation goes over the trunk to a department's line; the agent cancels it:
    the department's phone is hung up and the citizen is taken off hold."""
    first, _second = desks
    caller, department = "13800138094", "045155550123"
    commands.send(centre.bus.client, "seat.login", {"agent": FIRST, "device": "browser"})
    wait_until(lambda: centre.telephony.board.seat(FIRST).state == "ready", 10,
               "agent A is not ready")
    voice = tone(tmp_path / "caller.wav", CALLER_HZ, 30, 8000)
    with kit.agent_phone("department", pbx_settings.pbx.trunk_host,
                         port=pbx_settings.pbx.trunk_port, answer_after=1.0) as line:
        run = kit.start_calls(Call(caller_id=caller, max_seconds=60, script=(
            Wait(1.0), Dtmf("1"), Wait(4.0), Say(voice), Wait(20))))
        try:
            expect(first.locator("#call-state")).to_have_attribute("data-state", "ringing",
                                                                   timeout=25_000)
            first.locator("#answer").click()
            expect(first.locator("#call-state")).to_have_attribute("data-state", "talking",
                                                                   timeout=10_000)
            first.locator("#transfer-to").fill(department)
            first.locator("#consult").click()
            ami.wait_for(lambda e: e.get("Event") == "Hold"
                         and e.get("Channel", "").startswith(f"PJSIP/{FIRST}-webrtc-"), 10)
            expect(first.locator("#consult-state")).to_have_attribute(
                "data-state", "talking", timeout=15_000)  # the department answered
            expect(first.locator("#hangup")).to_be_disabled()  # complete or cancel first
            first.locator("#consult-cancel").click()
            unhold = ami.wait_for(lambda e: e.get("Event") == "Unhold" and e.get(
                "Channel", "").startswith(f"PJSIP/{FIRST}-webrtc-"), 10)
            assert unhold["ConnectedLineNum"] == caller
            expect(first.locator("#call-state")).to_have_attribute("data-state", "talking")
            expect(first.locator("#consult-box")).to_be_hidden()
            wait_until(lambda: any(r.ended_at for r in line.results()), 10,
                       "the department's line was not hung up")
            first.locator("#hangup").click()
            expect(first.locator("#call-state")).to_have_attribute("data-state", "idle",
                                                                   timeout=10_000)
            [result] = run.wait()
        except BaseException:
            pbx.cli("channel request hangup all")
            run.wait()
            raise
    assert result.outcome == "answered" and result.hangup_by == "far_end"
    [consulted] = line.results()
    assert (consulted.to_user, consulted.outcome, consulted.hangup_by) == (
        department, "answered", "far_end")
    assert not any(e.get("Event") in ("AttendedTransfer", "BlindTransfer")
                   for e in ami.snapshot())  # nothing was transferred
    wait_until(lambda: _record(caller) is not None, 15, "no call record")
    record = _record(caller)
    assert record is not None
    assert record["agent"] == FIRST and record["transfers"] == []
    assert record["hangup_by"] == "agent" and record["hold_seconds"] > 0
    wait_until(lambda: _consultations(FIRST, record), 15, "no record of the consultation")
    [consultation] = _consultations(FIRST, record)
    assert (consultation["direction"], consultation["purpose"], consultation["outcome"],
            consultation["citizen_number"]) == ("outbound", "consult", "answered", department)
