"""Listen, whisper, barge (监听 / 耳语 / 强插) through the real Asterisk with kit calls (issue 11,
item 2): a kit citizen (a 440 Hz tone) talks to kit desk-phone agent 8101 (a 1000 Hz tone);
a supervisor, through POST /api/v1/seats/8101/spy, has their own kit desk phone (a 1800 Hz
tone) called three times: whispering, only the agent's leg hears the 1800 Hz tone; barging,
both legs do; listening, neither does. What each leg hears is the RTP Asterisk sends to
that kit phone's own loopback address, captured off the loopback interface (a raw packet
socket: the tests run as root) and decoded with sox. Each session started is one audit row;
refusals (no live call, no phone, not a supervisor) start nothing and write nothing."""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from accounts import audit
from accounts.service import OPERATOR, ROLES, SUPERVISOR, add_user, create_account
from asterisk_conf.render import render
from asterisk_conf.sandbox import Sandbox
from core.config import Settings
from core.db import transaction
from hotline.centre import Centre
from recordings.audio import wav_stats
from sipkit.kit import Call, Dtmf, Hangup, Say, SipKit, Wait, free_port
from telephony import commands, directory
from telephony.ami import EventTap
from telephony.service import spied_channel
from tests.browser import chromium, screenshot
from tests.conftest import (
    AGENT_PORT,
    RTP_END,
    RTP_START,
    WEB_PORT,
    agent_ip,
    api,
    ensure_ready,
    wait_until,
)

AGENT, IDLE_AGENT = "8101", "8102"
SUPERVISOR_PHONE, SUPERVISOR_IP = "8119", "127.0.0.29"
CALLER, CALLER_IP = "13600000119", "127.0.0.2"  # SipKit's caller address
CALLER_HZ, AGENT_HZ, SUPERVISOR_HZ = 440, 1000, 1800
SPY_SECONDS = 5.0  # the supervisor's phone hangs up after this long in each session


def _tone(path: Path, hz: int, seconds: float) -> Path:
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(path),
                    "synth", str(seconds), "sine", str(hz), "vol", "0.5"], check=True)
    return path


def media_port(workdir: Path) -> int:
    """The RTP port a kit phone or caller (its SIPp work directory) offered in its SDP."""
    text = (workdir / "messages.log").read_text(errors="replace")
    for block in re.split(r"^-{20,} .*$", text, flags=re.MULTILINE):
        if "message sent" in block.strip().partition("\n")[0] and (
                found := re.search(r"^m=audio (\d+) ", block, re.MULTILINE)):
            return int(found.group(1))
    raise AssertionError(f"no SDP sent in {workdir}")


class Heard:
    """The RTP this run's Asterisk sends to the kit phones on these addresses (what each
    hears), as (arrival time, their media port, payload type, payload), captured off the
    loopback interface. Other test runs' kits share the addresses, never the ports."""

    def __init__(self, pbx_ip: str, listeners: tuple[str, ...]) -> None:
        self.pbx_ip = socket.inet_aton(pbx_ip)
        self.listeners = {socket.inet_aton(ip): ip for ip in listeners}
        self.packets: dict[str, list[tuple[float, int, int, bytes]]] = {
            ip: [] for ip in listeners}
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, address = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            if address[2] == socket.PACKET_OUTGOING:  # loopback shows each packet twice
                continue
            ip = frame[14:]
            if len(ip) < 20 or ip[9] != 17 or ip[12:16] != self.pbx_ip:
                continue
            listener = self.listeners.get(ip[16:20])
            if listener is None:
                continue
            header = (ip[0] & 0x0F) * 4
            source, port = struct.unpack("!HH", ip[header:header + 4])
            if not RTP_START <= source <= RTP_END:
                continue  # not this run's Asterisk
            rtp = ip[header + 8:]
            if len(rtp) < 12 or rtp[0] >> 6 != 2 or rtp[1] & 0x7F not in (0, 8):
                continue  # SIP, RTCP, telephone-events
            start = 12 + 4 * (rtp[0] & 0x0F)
            if rtp[0] & 0x10:  # a header extension
                start += 4 + 4 * struct.unpack("!H", rtp[start + 2:start + 4])[0]
            self.packets[listener].append((time.time(), port, rtp[1] & 0x7F, rtp[start:]))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()

    def band_rms(self, listener: str, port: int, start: float, end: float, low: int,
                 high: int, tmp: Path) -> float:
        """How loud the phone at `listener`:`port` heard the band `low`-`high` Hz between
        `start` and `end`."""
        packets = [(kind, payload) for at, to, kind, payload in self.packets[listener]
                   if start <= at <= end and to == port]
        # one stream, 50 packets a second
        assert 40 * (end - start) < len(packets) < 60 * (end - start), (listener, len(packets))
        kinds = {kind for kind, _ in packets}
        assert len(kinds) == 1, kinds
        raw = tmp / f"heard-{listener}-{start:.1f}.raw"
        raw.write_bytes(b"".join(payload for _, payload in packets))
        wav = raw.with_suffix(".wav")
        band = raw.with_name(f"{raw.stem}-{low}-{high}.wav")
        subprocess.run(["sox", "-t", "al" if kinds == {8} else "ul", "-r", "8000", "-c", "1",
                        str(raw), "-b", "16", str(wav)], check=True)
        subprocess.run(["sox", str(wav), "-b", "16", str(band), "sinc", f"{low}-{high}"],
                       check=True)
        return wav_stats(band).rms


