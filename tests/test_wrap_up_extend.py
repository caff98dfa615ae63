"""Wrap-up extended once (延长话后整理), on the seat board: the member is paused with the
wrap-up reason meanwhile, yet the seat stays wrap_up (no paused stretch in the reports),
its end moves by the extra time, and a second extension or one outside wrap-up is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from accounts.service import Identity
from telephony import http as telephony_http
from telephony.seats import WRAP_UP_PAUSE_REASON, SeatBoard, WrapUpRefused
from tests import api_world
from tests.api_world import World

RECEIVED = 50_000.0


def _ev(name: str, at: float, **fields: str) -> dict[str, str]:
    return {"Event": name, "Timestamp": str(at), "MemberName": "8001", "Queue": "aftercall",
            **fields}


def _called(board: SeatBoard) -> list:
    changes = []
    for event in (_ev("QueueMemberAdded", 100, Paused="0"),
                  _ev("AgentCalled", 110, DestUniqueid="leg"),
                  _ev("AgentConnect", 112, DestUniqueid="leg"),
                  _ev("AgentComplete", 150)):
        changes += board.feed(event, RECEIVED)
    return changes


@pytest.mark.parametrize("unpause_first", [True, False])
def test_an_extended_wrap_up_stays_wrap_up_until_the_unpause(unpause_first: bool) -> None:
    board = SeatBoard({"aftercall": 10})
    changes = _called(board)
    with pytest.raises(WrapUpRefused, match="not wrapping up"):
        board.extend_wrap_up("8002", 30)
    assert board.extend_wrap_up("8001", 30) == 190.0  # 150 + 10 + 30
    assert json.loads(json.dumps(board.seats["8001"].as_dict()))["wrap_up_until"] == 190.0
    with pytest.raises(WrapUpRefused, match="already"):
        board.extend_wrap_up("8001", 30)
    # the service pauses the member with the wrap-up reason: still wrap_up
    changes += board.feed(_ev("QueueMemberPause", 153, Paused="1",
                              PausedReason=WRAP_UP_PAUSE_REASON), RECEIVED)
    assert board.end_wrap_up("8001", 160) == []  # the queue's own end: extended past it
    assert board.seats["8001"].state == "wrap_up"
    if unpause_first:  # Asterisk's unpause may come before or after the timer's end
        changes += board.feed(_ev("QueueMemberPause", 190.2, Paused="0"), RECEIVED)
        assert board.seats["8001"].state == "wrap_up"
        changes += board.end_wrap_up("8001", 190)
    else:
        changes += board.end_wrap_up("8001", 190)
        assert board.seats["8001"].state == "wrap_up"
        changes += board.feed(_ev("QueueMemberPause", 190.2, Paused="0"), RECEIVED)
    assert [(c.state, c.at) for c in changes] == [
        ("ready", 100), ("ringing", 110), ("talking", 112), ("wrap_up", 150),
        ("ready", 190 if unpause_first else 190.2)]
    assert [i.state for i in board.intervals] == ["ready", "ringing", "talking", "wrap_up"]
    assert board.intervals[-1].ended_at - board.intervals[-1].started_at == pytest.approx(
        40 if unpause_first else 40.2)
    assert "paused" not in board.seats["8001"].totals
    with pytest.raises(WrapUpRefused, match="not wrapping up"):
        board.extend_wrap_up("8001", 30)
    # the next call's wrap-up may be extended again
    for event in (_ev("AgentCalled", 300, DestUniqueid="leg2"),
                  _ev("AgentConnect", 302, DestUniqueid="leg2"), _ev("AgentComplete", 320)):
        board.feed(event, RECEIVED)
    assert board.extend_wrap_up("8001", 30) == 360.0


def test_a_restart_during_the_extension_keeps_its_end() -> None:
    board = SeatBoard({"aftercall": 10})
    _called(board)
    board.extend_wrap_up("8001", 30)
    board.feed(_ev("QueueMemberPause", 153, Paused="1", PausedReason=WRAP_UP_PAUSE_REASON),
               RECEIVED)
    again = SeatBoard({"aftercall": 10})
    again.restore([json.dumps(board.seats["8001"].as_dict())])
    seat = again.seats["8001"]
    assert (seat.state, seat.wrap_up_until, seat.wrap_up_extended) == ("wrap_up", 190.0, True)
    # Asterisk still has the member paused with the wrap-up reason: wrap_up, not paused
    assert again.resync([{"Queue": "aftercall", "Name": "8001", "Location": "PJSIP/8001",
                          "Paused": "1", "PausedReason": WRAP_UP_PAUSE_REASON}], 170) == []
    assert seat.state == "wrap_up"


@pytest.fixture
def world(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[World]:
    monkeypatch.setattr(telephony_http, "WEB_COMMAND_SECONDS", 0.2)  # nobody answers
    built = api_world.build(database_url, tmp_path)
    yield built
    built.engine.dispose()


def test_an_agent_extends_only_their_own_wrap_up_and_a_device_is_only_for_login(
        world: World) -> None:
    own = api_world.as_identity(world, Identity("坐席8001", ("operator",), False, agent="8001"))
    mine = world.client.post("/api/v1/seats/8001/extend_wrap_up", json={}, headers=own)
    assert mine.status_code == 503, mine.json  # let through; no telephony service here
    other = world.client.post("/api/v1/seats/8002/extend_wrap_up", json={}, headers=own)
    assert other.status_code == 403 and other.json["detail"].startswith("agent:")
    for action, device, status in (("login", "browser", 503), ("login", "phone", 503),
                                   ("login", "fax", 400), ("pause", "browser", 400),
                                   ("extend_wrap_up", "phone", 400)):
        reply = world.client.post(f"/api/v1/seats/8001/{action}",
                                  json={"device": device, "reason": "meal"}, headers=own)
        assert reply.status_code == status, (action, device, reply.json)
        assert status == 503 or "device" in reply.json["detail"]


def test_the_shell_sends_a_device_only_with_a_login(tmp_path: Path) -> None:
    ran = subprocess.run([sys.executable, "-m", "hotline", "seat", "extend_wrap_up", "8001",
                          "--device", "browser"], capture_output=True, text=True,
                         env={**os.environ, "HOTLINE_STORAGE_DATA_DIR": str(tmp_path)},
                         timeout=60)
    assert ran.returncode == 2 and "--device is only for login" in ran.stderr
