"""The case workflow: every transition allowed and forbidden, random sequences by random
roles, two concurrent moves on one order, and hostile input; on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import sqlite3
import threading
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from hotline.db import is_busy, make_engine, session_factory, transaction, upgrade
from tickets import catalogue, deadlines, service, workflow
from tickets.models import WorkOrder, WorkOrderEvent
from tickets.workflow import ACTIONS, ROLES, STATES, WorkflowError


@pytest.mark.parametrize("state", STATES)
def test_every_action_from_every_state_by_every_role(state: str) -> None:
    for action in ACTIONS.values():
        for role in ROLES:
            if state in action.sources and role in action.roles:
                assert workflow.apply(state, action.name, role) == (action.target or state)
            else:
                with pytest.raises(WorkflowError) as caught:
                    workflow.apply(state, action.name, role)
                reason = str(caught.value)
                assert action.name in reason and ("not" in reason or "only from" in reason)


def test_final_states_allow_nothing_and_every_state_is_reachable() -> None:
    for state in workflow.FINAL:
        assert all(workflow.allowed(state, role) == [] for role in ROLES)
    reached, frontier = {"intake"}, ["intake"]
    while frontier:
        state = frontier.pop()
        for role in ROLES:
            for name in workflow.allowed(state, role):
                nxt = workflow.apply(state, name, role)
                if nxt not in reached:
                    reached.add(nxt)
                    frontier.append(nxt)
    assert reached == set(STATES)


@pytest.fixture
def sessions(database_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(database_url)
    upgrade(engine)
    return session_factory(engine)


NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # 10:00 on a Tuesday in Shanghai


def _open(sessions, **overrides) -> str:  # type: ignore[no-untyped-def]
    fields = {"appeal_type": "complaint", "description": "人民路口暴露垃圾，三天没人清理",
              "channel": "phone", "actor": "受理员小王", "citizen_phone": "+86 138 0013 8000",
              "now": NOW}
    with transaction(sessions) as session:
        return service.open_order(session, **{**fields, **overrides}).case_number


HAPPY_PATH = [("open", workflow.SHIFT_CHIEF), ("dispatch", workflow.DISPATCHER),
              ("sign", workflow.DEPARTMENT), ("feedback", workflow.DEPARTMENT),
              ("request_check", workflow.DISPATCHER), ("rework", workflow.SUPERVISOR),
              ("feedback", workflow.DEPARTMENT), ("request_check", workflow.DISPATCHER),
              ("check_passed", workflow.SUPERVISOR), ("close", workflow.SHIFT_CHIEF),
              ("evaluate", workflow.OPERATOR)]


def test_a_case_runs_the_whole_loop_with_its_history(sessions) -> None:  # type: ignore[no-untyped-def]
    number = _open(sessions)
    assert number == "202611240001"  # 10:00 in Shanghai, the first of the day
    assert _open(sessions) == "202611240002"
    for action, role in HAPPY_PATH:
        with transaction(sessions) as session:
            service.transition(session, number, action, actor=f"{role}-1", role=role, now=NOW)
    with sessions() as session:
        order = session.scalar(select(WorkOrder).where(WorkOrder.case_number == number))
        steps = service.history(session, number)
    assert order.state == "evaluated" and order.rework_count == 1
    assert order.version == len(HAPPY_PATH) + 1
    assert order.citizen_phone == "+8613800138000"  # "+86 138 0013 8000", stored in E.164
    assert [s.action for s in steps] == ["create"] + [a for a, _ in HAPPY_PATH]
    assert all(s.to_state == t.from_state for s, t in itertools.pairwise(steps))


def test_a_consultation_answered_on_the_call_closes_at_once(sessions) -> None:  # type: ignore[no-untyped-def]
    number = _open(sessions, appeal_type="enquiry")
    with transaction(sessions) as session:
        order = service.transition(session, number, "resolve_on_call", actor="小王",
                                   role=workflow.OPERATOR, now=NOW)
    assert order.state == "closed" and order.first_call_resolved


def test_a_forbidden_move_is_refused_and_writes_nothing(sessions) -> None:  # type: ignore[no-untyped-def]
    number = _open(sessions)
    with pytest.raises(WorkflowError, match="dispatch"), transaction(sessions) as session:
        service.transition(session, number, "dispatch", actor="x", role=workflow.DISPATCHER,
                           now=NOW)
    with pytest.raises(WorkflowError, match="not 'operator'"), \
            transaction(sessions) as session:
        service.transition(session, number, "open", actor="x", role=workflow.OPERATOR, now=NOW)
    with sessions() as session:
        assert [s.action for s in service.history(session, number)] == ["create"]


def test_two_concurrent_moves_cannot_both_win(sessions) -> None:  # type: ignore[no-untyped-def]
    """Two desks decided on the same version of the order and act at the same moment:
    exactly one move is taken, the other is told the order changed; many rounds. (Each
    write transaction takes SQLite's write lock at BEGIN, so the loser does not fail
    halfway on SQLite; it finds the order moved.)"""
    for _ in range(10):
        number = _open(sessions)
        with sessions() as session:  # what both desks show
            seen = service.get_order(session, number).version
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def move(action: str, number: str = number, seen: int = seen,
                 barrier: threading.Barrier = barrier, outcomes: list[str] = outcomes) -> None:
            try:
                barrier.wait(5)
                with transaction(sessions) as session:
                    service.transition(session, number, action, actor=action,
                                       role=workflow.SHIFT_CHIEF, expected_version=seen,
                                       now=NOW)
                outcomes.append(action)
            except service.ConcurrentChange:
                outcomes.append("lost")
            except BaseException as exc:  # reported below, not lost in the thread
                outcomes.append(repr(exc))

        threads = [threading.Thread(target=move, args=(a,)) for a in ("open", "void")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(outcomes) in (["lost", "open"], ["lost", "void"]), outcomes
        with sessions() as session:
            steps = service.history(session, number)
            order = session.scalar(select(WorkOrder).where(WorkOrder.case_number == number))
        assert len(steps) == 2 and order.version == 2
        assert order.state == {"open": "opened", "void": "voided"}[steps[1].action]


def test_cross_merges_at_once_leave_exactly_one_report_alive(sessions) -> None:  # type: ignore[no-untyped-def]
    """A into B and B into A at the same moment, many rounds: exactly one merge is taken,
    the other is refused, and the surviving order is open and points nowhere."""
    for _ in range(10):
        first, second = _open(sessions), _open(sessions)
        barrier = threading.Barrier(2)
        outcomes: dict[str, str] = {}

        def merge(source: str, target: str, barrier: threading.Barrier = barrier,
                  outcomes: dict[str, str] = outcomes) -> None:
            try:
                barrier.wait(5)
                with transaction(sessions) as session:
                    service.merge(session, source, target, actor="值班长",
                                  role=workflow.SHIFT_CHIEF, now=NOW)
                outcomes[source] = "merged"
            except WorkflowError as exc:
                outcomes[source] = "refused" if "not open" in str(exc) else repr(exc)
            except BaseException as exc:  # reported below, not lost in the thread
                outcomes[source] = repr(exc)

        threads = [threading.Thread(target=merge, args=pair)
                   for pair in ((first, second), (second, first))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(outcomes.values()) == ["merged", "refused"], outcomes
        merged = next(n for n, o in outcomes.items() if o == "merged")
        alive = first if merged == second else second
        with sessions() as session:
            gone, kept = service.get_order(session, merged), service.get_order(session, alive)
            assert (gone.state, gone.merged_into) == ("merged", alive)
            assert (kept.state, kept.merged_into, kept.version) == ("intake", "", 1)
            assert [e.action for e in service.history(session, alive)] == ["create"]


def test_a_merge_chain_never_closes_into_a_cycle(sessions) -> None:  # type: ignore[no-untyped-def]
    a, b, c = _open(sessions), _open(sessions), _open(sessions)

    def merge(source: str, target: str) -> None:
        with transaction(sessions) as session:
            service.merge(session, source, target, actor="值班长", role=workflow.SHIFT_CHIEF,
                          now=NOW)

    merge(a, b)
    merge(b, c)  # a -> b -> c
    for source, target in ((c, a), (c, b)):
        with pytest.raises(WorkflowError, match=f"{target} is merged, not open"):
            merge(source, target)
    with pytest.raises(service.OrderNotFound, match="209912319999"):
        merge(c, "209912319999")
    with sessions() as session:
        assert [(o.case_number, o.state, o.merged_into) for o in session.scalars(
            select(WorkOrder).order_by(WorkOrder.id))] == [
            (a, "merged", b), (b, "merged", c), (c, "intake", "")]


def test_a_locked_database_is_busy_not_a_change_by_someone_else(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SQLite's "database is locked" says nothing about the order: it reaches the caller as
    storage busy (the web layer's 503, try again), never as ConcurrentChange (409, reload
    and decide again)."""
    path = tmp_path / "h.db"
    engine = make_engine(f"sqlite:///{path}", lock_wait_s=0.1)
    upgrade(engine)
    sessions = session_factory(engine)
    number = _open(sessions)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(OperationalError) as caught, sessions() as session:
            service.transition(session, number, "open", actor="x", role=workflow.SHIFT_CHIEF,
                               now=NOW)  # a plain session: the lock is met at the UPDATE
        assert is_busy(caught.value)
        with pytest.raises(OperationalError) as caught, transaction(sessions) as session:
            service.transition(session, number, "open", actor="x", role=workflow.SHIFT_CHIEF,
                               now=NOW)  # a write transaction: met at BEGIN
        assert is_busy(caught.value)
    finally:
        holder.rollback()
        holder.close()
    with sessions() as session:
        assert service.get_order(session, number).version == 1


