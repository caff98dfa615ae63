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

from core.db import is_busy, make_engine, session_factory, transaction, upgrade
from tickets import catalogue, deadlines, service, workflow
from tickets.models import WorkOrder, WorkOrderEvent
from tickets.workflow import ACTIONS, ROLES, STATES, WorkflowError

# The permission matrix, typed out from the domain (受理员 operator, 监督员 supervisor, 值班长
# shift_chief, 派遣员 dispatcher, 专业部门 department, the hotline itself as system), not read
# from workflow.ACTIONS: a test that derives its answers from the table under test passes
# whatever the table says.
ALL_ROLES = ("operator", "supervisor", "shift_chief", "dispatcher", "department", "system")
ALL_STATES = ("intake", "verifying", "opened", "dispatched", "handling", "reported",
              "checking", "checked", "closed", "evaluated", "parked", "deferred", "voided",
              "merged")
# Every state of a case not yet finished: closed and evaluated are done, voided and merged
# are gone.
STILL_OPEN = ("intake", "verifying", "opened", "dispatched", "handling", "reported",
              "checking", "checked", "parked", "deferred")
STAYS = None  # the action leaves the order where it is

# action: (who may take it, from which states, where it leads)
PERMISSIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str | None]] = {
    "request_verification": (("operator",), ("intake",), "verifying"),
    "verified": (("supervisor",), ("verifying",), "intake"),
    "open": (("shift_chief",), ("intake", "verifying"), "opened"),
    "resolve_on_call": (("operator",), ("intake",), "closed"),
    "dispatch": (("dispatcher",), ("opened",), "dispatched"),
    "sign": (("department",), ("dispatched",), "handling"),
    "return": (("department",), ("dispatched", "handling"), "opened"),
    "request_extension": (("department",), ("handling",), STAYS),
    "request_park": (("department",), ("handling",), STAYS),
    # the department's requests are granted or refused (驳回) by the dispatcher or the shift
    # chief above them
    "grant_extension": (("dispatcher", "shift_chief"), ("handling",), STAYS),
    "refuse_extension": (("dispatcher", "shift_chief"), ("handling",), STAYS),
    "feedback": (("department",), ("handling",), "reported"),
    "request_check": (("dispatcher",), ("reported",), "checking"),
    # a department never passes the check of its own work, nor orders its own rework
    "check_passed": (("supervisor",), ("checking",), "checked"),
    "rework": (("supervisor",), ("checking",), "handling"),
    "close": (("shift_chief",), ("checked",), "closed"),
    "evaluate": (("operator", "system"), ("closed",), "evaluated"),
    "reopen": (("shift_chief", "system"), ("closed", "evaluated"), "handling"),
    "park": (("dispatcher", "shift_chief"), ("handling",), "parked"),
    "refuse_park": (("dispatcher", "shift_chief"), ("handling",), STAYS),
    "unpark": (("shift_chief",), ("parked",), "handling"),
    "defer": (("shift_chief",), ("opened",), "deferred"),
    "resume": (("shift_chief",), ("deferred",), "opened"),
    "void": (("shift_chief",), ("intake", "verifying", "opened"), "voided"),
    "merge": (("shift_chief",), ("intake", "verifying", "opened"), "merged"),
    "supervise": (("shift_chief", "system"), STILL_OPEN, STAYS),
}

# What the table cannot say: these answer a department's request (申请延期, 申请挂账) and, taken
# by these roles, only while that very request is pending. The shift chief may also extend
# or park on their own decision; nobody refuses what was not asked.
ANSWERS_ONLY_TO_A_REQUEST: dict[str, tuple[str, tuple[str, ...]]] = {
    "grant_extension": ("request_extension", ("dispatcher",)),
    "refuse_extension": ("request_extension", ("dispatcher", "shift_chief")),
    "park": ("request_park", ("dispatcher",)),
    "refuse_park": ("request_park", ("dispatcher", "shift_chief")),
}


def _taken(state: str, action: str, role: str) -> str:
    """What apply does: the state it leads to, or the name of the error and its message."""
    try:
        return workflow.apply(state, action, role)
    except WorkflowError as exc:
        return f"{type(exc).__name__}: {exc}"


