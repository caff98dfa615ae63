"""The order search's text filter (tickets.service.find_orders, text=): the orders whose
description holds the words, newest first, the same on SQLite (a trigram index names the
candidates, migration 0037) and PostgreSQL. What must survive: an edited description is
found by its new words only, a deleted order is gone from the index, LIKE's wildcards and
the index's quotes are plain characters, and phrases shorter than a trigram still work."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, text, update

from core.db import make_engine, session_factory, transaction, upgrade
from tickets import catalogue, service
from tickets.models import WorkOrder

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
DESCRIPTIONS = {  # opened in this order, a minute apart: the newest is listed first
    "A": "果戈里大街128号门前积雪没人清",
    "B": "中央大街路灯不亮",
    "C": "noise_level 100% every night",
    "D": '有人说"引号"里的字',
    "E": "果戈里大街的井盖丢了",
}


def _found(sessions, words: str) -> tuple[int, list[str]]:  # type: ignore[no-untyped-def]
    with sessions() as session:
        total, rows = service.find_orders(session, service.OrderQuery(text=words))
        return total, [r.description[:4] for r in rows]


def test_the_text_filter_finds_the_words_however_the_descriptions_change(
        database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        catalogue.seed(session)
        for n, words in enumerate(DESCRIPTIONS.values()):
            service.open_order(session, appeal_type="complaint", description=words,
                               channel="web", actor="op", category_code="0102",
                               now=T0 + timedelta(minutes=n))
    # written by hand from DESCRIPTIONS (the first four characters of each found)
    assert _found(sessions, "果戈里大街") == (2, ["果戈里大", "果戈里大"])
    assert _found(sessions, "大街") == (3, ["果戈里大", "中央大街", "果戈里大"])  # 2: no trigram
    assert _found(sessions, "128号门前") == (1, ["果戈里大"])
    assert _found(sessions, "100%") == (1, ["nois"])
    assert _found(sessions, "0%e") == (0, [])  # % is no wildcard
    assert _found(sessions, "e_l") == (1, ["nois"])
    assert _found(sessions, "e_x") == (0, [])  # nor is _
    assert _found(sessions, '"引号"') == (1, ["有人说\""])
    assert _found(sessions, '号"里') == (1, ["有人说\""])
    assert _found(sessions, "井盖丢了吗") == (0, [])

    with transaction(sessions) as session:  # an edited description, a deleted order
        session.execute(update(WorkOrder).where(WorkOrder.description == DESCRIPTIONS["A"])
                        .values(description="松北区积雪已清"))
        session.execute(delete(WorkOrder).where(WorkOrder.description == DESCRIPTIONS["B"]))
    assert _found(sessions, "果戈里大街") == (1, ["果戈里大"])
    assert _found(sessions, "128号门前") == (0, [])
    assert _found(sessions, "积雪已清") == (1, ["松北区积"])
    assert _found(sessions, "中央大街") == (0, [])
    if engine.dialect.name == "sqlite":  # the index holds what the table holds
        with engine.connect() as conn:  # FTS5 compares them, an error if they differ
            conn.execute(text(
                "INSERT INTO work_order_text (work_order_text) VALUES ('integrity-check')"))
            matched = {words: conn.scalar(text(
                "SELECT count(*) FROM work_order_text WHERE work_order_text MATCH :words"),
                {"words": f'"{words}"'}) for words in ("松北区", "果戈里", "中央大街")}
            assert matched == {"松北区": 1, "果戈里": 1, "中央大街": 0}
    engine.dispose()
