"""A citizen's call through the real Asterisk: entry, IVR, queue, agent, recording.

Kit calls from 127.0.0.2, kit agent phones on their own loopback addresses, AMI events read
from Python. What must survive: FastAGI being down, callers hanging up in the IVR, and
garbage on the FastAGI socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import pytest

from core.config import Settings
from ivr.fastagi import AgiHangup, AgiSession, FastAgiServer
from ivr.prompts import speak
from ivr.server import IvrInBackground
from recordings.audio import wav_stats
from sipkit.kit import Call, Dtmf, Hangup, Say, SipKit, Wait
from telephony.ami import EventTap
from tests.conftest import AGENT_PORT, agent_ip, offered, wait_until


@pytest.fixture(scope="module")
def citizen_voice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speak("你好，人民路口有暴露垃圾，请派人清理。",
                 tmp_path_factory.mktemp("voice") / "citizen.wav")


def _events(tap: EventTap, name: str, **fields: str) -> list[dict[str, str]]:
    return [e for e in tap.snapshot() if e.get("Event") == name
            and all(e.get(k) == v for k, v in fields.items())]


def _citizen_channel(tap: EventTap, caller_id: str) -> dict[str, str]:
    return tap.wait_for(lambda e: e.get("Event") == "Newchannel"
                        and e.get("CallerIDNum") == caller_id
                        and e.get("Channel", "").startswith("PJSIP/citizens-"))


def _host_path(settings: Settings, pbx_path: str) -> Path:
    inside = settings.pbx.recordings_path_in_pbx.rstrip("/") + "/"
    assert pbx_path.startswith(inside), pbx_path
    return settings.storage.recordings_dir / pbx_path.removeprefix(inside)


def test_call_reaches_an_agent_through_the_ivr_and_is_recorded(
        pbx_settings: Settings, kit: SipKit, ami: EventTap, citizen_voice: Path) -> None:
    caller = "13800138001"
    with IvrInBackground(pbx_settings) as ivr_server, \
            kit.agent_phone("8101", agent_ip("8101"), port=AGENT_PORT, answer_after=1.0) as a, \
            kit.agent_phone("8102", agent_ip("8102"), port=AGENT_PORT, answer_after=1.0) as b:
        result = kit.call(Call(caller_id=caller, caller_name="王先生", script=(
            Wait(1.0), Dtmf("1"), Wait(7.0), Say(citizen_voice), Wait(1.0), Hangup())))
        ami.wait_for(lambda e: e.get("Event") == "AgentComplete")
    assert result.outcome == "answered" and result.status == 200
    assert result.hangup_by == "caller"
    assert ivr_server.sessions == 1

    agent_calls = offered(a, caller) + offered(b, caller)
    assert [(r.from_user, r.outcome, r.hangup_by) for r in agent_calls] == [
        (caller, "answered", "far_end")]

    channel = _citizen_channel(ami, caller)
    linked = channel["Linkedid"]
    citizen = channel["Channel"]
    digits = [e["Digit"] for e in _events(ami, "DTMFEnd", Channel=citizen, Direction="Received")]
    assert digits == ["1"]
    assert _events(ami, "AGIExecStart", Channel=citizen)  # the FastAGI IVR ran
    assert _events(ami, "VarSet", Channel=citizen, Variable="HOTLINE_QUEUE", Value="intake")
    # what the centre never reads is not sent (manager.conf's filters): Asterisk's own
    # queue and bridge variables, every dialplan step
    assert _events(ami, "QueueCallerJoin", Channel=citizen)
    assert not _events(ami, "VarSet", Channel=citizen, Variable="QUEUENAME")
    assert not _events(ami, "VarSet", Channel=citizen, Variable="BRIDGEPEER")
    assert not _events(ami, "Newexten", Channel=citizen)
    joined = _events(ami, "QueueCallerJoin", Channel=citizen)
    assert joined and joined[0]["Queue"] == "intake"
    connect = _events(ami, "AgentConnect", Channel=citizen)
    assert connect and connect[0]["Queue"] == "intake"
    complete = _events(ami, "AgentComplete", Channel=citizen)
    assert complete and complete[0]["Reason"] == "caller"
    hangups = [e for e in _events(ami, "Hangup") if e.get("Linkedid") == linked]
    assert len(hangups) == 2  # caller leg and agent leg

    # set with __ so the agent's leg inherits it
    recording = _events(ami, "VarSet", Channel=citizen, Variable="__HOTLINE_RECORDING")
    path = _host_path(pbx_settings, recording[0]["Value"])
    wait_until(path.exists, 5, f"no recording at {path}")
    stats = wav_stats(path)
    assert stats.seconds > 3
    assert not stats.silent, stats


def test_a_twelve_digit_case_number_arrives_in_order(
        pbx_settings: Settings, kit: SipKit, ami: EventTap) -> None:
    caller = "13800138002"
    case_number = "202611240017"
    with kit.agent_phone("8101", agent_ip("8101"), port=AGENT_PORT, answer_after=0.5), \
            kit.agent_phone("8102", agent_ip("8102"), port=AGENT_PORT, answer_after=0.5):
        result = kit.call(Call(caller_id=caller, script=(
            Wait(1.0), Dtmf(case_number, gap=0.15), Wait(0.5), Hangup())))
    assert result.outcome == "answered"
    citizen = _citizen_channel(ami, caller)["Channel"]
    digits = [e["Digit"] for e in _events(ami, "DTMFEnd", Channel=citizen, Direction="Received")]
    assert "".join(digits) == case_number


def test_with_fastagi_down_the_call_still_reaches_an_agent(
        pbx_settings: Settings, kit: SipKit, ami: EventTap) -> None:
    caller = "13800138003"
    with socket.socket() as probe:  # nothing listens on the FastAGI port
        assert probe.connect_ex((pbx_settings.ivr.fastagi_host,
                                 pbx_settings.ivr.fastagi_port)) != 0
    with kit.agent_phone("8101", agent_ip("8101"), port=AGENT_PORT, talk_seconds=3) as a, \
            kit.agent_phone("8102", agent_ip("8102"), port=AGENT_PORT, talk_seconds=3) as b:
        result = kit.call(Call(caller_id=caller, max_seconds=30))
    assert result.outcome == "answered"
    assert result.hangup_by == "far_end"  # the agent hung up after talking
    assert [r.hangup_by for r in offered(a, caller) + offered(b, caller)] == ["agent"]
    citizen = _citizen_channel(ami, caller)["Channel"]
    assert _events(ami, "VarSet", Channel=citizen, Variable="HOTLINE_IVR", Value="unreachable")
    assert _events(ami, "AgentConnect", Channel=citizen)
    assert _events(ami, "AgentComplete", Channel=citizen)[0]["Reason"] == "agent"


def test_ivr_survives_hangups_and_garbage_and_serves_the_next_call(
        pbx_settings: Settings, kit: SipKit, ami: EventTap) -> None:
    host, port = pbx_settings.ivr.fastagi_host, pbx_settings.ivr.fastagi_port
    with IvrInBackground(pbx_settings) as ivr_server:
        # A caller who hangs up during the welcome: no queue, no error, session closed.
        quitter = kit.call(Call(caller_id="13800138004", script=(Wait(1.5), Hangup())))
        assert quitter.outcome == "answered" and quitter.hangup_by == "caller"
        # Garbage: random bytes, a header cut short, a header that never ends, no route.
        for payload in (bytes(range(256)) * 4, b"agi_network: yes\nagi_request: agi://",
                        b"agi_x: " + b"A" * 40000, b"agi_network_script: nope\n\n"):
            with socket.create_connection((host, port), timeout=5) as raw:
                raw.sendall(payload)
                raw.shutdown(socket.SHUT_WR)
                raw.settimeout(10)
                # the server closes on us, or resets with our unread garbage in its buffer
                with contextlib.suppress(ConnectionResetError):
                    assert raw.recv(100) == b""
        with kit.agent_phone("8101", agent_ip("8101"), port=AGENT_PORT, talk_seconds=1), \
                kit.agent_phone("8102", agent_ip("8102"), port=AGENT_PORT, talk_seconds=1):
            after = kit.call(Call(caller_id="13800138005", script=(Wait(1.0), Dtmf("1")),
                                  max_seconds=30))
        assert ivr_server.rejected == 4
        assert ivr_server.sessions == 2
    assert after.outcome == "answered" and after.hangup_by == "far_end"
    quitter_channel = _citizen_channel(ami, "13800138004")["Channel"]
    assert not _events(ami, "QueueCallerJoin", Channel=quitter_channel)
    after_channel = _citizen_channel(ami, "13800138005")["Channel"]
    assert _events(ami, "VarSet", Channel=after_channel, Variable="HOTLINE_MENU_CHOICE",
                   Value="1")


def test_fastagi_session_reports_a_vanished_asterisk() -> None:
    """Asterisk closing the socket mid-command ends the flow cleanly (no spin, no crash)."""
    async def scenario() -> list[type[BaseException]]:
        outcome: list[type[BaseException]] = []
        ended = asyncio.Event()

        async def route(session: AgiSession) -> None:
            try:
                await session.stream_file("welcome")
            except BaseException as exc:  # its exact type is asserted below
                outcome.append(type(exc))
                raise
            finally:
                ended.set()

        server = FastAgiServer({"ivr": route})
        await server.start("127.0.0.1", 0)
        port = server.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write("agi_network_script: ivr\nagi_callerid: 张三\xff\n\n".encode(
            "utf-8", "surrogateescape"))
        await writer.drain()
        assert (await reader.readline()).startswith(b"STREAM FILE welcome")
        writer.close()
        await asyncio.wait_for(ended.wait(), 5)  # the route saw the socket close
        await server.close()
        return outcome

    assert asyncio.run(scenario()) == [AgiHangup]
