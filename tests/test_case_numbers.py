"""Case numbers (案件编号) YYYYMMDD + the day's count: unique, never refused, never run out.
A storm's 12,000 orders in one local day, 50 clients opening at once, the local day at
midnight, and the migration that starts the day counters from the numbers already given;
on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from core.db import (
    UtcDateTime,
    alembic_config,
    make_engine,
    session_factory,
    transaction,
    upgrade,
)
from tickets import catalogue, exchange, service, workflow
from tickets.models import CaseCounter, InboundUpdate, WorkOrder, WorkOrderEvent

Sessions = sessionmaker[Session]
STORM = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)  # 10:00 on Sunday 29 November in Shanghai


@pytest.fixture
def sessions(database_url: str) -> Sessions:
    engine = make_engine(database_url)
    upgrade(engine)
    return session_factory(engine)


def _open(sessions: Sessions, now: datetime = STORM) -> str:
    with transaction(sessions) as session:
        return service.open_order(session, appeal_type="report", description="水管爆裂，路面积水",
                                  channel="phone", actor="受理员小王", now=now).case_number


def test_a_storm_of_12000_orders_in_one_day_gets_12000_numbers(sessions: Sessions) -> None:
    day = date(2026, 11, 29)
    with transaction(sessions) as session:
        numbers = [service.next_case_number(session, day) for _ in range(9997)]
    assert numbers[0] == "202611290001" and numbers[-1] == "202611299997"
    # Real intakes across the 9,999th: the number grows a digit and stays in order.
    opened = [_open(sessions) for _ in range(4)]
    assert opened == ["202611299998", "202611299999", "2026112910000", "2026112910001"]
    with transaction(sessions) as session:
        numbers += opened + [service.next_case_number(session, day) for _ in range(1999)]
    assert numbers[-1] == "2026112912000"
    assert len(set(numbers)) == 12000
    assert sum(len(n) == 12 for n in numbers) == 9999
    assert sum(len(n) == 13 for n in numbers) == 2001
    with sessions() as session:  # the long numbers are stored whole and found again
        order = service.get_order(session, "2026112910000")
        assert order.state == "intake"
        assert [e.action for e in service.history(session, "2026112910001")] == ["create"]
        assert session.get(CaseCounter, day).last_number == 12000  # type: ignore[union-attr]


def test_the_day_of_a_number_is_the_local_day(sessions: Sessions) -> None:
    assert _open(sessions, datetime(2026, 11, 29, 15, 59, tzinfo=UTC)) == "202611290001"
    # 00:30 on 30 November in Shanghai, still the 29th in UTC: a new day, a new count
    assert _open(sessions, datetime(2026, 11, 29, 16, 30, tzinfo=UTC)) == "202611300001"
    assert _open(sessions, datetime(2026, 11, 29, 15, 0, tzinfo=UTC)) == "202611290002"
    assert _open(sessions, datetime(2026, 11, 30, 9, 0, tzinfo=UTC)) == "202611300002"


def test_a_refused_intake_gives_its_number_back(sessions: Sessions) -> None:
    assert _open(sessions) == "202611290001"
    with pytest.raises(service.OrderError), transaction(sessions) as session:
        service.open_order(session, appeal_type="report", description="水管爆裂",
                           channel="phone", actor="受理员小王", citizen_phone="call me",
                           now=STORM)
    with pytest.raises(RuntimeError), transaction(sessions) as session:
        service.open_order(session, appeal_type="report", description="水管爆裂",
                           channel="phone", actor="受理员小王", now=STORM)
        raise RuntimeError("the desk crashed before committing")
    assert _open(sessions) == "202611290002"


def test_many_clients_opening_at_once_all_get_their_own_number(database_url: str) -> None:
    """50 clients at once on PostgreSQL (each its own connection), 10 on SQLite; each
    opens 3 orders. Every intake succeeds, and the day's numbers run 0001 on without a
    gap."""
    clients = 50 if database_url.startswith("postgresql") else 10
    engine = make_engine(database_url, poolclass=NullPool)
    upgrade(engine)
    sessions = session_factory(engine)
    barrier = threading.Barrier(clients)
    numbers: list[str] = []
    failures: list[BaseException] = []

    def client() -> None:
        try:
            barrier.wait(60)
            for _ in range(3):
                numbers.append(_open(sessions))
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    engine.dispose()
    assert failures == []
    assert len(numbers) == 3 * clients
    expected = {f"20261129{n:04d}" for n in range(1, 3 * clients + 1)}
    assert "202611290001" in expected and "202611290030" in expected
    assert set(numbers) == expected


def _order_row(case_number: str) -> dict[str, Any]:
    return {"case_number": case_number, "appeal_type": "report", "category_code": "",
            "description": "旧工单", "citizen_phone": "", "citizen_name": "",
            "channel": "phone", "call_id": "", "state": "intake", "version": 1,
            "rework_count": 0, "first_call_resolved": False, "created_at": STORM,
            "updated_at": STORM}


def test_the_migration_counts_on_from_the_numbers_already_given(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine, "0009")
    before = ["202611290001", "202611299999", "202611300007"]
    if database_url.startswith("sqlite"):
        # SQLite kept the one 13-digit number the old max()+1 could give before it stuck
        before.append("2026112910000")
    moment = {"created_at", "updated_at", "at"}
    orders = sa.table("work_orders", *(
        sa.column(c, UtcDateTime() if c in moment else None) for c in _order_row("")),
        sa.column("id"))
    events = sa.table("work_order_events", *(
        sa.column(c, UtcDateTime() if c in moment else None) for c in (
            "order_id", "seq", "action", "from_state", "to_state", "actor", "role", "note",
            "at")))
    with engine.begin() as conn:
        conn.execute(orders.insert(), [_order_row(n) for n in before])
        conn.execute(events.insert(), [
            {"order_id": order_id, "seq": 1, "action": "create", "from_state": "",
             "to_state": "intake", "actor": "受理员", "role": "operator", "note": "",
             "at": STORM} for order_id in conn.scalars(select(orders.c.id))])
    upgrade(engine)
    sessions = session_factory(engine)
    on_29th = "2026112910001" if database_url.startswith("sqlite") else "2026112910000"
    assert _open(sessions) == on_29th
    assert _open(sessions, datetime(2026, 11, 30, 2, 0, tzinfo=UTC)) == "202611300008"
    assert _open(sessions, datetime(2026, 12, 1, 2, 0, tzinfo=UTC)) == "202612010001"
    with sessions() as session:  # rebuilding the table on SQLite cascaded to no child row
        assert session.scalar(select(func.count(WorkOrderEvent.id))) == len(before) + 3
        assert sorted(session.scalars(select(WorkOrder.case_number))) == sorted(
            [*before, on_29th, "202611300008", "202612010001"])
    with pytest.raises(RuntimeError, match="more than 12 digits"):
        command.downgrade(alembic_config(engine), "0009")
    with sessions() as session:  # the refused downgrade changed nothing
        assert session.scalar(select(func.count(WorkOrder.id))) == len(before) + 3
        assert session.get(CaseCounter, date(2026, 11, 29)) is not None
    engine.dispose()


def test_a_long_number_is_kept_whole_wherever_a_case_number_goes(sessions: Sessions) -> None:
    """Past the 9,999th of a day: duplicate_of, merged_into, the outbound webhook and the
    platform's signed update all carry the 13-digit number, and the earlier report stays
    the one a repeat points at."""
    secret = "4f6b0c1e9a7d3b5f8e2a6c4d0b9f7e1a"
    with transaction(sessions) as session:
        catalogue.seed(session)
        session.add(CaseCounter(day=date(2026, 11, 29), last_number=9998))
    spot = {"category_code": "0102", "latitude": 45.7504, "longitude": 126.6306}
    numbers = []
    for _ in range(3):
        with transaction(sessions) as session:
            order = service.open_order(session, appeal_type="complaint",
                                       description="暴露垃圾", channel="phone",
                                       actor="受理员小王", now=STORM, **spot)
            numbers.append((order.case_number, order.duplicate_of))
    assert numbers == [("202611299999", ""), ("2026112910000", "202611299999"),
                       ("2026112910001", "202611299999")]
    with transaction(sessions) as session:
        merged = service.merge(session, "2026112910001", "2026112910000", actor="值班长",
                               role=workflow.SHIFT_CHIEF, now=STORM)
        assert merged.merged_into == "2026112910000"
        exchange.enqueue(session, service.get_order(session, "2026112910000"),
                         "work_order.created", {}, "http://127.0.0.1:9/hook", STORM)
        for action, role in (("open", workflow.SHIFT_CHIEF),
                             ("dispatch", workflow.DISPATCHER)):
            service.transition(session, "2026112910000", action, actor=role, role=role,
                               now=STORM)

    def inbound(number: str, key: str) -> tuple[int, dict[str, Any]]:
        body = json.dumps({"case_number": number, "action": "sign", "actor": "李工"}).encode()
        stamp = str(int(STORM.timestamp()))
        with transaction(sessions) as session:
            return exchange.apply_inbound(
                session, idempotency_key=key, body_bytes=body, timestamp=stamp,
                signature=exchange.sign(secret, stamp, body), secret=secret, now=STORM)

    assert inbound("2026112910000", "long-0000001")[0] == 200
    for wrong in ("20261129001", "20261129000000001"):  # 11 and 17 digits
        status, answer = inbound(wrong, f"wrong-{len(wrong)}")
        assert status == 400 and "12 to 16 digits" in answer["error"]
    with sessions() as session:
        assert [d.case_number for d in exchange.deliveries(session)] == ["2026112910000"]
        assert session.scalar(select(InboundUpdate.case_number).where(
            InboundUpdate.idempotency_key == "long-0000001")) == "2026112910000"
        assert service.get_order(session, "2026112910000").state == "handling"