@pytest.fixture
def supervisor(centre: Centre, pbx: Sandbox, pbx_settings: Settings) -> Iterator[dict[str, Any]]:
    """Supervisor phone 8119 in the directory (in no queue) and a supervisor account working
    as 8119; the other test agent paused meanwhile, so the queue offers the call to 8101."""
    port = free_port(SUPERVISOR_IP)
    with transaction(centre.sessions) as session:
        if SUPERVISOR_PHONE in [a.number for a in directory.snapshot(session).agents]:
            directory.remove_agent(session, SUPERVISOR_PHONE)
        directory.add_agent(session, SUPERVISOR_PHONE, "值班班长",
                            static_contact=f"sip:{SUPERVISOR_PHONE}@{SUPERVISOR_IP}:{port}")
        snapshot = directory.snapshot(session)
        token = add_user(session, "监听班长", [SUPERVISOR], False, ROLES,
                         now=centre.clock.now(), agent=SUPERVISOR_PHONE)
        operator = add_user(session, "监听测试受理员", [OPERATOR], False, ROLES,
                            now=centre.clock.now(), agent=IDLE_AGENT)
    pbx.reload(render(pbx_settings, snapshot))
    ensure_ready(centre)
    commands.send(centre.bus.client, "seat.pause", {"agent": IDLE_AGENT, "reason": "meal"})
    try:
        yield {"port": port, "headers": {"Authorization": f"Bearer {token}"},
               "operator": {"Authorization": f"Bearer {operator}"}}
    finally:
        commands.send(centre.bus.client, "seat.resume", {"agent": IDLE_AGENT})


def _connected(centre: Centre, after: str, caller: str) -> str | None:
    started = {e["call_id"] for _id, e in centre.bus.read(after, count=10_000)
               if e.get("type") == "call.started" and e.get("caller_number") == caller}
    return next((e["call_id"] for _id, e in centre.bus.read(after, count=10_000)
                 if e.get("type") == "call.agent_connected" and e.get("call_id") in started
                 and e.get("agent") == AGENT), None)


def _spied_rows(centre: Centre) -> list[dict[str, Any]]:
    with centre.sessions() as session:
        _total, rows = audit.find(session, audit.AuditQuery(action=audit.CALL_SPIED))
    return [audit.entry_view(r) for r in reversed(rows)]