@pytest.mark.parametrize(("fields", "names"), [
    ({"description": "字" * 4001}, "description"),
    ({"description": "  \x00\x07 "}, "description"),
    ({"appeal_type": "rant"}, "appeal_type"),
    ({"citizen_phone": "call me"}, "citizen_phone"),
    ({"channel": "pigeon"}, "channel"),
    ({"category_code": "<script>"}, "category_code"),
    ({"citizen_name": "名" * 51}, "citizen_name"),
])
def test_hostile_input_is_refused_and_nothing_is_written(sessions, fields: dict,  # type: ignore[no-untyped-def]
                                                         names: str) -> None:
    with pytest.raises(service.OrderError, match=names):
        _open(sessions, **fields)
    with sessions() as session:
        assert session.scalar(select(WorkOrder.id)) is None
        assert session.scalar(select(WorkOrderEvent.id)) is None


def test_markup_and_control_characters_are_kept_as_text(sessions) -> None:  # type: ignore[no-untyped-def]
    number = _open(sessions, description="<b>垃圾</b>\x1b[31m\n第二行")
    with sessions() as session:
        order = session.scalar(select(WorkOrder).where(WorkOrder.case_number == number))
    assert order.description == "<b>垃圾</b>[31m\n第二行"


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(sorted(ACTIONS)), st.sampled_from(ROLES),
                          st.integers(min_value=0, max_value=3000)), max_size=25))