@pytest.mark.parametrize("action", sorted(PERMISSIONS))
def test_each_action_is_taken_only_by_its_roles_from_its_states(action: str) -> None:
    roles, sources, target = PERMISSIONS[action]
    wrong = []
    for state in ALL_STATES:
        for role in ALL_ROLES:
            got = _taken(state, action, role)
            if role not in roles:  # refused for the role, whatever the state
                expected = "RoleError"
                ok = got.startswith("RoleError: ") and f"not {role!r}" in got
            elif state not in sources:  # the right role, but not from here
                expected = "WorkflowError"
                ok = got.startswith("WorkflowError: ") and "only from" in got
            else:
                expected = state if target is STAYS else target
                ok = got == expected
            if not ok or (expected.endswith("Error") and action not in got):
                wrong.append(f"{role} {action} from {state}: expected {expected}, got {got}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("state", ALL_STATES)
def test_each_role_is_offered_exactly_its_actions(state: str) -> None:
    for role in ALL_ROLES:
        expected = {name for name, (roles, sources, _) in PERMISSIONS.items()
                    if role in roles and state in sources}
        assert set(workflow.allowed(state, role)) == expected, (state, role)


def test_no_action_role_or_state_exists_beyond_the_matrix() -> None:
    assert set(STATES) == set(ALL_STATES) and set(ROLES) == set(ALL_ROLES)
    offered = {name for state in ALL_STATES for role in ALL_ROLES
               for name in workflow.allowed(state, role)}
    assert offered == set(PERMISSIONS)
    assert _taken("intake", "teleport", "shift_chief") == (
        "WorkflowError: workflow: no action 'teleport'")


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


def test_the_dispatcher_answers_only_a_request_pending(sessions) -> None:  # type: ignore[no-untyped-def]
    """The dispatcher grants or refuses (驳回) what the department asked, and only that; the
    shift chief also extends on their own decision; a refusal answers a request, so with
    none pending there is nothing to refuse. A refused answer writes nothing."""
    number = _open(sessions)

    def take(action: str, role: str, **extra: object) -> str:
        try:
            with transaction(sessions) as session:
                return service.act(session, number, action, actor=f"{role}-1", role=role,
                                   now=NOW, **extra).state  # type: ignore[arg-type]
        except WorkflowError as exc:
            return str(exc)

    for action, role, state in (("open", "shift_chief", "opened"),
                                ("dispatch", "dispatcher", "dispatched"),
                                ("sign", "department", "handling")):
        assert take(action, role) == state
    nothing = "answers the department's request_extension (申请延期), and none is pending"
    assert take("refuse_extension", "dispatcher", note="不予延期") == (
        f"workflow: refuse_extension (驳回延期) by the dispatcher {nothing}")
    assert take("refuse_extension", "shift_chief", note="不予延期") == (
        f"workflow: refuse_extension (驳回延期) by the shift_chief {nothing}")
    assert take("park", "dispatcher") == (
        "workflow: park (挂账) by the dispatcher answers the department's request_park "
        "(申请挂账), and none is pending")
    assert take("request_extension", "department", note="需协调吊车") == "handling"
    assert take("refuse_park", "dispatcher", note="x").endswith("and none is pending")
    assert take("park", "dispatcher").endswith("and none is pending")  # extension asked
    assert take("refuse_extension", "dispatcher", note="三天内可完成") == "handling"
    assert take("refuse_extension", "dispatcher", note="again").endswith("none is pending")
    assert take("request_park", "department", note="需等管网改造") == "handling"
    assert take("supervise", "shift_chief") == "handling"  # 督办 leaves the request waiting
    assert take("park", "dispatcher") == "parked"
    with sessions() as session:
        steps = [(s.action, s.role, s.note) for s in service.history(session, number)]
    assert steps[-5:] == [
        ("request_extension", "department", "需协调吊车"),
        ("refuse_extension", "dispatcher", "三天内可完成"),
        ("request_park", "department", "需等管网改造"),
        ("supervise", "shift_chief", ""),
        ("park", "dispatcher", "")]
    assert len(steps) == 1 + 3 + 5  # create, open, dispatch, sign and the 5 above: no
    # refused answer left a trace


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
    expected_state, moves, pending = "intake", 0, ""
    due_seen: dict[tuple[str, int], datetime] = {}
    for action, role, minutes in steps:
        now += timedelta(minutes=minutes)
        asked, answerers = ANSWERS_ONLY_TO_A_REQUEST.get(action, ("", ()))
        unasked = role in answerers and pending != asked
        try:
            with transaction(sessions) as session:
                if action == "grant_extension":
                    order = service.grant_extension(session, number, 1, actor="t", role=role,
                                                    now=now)
                else:
                    order = service.transition(session, number, action, actor="t",
                                               role=role, now=now)
        except WorkflowError:
            if not unasked:
                with pytest.raises(WorkflowError):
                    workflow.apply(expected_state, action, role)
            continue
        assert not unasked, f"{role} took {action} with {pending or 'no request'} pending"
        expected_state = workflow.apply(expected_state, action, role)
        moves += 1
        if action in ("request_extension", "request_park"):
            pending = action
        elif action != "supervise":  # 督办 leaves a request waiting, any other move ends it
            pending = ""
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