def test_whisper_reaches_the_agent_only_barge_both_listen_neither(
        centre: Centre, kit: SipKit, ami: EventTap, supervisor: dict[str, Any],
        pbx_settings: Settings, tmp_path: Path) -> None:
    before = _spied_rows(centre)
    who = supervisor["headers"]
    # no live call yet: refused, and nothing is audited
    status, body = api(f"/api/v1/seats/{AGENT}/spy", {"mode": "whisper"}, who)
    assert (status, body["detail"]) == (409, f"seat.spy refused: agent {AGENT} has no live call")
    # an operator may not; a shift chief with no agent number has no phone to be called on
    status, body = api(f"/api/v1/seats/{AGENT}/spy", {"mode": "listen"},
                       supervisor["operator"])
    assert status == 403, body
    status, body = api(f"/api/v1/seats/{AGENT}/spy", {"mode": "listen"})
    assert status == 409 and "no agent number" in body["detail"], body
    status, body = api(f"/api/v1/seats/{AGENT}/spy", {"mode": "shout"}, who)
    assert status == 400 and "mode" in body["detail"], body

    caller_tone = _tone(tmp_path / "caller.wav", CALLER_HZ, 55)
    agent_tone = _tone(tmp_path / "agent.wav", AGENT_HZ, 70)
    supervisor_tone = _tone(tmp_path / "supervisor.wav", SUPERVISOR_HZ, SPY_SECONDS)
    heard = Heard(pbx_settings.pbx.bind_address, (CALLER_IP, agent_ip(AGENT), SUPERVISOR_IP))
    after = centre.bus.last_id()
    sessions: dict[str, tuple[float, float]] = {}
    try:
        with kit.agent_phone(AGENT, agent_ip(AGENT), port=AGENT_PORT, answer_after=0.5,
                             script=(Say(agent_tone),)) as agent_phone, \
                kit.agent_phone(SUPERVISOR_PHONE, SUPERVISOR_IP, port=supervisor["port"],
                                answer_after=0.5, talk_seconds=SPY_SECONDS,
                                script=(Say(supervisor_tone),)) as phone:
            run = replace(kit, keep_files=True).start_calls(Call(caller_id=CALLER, script=(
                Wait(1.0), Dtmf("1"), Say(caller_tone), Hangup()), max_seconds=90))
            wait_until(lambda: _connected(centre, after, CALLER) is not None, 20,
                       "the call never reached agent 8101")
            call_id = _connected(centre, after, CALLER)
            time.sleep(1.0)
            talk_began = time.time()
            time.sleep(3.0)
            sessions["none"] = (talk_began, time.time())
            # the other agent is on no call: refused
            status, body = api(f"/api/v1/seats/{IDLE_AGENT}/spy", {"mode": "listen"}, who)
            assert status == 409 and "no live call" in body["detail"], body
            for n, mode in enumerate(("whisper", "barge", "listen"), start=1):
                status, body = api(f"/api/v1/seats/{AGENT}/spy", {"mode": mode}, who)
                assert status == 202, body
                assert body == {"agent": AGENT, "mode": mode, "call_id": call_id,
                                "supervisor": SUPERVISOR_PHONE, "device": "phone"}
                wait_until(lambda n=n: len([r for r in phone.results() if r.ended_at]) >= n,
                           SPY_SECONDS + 15, f"the supervisor's {mode} call never ended")
                session = phone.results()[n - 1]
                assert session.outcome == "answered" and session.hangup_by == "agent", session
                assert session.answered_at is not None and session.ended_at is not None
                sessions[mode] = (session.answered_at + 1.5, session.ended_at - 0.5)
            [result] = run.wait()
    finally:
        heard.stop()
    assert result.outcome == "answered"
    ports = {CALLER_IP: media_port(run.workdir), agent_ip(AGENT): media_port(
        agent_phone.workdir), SUPERVISOR_IP: media_port(phone.workdir)}

    def loudness(listener: str, window: str, hz: int) -> float:
        start, end = sessions[window]
        return heard.band_rms(listener, ports[listener], start, end, hz - 80, hz + 80,
                              tmp_path)

    agent_ip_ = agent_ip(AGENT)
    found: dict[tuple[str, str], dict[str, float]] = {}
    for window in ("none", "whisper", "barge", "listen"):
        for listener, other_side in ((CALLER_IP, AGENT_HZ), (agent_ip_, CALLER_HZ)):
            found[(window, listener)] = {
                "other": loudness(listener, window, other_side),
                "supervisor": loudness(listener, window, SUPERVISOR_HZ)}
    # the supervisor hears the call in every mode: both sides' tones
    for window in ("whisper", "barge", "listen"):
        assert loudness(SUPERVISOR_IP, window, CALLER_HZ) > 300, found
        assert loudness(SUPERVISOR_IP, window, AGENT_HZ) > 300, found
    hears = {("whisper", agent_ip_), ("barge", agent_ip_), ("barge", CALLER_IP)}
    # Heard: the supervisor's tone about as loud as the other side's (mixed at full level);
    # not heard: only what leaks into its band from the other side's tone (well under 1 %).
    for (window, listener), bands in found.items():
        assert bands["other"] > 3000, (window, listener, found)  # the conversation goes on
        if (window, listener) in hears:
            assert bands["supervisor"] > 0.5 * bands["other"], (window, listener, found)
        else:
            assert bands["supervisor"] < 0.02 * bands["other"], (window, listener, found)

    # one audit row per session started, none for the refusals
    rows = _spied_rows(centre)[len(before):]
    assert [(r["actor"], r["action"], r["target"], r["detail"]) for r in rows] == [
        ("监听班长", "call_spied", AGENT,
         {"agent": AGENT, "mode": mode, "call_id": call_id, "supervisor": SUPERVISOR_PHONE,
          "device": "phone", "token": rows[0]["detail"]["token"]})
        for mode in ("whisper", "barge", "listen")]
    assert rows[0]["address"] == "127.0.0.1"

    # the supervisor's calls are the centre's own (outbound, purpose spy), not citizens'
    def spy_calls() -> list[dict[str, Any]]:
        status, page = api("/api/v1/calls?direction=outbound&limit=500")
        return [c for c in page["items"] if c["purpose"] == "spy"
                and c["started_at"] >= rows[0]["at"][:19]] if status == 200 else []

    wait_until(lambda: len(spy_calls()) == 3, 20, "the supervisor's calls were not stored")
    status, page = api(f"/api/v1/calls?caller_number={CALLER}&direction=inbound")
    assert status == 200 and [c["call_id"] for c in page["items"]] == [call_id]


