"""The order rollups (tickets.rollups) against the raw computation (reports.kpis, raw=True):
every figure of order_measures, the hotline report's order part and the CJ/T 292
evaluation, on orders moved through the service across National Day 2026 (Oct 1-7 off),
with a failed check (返工), a reopened order (不满意重办), a merged order (并单), a void, a
return and re-dispatch to another department, overdue rounds and orders on both sides of a
Beijing midnight; on SQLite and PostgreSQL. Then the rollups are damaged and `hotline
reports rebuild` makes them equal again, and a process moving orders is killed (-9) midway.

Times are Beijing time (BJT, UTC+8): local midnight Sep 30 -> Oct 1 is 2026-09-30 16:00Z.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.clock import FixedClock
from core.db import UtcDateTime, make_engine, session_factory, transaction, upgrade
from core.events import EventBus
from core.live import connect_redis
from hotline.cli import cli
from reports import kpis
from tests.conftest import REDIS_SERVER_URL, make_settings
from tickets import geo, queues, rollups, service, surveys
from tickets.models import (
    Category,
    Department,
    OrderRollup,
    OrderRollupPending,
    TimeLimit,
    WorkOrder,
)
from tickets.worker import TicketsWorker

SH = ZoneInfo("Asia/Shanghai")
ROOT = Path(__file__).resolve().parent.parent


def bj(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=SH)


def _square(code: str, lon: float) -> dict[str, Any]:
    ring = [[lon, 45.0], [lon + 0.01, 45.0], [lon + 0.01, 45.01], [lon, 45.01], [lon, 45.0]]
    return {"type": "Feature", "properties": {"code": code, "name": code},
            "geometry": {"type": "Polygon", "coordinates": [ring]}}


# two grids of two streets of one county, a third in another county
GRIDS = {"23010200100101": 126.60, "23010200200101": 126.62, "23010300100101": 126.64}
LIMITS = [("verify", 1, "working_hours"), ("open", 1, "working_hours"),
          ("dispatch", 1, "working_hours"), ("check", 1, "working_hours"),
          ("handle", 1, "working_days"), ("complete", 3, "working_days")]


def _seed(session: Session) -> None:
    session.add(Category(code="0102", kind="event", name="暴露垃圾", active=True))
    for code in ("D1", "D2"):
        session.add(Department(code=code, name=code, active=True))
    for step, amount, clock in LIMITS:
        session.add(TimeLimit(step=step, amount=amount, clock=clock))
    geo.load_grids(session, {"type": "FeatureCollection",
                             "features": [_square(c, lon) for c, lon in GRIDS.items()]})


ROLES = {"request_verification": "operator", "resolve_on_call": "operator",
         "verified": "supervisor", "check_passed": "supervisor", "rework": "supervisor",
         "open": "shift_chief", "close": "shift_chief", "void": "shift_chief",
         "merge": "shift_chief", "dispatch": "dispatcher", "request_check": "dispatcher",
         "sign": "department", "feedback": "department", "return": "department",
         "evaluate": "operator"}
ACTORS = {"operator": "受理员甲", "supervisor": "监督员乙", "shift_chief": "值班长丙",
          "dispatcher": "派遣员丁", "department": "部门戊"}


class World:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def open(self, at: datetime, grid: str = "", **fields: Any) -> str:
        values = {"appeal_type": "complaint", "description": "人民路口暴露垃圾",
                  "channel": "phone", "actor": ACTORS["operator"],
                  "citizen_phone": "13800138000", "category_code": "0102", **fields}
        if grid:
            values.update(latitude=45.005, longitude=GRIDS[grid] + 0.005)
        if values["channel"] == "field":
            values["actor"] = ACTORS["supervisor"]
        with transaction(self.sessions) as session:
            return service.open_order(session, now=at.astimezone(UTC), **values).case_number

    def move(self, number: str, *steps: tuple[datetime, str] | tuple[datetime, str, str]
             ) -> None:
        for at, action, *extra in steps:
            role = ROLES[action]
            with transaction(self.sessions) as session:
                now = at.astimezone(UTC)
                if action == "dispatch" and extra:
                    queues.dispatch_to(session, number, extra[0], actor=ACTORS[role],
                                       role=role, now=now)
                elif action == "merge":
                    service.merge(session, number, extra[0], actor=ACTORS[role], role=role,
                                  now=now)
                else:
                    service.transition(session, number, action, actor=ACTORS[role],
                                       role=role, now=now)

    def rate(self, number: str, rating: int, at: datetime) -> str:
        with transaction(self.sessions) as session:
            return surveys.rate_online(session, number, rating, channel="portal",
                                       actor="citizen", policy=service.DEFAULT_POLICY,
                                       now=at.astimezone(UTC))


LOOP = ("open", "dispatch", "sign", "feedback", "request_check", "check_passed", "close")


def _build(world: World) -> dict[str, str]:
    w, n = world, {}
    # O1: the full loop with a failed check before the holiday, closed after it, rated 5
    # (very dissatisfied) -> reopened, handled and closed again.
    n["O1"] = w.open(bj(9, 30, 9), grid="23010200100101")
    # O4: a supervisor's field report of the same spot, merged into O1
    n["O4"] = w.open(bj(9, 30, 10, 15), grid="23010200100101", channel="field",
                     citizen_phone="")
    w.move(n["O4"], (bj(9, 30, 10, 20), "merge", n["O1"]))
    w.move(n["O1"], (bj(9, 30, 9, 5), "request_verification"), (bj(9, 30, 9, 40), "verified"),
           (bj(9, 30, 10), "open"), (bj(9, 30, 10, 10), "dispatch", "D1"),
           (bj(9, 30, 10, 30), "sign"), (bj(9, 30, 15), "feedback"),
           (bj(9, 30, 15, 5), "request_check"), (bj(9, 30, 15, 30), "rework"),
           (bj(10, 8, 10), "feedback"), (bj(10, 8, 10, 5), "request_check"),
           (bj(10, 8, 10, 30), "check_passed"), (bj(10, 8, 11), "close"))
    assert w.rate(n["O1"], 5, bj(10, 8, 12)) == "reopened"
    w.move(n["O1"], (bj(10, 9, 9), "feedback"), (bj(10, 9, 9, 5), "request_check"),
           (bj(10, 9, 9, 20), "check_passed"), (bj(10, 9, 9, 30), "close"))
    assert w.rate(n["O1"], 2, bj(10, 9, 10)) == "satisfied"
    # O2 / O3: enquiries answered on the call ten minutes before and after local midnight
    # (both on Sep 30 in UTC)
    n["O2"] = w.open(bj(9, 30, 23, 50), appeal_type="enquiry")
    w.move(n["O2"], (bj(9, 30, 23, 52), "resolve_on_call"))
    n["O3"] = w.open(bj(10, 1, 0, 10), appeal_type="enquiry")
    w.move(n["O3"], (bj(10, 1, 0, 12), "resolve_on_call"))
    # O5: web report, opened, sent to D2, returned, sent to D1, returned again, voided
    n["O5"] = w.open(bj(9, 30, 11), grid="23010200200101", channel="web")
    w.move(n["O5"], (bj(9, 30, 11, 30), "open"), (bj(9, 30, 11, 40), "dispatch", "D2"),
           (bj(9, 30, 13, 45), "return"), (bj(9, 30, 14), "dispatch", "D1"),
           (bj(9, 30, 14, 5), "return"), (bj(9, 30, 14, 10), "void"))
    # O6: signed the evening before the holiday and never handled: overdue at its due
    n["O6"] = w.open(bj(9, 30, 16), grid="23010300100101")
    w.move(n["O6"], *((bj(9, 30, 16, 10 + i), a, *(["D2"] if a == "dispatch" else []))
                      for i, a in enumerate(LOOP[:3])))
    # O7: handled late (after its one working day), closed after the holiday
    n["O7"] = w.open(bj(9, 29, 14), grid="23010200200101")
    w.move(n["O7"], (bj(9, 29, 14, 30), "open"), (bj(9, 29, 15), "dispatch", "D2"),
           (bj(9, 29, 15, 30), "sign"), (bj(10, 8, 16), "feedback"),
           (bj(10, 8, 16, 5), "request_check"), (bj(10, 8, 16, 30), "check_passed"),
           (bj(10, 8, 17), "close"))
    return n


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    upgrade(engine)
    factory = session_factory(engine)
    with transaction(factory) as session:
        _seed(session)
    yield factory
    engine.dispose()


NOW = bj(10, 20)
# windows: each local day, the two months by day, and a window cut by `now` mid-hour
WINDOWS = [(bj(9, 29), bj(10, 11), "day", NOW), (bj(9, 1), bj(11, 1), "month", NOW),
           (bj(9, 29), bj(10, 11), "day", bj(10, 8, 15, 40)),
           (bj(9, 30), bj(10, 1), None, bj(9, 30, 18, 20)),
           (bj(10, 1), bj(10, 9), "week", bj(10, 8, 10, 31))]


UTC_MONTHS = (datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
# windows whose days are not Beijing days: read as Beijing days and months where those lie
# whole inside them, hours at the ends (Sep 29 05:00 BJT to Oct 11 05:00: 11 days and the
# 5 + 19 hours around them)
OTHER_ZONES = [(*UTC_MONTHS, "month", "UTC"), (*UTC_MONTHS, "day", "UTC"),
               (bj(9, 29, 5), bj(10, 11, 5), None, "Asia/Shanghai")]


def _figures(session: Session, raw: bool) -> list[Any]:
    out = []
    for start, end, bucket, now in WINDOWS:
        report = kpis.hotline_report(session, start, end, bucket=bucket, now=now, raw=raw)
        out.append([report.total.orders.as_dict()]
                   + [b.orders.as_dict() for b in report.buckets])
        out.append(kpis.evaluate(session, start, end, now=now, raw=raw).as_dict())
    for start, end, bucket, zone in OTHER_ZONES:
        report = kpis.hotline_report(session, start, end, bucket=bucket, timezone=zone,
                                     now=NOW, raw=raw)
        out.append([report.total.orders.as_dict()]
                   + [b.orders.as_dict() for b in report.buckets])
        out.append(kpis.evaluate(session, start, end, now=NOW, raw=raw).as_dict())
    start, end, _bucket, now = WINDOWS[0]  # and each day's evaluation
    for day in kpis.buckets(start, end, "day"):
        out.append(kpis.evaluate(session, day.start, day.end, now=now, raw=raw).as_dict())
    return out


def _equal(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        rolled, raw = _figures(session, False), _figures(session, True)
    assert rolled == raw


def test_rollups_equal_the_raw_figures_and_are_rebuilt(sessions, database_url: str,
                                                       tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    n = _build(World(sessions))
    with sessions() as session:
        day = kpis.order_measures(session, bj(9, 30), bj(10, 1), now=NOW)
        oct1 = kpis.order_measures(session, bj(10, 1), bj(10, 2), now=NOW)
        oct8 = kpis.order_measures(session, bj(10, 8), bj(10, 9), now=NOW)
        depts = {r.who: r.figures for r in
                 kpis.evaluate_departments(session, bj(9, 29), bj(10, 11), now=NOW)}
        staff = kpis.evaluate_staff(session, bj(9, 30), bj(10, 1))
        merged = session.scalar(select(WorkOrder.state).where(
            WorkOrder.case_number == n["O4"]))
    assert merged == "merged"
    # Worked by hand. Sep 30 (BJT): O1, O2, O4, O5, O6 created (O3 is Oct 1 although both
    # are Sep 30 in UTC); O4 merged and O5 voided; phone: O1, O2, O6, of them O2 resolved.
    assert day.orders_created == 5 and oct1.orders_created == 1
    assert day.by_state == {"closed": 1, "evaluated": 1, "handling": 1, "merged": 1,
                            "voided": 1}
    assert (day.phone_orders, day.phone_resolved_on_call) == (3, 1)
    assert (oct1.phone_orders, oct1.phone_resolved_on_call) == (1, 1)
    assert day.rework_count == 1 and oct8.rework_count == 1  # 返工 Sep 30, 不满意重办 Oct 8
    # A closure is dated by the order's last one: O1 closed Oct 8, reopened, closed Oct 9.
    # Oct 8: O7 closed, its callback due (phone given, not first-call), never reached.
    assert (oct8.orders_closed, oct8.callbacks_due, oct8.callbacks_reached) == (1, 1, 0)
    assert (oct8.rated, oct8.satisfied, oct8.ratings[5]) == (1, 0, 1)
    # Departments answer for the orders now theirs: O1 (D1; O5, first sent to D2, now D1 but
    # voided), O6 and O7 (D2). D1 opened O1 and O5; D2 opened O6 and O7.
    assert depts["D1"]["opened"] == 2 and depts["D2"]["opened"] == 2
    # D2: O7's round handled late; O6's round unhandled and overdue by Oct 11
    assert (depts["D2"]["handled"], depts["D2"]["on_time"],
            depts["D2"]["overdue_unhandled"]) == (1, 0, 1)
    # D1: O1's three rounds handled (Sep 30 on time, Oct 8 and Oct 9), closed on the last
    assert (depts["D1"]["handled"], depts["D1"]["closed"], depts["D1"]["reworks"]) == (3, 1, 2)
    dispatcher = {r.who: r.figures for r in staff["dispatcher"]}["派遣员丁"]
    # Sep 30: O1, O5 twice (both returned), O6
    assert (dispatcher["dispatched"], dispatcher["returned"]) == (4, 2)

    _equal(sessions)

    # damage: a figure counted twice, one lost, one invented; then the CLI rebuilds
    with transaction(sessions) as session:
        session.execute(update(OrderRollup).where(OrderRollup.figure == "created")
                        .values(n=OrderRollup.n * 2))
        session.execute(update(OrderRollup).where(OrderRollup.figure == "late").values(n=0))
        session.add(OrderRollup(figure="act", hour=bj(9, 30, 10).astimezone(UTC), k1="x",
                                k2="ghost", k3="open", k4="phone", n=3))
    with pytest.raises(AssertionError):
        _equal(sessions)
    config = tmp_path / "hotline.toml"
    config.write_text(f'[storage]\ndatabase_url = "{database_url}"\n'
                      f'data_dir = "{tmp_path}"\n', encoding="utf-8")
    # a rebuild's rows go by COPY on PostgreSQL from COPY_FROM rows, and its orders in
    # batches: this world is smaller than either
    monkeypatch.setattr(rollups, "COPY_FROM", 2)
    monkeypatch.setattr(rollups, "BATCH", 2)
    runner = CliRunner()
    result = runner.invoke(cli, ["--config", str(config), "reports", "rebuild",
                                 "--from", "2026-09-30", "--to", "2026-10-02"])
    assert result.exit_code == 0, result.output
    with pytest.raises(AssertionError):  # the damage outside those days is still there
        _equal(sessions)
    result = runner.invoke(cli, ["--config", str(config), "reports", "rebuild"])
    assert result.exit_code == 0, result.output
    assert "7 orders recomputed" in result.output
    _equal(sessions)

    # damage starting within Sep 30 - Oct 1 in rows of every grain (October's month row
    # among them): a rebuild of those days mends all, the day and month rows summed again
    r = OrderRollup
    with transaction(sessions) as session:
        session.execute(update(r).where(r.figure == "created", r.hour >= bj(9, 30),
                                        r.hour < bj(10, 2)).values(n=r.n * 2))
        session.add(OrderRollup(figure="act", grain="d", hour=bj(10, 1).astimezone(UTC),
                                k1="x", k2="ghost", k3="open", k4="phone", n=3))
    with pytest.raises(AssertionError):
        _equal(sessions)
    result = runner.invoke(cli, ["--config", str(config), "reports", "rebuild",
                                 "--from", "2026-09-30", "--to", "2026-10-02"])
    assert result.exit_code == 0, result.output
    _equal(sessions)

    # one bound alone leaves the other end open: --from Oct 2 mends what lies after and
    # leaves Sep 30 - Oct 1 alone (not the whole history); --to Oct 2 mends the rest
    with transaction(sessions) as session:
        session.execute(update(r).where(r.figure.in_(("created", "act")), r.grain == "h")
                        .values(n=r.n * 2))
    result = runner.invoke(cli, ["--config", str(config), "reports", "rebuild",
                                 "--from", "2026-10-02"])
    assert result.exit_code == 0, result.output
    with pytest.raises(AssertionError):
        _equal(sessions)
    result = runner.invoke(cli, ["--config", str(config), "reports", "rebuild",
                                 "--to", "2026-10-02"])
    assert result.exit_code == 0, result.output
    _equal(sessions)


MOVER = """
import sys
from datetime import UTC, datetime, timedelta
from core.db import make_engine, session_factory, transaction
from tickets import service
sessions = session_factory(make_engine(sys.argv[1]))
t = datetime(2026, 9, 30, 1, tzinfo=UTC)
for i in range(10000):
    t += timedelta(minutes=7)
    with transaction(sessions) as session:
        number = service.open_order(session, appeal_type="complaint", description="x",
            channel="phone", actor="op", citizen_phone="13800138000", category_code="0102",
            now=t).case_number
    for action, role in (("open", "shift_chief"), ("void", "shift_chief")):
        t += timedelta(minutes=3)
        with transaction(sessions) as session:
            service.transition(session, number, action, actor="c", role=role, now=t)
    print(i, flush=True)
