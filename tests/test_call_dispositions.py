"""Dispositions (话后小结) over the JSON API: the agent who took the call says what it was,
from the configured list; a supervisor may for any call; anyone else is refused. A choice
made before the call's record is stored waits and is applied when the record is."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from accounts.service import Identity
from core.db import transaction
from core.errors import ConfigError
from core.events import EventBus
from telephony import records
from telephony.events import CallStarted
from tests import api_world
from tests.api_world import World
from tests.conftest import make_settings


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    built = api_world.build(database_url, tmp_path)
    yield built
    built.engine.dispose()


def _choose(world: World, call_id: str, code: str, who: dict[str, str]) -> tuple[int, dict]:
    reply = world.client.post(f"/api/v1/calls/{call_id}/disposition", json={"code": code},
                              headers=who)
    return reply.status_code, reply.json


def _disposition(world: World, call_id: str) -> str | None:
    reply = world.client.get(f"/api/v1/calls/{call_id}", headers=world.tokens["supervisor"])
    assert reply.status_code == 200, reply.json
    return reply.json["disposition"]


def _stored_call(call_id: str, agent: str, epoch: float) -> dict:
    return {"call_id": call_id, "caller_number": "13900001111", "caller_name": "",
            "entry_number": "12319", "started_at": epoch, "ended_at": epoch + 30,
            "duration_seconds": 30, "outcome": "answered", "queue": "intake",
            "queue_position": 1, "wait_seconds": 2, "short_abandon": False, "agent": agent,
            "connected_at": epoch + 2, "talk_seconds": 28, "hold_seconds": 0,
            "hangup_cause": 16, "hangup_cause_text": "", "ivr_path": [],
            "agent_attempts": [], "transfers": [], "legs": [], "recording": None,
            "incomplete": False}


def test_the_agent_who_took_the_call_sets_its_disposition(world: World) -> None:
    taker = api_world.as_identity(world, Identity("坐席8001", ("operator",), False,
                                                  agent="8001"))
    other = api_world.as_identity(world, Identity("坐席8002", ("operator",), False,
                                                  agent="8002"))
    assert _disposition(world, world.call_id) is None
    status, body = _choose(world, world.call_id, "wrong-number", other)
    assert status == 403 and body["detail"].startswith("agent:")
    status, body = _choose(world, world.call_id, "lottery", taker)
    assert status == 400 and "code: not one of" in body["detail"]
    assert _disposition(world, world.call_id) is None
    status, body = _choose(world, world.call_id, "order", taker)
    assert status == 200
    assert body == {"call_id": world.call_id, "disposition": "order", "pending": False}
    assert _disposition(world, world.call_id) == "order"
    listed = world.client.get("/api/v1/calls", headers=world.tokens["auditor"]).json
    assert [c["disposition"] for c in listed["items"]] == ["order"]
    # a supervisor corrects it
    status, body = _choose(world, world.call_id, "nuisance", world.tokens["supervisor"])
    assert status == 200 and _disposition(world, world.call_id) == "nuisance"
    assert _choose(world, "1999999999.1", "order", taker)[0] == 404  # no such call


def test_a_choice_before_the_record_is_stored_is_kept_and_applied_to_the_right_agent(
        world: World) -> None:
    bus = EventBus(world.app.extensions["hotline.redis"])
    taker = api_world.as_identity(world, Identity("坐席8003", ("operator",), False,
                                                  agent="8003"))
    wrong = api_world.as_identity(world, Identity("坐席8004", ("operator",), False,
                                                  agent="8004"))
    epoch = api_world.NOW.timestamp() - 600
    live, guessed = "1732409000.7", "1732409000.9"
    for call_id in (live, guessed):
        bus.publish(CallStarted(at=epoch, call_id=call_id, caller_number="13900001111"))
    status, body = _choose(world, live, "callback", taker)
    assert status == 200 and body["pending"] is True
    # another agent's guess at a call they did not take is dropped when its record comes
    assert _choose(world, guessed, "silent", wrong)[1]["pending"] is True
    assert world.client.get(f"/api/v1/calls/{live}",
                            headers=world.tokens["supervisor"]).status_code == 404
    with transaction(world.sessions) as session:  # the telephony service stores them
        records.store_call(session, _stored_call(live, "8003", epoch))
        records.store_call(session, _stored_call(guessed, "8003", epoch))
    with transaction(world.sessions) as session:
        assert records.apply_pending_disposition(session, live) is True
        assert records.apply_pending_disposition(session, guessed) is False
    assert _disposition(world, live) == "callback"
    assert _disposition(world, guessed) is None
    with transaction(world.sessions) as session:  # applied once: nothing is left pending
        assert records.apply_pending_disposition(session, live) is False
    # a call nobody announced cannot get one
    assert _choose(world, "1732409000.99", "order", taker)[0] == 404
    # no agent number, no supervisor: nothing to choose for
    nobody = api_world.as_identity(world, Identity("无坐席", ("operator",), False))
    bus.publish(CallStarted(at=epoch, call_id="1732409001.1", caller_number="13900001111"))
    assert _choose(world, "1732409001.1", "order", nobody)[0] == 403


def test_the_dispositions_and_the_extension_are_settings(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, HOTLINE_SEATS_DISPOSITIONS="order=已受理工单,other=其他",
                             HOTLINE_SEATS_WRAP_UP_EXTEND_SECONDS="45")
    assert settings.seats.dispositions == (("order", "已受理工单"), ("other", "其他"))
    assert settings.seats.wrap_up_extend_seconds == 45
    for env, key in (({"HOTLINE_SEATS_WRAP_UP_EXTEND_SECONDS": "0"},
                      "seats.wrap_up_extend_seconds"),
                     ({"HOTLINE_SEATS_DISPOSITIONS": "Order=x"}, "seats.dispositions"),
                     # the extended wrap-up's own pause: no agent pauses with it
                     ({"HOTLINE_SEATS_PAUSE_REASONS": "wrap-up=整理"}, "seats.pause_reasons")):
        with pytest.raises(ConfigError, match=rf"^config: {key} "):
            make_settings(tmp_path, **env)


def test_a_record_stored_while_its_disposition_is_chosen_waits_for_the_choice(
        world: World) -> None:
    """The telephony service stores a record and applies what is pending in one
    transaction; the agent's choice is made in a transaction of its own at the same moment.
    The record's transaction waits for the choice's (on PostgreSQL a lock per call; on
    SQLite the write lock), so it sees the choice and applies it: the choice is not left
    pending beside a stored record when the chooser's own second look came too early."""
    epoch = api_world.NOW.timestamp() - 600
    call_id = "1732409002.3"
    read: list[bool] = []
    let_commit = threading.Event()

    def store() -> None:
        with transaction(world.sessions) as session:
            records.store_call(session, _stored_call(call_id, "8003", epoch))
            read.append(records.apply_pending_disposition(session, call_id))
            let_commit.wait(10)

    with transaction(world.sessions) as chooser:
        assert records.choose_disposition(
            chooser, call_id, "callback", agent="8003", chosen_by="坐席8003",
            supervisor=False, started=True, now=api_world.NOW) is False  # pending
        storing = threading.Thread(target=store)
        storing.start()
        time.sleep(0.5)
        assert read == []  # the record's transaction waits for the choice's
    deadline = time.monotonic() + 10
    while not read:
        assert time.monotonic() < deadline, "the record was never stored"
        time.sleep(0.05)
    assert read == [True]  # it saw the committed choice and applied it
    let_commit.set()
    storing.join(10)
    assert _disposition(world, call_id) == "callback"