def test_a_supervisor_whispers_from_the_seats_page(
        centre: Centre, kit: SipKit, ami: EventTap, supervisor: dict[str, Any],
        tmp_path: Path) -> None:
    """Chromium: the supervisor signs in, the seats page shows 8101 talking (its buttons
    on) and the paused 8102 (its buttons off); 耳语 rings the supervisor's desk phone, which
    answers and joins the call; the page says so and the audit log names the person."""
    name, password = "网页监听班长", "spy-page-测试-密码-1"
    with transaction(centre.sessions) as session:
        create_account(session, name, [SUPERVISOR], password=password,
                       agent=SUPERVISOR_PHONE, actor="test", now=centre.clock.now())
    before = len(_spied_rows(centre))
    after = centre.bus.last_id()
    site = f"http://127.0.0.1:{WEB_PORT}"
    with kit.agent_phone(AGENT, agent_ip(AGENT), port=AGENT_PORT, answer_after=0.5), \
            kit.agent_phone(SUPERVISOR_PHONE, SUPERVISOR_IP, port=supervisor["port"],
                            answer_after=0.5, talk_seconds=3.0) as phone, \
            chromium() as browser:
        run = kit.start_calls(Call(caller_id=CALLER, script=(
            Wait(1.0), Dtmf("1"), Wait(20.0), Hangup()), max_seconds=60))
        wait_until(lambda: _connected(centre, after, CALLER) is not None, 20,
                   "the call never reached agent 8101")
        call_id = _connected(centre, after, CALLER)
        wait_until(lambda: centre.telephony.board.seat(AGENT).state == "talking", 5,
                   "agent 8101 never seen talking")
        page = browser.new_page(locale="zh-CN")
        page.goto(f"{site}/login?next=/supervise/seats")
        page.get_by_label("用户名").fill(name)
        page.get_by_label("密码").fill(password)
        page.get_by_role("button", name="登录").click()
        page.wait_for_url(f"{site}/supervise/seats")
        expect(page.locator("h1")).to_have_text("坐席监控")
        talking = page.locator(f"tr[data-agent='{AGENT}']")
        paused = page.locator(f"tr[data-agent='{IDLE_AGENT}']")
        expect(talking).to_have_attribute("data-state", "talking")
        expect(paused).to_have_attribute("data-state", "paused")
        expect(talking.locator(".supervise-state")).to_have_text("通话中")
        expect(paused.locator(".supervise-state")).to_have_text("示忙 (用餐)")
        for mode in ("监听", "耳语", "强插"):
            expect(talking.get_by_role("button", name=mode)).to_be_enabled()
            expect(paused.get_by_role("button", name=mode)).to_be_disabled()
        talking.get_by_role("button", name="耳语").click()
        status = page.locator("#spy-status")
        expect(status).to_have_attribute("data-state", "calling", timeout=5_000)
        expect(status).to_have_attribute("data-call-id", call_id)
        expect(status).to_contain_text("您的电话正在振铃")
        screenshot(page, "supervise-seats-whisper")
        wait_until(lambda: any(r.outcome == "answered" for r in phone.results()), 10,
                   "the supervisor's phone never answered")
        [result] = run.wait()
    assert result.outcome == "answered"
    [row] = _spied_rows(centre)[before:]
    assert (row["actor"], row["target"], row["detail"]) == (
        name, AGENT, {"agent": AGENT, "mode": "whisper", "call_id": call_id,
                      "supervisor": SUPERVISOR_PHONE, "device": "phone"})