def test_random_moves_by_random_roles_keep_the_invariants(tmp_path_factory, steps) -> None:  # type: ignore[no-untyped-def]
    """One state at a time, no event lost or invented, at most one running clock per step,
    none once the order is finished, and a due time never moves earlier."""
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('wf') / 'h.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        catalogue.seed(session)  # real time limits: 0102 is handled in 4 working hours
    now = datetime(2026, 9, 30, 6, 0, tzinfo=UTC)  # the eve of the National Day holiday
    number = _open(sessions, category_code="0102", now=now)
    expected_state, moves = "intake", 0
    due_seen: dict[tuple[str, int], datetime] = {}
    for action, role, minutes in steps:
        now += timedelta(minutes=minutes)
        try:
            with transaction(sessions) as session:
                if action == "grant_extension":
                    order = service.grant_extension(session, number, 1, actor="t", role=role,
                                                    now=now)
                else:
                    order = service.transition(session, number, action, actor="t",
                                               role=role, now=now)
        except WorkflowError:
            with pytest.raises(WorkflowError):
                workflow.apply(expected_state, action, role)
            continue
        expected_state = workflow.apply(expected_state, action, role)
        moves += 1
        assert order.state == expected_state and order.version == moves + 1
        with sessions() as session:
            clocks = deadlines.deadlines(session, number)
        running = [c.step for c in clocks if c.met_at is None]
        assert len(running) == len(set(running))  # one running round per step
        if expected_state in ("closed", "evaluated", *workflow.FINAL):
            assert running == []
        for clock in clocks:
            key = (clock.step, clock.round)
            assert clock.due_at >= due_seen.get(key, clock.due_at)  # deadlines monotone
            due_seen[key] = clock.due_at
            assert clock.started_at <= clock.yellow_at <= clock.due_at
    with sessions() as session:
        steps_done = service.history(session, number)
    assert len(steps_done) == moves + 1  # no event lost, none invented
    assert [s.seq for s in steps_done] == list(range(1, moves + 2))
    assert steps_done[-1].to_state == expected_state
    ats = [s.at for s in steps_done]
    assert ats == sorted(ats)
