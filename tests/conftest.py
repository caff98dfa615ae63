"""Shared fixtures. Telephony tests run against the real Asterisk sandbox with kit calls.

Each run has its own directory and free ports (tests/isolation.py), so a centre started with
`hotline up`, or a second run, on the same machine is left alone; what a killed run left
running is stopped by the next one, and a run that leaves a process behind fails. A missing
Asterisk, PostgreSQL or Redis fails the tests loudly; nothing is skipped.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from accounts.service import ROLES, SHIFT_CHIEF, SUPERVISOR, add_user
from asterisk_conf.render import render
from asterisk_conf.sandbox import Sandbox
from core.config import Settings, load_settings
from core.db import make_engine, session_factory, transaction, upgrade
from core.live import stop_embedded
from core.memory import CollectorStops
from hotline.centre import Centre
from ivr.prompts import ensure_prompts
from sipkit.kit import AgentCallResult, AgentPhone, SipKit
from telephony import commands, directory, seats
from telephony.ami import EventTap
from telephony.service import remember_login
from tests import isolation

# This run's directory: everything it starts works under it, temporary files included.
isolation.reap_stale_runs()
RUN_DIR = isolation.new_run_dir()
tempfile.tempdir = str(RUN_DIR / "tmp")
os.environ["TMPDIR"] = tempfile.tempdir

POSTGRES_ADMIN_URL = os.environ.get("HOTLINE_TEST_POSTGRES",
                                    "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_SERVER_URL = os.environ.get("HOTLINE_TEST_REDIS", "redis://127.0.0.1:6379/15")

# Kit agent phones seated in the test PBX's default queue: number -> loopback address.
TEST_AGENTS = {"8101": "127.0.0.13", "8102": "127.0.0.15"}
TRUNK_HOST = "127.0.0.14"
AGENT_PORT = isolation.free_port(socket.SOCK_DGRAM, tuple(TEST_AGENTS.values()))
RTP_START, RTP_END = isolation.rtp_range()

# The whole case loop from intake to closing, each action by its role.
CASE_LOOP = [("open", "shift_chief"), ("dispatch", "dispatcher"), ("sign", "department"),
             ("feedback", "department"), ("request_check", "dispatcher"),
             ("check_passed", "supervisor"), ("close", "shift_chief")]

TEST_PBX_ENV = {
    "HOTLINE_PBX_SIP_PORT": str(isolation.free_port(socket.SOCK_DGRAM)),
    "HOTLINE_PBX_AMI_PORT": str(isolation.free_port()),
    "HOTLINE_PBX_WEBRTC_PORT": str(isolation.free_port()),
    "HOTLINE_PBX_RTP_PORT_START": str(RTP_START),
    "HOTLINE_PBX_RTP_PORT_END": str(RTP_END),
    "HOTLINE_PBX_TRUNK_HOST": TRUNK_HOST,
    "HOTLINE_PBX_TRUNK_PORT": str(isolation.free_port(socket.SOCK_DGRAM, (TRUNK_HOST,))),
    "HOTLINE_IVR_FASTAGI_PORT": str(isolation.free_port()),
    "HOTLINE_WEB_PUSH_PORT": str(isolation.free_port()),  # every test centre's desk push
    "HOTLINE_SPEECH_LIVE_PORT": str(isolation.free_port()),  # a centre's live receiver
    "HOTLINE_IVR_MENU_TIMEOUT_SECONDS": "3",
    "HOTLINE_IVR_FLOW_FILE": str(Path(__file__).with_name("data") / "flow.yaml"),
    # The test line is staffed around the clock, so no call test depends on the day it
    # runs; the hours node's own tests pin the clock to fixed instants instead.
    "HOTLINE_IVR_STAFFED_HOURS": "00:00-24:00",
}


def make_settings(data_dir: Path, **env: str) -> Settings:
    """Settings as the CLI would build them, from environment variables only."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("HOTLINE_") and k not in ("DATABASE_URL", "REDIS_URL")}
    return load_settings(None, {**base, "HOTLINE_STORAGE_DATA_DIR": str(data_dir), **env})