"""


def test_rollups_survive_a_kill_between_moves(sessions, database_url: str) -> None:  # type: ignore[no-untyped-def]
    mover = subprocess.Popen([sys.executable, "-c", MOVER, database_url], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert mover.stdout is not None
        for _ in range(6):  # some orders stored whole, then killed in the middle of others
            assert mover.stdout.readline(), "the mover stopped by itself"
        time.sleep(0.35)
    finally:
        os.kill(mover.pid, signal.SIGKILL)
        mover.wait()
    assert mover.returncode == -signal.SIGKILL
    with sessions() as session:
        stored = session.scalar(select(WorkOrder.id).order_by(WorkOrder.id.desc()).limit(1))
        window = (bj(9, 30), bj(10, 2))
        rolled = kpis.order_measures(session, *window, now=NOW)
        raw = kpis.order_measures(session, *window, now=NOW, raw=True)
        staff = kpis.evaluate(session, *window, now=NOW).as_dict()
        staff_raw = kpis.evaluate(session, *window, now=NOW, raw=True).as_dict()
    assert stored is not None and stored >= 6
    assert rolled.orders_created >= 6
    assert rolled == raw and staff == staff_raw


def test_a_move_during_a_fold_is_folded_by_the_next(sessions, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A move of an order that a fold (the worker's, a report's) is folding commits after
    that fold, and its order stays marked: the fold read the order before the move, so the
    next fold brings the move in; nothing is lost. On SQLite the move waits for the fold's
    write lock; on PostgreSQL for the mark the fold is taking away."""
    world = World(sessions)
    number = world.open(bj(9, 30, 9), grid="23010200100101")
    world.move(number, (bj(9, 30, 9, 10), "open"))
    with sessions() as session:
        order_id = session.scalar(select(WorkOrder.id).where(WorkOrder.case_number == number))
    moved, waited, movers = threading.Event(), [], []
    parts_of = rollups._parts_of

    def dispatch() -> None:
        world.move(number, (bj(9, 30, 9, 20), "dispatch", "D1"))
        moved.set()

    def folding(session: Session, ids: Any) -> Any:
        if not movers:  # the fold has taken the mark: the order moves now, from a thread
            movers.append(threading.Thread(target=dispatch))
            movers[0].start()
            waited.append(not moved.wait(1.0))
        return parts_of(session, ids)
    monkeypatch.setattr(rollups, "_parts_of", folding)
    with sessions() as session:
        assert rollups.settle(session) == 1
    movers[0].join(30)
    assert moved.is_set() and waited == [True], "the move did not wait for the fold"
    monkeypatch.setattr(rollups, "_parts_of", parts_of)
    with sessions() as session:
        assert list(session.scalars(select(OrderRollupPending.order_id))) == [order_id]
    window = (bj(9, 30), bj(10, 2))
    with sessions() as session:
        dispatched = {r.who: r.figures for r in kpis.evaluate_staff(session, *window)[
            "dispatcher"]}[ACTORS["dispatcher"]]["dispatched"]
        rolled = kpis.evaluate(session, *window, now=NOW).as_dict()
        raw = kpis.evaluate(session, *window, now=NOW, raw=True).as_dict()
        assert session.scalar(select(OrderRollupPending.order_id)) is None
    assert dispatched == 1 and rolled == raw


