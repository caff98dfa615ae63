"""The agent desk's softphone, end to end: Chromium (fake microphone: a tone file) signs in
as an agent, the page registers the agent's WebRTC endpoint over WSS with the real Asterisk,
the seat logs in on the browser through the telephony command stream, a kit call to 12319
keys 1 and rings in the page with the caller's number, the agent answers in the page, the
recording holds both sides, a key and hold are seen by Asterisk, and hanging up in the page ends the
call, whose record says that agent answered and the agent hung up."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from accounts.service import OPERATOR, Identity, create_account
from asterisk_conf.render import render
from asterisk_conf.sandbox import Sandbox
from core.config import Settings
from core.db import transaction
from hotline.centre import Centre
from recordings.audio import wav_stats
from recordings.catalogue import host_path
from sipkit.kit import Call, Dtmf, Say, SipKit, Wait
from telephony import commands, directory
from telephony.ami import EventTap
from tests import api_world
from tests.audio import band_rms, tone
from tests.browser import MEDIA_FLAGS, chromium, screenshot, sign_in
from tests.conftest import TEST_AGENTS, WEB_PORT, api, wait_until

AGENT = "8103"
NAME, PASSWORD = "网页坐席小李", "softphone-test-密码-1"
CALLER = "13800138091"
CALLER_HZ, BROWSER_HZ = 440, 1500  # each side's tone: told apart in the mixed recording




@pytest.fixture
def browser_agent(centre: Centre, pbx: Sandbox, pbx_settings: Settings) -> Iterator[str]:
    """Agent 8103 in the directory (so Asterisk has its WebRTC endpoint) with a sign-in
    account; the desk-phone agents paused meanwhile, so the queue offers the call to 8103."""
    with transaction(centre.sessions) as session:
        if AGENT not in [a.number for a in directory.snapshot(session).agents]:
            directory.add_agent(session, AGENT, "网页坐席",
                                queues=(pbx_settings.hotline.default_queue,))
            create_account(session, NAME, [OPERATOR], password=PASSWORD, agent=AGENT,
                           actor="test", now=centre.clock.now())
        snapshot = directory.snapshot(session)
    pbx.reload(render(pbx_settings, snapshot))
    for agent in TEST_AGENTS:
        commands.send(centre.bus.client, "seat.pause", {"agent": agent, "reason": "meal"})
    try:
        yield AGENT
    finally:
        if centre.telephony.board.seat(AGENT).queues:
            commands.send(centre.bus.client, "seat.logout", {"agent": AGENT})
        for agent in TEST_AGENTS:
            commands.send(centre.bus.client, "seat.resume", {"agent": agent})


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Page]:
    microphone = tone(tmp_path / "microphone.wav", BROWSER_HZ, 4, 48000)
    with chromium(*MEDIA_FLAGS, f"--use-file-for-fake-audio-capture={microphone}") as browser:
        # the sandbox's certificate is self-signed: without this the WSS fails silently
        context = browser.new_context(ignore_https_errors=True, locale="zh-CN",
                                      viewport={"width": 1366, "height": 768})
        try:
            yield context.new_page()
        finally:
            context.close()


def _record(caller: str) -> dict | None:  # type: ignore[type-arg]
    status, page = api(f"/api/v1/calls?caller_number={caller}")
    assert status == 200
    return page["items"][0] if page["total"] else None


def test_an_agent_answers_a_citizen_in_the_browser(
        centre: Centre, pbx: Sandbox, pbx_settings: Settings, kit: SipKit, ami: EventTap,
        browser_agent: str, desk: Page, tmp_path: Path) -> None:
    site = f"http://127.0.0.1:{WEB_PORT}"
    sign_in(desk, site, NAME, PASSWORD)
    expect(desk.locator("#registration")).to_have_attribute("data-state", "registered",
                                                            timeout=15_000)
    contacts = pbx.cli("pjsip show contacts")
    assert f"{AGENT}-webrtc/sip:" in contacts, contacts
    assert f"{AGENT}/sip:" not in contacts  # no desk phone: the browser is the only device

    commands.send(centre.bus.client, "seat.login", {"agent": AGENT, "device": "browser"})
    wait_until(lambda: centre.telephony.board.seat(AGENT).state == "ready", 10,
               "the browser agent is not ready")
    wait_until(lambda: all(centre.telephony.board.seat(a).state == "paused"
                           for a in TEST_AGENTS), 10, "the desk-phone agents are not paused")
    assert f"{AGENT} (PJSIP/{AGENT}-webrtc" in pbx.cli(
        f"queue show {pbx_settings.hotline.default_queue}")
    screenshot(desk, "desk-softphone-idle")

    voice = tone(tmp_path / "caller.wav", CALLER_HZ, 12, 8000)
    run = kit.start_calls(Call(caller_id=CALLER, max_seconds=60, script=(
        Wait(1.0), Dtmf("1"), Wait(5.0), Say(voice), Wait(40))))
    try:
        expect(desk.locator("#call-state")).to_have_attribute("data-state", "ringing",
                                                              timeout=25_000)
        # masked: the screen pop shows the full number to those allowed, audited
        expect(desk.locator("#caller")).to_contain_text("138****8091")
        expect(desk.locator("#caller")).not_to_contain_text(CALLER)
        screenshot(desk, "desk-softphone-ringing")
        desk.locator("#answer").click()
        expect(desk.locator("#call-state")).to_have_attribute("data-state", "talking",
                                                              timeout=10_000)
        connect = ami.wait_for(lambda e: e.get("Event") == "AgentConnect"
                               and e.get("CallerIDNum") == CALLER, 10)
        assert connect["Interface"] == f"PJSIP/{AGENT}-webrtc"
        time.sleep(6)  # both sides talk: the caller's tone and the browser's microphone
        screenshot(desk, "desk-softphone-in-call")
        desk.locator(".dtmf[data-key='5']").click()  # RFC 4733, as a desk phone's keypad sends
        ami.wait_for(lambda e: e.get("Event") == "DTMFEnd" and e.get("Digit") == "5"
                     and e.get("Direction") == "Received"
                     and e.get("Channel", "").startswith(f"PJSIP/{AGENT}-webrtc-"), 10)
        desk.locator("#hold").click()
        ami.wait_for(lambda e: e.get("Event") == "Hold"
                     and e.get("Channel", "").startswith(f"PJSIP/{AGENT}-webrtc-"), 10)
        expect(desk.locator("#call-state")).to_have_attribute("data-state", "held")
        desk.locator("#hold").click()
        ami.wait_for(lambda e: e.get("Event") == "Unhold"
                     and e.get("Channel", "").startswith(f"PJSIP/{AGENT}-webrtc-"), 10)
        desk.locator("#hangup").click()
        expect(desk.locator("#call-state")).to_have_attribute("data-state", "idle",
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
    assert record["outcome"] == "answered"
    assert record["agent"] == AGENT
    assert record["hangup_by"] == "agent"
    assert record["hold_seconds"] > 0

    caller_leg = ami.wait_for(lambda e: e.get("Event") == "VarSet"
                              and e.get("Variable") == "__HOTLINE_RECORDING"
                              and e.get("CallerIDNum") == CALLER)
    recording = host_path(pbx_settings, caller_leg["Value"])
    assert recording is not None and recording.exists()
    assert record["recording"]["sha256"] == hashlib.sha256(recording.read_bytes()).hexdigest()
    assert wav_stats(recording).seconds > 5
    caller_band = band_rms(recording, CALLER_HZ - 60, CALLER_HZ + 60, tmp_path)
    browser_band = band_rms(recording, BROWSER_HZ - 100, BROWSER_HZ + 100, tmp_path)
    quiet_band = band_rms(recording, 2600, 3000, tmp_path)  # neither side's tone
    assert caller_band > 10 * quiet_band and caller_band > 300, (caller_band, quiet_band)
    assert browser_band > 10 * quiet_band and browser_band > 300, (browser_band, quiet_band)


def test_the_desk_hands_out_only_the_signed_in_agents_own_softphone(
        database_url: str, tmp_path: Path) -> None:
    world = api_world.build(database_url, tmp_path)
    try:
        with transaction(world.sessions) as session:
            directory.ensure_queue(session, "intake")
            directory.add_agent(session, "8001", "王芳", queues=("intake",))
            directory.add_agent(session, "8002", "李四", queues=("intake",))
            passwords = {a.number: a.sip_password for a in directory.snapshot(session).agents}
        own = api_world.as_identity(world, Identity("坐席8001", ("operator",), False,
                                                    agent="8001"))
        reply = world.client.get("/desk/softphone", headers=own)
        assert reply.status_code == 200
        assert reply.headers["Cache-Control"] == "no-store"
        port = world.app.extensions["hotline.settings"].pbx.webrtc_port
        assert reply.json == {"agent": "8001", "display_name": "王芳",
                              "uri": "sip:8001-webrtc@127.0.0.1",
                              "authorization_user": "8001-webrtc",
                              "password": passwords["8001"],
                              "websocket": f"wss://127.0.0.1:{port}/ws"}
        assert passwords["8002"] not in reply.get_data(as_text=True)
        nobody = api_world.as_identity(world, Identity("无坐席", ("supervisor",), False))
        assert world.client.get("/desk/softphone", headers=nobody).status_code == 404
        unknown = api_world.as_identity(world, Identity("坐席9009", ("operator",), False,
                                                        agent="9009"))
        assert world.client.get("/desk/softphone", headers=unknown).status_code == 404
        # only the desk page may connect to Asterisk's WSS (and to the desk push server);
        # every other page keeps 'self'
        page = world.client.get("/desk", headers=own)
        assert page.status_code == 200
        push_port = world.app.extensions["hotline.settings"].web.push_port
        assert (f"connect-src 'self' wss://127.0.0.1:{port}/ws http://localhost:{push_port};"
                in page.headers["Content-Security-Policy"])
        home = world.client.get("/home/operator", headers=own)
        assert "connect-src 'self';" in home.headers["Content-Security-Policy"]
    finally:
        world.engine.dispose()
