"""What follows a move (step clocks, the platform's webhook, the callback survey) subscribes
to the order's events and runs inside the move's transaction: a failing follow-up leaves
nothing of the move stored, and each move is followed exactly once."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

import tickets.follow_ups
from channels import notices
from core.db import make_engine, session_factory, transaction, upgrade
from core.events import publish_on_commit
from tests.conftest import CASE_LOOP
from tickets import catalogue, deadlines, events, exchange, rollups, service, surveys
from tickets.events import Move, OrderEvent, WorkOrderMoved, WorkOrderOpened
from tickets.models import Survey, WebhookDelivery, WorkOrderDeadline, WorkOrderEvent
from tickets.service import Policy

# Tuesday 24 November 2026, 10:00 in Beijing: a working day, inside working hours
NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
POLICY = Policy(webhook_url="http://127.0.0.1:9/platform")


class Recorder:
    """Stands in for the Redis event bus: what was published after each commit."""

    def __init__(self) -> None:
        self.published: list[str] = []

    def append(self, event_id: str, event_type: str, payload: dict[str, Any]) -> str:
        self.published.append(f"{event_type}:{payload.get('action', '')}")
        return "0-1"

    def append_all(self, items: list[tuple[str, str, dict[str, Any]]]) -> list[str | None]:
        return [self.append(*item) for item in items]

    def trim(self, keep: int) -> int:
        return 0


@pytest.fixture
def sessions(database_url: str) -> sessionmaker[Session]:
    engine = make_engine(database_url)
    upgrade(engine)
    factory = session_factory(engine)
    with transaction(factory) as session:
        catalogue.seed(session)
    return factory


def _open(sessions: sessionmaker[Session]) -> str:
    with transaction(sessions) as session:
        return service.open_order(
            session, appeal_type="complaint", channel="phone", description="人行道暴露垃圾",
            actor="受理员", citizen_phone="13800138000", category_code="0102",
            policy=POLICY, now=NOW).case_number


def _move(sessions: sessionmaker[Session], case: str, action: str, role: str) -> None:
    with transaction(sessions) as session:
        service.transition(session, case, action, actor=role, role=role, policy=POLICY,
                           now=NOW)


def _stored(sessions: sessionmaker[Session], case: str) -> dict[str, Any]:
    with sessions() as session:
        order = service.get_order(session, case)
        return {
            "state": order.state, "version": order.version,
            "history": [e.action for e in session.scalars(select(WorkOrderEvent).where(
                WorkOrderEvent.order_id == order.id).order_by(WorkOrderEvent.seq))],
            "webhooks": [d.event_type for d in exchange.deliveries(session, case)],
            "surveys": session.scalar(select(func.count(Survey.id)).where(
                Survey.order_id == order.id)),
            "running": sorted(session.scalars(select(WorkOrderDeadline.step).where(
                WorkOrderDeadline.order_id == order.id,
                WorkOrderDeadline.met_at.is_(None)))),
        }


def test_a_failing_follow_up_leaves_nothing_of_the_move(
        sessions: sessionmaker[Session]) -> None:
    bus = Recorder()
    publish_on_commit(sessions, bus)
    case = _open(sessions)
    for action, role in CASE_LOOP[:-1]:  # up to check_passed: the close is left
        _move(sessions, case, action, role)
    before = _stored(sessions, case)
    assert before["state"] == "checked" and before["running"] == ["close", "complete"]
    assert before["surveys"] == 0 and before["webhooks"][-1] == "work_order.check_passed"
    published = list(bus.published)
    seen: dict[str, Any] = {}

    class Refused(Exception):
        pass

    def refuse(event: OrderEvent, move: Move) -> None:
        # Wired after the others: what they did is visible in this very transaction.
        session = move.session
        seen["survey"] = session.scalar(select(func.count(Survey.id)).where(
            Survey.order_id == move.order.id))
        seen["webhook"] = session.scalar(select(WebhookDelivery.event_type).where(
            WebhookDelivery.case_number == event.case_number)
            .order_by(WebhookDelivery.id.desc()).limit(1))
        seen["state"] = move.order.state
        raise Refused("the follow-up failed")

    events.subscribe(refuse, WorkOrderMoved)
    try:
        with pytest.raises(Refused):
            _move(sessions, case, "close", "shift_chief")
    finally:
        events.unsubscribe(refuse, WorkOrderMoved)

    assert seen == {"survey": 1, "webhook": "work_order.close", "state": "closed"}
    assert _stored(sessions, case) == before  # no move, no clock stopped, no webhook, no survey
    assert bus.published == published  # and nothing announced
    _move(sessions, case, "close", "shift_chief")  # the same move, once nothing refuses it
    after = _stored(sessions, case)
    assert (after["state"], after["version"], after["surveys"]) == ("closed", 8, 1)
    assert after["running"] == []
    assert bus.published[len(published):] == ["work_order.moved:close"]


def test_a_move_is_followed_exactly_once(sessions: sessionmaker[Session]) -> None:
    importlib.reload(tickets.follow_ups)  # wiring twice still follows each move once
    assert events.subscribers(WorkOrderOpened) == (deadlines.follow_move,
                                                   exchange.follow_move,
                                                   rollups.follow_move)
    assert events.subscribers(WorkOrderMoved) == (deadlines.follow_move,
                                                  exchange.follow_move, surveys.follow_move,
                                                  rollups.follow_move,
                                                  notices.follow_move)  # the room above's
    bus = Recorder()
    publish_on_commit(sessions, bus)
    case = _open(sessions)
    for action, role in CASE_LOOP:
        _move(sessions, case, action, role)
    stored = _stored(sessions, case)
    assert stored["webhooks"] == [
        "work_order.create", "work_order.open", "work_order.dispatch", "work_order.sign",
        "work_order.feedback", "work_order.request_check", "work_order.check_passed",
        "work_order.close"]
    assert stored["surveys"] == 1
    assert bus.published == [
        "work_order.opened:", "work_order.moved:open", "work_order.moved:dispatch",
        "work_order.moved:sign", "work_order.moved:feedback",
        "work_order.moved:request_check", "work_order.moved:check_passed",
        "work_order.moved:close"]


def test_act_takes_the_special_actions_with_what_they_need(
        sessions: sessionmaker[Session]) -> None:
    case = _open(sessions)
    for action, role in CASE_LOOP[:3]:  # open, dispatch, sign: handling, on the handle clock
        _move(sessions, case, action, role)
    with transaction(sessions) as session:
        for amount in (None, 0, True, "2"):
            with pytest.raises(service.OrderError, match="amount"):
                service.act(session, case, "grant_extension", actor="老李",
                            role="shift_chief", amount=amount, policy=POLICY, now=NOW)
        order = service.act(session, case, "grant_extension", actor="老李",
                            role="shift_chief", amount=2, policy=POLICY, now=NOW)
        assert (order.state, order.version) == ("handling", 5)
        [handle] = [d for d in deadlines.open_deadlines(session, order.id)
                    if d.step == "handle"]
        assert (handle.amount, handle.extensions) == (6, 1)  # 4 working hours + 2