def test_the_worker_folds_the_changed_orders(sessions, database_url: str,
                                            tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The tickets worker's tick folds the orders changed since the last one; a report
    then finds nothing left to fold."""
    world = World(sessions)
    for i in range(3):
        world.open(bj(9, 30, 9, i), grid="23010200100101")
    settings = make_settings(tmp_path, DATABASE_URL=database_url, REDIS_URL=REDIS_SERVER_URL)
    client = connect_redis(settings)
    bus = EventBus(client, stream=f"test:events:{uuid.uuid4().hex}")  # a shared server
    worker = TicketsWorker(settings, sessions, bus, FixedClock(NOW))

    async def one_tick() -> None:
        stop = asyncio.Event()
        ticking = asyncio.create_task(worker.run(stop))
        for _ in range(300):
            with sessions() as session:
                if session.scalar(select(OrderRollupPending.order_id)) is None:
                    break
            await asyncio.sleep(0.1)
        stop.set()
        await ticking
    try:
        asyncio.run(one_tick())
    finally:
        for key in client.scan_iter(f"{bus.stream}*"):
            client.delete(key)
    with sessions() as session:
        assert session.scalar(select(OrderRollupPending.order_id)) is None
        assert rollups.settle(session) == 0
        # what the worker folded: the three orders' creations, as the raw count has them
        assert session.scalar(select(sa.func.sum(OrderRollup.n)).where(
            OrderRollup.figure == "created", OrderRollup.grain == "d")) == 3


@pytest.mark.parametrize("copy_from", [1, 1000])
def test_deltas_add_up_however_they_are_sent(sessions, copy_from: int, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A rebuild's batches meet on the same hours: each batch's delta is added to what the
    rows hold, by COPY (PostgreSQL, many rows) or row by row."""
    monkeypatch.setattr(rollups, "COPY_FROM", copy_from)
    hour = bj(9, 30, 10).astimezone(UTC)
    fact = ("act", hour, "operator", "op1", "create", "phone")
    other = ("act", hour, "operator", "op2", "create", "phone")
    with transaction(sessions) as session:
        rollups._apply(session, {fact: 3, other: 1})
        rollups._apply(session, {fact: 4, other: -1})
    with sessions() as session:
        rows = {(r.grain, r.hour, r.k2, r.n) for r in session.scalars(select(OrderRollup))}
    # Sep 30 10:00 BJT is 02:00Z; its Beijing day began Sep 29 16:00Z, its month Aug 31 16:00Z
    day, month = datetime(2026, 9, 29, 16, tzinfo=UTC), datetime(2026, 8, 31, 16, tzinfo=UTC)
    assert rows == {(grain, at, who, n) for grain, at in (("h", hour), ("d", day),
                                                          ("m", month))
                    for who, n in (("op1", 7), ("op2", 0))}


def test_a_window_is_read_as_its_whole_months_days_and_hours() -> None:
    """tickets.rollups.covering, worked by hand (UTC+8 days start at 16:00Z)."""
    def z(month: int, day: int, hour: int = 0, year: int = 2026) -> datetime:
        return datetime(year, month, day, hour, tzinfo=UTC)
    # a Beijing year: its twelve months
    assert rollups.covering(bj(1, 1), datetime(2027, 1, 1, tzinfo=SH)) == [
        ("m", z(12, 31, 16, 2025), z(12, 31, 16))]
    # a UTC month (October): 16 hours, the Beijing days Oct 1 .. Oct 31 BJT
    # (Sep 30 16:00Z .. Oct 30 16:00Z: October BJT lacks its last 8 hours), 8 hours
    assert rollups.covering(z(10, 1), z(11, 1)) == [
        ("h", z(10, 1), z(10, 1, 16)), ("d", z(10, 1, 16), z(10, 31, 16)),
        ("h", z(10, 31, 16), z(11, 1))]
    # Sep 15 BJT 10:00 to Nov 3 BJT 00:00: hours, Sep 16-30 by day, October, Nov 1-2
    assert rollups.covering(bj(9, 15, 10), bj(11, 3)) == [
        ("h", z(9, 15, 2), z(9, 15, 16)), ("d", z(9, 15, 16), z(9, 30, 16)),
        ("m", z(9, 30, 16), z(10, 31, 16)), ("d", z(10, 31, 16), z(11, 2, 16))]
    # within a day, and across one midnight without a whole day: hours only
    assert rollups.covering(bj(9, 30, 9), bj(9, 30, 17)) == [("h", z(9, 30, 1), z(9, 30, 9))]
    assert rollups.covering(bj(9, 30, 9), bj(10, 1, 8)) == [("h", z(9, 30, 1), z(10, 1))]
    # a report's periods: a month by day is one range of days
    days = [(bj(10, d), bj(10, d + 1)) for d in range(1, 31)] + [(bj(10, 31), bj(11, 1))]
    assert rollups.covering_all(days) == [("d", z(9, 30, 16), z(10, 31, 16))]


def test_the_migration_sums_the_stored_hours_into_days_and_months(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine, "0037")
    table = sa.table("order_rollups", *(sa.column(c) for c in (
        "figure", "k1", "k2", "k3", "k4", "n")), sa.column("hour", UtcDateTime()))
    # Sep 30 23:00 and Oct 1 00:00 BJT (two Beijing days and months, one UTC day), and
    # Oct 1 10:00 BJT: the rows as the service stored them before 0038
    hours = [datetime(2026, 9, 30, 15, tzinfo=UTC), datetime(2026, 9, 30, 16, tzinfo=UTC),
             datetime(2026, 10, 1, 2, tzinfo=UTC)]
    with engine.begin() as conn:
        conn.execute(table.insert(), [
            {"figure": "created", "hour": at, "k1": "closed", "k2": "complaint",
             "k3": "phone", "k4": "0", "n": n} for at, n in zip(hours, (2, 3, 4), strict=True)])
    upgrade(engine)
    sep30, oct1 = datetime(2026, 9, 29, 16, tzinfo=UTC), datetime(2026, 9, 30, 16, tzinfo=UTC)
    september = datetime(2026, 8, 31, 16, tzinfo=UTC)
    with session_factory(engine)() as session:
        rows = {(r.grain, r.hour, r.n) for r in session.scalars(select(OrderRollup))}
        # stored as the service stores a moment (SQLite: the same text), so found by it
        found = set(session.scalars(select(OrderRollup.grain).where(OrderRollup.hour == oct1)))
    engine.dispose()
    assert found == {"h", "d", "m"}
    assert rows == {("h", hours[0], 2), ("h", hours[1], 3), ("h", hours[2], 4),
                    ("d", sep30, 2), ("d", oct1, 7), ("m", september, 2), ("m", oct1, 7)}
