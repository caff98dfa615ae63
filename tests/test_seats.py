"""Agent seats: login, logout, pause with reasons, resume, wrap-up and auto-pause, each seen
and timed from AMI events; commands from other processes through the Redis stream."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from core.config import Settings
from hotline.centre import Centre
from sipkit.kit import Call, Dtmf, SipKit, Wait
from telephony.models import SeatInterval
from telephony.seats import SeatBoard, login_actions, logout_actions, pause_action
from tests.conftest import AGENT_PORT, agent_ip, api, ensure_ready, offered

# The centre's IVR runs here: callers key 1 during the welcome to reach the queue.
KEY_1 = (Wait(0.5), Dtmf("1"))


RECEIVED = 10_000.0  # when events reached the service: unused while Asterisk stamps them


def _ev(name: str, at: float, agent: str = "8001", **fields: str) -> dict[str, str]:
    return {"Event": name, "Timestamp": str(at), "MemberName": agent, "Queue": "intake",
            **fields}


def test_board_times_every_state_from_event_timestamps() -> None:
    board = SeatBoard({"intake": 10})
    changes = []
    for event in (_ev("QueueMemberAdded", 100, Paused="0"),
                  _ev("AgentCalled", 105, DestUniqueid="leg1"),
                  _ev("AgentConnect", 108, DestUniqueid="leg1"),
                  _ev("AgentComplete", 160)):
        changes += board.feed(event, RECEIVED)
    assert board.end_wrap_up("8001", 165) == []  # not yet: the queue's wrap-up is 10 s
    changes += board.end_wrap_up("8001", 170)
    for event in (_ev("QueueMemberPause", 175, Paused="1", PausedReason="meal"),
                  _ev("QueueMemberPause", 475, Paused="0"),
                  _ev("QueueMemberRemoved", 500)):
        changes += board.feed(event, RECEIVED)
    assert [(c.state, c.at) for c in changes] == [
        ("ready", 100), ("ringing", 105), ("talking", 108), ("wrap_up", 160), ("ready", 170),
        ("paused", 175), ("ready", 475), ("logged_out", 500)]
    assert changes[5].reason == "meal"
    assert board.seats["8001"].totals == {"ready": 35.0, "ringing": 3.0, "talking": 52.0,
                                          "wrap_up": 10.0, "paused": 300.0}
    assert [(i.state, i.reason, i.ended_at - i.started_at) for i in board.intervals][-3:] == [
        ("ready", "", 5.0), ("paused", "meal", 300.0), ("ready", "", 25.0)]


def test_board_counts_unanswered_rings_and_clears_a_ring_the_caller_dropped() -> None:
    board = SeatBoard()
    board.feed(_ev("QueueMemberAdded", 1, Paused="0"), RECEIVED)
    board.feed(_ev("AgentCalled", 2, DestUniqueid="a"), RECEIVED)
    board.feed(_ev("AgentRingNoAnswer", 7, DestUniqueid="a"), RECEIVED)
    board.feed(_ev("AgentCalled", 8, DestUniqueid="b"), RECEIVED)
    assert board.seats["8001"].unanswered == 1 and board.seats["8001"].state == "ringing"
    # the caller hangs up while it rings: only a DialEnd CANCEL for the agent's leg
    board.feed({"Event": "DialEnd", "Timestamp": "9", "DestUniqueid": "b",
                "DialStatus": "CANCEL"}, RECEIVED)
    assert board.seats["8001"].state == "ready"


def test_without_timestamps_seats_are_timed_as_events_arrive_never_backwards() -> None:
    """No Timestamp (timestampevents = no): the arrival times, and a stale arrival never
    makes a negative interval (it was minus 56 years: 0 minus the login time)."""
    board = SeatBoard({"intake": 0})
    unstamped = [{k: v for k, v in e.items() if k != "Timestamp"} for e in (
        _ev("QueueMemberAdded", 0, Paused="0"), _ev("AgentCalled", 0, DestUniqueid="l1"),
        _ev("AgentConnect", 0, DestUniqueid="l1"), _ev("AgentComplete", 0))]
    for event, arrived in zip(unstamped, (1000.0, 1004.0, 1006.5, 1002.0), strict=True):
        board.feed(event, arrived)
    assert [(i.state, i.started_at, i.ended_at) for i in board.intervals] == [
        ("ready", 1000.0, 1004.0), ("ringing", 1004.0, 1006.5),
        ("talking", 1006.5, 1006.5)]  # the late-arriving complete: not before the answer
    # a static member of queues.conf (any MemberName) is the agent its device names
    board.feed({"Event": "QueueMemberPause", "Timestamp": "1010", "Interface": "PJSIP/8001",
                "MemberName": "王芳", "Paused": "1", "PausedReason": "meal"}, RECEIVED)
    assert board.seats["8001"].state == "paused" and "王芳" not in board.seats


@pytest.fixture
def seats_reset(centre: Centre) -> Iterator[Centre]:
    """Both agents start and end each test logged in and ready."""
    ensure_ready(centre)
    yield centre
    ensure_ready(centre)


def _wait_state(centre: Centre, agent: str, state: str, timeout: float = 10,
                since_after: float | None = None) -> dict:
    """The seat once it is in `state` (entered after `since_after`, if given)."""
    deadline = time.monotonic() + timeout
    while True:
        _status, body = api("/api/v1/seats")
        seat = next((s for s in body["items"] if s["agent"] == agent), None)
        if seat is not None:  # the API says when in ISO 8601; compared here in seconds
            seat["since"] = datetime.fromisoformat(seat["since"]).timestamp()
        if seat is not None and seat["state"] == state and (
                since_after is None or seat["since"] > since_after):
            return seat
        assert time.monotonic() < deadline, f"{agent} is {seat and seat['state']}, not {state}"
        time.sleep(0.1)


def test_pause_with_a_reason_routes_calls_elsewhere_and_is_timed(
        seats_reset: Centre, kit: SipKit) -> None:
    centre = seats_reset
    status, _ = api("/api/v1/seats/8101/pause", {"reason": "meal"})
    assert status == 202
    paused = _wait_state(centre, "8101", "paused")
    assert paused["reason"] == "meal"
    with kit.agent_phone("8101", agent_ip("8101"), port=AGENT_PORT, talk_seconds=1) as first, \
            kit.agent_phone("8102", agent_ip("8102"), port=AGENT_PORT, talk_seconds=1) as other:
        result = kit.call(Call(script=KEY_1, caller_id="13400000001", max_seconds=30))
    assert result.outcome == "answered"
    assert offered(first, "13400000001") == [] and len(offered(other, "13400000001")) == 1
    # the call is over on the board too: 8102 ready again after it, not still before it
    _wait_state(centre, "8102", "ready", since_after=paused["since"])
    status, _ = api("/api/v1/seats/8101/resume", {})
    assert status == 202
    ready = _wait_state(centre, "8101", "ready")
    lasted = ready["since"] - paused["since"]
    assert lasted > 1
    deadline = time.monotonic() + 5
    while True:
        with centre.sessions() as session:
            # this pause's interval, not an earlier test's: stored once the seat is back
            stored = session.scalars(select(SeatInterval).where(
                SeatInterval.agent_number == "8101", SeatInterval.state == "paused",
                SeatInterval.ended_at >= datetime.fromtimestamp(ready["since"] - 0.01, UTC))
                .order_by(SeatInterval.id)).all()
        if stored or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [s.reason for s in stored] == ["meal"]
    assert stored[-1].seconds == pytest.approx(lasted, abs=0.01)


def test_wrap_up_follows_a_call_for_the_queue_s_time(
        seats_reset: Centre, kit: SipKit) -> None:
    centre = seats_reset
    with kit.agent_phone("8101", agent_ip("8101"), port=AGENT_PORT, talk_seconds=1), \
            kit.agent_phone("8102", agent_ip("8102"), port=AGENT_PORT, talk_seconds=1):
        kit.call(Call(script=(Wait(0.5), Dtmf("2")), caller_id="13400000002",
                      max_seconds=30))
    wrap = _wait_state(centre, "8101", "wrap_up")
    ready = _wait_state(centre, "8101", "ready")
    assert ready["since"] - wrap["since"] == pytest.approx(2.0, abs=0.01)  # aftercall's


def test_two_unanswered_rings_auto_pause_the_seat(seats_reset: Centre, kit: SipKit) -> None:
    centre = seats_reset
    with kit.agent_phone("8101", agent_ip("8101"), port=AGENT_PORT, behaviour="never"), \
            kit.agent_phone("8102", agent_ip("8102"), port=AGENT_PORT, answer_after=0.5,
                            talk_seconds=0.5):
        for caller in ("13400000003", "13400000004"):
            result = kit.call(Call(script=KEY_1, caller_id=caller, max_seconds=40))
            assert result.outcome == "answered"
    seat = _wait_state(centre, "8101", "paused")
    assert seat["reason"] == "no-answer"


def test_logout_and_login_again(seats_reset: Centre, kit: SipKit) -> None:
    centre = seats_reset
    assert api("/api/v1/seats/8101/logout", {})[0] == 202
    _wait_state(centre, "8101", "logged_out")
    with kit.agent_phone("8101", agent_ip("8101"), port=AGENT_PORT, talk_seconds=1) as first, \
            kit.agent_phone("8102", agent_ip("8102"), port=AGENT_PORT, talk_seconds=1):
        kit.call(Call(script=KEY_1, caller_id="13400000005", max_seconds=30))
    assert offered(first, "13400000005") == []
    assert api("/api/v1/seats/8101/login", {})[0] == 202
    _wait_state(centre, "8101", "ready")
    # the test queue rings in member order (linear): put 8102 back behind 8101
    for action in ("logout", "login"):
        assert api(f"/api/v1/seats/8102/{action}", {})[0] == 202
        _wait_state(centre, "8102", "logged_out" if action == "logout" else "ready")


@pytest.mark.parametrize(("path", "body", "status", "says"), [
    ("/api/v1/seats/8101/pause", {"reason": "nap"}, 409, "not one of"),
    ("/api/v1/seats/8101/pause", {}, 400, "reason"),
    ("/api/v1/seats/9999/pause", {"reason": "meal"}, 409, "no agent"),
    ("/api/v1/seats/8101/dance", {}, 404, "action: one of login"),
])
def test_bad_seat_requests_are_refused_clearly(seats_reset: Centre, path: str, body: dict,
                                               status: int, says: str) -> None:
    got, answer = api(path, body)
    assert got == status and says in answer["detail"]


def test_seat_command_from_another_process(seats_reset: Centre,
                                           pbx_settings: Settings) -> None:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(Path(__file__).parents[1]),
           "HOTLINE_STORAGE_DATA_DIR": str(pbx_settings.storage.data_dir)}
    hotline = [sys.executable, "-m", "hotline"]
    proc = subprocess.run([*hotline, "seat", "pause", "8102", "--reason", "training"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert _wait_state(seats_reset, "8102", "paused")["reason"] == "training"
    proc = subprocess.run([*hotline, "seat", "pause", "8102", "--reason", "gossip"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "not one of break, callback, meal, meeting, training" in proc.stderr


def test_seats_saved_by_a_previous_run_are_taken_up_and_unreadable_ones_skipped() -> None:
    """What the service left in Redis (hotline:seats) is read back at its next start; a
    value someone or something damaged must not keep the service from starting."""
    board = SeatBoard()
    board.restore([
        '{"agent": "8001", "state": "paused", "reason": "meal", "since": 1795492000.5, '
        '"queues": ["intake"], "seconds_in_state": {"ready": 60.0}}',
        b"not json", "[1, 2]", '{"agent": "8002"}', '{"agent": "8003", "state": "asleep", '
        '"since": 1}', '{"agent": "8004", "state": "ready", "since": 1, "queues": 5}',
        '{"agent": "8005", "state": "ready", "since": 1, "seconds_in_state": [1]}'])
    assert list(board.seats) == ["8001"]
    seat = board.seats["8001"]
    assert (seat.state, seat.state_reason, seat.since, seat.paused) == (
        "paused", "meal", 1795492000.5, True)
    assert seat.queues == {"intake"} and seat.totals == {"ready": 60.0}


def test_a_seat_on_the_browser_is_paused_and_logged_out_on_the_browser() -> None:
    """The desk page's softphone is the member PJSIP/8001-webrtc: the seat is agent 8001's,
    and its pause and logout name that device, not the desk phone."""
    board = SeatBoard()
    board.feed({"Event": "QueueMemberAdded", "Timestamp": "1000", "Queue": "intake",
                "Interface": "PJSIP/8001-webrtc", "MemberName": "8001", "Paused": "0"}, 0)
    seat = board.seat("8001")
    assert (seat.state, seat.device) == ("ready", "browser")
    assert "8001-webrtc" not in board.seats
    assert pause_action("8001", True, "meal", seat.device)["Interface"] == "PJSIP/8001-webrtc"
    assert logout_actions("8001", ["intake"], seat.device)[0]["Interface"] == \
        "PJSIP/8001-webrtc"
    assert login_actions("8001", [("intake", 0)])[0]["Interface"] == "PJSIP/8001"
    # after a reconnect Asterisk's member list says which device the seat is on
    other = SeatBoard()
    other.resync([{"Queue": "intake", "Name": "8001", "Location": "PJSIP/8001-webrtc",
                   "StateInterface": "PJSIP/8001-webrtc", "Paused": "0", "InCall": "0"}], 5)
    assert other.seat("8001").device == "browser" and other.seat("8001").queues == {"intake"}