def test_the_spied_channel_is_the_agents_answered_bridged_leg() -> None:
    """Which of Asterisk's channels (CoreShowChannel rows, written by hand) is the agent's
    call: the desk phone or the softphone, answered and in a bridge; never another agent
    whose number starts with the same digits."""
    def row(channel: str, state: str = "6", bridge: str = "b-1", linkedid: str = "111.1"
            ) -> dict[str, str]:
        return {"Channel": channel, "ChannelState": state, "BridgeId": bridge,
                "Linkedid": linkedid, "Uniqueid": "222.2"}

    assert spied_channel("8101", [row("PJSIP/81011-0000000a", linkedid="9.9"),
                                  row("PJSIP/8101-0000000b", state="5"),  # still ringing
                                  row("PJSIP/8101-0000000c", bridge=""),  # not bridged
                                  row("PJSIP/8101-0000000d")]) == ("PJSIP/8101-0000000d",
                                                                   "111.1")
    assert spied_channel("8101", [row("PJSIP/8101-webrtc-0000001f", linkedid="5.5")]) == (
        "PJSIP/8101-webrtc-0000001f", "5.5")
    assert spied_channel("8101", [row("PJSIP/trunk-00000001"), row("Local/8101@x-1;1")]) \
        is None
    assert spied_channel("8101", []) is None


def test_keys_4_5_6_switch_the_mode_during_a_session(
        centre: Centre, kit: SipKit, ami: EventTap, supervisor: dict[str, Any],
        pbx_settings: Settings, tmp_path: Path) -> None:
    """One whisper session: the supervisor keys 6 (barge) after 4 s, then 4 (listen) after
    4 s more; what each leg hears follows the keys."""
    caller_tone = _tone(tmp_path / "caller.wav", CALLER_HZ, 30)
    agent_tone = _tone(tmp_path / "agent.wav", AGENT_HZ, 45)
    part = _tone(tmp_path / "supervisor.wav", SUPERVISOR_HZ, 4)
    heard = Heard(pbx_settings.pbx.bind_address, (CALLER_IP, agent_ip(AGENT)))
    after = centre.bus.last_id()
    try:
        with kit.agent_phone(AGENT, agent_ip(AGENT), port=AGENT_PORT, answer_after=0.5,
                             script=(Say(agent_tone),)) as agent_phone, \
                kit.agent_phone(SUPERVISOR_PHONE, SUPERVISOR_IP, port=supervisor["port"],
                                answer_after=0.5, talk_seconds=13.5,
                                script=(Say(part), Dtmf("6"), Say(part), Dtmf("4"),
                                        Say(part))) as phone:
            run = replace(kit, keep_files=True).start_calls(Call(caller_id=CALLER, script=(
                Wait(1.0), Dtmf("1"), Say(caller_tone), Hangup()), max_seconds=90))
            wait_until(lambda: _connected(centre, after, CALLER) is not None, 20,
                       "the call never reached agent 8101")
            time.sleep(1.0)
            status, body = api(f"/api/v1/seats/{AGENT}/spy", {"mode": "whisper"},
                               supervisor["headers"])
            assert status == 202, body
            wait_until(lambda: any(r.ended_at for r in phone.results()), 25,
                       "the supervisor's call never ended")
            [session] = phone.results()
            [result] = run.wait()
    finally:
        heard.stop()
    assert result.outcome == "answered" and session.answered_at is not None
    ports = {CALLER_IP: media_port(run.workdir), agent_ip(AGENT): media_port(
        agent_phone.workdir)}
    # the keys come 4.0 s and 8.5 s into the supervisor's audio
    windows = {"whisper": (1.5, 3.8), "barge": (5.5, 8.3), "listen": (10.0, 12.8)}
    hears = {("whisper", agent_ip(AGENT)), ("barge", agent_ip(AGENT)), ("barge", CALLER_IP)}
    found = {}
    for mode, (start, end) in windows.items():
        for listener, other_side in ((CALLER_IP, AGENT_HZ), (agent_ip(AGENT), CALLER_HZ)):
            span = (session.answered_at + start, session.answered_at + end)
            found[(mode, listener)] = (
                heard.band_rms(listener, ports[listener], *span, other_side - 80,
                               other_side + 80, tmp_path),
                heard.band_rms(listener, ports[listener], *span, SUPERVISOR_HZ - 80,
                               SUPERVISOR_HZ + 80, tmp_path))
    for (mode, listener), (other, supervisor_band) in found.items():
        assert other > 3000, (mode, listener, found)
        if (mode, listener) in hears:
            assert supervisor_band > 0.5 * other, (mode, listener, found)
        else:
            assert supervisor_band < 0.02 * other, (mode, listener, found)