TEST_PBX_DIR = RUN_DIR / "pbx"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.option.basetemp = str(RUN_DIR / "pytest")  # tmp_path too is this run's


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Nothing the run started may outlive it: embedded Redis stops here, the PBX at its
    fixture's end; anything still running under the run's directory fails the run."""
    stop_embedded()
    left = isolation.processes_under(RUN_DIR)
    isolation.kill_all(left)
    isolation.unmount_all(RUN_DIR)
    if left:
        print("\nprocesses left running by the tests (now killed):\n"
              + "\n".join(f"  {pid} {command}" for pid, command in left))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif exitstatus == 0 and not isolation.mounts_under(RUN_DIR):
        shutil.rmtree(RUN_DIR, ignore_errors=True)


# the collector's longest stop during each test, told at the run's end: a test waiting
# on a centre in this process waits it out too
COLLECTOR_STOPS = CollectorStops().watch()
STOPS_BY_TEST: dict[str, float] = {}
# the objects alive at each test file's start (after the collection; between two whole-heap
# collections, frozen garbage too), and the time the collections between files took
ALIVE_AT_START: list[tuple[str, int]] = []
BETWEEN_FILES_S: list[float] = []
FULL_EVERY = 10  # files between two collections of the whole heap
DESCRIPTORS_FULL = 300  # ... or as soon as the process holds this many (waitress: 1024)


@pytest.fixture(scope="module", autouse=True)
def _collected_between_files(request: pytest.FixtureRequest) -> Iterator[None]:
    """A collection between test files, then what survived it frozen out of the
    collector's passes while the next file runs. The centres under test run in this
    process, whose heap is the whole suite's: a full collection stopped every thread for
    0.5 s early in a run and 2.5-3.9 s past its middle (measured), the in-process IVR's
    thread too, and a caller's key that came while the IVR was between two AGI commands was
    dropped by Asterisk (test_metrics' caller reached its queue 36 s late in CI). Frozen,
    earlier files' objects are no longer scanned during a test; collected here first, their
    garbage (sockets too) is not kept: freezing at every test without this kept it for
    good, and the process passed the 1024 descriptors where waitress's select() fails.
    Only the objects the last file made are collected at most files' start; the whole heap
    (3.5 million objects late in a run, ~1 s a pass) every FULL_EVERY files, or as soon as
    the process holds DESCRIPTORS_FULL descriptors: garbage frozen earlier that a later
    file let go of is freed then."""
    started = time.perf_counter()
    if (len(ALIVE_AT_START) % FULL_EVERY == 0
            or len(os.listdir("/proc/self/fd")) >= DESCRIPTORS_FULL):
        gc.unfreeze()
    gc.collect()
    gc.freeze()
    BETWEEN_FILES_S.append(time.perf_counter() - started)
    ALIVE_AT_START.append((request.node.nodeid, gc.get_freeze_count()))
    COLLECTOR_STOPS.take()  # this pause is no test's
    yield


@pytest.fixture(autouse=True)
def _collector_stops(request: pytest.FixtureRequest) -> Iterator[None]:
    """The collector's longest stop during each test (see _collected_between_files)."""
    COLLECTOR_STOPS.take()
    yield
    STOPS_BY_TEST[request.node.nodeid] = COLLECTOR_STOPS.take()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    longest = sorted(STOPS_BY_TEST.items(), key=lambda item: -item[1])[:3]
    if longest:
        terminalreporter.write_line("longest garbage-collector stops during a test: " + "; ".join(
            f"{seconds * 1000:.0f} ms in {test}" for test, seconds in longest))
    if len(ALIVE_AT_START) > 1:
        alive = ALIVE_AT_START
        grew = sorted(((alive[i][0], alive[i + 1][1] - alive[i][1])
                       for i in range(len(alive) - 1)), key=lambda item: -item[1])[:5]
        terminalreporter.write_line(
            f"objects alive between test files: {alive[0][1]:,} at the first's start, "
            f"{alive[-1][1]:,} at the last's; most left by: " + "; ".join(
                f"{name} +{count:,}" for name, count in grew)
            + f"; collections between files: {sum(BETWEEN_FILES_S):.0f} s in all, longest "
              f"{max(BETWEEN_FILES_S) * 1000:.0f} ms")


@pytest.fixture(scope="session")
def pbx_settings() -> Settings:
    return make_settings(TEST_PBX_DIR, **TEST_PBX_ENV)


@pytest.fixture(scope="session")
def pbx(pbx_settings: Settings) -> Iterator[Sandbox]:
    """The test Asterisk, up for the whole session, with two kit agents logged in."""
    sandbox = Sandbox(pbx_settings)
    try:
        yield _start_pbx(pbx_settings, sandbox)
    finally:
        sandbox.down()


def _start_pbx(pbx_settings: Settings, sandbox: Sandbox) -> Sandbox:
    engine = make_engine(pbx_settings.storage.database_url)
    upgrade(engine)
    with transaction(session_factory(engine)) as session:
        directory.ensure_queue(session, pbx_settings.hotline.default_queue, "综合受理",
                               strategy="linear", ring_seconds=5, retry_seconds=1)
        # menu 2: the only queue with wrap-up, so other tests' calls never wait for it
        directory.ensure_queue(session, "aftercall", "话后整理测试", strategy="linear",
                               ring_seconds=5, retry_seconds=1, wrapup_seconds=2)
        for number, ip in TEST_AGENTS.items():
            directory.add_agent(session, number, f"测试坐席{number}",
                                static_contact=f"sip:{number}@{ip}:{AGENT_PORT}",
                                queues=(pbx_settings.hotline.default_queue, "aftercall"))
        snapshot = directory.snapshot(session)
    ensure_prompts(pbx_settings)
    sandbox.up(render(pbx_settings, snapshot))
    log_in(pbx_settings, snapshot, list(TEST_AGENTS))
    return sandbox


def log_in(settings: Settings, snapshot: directory.Directory, agents: list[str]) -> None:
    """Agents log in as the telephony service would log them in, and stay remembered."""
    sessions = session_factory(make_engine(settings.storage.database_url))
    with EventTap(settings) as tap:
        for agent in agents:
            remember_login(sessions, agent, True, False, "")
            queues = [(q.name, dict(q.members)[agent]) for q in snapshot.queues
                      if agent in dict(q.members)]
            for action in seats.login_actions(agent, queues):
                answer = tap.action(action)
                assert answer.get("Response") == "Success", answer


@pytest.fixture
def kit(pbx: Sandbox, pbx_settings: Settings) -> SipKit:
    return SipKit(pbx_host=pbx_settings.pbx.bind_address, pbx_port=pbx_settings.pbx.sip_port)


@pytest.fixture
def ami(pbx: Sandbox, pbx_settings: Settings) -> Iterator[EventTap]:
    with EventTap(pbx_settings) as tap:
        yield tap
    # Every test leaves the PBX idle: no call may outlive the test that made it.
    deadline = time.monotonic() + 10
    while "0 active calls" not in (active := pbx.cli("core show channels count")):
        assert time.monotonic() < deadline, f"calls left behind: {active}"
        time.sleep(0.2)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each supported kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hotline.db'}"
        return
    name = f"hotline_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL.replace("postgresql:", "postgresql+psycopg:", 1),
                          isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def agent_ip(number: str) -> str:
    return TEST_AGENTS[number]


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    """Poll `predicate` until it holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def offered(phone: AgentPhone, caller: str) -> list[AgentCallResult]:
    """Calls this test's caller made to the phone. A phone that starts listening may still
    get INVITEs Asterisk kept retransmitting, for an earlier test, to a phone not there."""
    return [r for r in phone.results() if r.from_user == caller]


WEB_PORT = isolation.free_port()
PUSH_PORT = int(TEST_PBX_ENV["HOTLINE_WEB_PUSH_PORT"])


@pytest.fixture(scope="module")
def centre(pbx: Sandbox, pbx_settings: Settings) -> Iterator[Centre]:
    """IVR, telephony service and API against the test PBX (API on WEB_PORT). `api()`
    calls it as a shift chief and supervisor who may see phone numbers."""
    settings = replace(pbx_settings, web=replace(pbx_settings.web, port=WEB_PORT))
    with Centre(settings) as running:
        with transaction(running.sessions) as session:
            token = add_user(session, "测试值班长", [SHIFT_CHIEF, SUPERVISOR], True, ROLES,
                             now=running.clock.now())
        API_HEADERS["Authorization"] = f"Bearer {token}"
        yield running


def ensure_ready(centre: Centre, agents: tuple[str, ...] = tuple(TEST_AGENTS)) -> None:
    """Both test agents logged in, not paused, and seen so by the telephony service."""
    for agent in agents:
        seat = centre.telephony.board.seat(agent)
        if not seat.queues:
            commands.send(centre.bus.client, "seat.login", {"agent": agent})
        elif seat.paused:
            commands.send(centre.bus.client, "seat.resume", {"agent": agent})
    deadline = time.monotonic() + 10
    while any(centre.telephony.board.seat(a).state != "ready" for a in agents):
        states = {a: centre.telephony.board.seat(a).state for a in agents}
        assert time.monotonic() < deadline, f"agents not ready: {states}"
        time.sleep(0.1)


API_HEADERS: dict[str, str] = {}  # the centre fixture's account


def api(path: str, body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """(status, JSON) of a GET, or of a POST when `body` is given; as the centre fixture's
    account unless `headers` says otherwise ({} for anonymous)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{WEB_PORT}{path}", data=data, headers={
        "Content-Type": "application/json", **(API_HEADERS if headers is None else headers)})
    try:
        with urllib.request.urlopen(request, timeout=15) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
