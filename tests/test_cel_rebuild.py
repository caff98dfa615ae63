"""The telephony service killed under ten live calls (issue 15, item 1): the service runs as
its own process (`hotline telephony`, the IVR beside it as `hotline ivr`), ten kit citizens
call 12319 and ten kit agents answer; the service is killed with SIGKILL while all ten
talk, the calls end while it is gone (eight agents hang up after 10 ... 17 s of talk, the
citizens of the other two after 26 s of their call), and the service is started again. It
rebuilds the ten calls from Asterisk's channel event log: ten records with the talk times
the kit measured (within 1 s), none `incomplete`, none twice, each call.ended published once.
An eleventh citizen calls while the service is gone, finds every agent busy and hangs up in
the queue: the call began and ended wholly in the gap, and is recorded as abandoned.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asterisk_conf.render import render
from asterisk_conf.sandbox import Sandbox
from core.config import Settings
from core.db import transaction
from hotline.compose import Parts, build
from sipkit.kit import AgentPhone, Call, Dtmf, Hangup, SipKit, Wait
from telephony import directory, link, records, seats
from telephony.ami import EventTap
from telephony.service import remember_login
from tests.conftest import (
    AGENT_PORT,
    TEST_AGENTS,
    TEST_PBX_DIR,
    TEST_PBX_ENV,
    log_in,
    wait_until,
)

# Ten agents of their own, each on its own loopback address, and how long each talks before
# hanging up (None: until the citizen hangs up, 26 s after the IVR answered them).
TALK: dict[str, float | None] = {"8170": 10, "8171": 11, "8172": 12, "8173": 13,
                                 "8174": 14, "8175": 15, "8176": 16, "8177": 17,
                                 "8178": None, "8179": None}
ADDRESS = {agent: f"127.0.0.{71 + n}" for n, agent in enumerate(TALK)}
CALLERS = [f"1370000{n:04d}" for n in range(31, 41)]
IN_THE_GAP = "13700000041"  # the eleventh citizen
HOTLINE = str(Path(sys.executable).with_name("hotline"))


@pytest.fixture
def ten_agents(pbx: Sandbox, pbx_settings: Settings) -> Iterator[None]:
    """The ten agents in the directory and logged in to the default queue; the shared test
    agents paused meanwhile (their phones are not up in this test). All undone after."""
    parts = build(pbx_settings)
    queue = pbx_settings.hotline.default_queue
    with transaction(parts.sessions) as session:
        known = {a.number for a in directory.snapshot(session).agents}
        for agent, address in ADDRESS.items():
            if agent not in known:  # a run killed half-way may have left them
                directory.add_agent(session, agent, f"断线测试{agent}",
                                    static_contact=f"sip:{agent}@{address}:{AGENT_PORT}",
                                    queues=(queue,))
        snapshot = directory.snapshot(session)
    pbx.reload(render(pbx_settings, snapshot))
    log_in(pbx_settings, snapshot, list(TALK))
    with EventTap(pbx_settings) as tap:
        for agent in TEST_AGENTS:
            tap.action(seats.pause_action(agent, True, "meal"))
    try:
        yield
    finally:
        with EventTap(pbx_settings) as tap:
            for agent in TALK:
                remember_login(parts.sessions, agent, False, False, "")
                for action in seats.logout_actions(agent, [queue]):
                    tap.action(action)
            for agent in TEST_AGENTS:
                tap.action(seats.pause_action(agent, False, ""))
        with transaction(parts.sessions) as session:  # the PBX as the other tests know it
            for agent in TALK:
                directory.remove_agent(session, agent)
            snapshot = directory.snapshot(session)
        pbx.reload(render(pbx_settings, snapshot))


def _start(command: str, workdir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **TEST_PBX_ENV, "HOTLINE_STORAGE_DATA_DIR": str(TEST_PBX_DIR)}
    log = (workdir / f"{command}.log").open("ab")
    return subprocess.Popen([HOTLINE, "-v", command], cwd=workdir, env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _wait_connected(parts: Parts, since: float, workdir: Path) -> None:
    """Until the service says its AMI link is up (after its resync) since `since`."""
    deadline = time.monotonic() + 60  # start-up and migrations on a busy machine
    while True:
        state = link.read(parts.bus.client)
        if state is not None and state.connected and state.since >= since:
            return
        log = (workdir / "telephony.log").read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, f"the telephony service is not up: {log}"
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _published(parts: Parts, after: str) -> list[dict[str, Any]]:
    """Every event on the bus after the id `after`, however many."""
    found: list[dict[str, Any]] = []
    while batch := parts.bus.read(after):
        after = batch[-1][0]
        found += [event for _id, event in batch]
    return found


def _records(parts: Parts) -> list[dict[str, Any]]:
    with parts.sessions() as session:
        found: list[dict[str, Any]] = []
        for caller in [*CALLERS, IN_THE_GAP]:
            found += records.find_calls(session, records.CallQuery(caller_number=caller))[1]
        return found


def test_the_service_killed_under_ten_live_calls_rebuilds_them_from_asterisks_log(
        pbx: Sandbox, pbx_settings: Settings, kit: SipKit, ten_agents: None,
        tmp_path: Path) -> None:
    assert "Running" in pbx.cli("module show like cel_sqlite3_custom")  # the log's writer
    parts = build(pbx_settings)
    after = parts.bus.last_id()
    running: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as phones:
        try:
            running.append(_start("ivr", tmp_path))
            began = time.time()
            service = _start("telephony", tmp_path)
            running.append(service)
            _wait_connected(parts, began, tmp_path)
            agents: dict[str, AgentPhone] = {
                agent: phones.enter_context(kit.agent_phone(
                    agent, ADDRESS[agent], port=AGENT_PORT, answer_after=0.5,
                    talk_seconds=talk)) for agent, talk in TALK.items()}
            run = kit.start_calls(Call(script=(Wait(1), Dtmf("1"), Wait(26), Hangup()),
                                       max_seconds=60),
                                  count=10, rate=5, caller_ids=CALLERS)

            def talking() -> set[str]:
                events = _published(parts, after)
                started = {e["call_id"]: e["caller_number"] for e in events
                           if e["type"] == "call.started"}
                return {started[e["call_id"]] for e in events
                        if e["type"] == "call.agent_connected" and e["call_id"] in started}

            wait_until(lambda: talking() >= set(CALLERS), 30, "not all ten calls answered")
            service.send_signal(signal.SIGKILL)  # no goodbye: it stores nothing more
            service.wait(10)
            # in the queue for about a second, every agent busy (the first is free again
            # 10 s after it answered, at least 4 s from now)
            gap_call = kit.start_calls(Call(caller_id=IN_THE_GAP, script=(
                Wait(1), Dtmf("1"), Wait(2), Hangup()), max_seconds=20))
            results = run.wait()  # ... and every call ends while it is gone
            assert [r.outcome for r in results] == ["answered"] * 10
            assert [r.outcome for r in gap_call.wait()] == ["answered"]  # by the IVR
            assert "0 active calls" in pbx.cli("core show channels count")
            assert _records(parts) == []  # none stored before it died: all ended in the gap
            restarted = time.time()
            service = _start("telephony", tmp_path)
            running.append(service)
            _wait_connected(parts, restarted, tmp_path)
            wait_until(lambda: len(_records(parts)) >= 11, 20, "the eleven calls not stored")
            time.sleep(1)  # anything stored or published twice would show by now
            stored, published = _records(parts), _published(parts, after)
        finally:
            for proc in running:
                _stop(proc)
        answered = {agent: phone.stop() for agent, phone in agents.items()}
    kit_talk = {(r.from_user, agent): r.ended_at - r.answered_at
                for agent, results in answered.items() for r in results
                if r.from_user in CALLERS and r.answered_at and r.ended_at}
    assert len(kit_talk) == 10, kit_talk  # each agent took one of the calls
    # none twice, none lost
    assert sorted(r["caller_number"] for r in stored) == [*CALLERS, IN_THE_GAP]
    [gap] = [r for r in stored if r["caller_number"] == IN_THE_GAP]
    assert (gap["outcome"], gap["queue"], gap["agent"]) == ("abandoned", "intake", None)
    assert gap["hangup_by"] == "citizen" and gap["incomplete"] is False
    assert 0 < gap["wait_seconds"] < 3 and gap["agent_attempts"] == []
    for record in stored:
        if record is gap:
            continue
        agent, caller = record["agent"], record["caller_number"]
        assert record["incomplete"] is False, record
        assert (record["outcome"], record["queue"]) == ("answered", "intake")
        assert abs(record["talk_seconds"] - kit_talk[(caller, agent)]) <= 1.0, record
        if TALK[agent] is not None:  # the agent hung up after its talk time
            assert abs(record["talk_seconds"] - TALK[agent]) <= 1.0, record
            assert record["hangup_by"] == "agent"
        else:
            assert record["hangup_by"] == "citizen"
        assert record["hangup_cause"] == 16 and record["recording"]
    ended = [e["call_id"] for e in published if e["type"] == "call.ended"]
    assert sorted(ended) == sorted(r["call_id"] for r in stored)  # each once
    ids = [e["id"] for e in published]
    assert len(ids) == len(set(ids))
