"""The screen pop (来电弹屏, issue 10 item 3): when a call rings an agent, the composer
(agent_desk/pop.py) puts who is calling on that agent's desk feed, from the event bus.

Composer tests on a real database (SQLite and PostgreSQL) with hand-written calls, orders
and caller lists; a real-Asterisk test where a kit call keys 1 and the pop is on the feed
within a second of the ring; a Chromium test of the panel rendering a pop dispatched as a
DOM event (hostile text stays text), its screenshot kept as an artefact."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from playwright.sync_api import Page, expect
from sqlalchemy.orm import Session, sessionmaker
from waitress.server import create_server

from accounts.service import OPERATOR, create_account
from agent_desk import feed
from agent_desk.pop import ScreenPop
from core.clock import FixedClock
from core.db import make_engine, session_factory, transaction, upgrade
from core.events import EventBus
from core.live import connect_redis
from hotline.centre import Centre
from hotline.web import create_app, stop_web_server
from sipkit.kit import Call, Dtmf, Hangup, SipKit, Wait
from telephony import commands, directory, records, screening
from telephony.events import AgentRinging, CallEnded, CallStarted, IvrStep, QueueJoined
from tests import isolation
from tests.browser import chromium, screenshot, sign_in
from tests.conftest import (
    AGENT_PORT,
    CASE_LOOP,
    TEST_AGENTS,
    WEB_PORT,
    agent_ip,
    ensure_ready,
    make_settings,
    wait_until,
)
from tickets import catalogue, service

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # 10:00 in Beijing
CALLER = "13800138000"  # stored +8613800138000
TYPED = "13912345678"  # a number the citizen typed into an order's description
OTHER = "13700137000"


# ---------------------------------------------------------------------- the composer

@dataclass
class Desk:
    sessions: sessionmaker[Session]
    bus: EventBus
    clock: FixedClock
    pop: ScreenPop


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> redis.Redis:
    """An embedded Redis of this module's own: the desk feed's stream name is fixed."""
    return connect_redis(make_settings(tmp_path_factory.mktemp("pop-redis")))


@pytest.fixture
def desk(database_url: str, tmp_path: Path, client: redis.Redis) -> Iterator[Desk]:
    settings = make_settings(tmp_path, DATABASE_URL=database_url)
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        catalogue.seed(session)
    bus = EventBus(client, stream=f"test:pop:{uuid.uuid4().hex}")
    client.delete(feed.DESK_STREAM)
    clock = FixedClock(NOW)
    try:
        yield Desk(sessions, bus, clock, ScreenPop(settings, sessions, bus, clock))
    finally:
        engine.dispose()


def _call(session: Session, call_id: str, number: str, started: datetime, *,
          outcome: str = "answered", direction: str = "inbound", case: str = "",
          keys: str = "") -> None:
    epoch = started.timestamp()
    records.store_call(session, {
        "call_id": call_id, "direction": direction, "caller_number": number,
        "caller_name": "", "entry_number": "12319", "started_at": epoch,
        "ended_at": epoch + 90, "duration_seconds": 90, "outcome": outcome, "queue": "intake",
        "queue_position": 1, "wait_seconds": 4, "short_abandon": False,
        "agent": "8102" if outcome == "answered" else None,
        "connected_at": epoch + 4 if outcome == "answered" else None,
        "talk_seconds": 80 if outcome == "answered" else None, "hold_seconds": 0,
        "hangup_cause": 16, "hangup_cause_text": "",
        "ivr_path": [{"at": epoch + 1, "node": "menu", "value": k} for k in keys],
        "agent_attempts": [], "transfers": [], "legs": [], "incomplete": False})
    if case:
        records.mark_case(session, call_id, case)


def _order(session: Session, number: str, created: datetime, description: str) -> str:
    return service.open_order(session, appeal_type="complaint", channel="phone",
                              actor="受理员", description=description, citizen_phone=number,
                              category_code="0102", now=created).case_number


def _ring(desk: Desk, call_id: str, caller: str, *steps: tuple[str, str],
          agent: str = "8101", name: str = "") -> list[dict[str, Any]]:
    """The events a call publishes up to ringing `agent`, one tick of the composer; the
    pops on the feed for this call."""
    at = desk.clock.time() - 0.5
    desk.bus.publish(CallStarted(at=at - 20, call_id=call_id, caller_number=caller,
                                 caller_name=name, entry_number="12319"))
    for i, (node, value) in enumerate(steps):
        desk.bus.publish(IvrStep(at=at - 15 + i, call_id=call_id, node=node, value=value))
    desk.bus.publish(QueueJoined(at=at - 2, call_id=call_id, queue="intake", position=1))
    desk.bus.publish(AgentRinging(at=at, call_id=call_id, queue="intake", agent=agent))
    desk.pop.tick()
    return pops(desk.bus.client, call_id)


def pops(client: redis.Redis, call_id: str) -> list[dict[str, Any]]:
    """Pop entries on the desk feed for `call_id`: {id, agent, kind, data}."""
    out = []
    for entry_id, fields in client.xrange(feed.DESK_STREAM):
        data = json.loads(fields[b"data"])
        if fields[b"kind"] == b"pop" and data.get("call_id") == call_id:
            out.append({"id": entry_id.decode(), "agent": fields[b"agent"].decode(),
                        "data": data})
    return out


def _public(data: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in data.items() if k != feed.PRIVATE}, ensure_ascii=False)


def test_a_known_caller_pops_with_marks_calls_and_orders(desk: Desk) -> None:
    with transaction(desk.sessions) as session:
        screening.add_entry(session, CALLER, "vip", note="人大代表", now=NOW)
        directory.ensure_queue(session, "intake", "综合受理")
        closed = _order(session, CALLER, NOW - timedelta(days=20), "路灯不亮")
        for action, role in CASE_LOOP:
            service.transition(session, closed, action, actor=role, role=role,
                               now=NOW - timedelta(days=19))
        first = _order(session, CALLER, NOW - timedelta(days=3),
                       f"人民路口暴露垃圾，请回电 {TYPED}")
        second = _order(session, CALLER, NOW - timedelta(hours=5), "噪音扰民")
        _order(session, OTHER, NOW - timedelta(hours=1), "别人的工单")
        # seven inbound calls, three in the last 24 hours; an outbound one; someone else's
        for n, ago in enumerate((timedelta(days=30), timedelta(days=20), timedelta(days=10),
                                 timedelta(days=3), timedelta(hours=20), timedelta(hours=5),
                                 timedelta(minutes=30))):
            _call(session, f"old-{n}", "+86 138 0013 8000" if n % 2 else CALLER,
                  NOW - ago, outcome="abandoned" if n == 6 else "answered",
                  case={3: first, 5: second}.get(n, ""), keys="1" if n == 5 else "")
        _call(session, "survey-1", CALLER, NOW - timedelta(hours=2), direction="outbound")
        _call(session, "other-1", OTHER, NOW - timedelta(hours=1))
    assert (closed, first, second) == ("202611040001", "202611210001", "202611240001")

    [pop] = _ring(desk, "live-1", CALLER, ("node", "welcome"), ("menu", "1"),
                  ("node", "report"))
    assert pop["agent"] == "8101"
    data = pop["data"]
    assert data[feed.PRIVATE] == {"caller_number": "13800138000"}
    assert (data["caller_known"], data["caller_number"], data["queue"],
            data["queue_title"]) == (True, "138****8000", "intake", "综合受理")
    assert (data["ivr_keys"], data["case_keyed"]) == (["1"], "")
    assert [(s["node"], s["value"]) for s in data["ivr"]] == [
        ("node", "welcome"), ("menu", "1"), ("node", "report")]
    assert data["marks"] == {"vip": True, "blocked": False, "repeat": True,
                             "recent_calls": 3, "repeat_window_hours": 24}
    assert data["calls_total"] == 7
    assert [(c["call_id"], c["outcome"], c["case_number"], c["ivr_keys"])
            for c in data["calls"]] == [
        ("old-6", "abandoned", "", []), ("old-5", "answered", second, ["1"]),
        ("old-4", "answered", "", []), ("old-3", "answered", first, []),
        ("old-2", "answered", "", [])]
    assert data["calls"][0]["started_at"] == "2026-11-24T09:30:00+08:00"
    assert data["orders_total"] == 3
    assert [(o["case_number"], o["state"], o["open"]) for o in data["orders"]] == [
        (second, "intake", True), (first, "intake", True), (closed, "closed", False)]
    assert [o["case_number"] for o in data["open_orders"]] == [second, first]
    assert data["orders"][1]["summary"] == "人民路口暴露垃圾，请回电 139****5678"
    # the full number is under "private" and nowhere else
    public = _public(data)
    for secret in (CALLER, "8613800138000", TYPED):
        assert secret not in public
    assert (data["rang_at"], data["at"]) == ("2026-11-24T09:59:59.500000+08:00",
                                             NOW.timestamp() - 0.5)


def test_a_withheld_number_pops_with_no_history(desk: Desk) -> None:
    with transaction(desk.sessions) as session:
        _call(session, "anon-old", "anonymous", NOW - timedelta(hours=1))
    [pop] = _ring(desk, "live-anon", "anonymous", ("menu", "3"))
    data = pop["data"]
    assert feed.PRIVATE not in data
    assert (data["caller_known"], data["caller_number"], data["calls"], data["orders"],
            data["open_orders"], data["calls_total"]) == (False, "", [], [], [], 0)
    assert data["marks"]["vip"] is data["marks"]["repeat"] is data["marks"]["blocked"] is False
    assert data["ivr_keys"] == ["3"]


def test_a_blocked_caller_who_keyed_a_case_number(desk: Desk) -> None:
    with transaction(desk.sessions) as session:
        screening.add_entry(session, "0451-88888888", "block", now=NOW)
        case = _order(session, OTHER, NOW - timedelta(days=1), "井盖缺失")
    [pop] = _ring(desk, "live-2", "045188888888", ("menu", "4"), ("case", case),
                  ("menu", "1"), name=f"<b>王</b> {CALLER}")
    data = pop["data"]
    assert (data["caller_number"], data[feed.PRIVATE]) == (
        "045*****8888", {"caller_number": "045188888888"})
    assert (data["marks"]["blocked"], data["marks"]["vip"]) == (True, False)
    assert (data["ivr_keys"], data["case_keyed"]) == (["4", "1"], "202611230001")
    assert data["case_order"] == {"case_number": "202611230001", "state": "intake",
                                  "open": True}
    assert data["caller_name"] == "<b>王</b> 138****8000"  # text for the page; number masked
    assert data["orders"] == []  # the keyed case is someone else's order


def test_every_agent_rung_gets_the_pop_and_a_call_seen_before_the_loop_is_found(
        desk: Desk, database_url: str, tmp_path: Path) -> None:
    """Events published before this composer's group existed (it was restarted mid-call)
    are looked up backwards in the stream."""
    at = desk.clock.time()
    desk.bus.publish(CallStarted(at=at - 10, call_id="early-1", caller_number=OTHER))
    desk.bus.publish(IvrStep(at=at - 8, call_id="early-1", node="menu", value="2"))
    desk.bus.client.xgroup_destroy(desk.bus.stream, "desk-pop")  # a fresh group, as if
    later = ScreenPop(make_settings(tmp_path, DATABASE_URL=database_url),  # new this moment
                      desk.sessions, desk.bus, desk.clock)
    for agent in ("8101", "8102"):
        desk.bus.publish(AgentRinging(at=at, call_id="early-1", queue="aftercall",
                                      agent=agent))
    later.tick()
    found = pops(desk.bus.client, "early-1")
    assert [(p["agent"], p["data"]["agent"], p["data"]["caller_number"], p["data"]["ivr_keys"],
             p["data"]["queue"], p["data"]["queue_title"]) for p in found] == [
        ("8101", "8101", "137****7000", ["2"], "aftercall", "aftercall"),
        ("8102", "8102", "137****7000", ["2"], "aftercall", "aftercall")]
    assert len(later.composed) == 1  # composed once for both agents rung at once


def test_bad_events_and_stale_rings_never_stop_the_loop(desk: Desk) -> None:
    stream = desk.bus.stream
    client = desk.bus.client
    at = desk.clock.time()
    client.xadd(stream, {"type": "call.agent_ringing", "id": "x2", "data": json.dumps(
        {"type": "call.agent_ringing", "call_id": "bad-1", "agent": 8101, "at": "now"})})
    client.xadd(stream, {"type": "call.ivr_step", "id": "x3", "data": json.dumps(
        {"type": "call.ivr_step", "call_id": "bad-1", "node": ["menu"], "value": None})})
    client.xadd(stream, {"type": "x", "id": "x4", "data": json.dumps(["a", "list"])})
    desk.bus.publish(CallStarted(at=at - 300, call_id="stale-1", caller_number=OTHER))
    desk.bus.publish(AgentRinging(at=at - 200, call_id="stale-1", queue="intake",
                                  agent="8101"))  # read again after a long restart
    desk.bus.publish(CallEnded(at=at - 100, call_id="stale-1"))
    desk.pop.tick()
    assert pops(client, "bad-1") == pops(client, "stale-1") == []
    [pop] = _ring(desk, "good-1", OTHER, ("menu", "1"))  # the loop goes on
    assert pop["data"]["caller_number"] == "137****7000"
    # nothing is left unacknowledged for the group
    assert client.xpending(stream, "desk-pop")["pending"] == 0


def test_open_orders_of_a_citizen(desk: Desk) -> None:
    """The tickets room's door: a citizen's orders still being worked on, newest first."""
    with transaction(desk.sessions) as session:
        done = _order(session, CALLER, NOW - timedelta(days=9), "已办结")
        for action, role in CASE_LOOP:
            service.transition(session, done, action, actor=role, role=role, now=NOW)
        voided = _order(session, CALLER, NOW - timedelta(days=8), "重复")
        service.transition(session, voided, "void", actor="值班长", role="shift_chief",
                           now=NOW)
        older = _order(session, CALLER, NOW - timedelta(days=7), "在办一")
        service.transition(session, older, "open", actor="值班长", role="shift_chief",
                           now=NOW)
        newer = _order(session, CALLER, NOW - timedelta(days=1), "在办二")
        _order(session, OTHER, NOW, "别人的")
    with desk.sessions() as session:
        assert [(o.case_number, o.state) for o in service.open_orders_of(
            session, "+86 138-0013-8000")] == [(newer, "intake"), (older, "opened")]
        assert [o.case_number for o in service.open_orders_of(session, CALLER, 1)] == [newer]
        assert service.open_orders_of(session, "anonymous") == []


def test_an_open_order_older_than_the_recent_ones_still_pops(desk: Desk) -> None:
    """Six orders: the five newest closed, the oldest still open. The pop's recent orders are
    the five closed ones; its open orders show the sixth, found beyond that page (with five
    or fewer orders the page holds the open ones already)."""
    with transaction(desk.sessions) as session:
        directory.ensure_queue(session, "intake", "综合受理")
        still = _order(session, CALLER, NOW - timedelta(days=30), "井盖缺失")
        for day in range(5):
            done = _order(session, CALLER, NOW - timedelta(days=10 - day), f"已办{day}")
            for action, role in CASE_LOOP:
                service.transition(session, done, action, actor=role, role=role, now=NOW)
    [pop] = _ring(desk, "live-9", CALLER)
    data = pop["data"]
    assert data["orders_total"] == 6
    assert [o["open"] for o in data["orders"]] == [False] * 5
    assert [o["case_number"] for o in data["open_orders"]] == [still]


def test_composing_is_fast_for_a_caller_with_a_long_history(desk: Desk) -> None:
    """300 calls and 120 orders of the caller among 3,000 others: the pop is composed on
    indexed queries in well under the second it has."""
    with transaction(desk.sessions) as session:
        for n in range(3000):
            number = CALLER if n % 10 == 0 else f"1390000{n:04d}"
            _call(session, f"bulk-{n}", number, NOW - timedelta(minutes=7 * n))
        for n in range(120):
            _order(session, CALLER if n % 2 else OTHER, NOW - timedelta(hours=3 * n),
                   f"工单{n}")
    [pop] = _ring(desk, "live-fast", CALLER, ("menu", "1"))
    assert (pop["data"]["calls_total"], pop["data"]["orders_total"]) == (300, 60)
    for n in range(5):
        _ring(desk, f"live-fast-{n}", CALLER, ("menu", "1"))
    assert len(desk.pop.composed) == 6
    slowest = max(desk.pop.composed)
    print(f"\ncomposing a pop took at most {slowest * 1000:.1f} ms")
    assert slowest < 0.25


# ---------------------------------------------------------------------- through Asterisk

def test_a_kit_call_pops_on_the_rung_agents_desk_within_a_second(
        centre: Centre, kit: SipKit) -> None:
    ensure_ready(centre)
    caller = "13600000083"
    after = centre.bus.last_id()
    client = centre.bus.client
    with kit.agent_phone("8101", agent_ip("8101"), port=AGENT_PORT, answer_after=2.0), \
            kit.agent_phone("8102", agent_ip("8102"), port=AGENT_PORT, answer_after=2.0):
        [result] = kit.calls(Call(caller_id=caller, script=(
            Wait(1.0), Dtmf("1"), Wait(6.0), Hangup())))
    assert result.outcome == "answered"

    def ringing() -> dict[str, Any] | None:
        events = [e for _id, e in centre.bus.read(after, count=10_000)]
        started = next((e for e in events if e["type"] == "call.started"
                        and e["caller_number"] == caller), None)
        return None if started is None else next(
            (e for e in events if e["type"] == "call.agent_ringing"
             and e["call_id"] == started["call_id"]), None)

    wait_until(lambda: ringing() is not None, 10, "the call never rang an agent")
    rang = ringing()
    assert rang is not None and rang["agent"] in TEST_AGENTS
    wait_until(lambda: pops(client, rang["call_id"]), 5, "no pop on the desk feed")
    pop = pops(client, rang["call_id"])[0]
    pushed_at = int(pop["id"].split("-")[0]) / 1000  # the feed entry's own time (ms)
    print(f"\npop on the feed {(pushed_at - rang['at']) * 1000:.0f} ms after the ring")
    assert 0 <= pushed_at - rang["at"] < 1.0
    data = pop["data"]
    assert pop["agent"] == rang["agent"]
    assert (data["caller_number"], data[feed.PRIVATE], data["queue"], data["queue_title"],
            data["ivr_keys"]) == (
        "136****0083", {"caller_number": "13600000083"}, "intake", "综合受理", ["1"])
    assert data["caller_known"] is True


# ---------------------------------------------------------------------- the panel

PASSWORD = "弹屏测试-密码-2026"
HOSTILE = '<img src=x onerror="document.body.dataset.owned=1">王<script>x()</script>'


@pytest.fixture(scope="module")
def desk_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The web app alone on a free port, with an operator who is agent 8101."""
    data = tmp_path_factory.mktemp("pop-web")
    settings = make_settings(data)
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        create_account(session, "弹屏坐席", [OPERATOR], password=PASSWORD, agent="8101",
                       actor="测试", now=NOW)
    app = create_app(settings, sessions, connect_redis(settings), FixedClock(NOW))
    port = isolation.free_port()
    server = create_server(app, host="127.0.0.1", port=port, threads=2)
    thread = threading.Thread(target=server.run, daemon=True, name="pop-web")
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_web_server(server, thread)
        engine.dispose()


@pytest.fixture
def desk_page(desk_site: str) -> Iterator[Page]:
    with chromium() as browser:
        context = browser.new_context(locale="zh-CN", viewport={"width": 1366, "height": 768})
        page = context.new_page()
        sign_in(page, desk_site, "弹屏坐席", PASSWORD)
        try:
            yield page
        finally:
            context.close()


def _dispatch(page: Page, kind: str, detail: dict[str, Any]) -> None:
    page.evaluate("([kind, detail]) => document.dispatchEvent("
                  "new CustomEvent('desk:' + kind, {detail}))", [kind, detail])


POP = {
    "call_id": "1795480000.77", "agent": "8101", "queue": "intake", "queue_title": "综合受理",
    "at": 1795485598.25, "rang_at": "2026-11-24T09:59:58.250000+08:00", "caller_known": True,
    "caller_number": "138****8000", "caller_name": HOSTILE,
    "ivr": [{"node": "menu", "value": "4", "at": 1.0}, {"node": "case", "value":
            "202611210001", "at": 2.0}, {"node": "menu", "value": "1", "at": 3.0}],
    "ivr_keys": ["4", "1"], "case_keyed": "202611210001",
    "case_order": {"case_number": "202611210001", "state": "handling", "open": True},
    "marks": {"vip": True, "blocked": False, "repeat": True, "recent_calls": 3,
              "repeat_window_hours": 24},
    "calls": [{"call_id": "old-6", "started_at": "2026-11-24T09:30:00+08:00",
               "outcome": "abandoned", "queue": "intake", "agent": "", "talk_seconds": None,
               "case_number": "", "ivr_keys": []},
              {"call_id": "old-5", "started_at": "2026-11-24T05:00:00+08:00",
               "outcome": "answered", "queue": "intake", "agent": "8102",
               "talk_seconds": 80, "case_number": "202611240001", "ivr_keys": ["1"]}],
    "calls_total": 7,
    "orders": [{"case_number": "202611240001", "state": "intake", "open": True,
                "appeal_type": "complaint", "category_code": "0102",
                "summary": "噪音扰民", "created_at": "2026-11-24T05:00:00+08:00"},
               {"case_number": "202611040001", "state": "closed", "open": False,
                "appeal_type": "complaint", "category_code": "0102",
                "summary": "<b>路灯</b>不亮", "created_at": "2026-11-04T10:00:00+08:00"}],
    "orders_total": 3,
    "open_orders": [{"case_number": "202611240001", "state": "intake", "open": True,
                     "appeal_type": "complaint", "category_code": "0102",
                     "summary": "噪音扰民", "created_at": "2026-11-24T05:00:00+08:00"},
                    {"case_number": "202611210001", "state": "handling", "open": True,
                     "appeal_type": "complaint", "category_code": "0102",
                     "summary": "人民路口暴露垃圾，请回电 139****5678",
                     "created_at": "2026-11-21T10:00:00+08:00"}],
}


def test_the_panel_shows_a_pop_as_text_and_greys_it_when_the_call_ends(
        desk_page: Page) -> None:
    page = desk_page
    panel = page.locator("#pop")
    expect(panel).to_have_attribute("data-state", "empty")
    expect(page.locator("#pop-empty")).to_have_text("暂无来电振铃。")
    _dispatch(page, "pop", POP)  # a viewer who may not see numbers: no private part
    expect(panel).to_have_attribute("data-state", "ringing")
    expect(page.locator("#pop-status")).to_have_text("振铃")
    expect(page.locator("#pop-number")).to_have_text("138****8000")
    expect(page.locator("#pop-name")).to_have_text(HOSTILE)  # shown as the text it is
    assert page.locator("#pop img, #pop script:not([type])").count() == 0
    assert page.evaluate("document.body.dataset.owned") is None
    assert page.locator("#pop-marks .pop-badge").all_inner_texts() == [
        "重点关注", "重复来电 · 24小时内来电3次"]
    expect(page.locator("#pop-queue")).to_have_text("综合受理")
    expect(page.locator("#pop-keys")).to_have_text("4 → 1")
    expect(page.locator("#pop-case")).to_have_text("202611210001 处置")
    expect(page.locator("#pop-rang")).to_have_text("09:59:58")
    rows = page.locator("#pop-orders tbody tr")
    assert [rows.nth(i).inner_text().split("\t") for i in range(rows.count())] == [
        ["202611240001", "受理", "噪音扰民", "11-24 05:00"],
        ["202611210001", "处置", "人民路口暴露垃圾，请回电 139****5678", "11-21 10:00"],
        ["202611040001", "结案", "<b>路灯</b>不亮", "11-04 10:00"]]
    assert page.locator("#pop-orders tr.pop-order-open").evaluate_all(
        "rows => rows.map(r => r.dataset.case)") == ["202611240001", "202611210001"]
    expect(page.locator("#pop-orders-count")).to_have_text("共3条")
    calls = page.locator("#pop-calls tbody tr")
    assert [calls.nth(i).inner_text().split("\t") for i in range(calls.count())] == [
        ["11-24 09:30", "放弃", "", ""], ["11-24 05:00", "已接听", "8102", "202611240001"]]
    expect(page.locator("#pop-calls-count")).to_have_text("共7条")
    # the panel fits the desk at 1366x768: nothing sticks out of its column
    box = panel.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1366
    screenshot(page, "desk-pop-ringing")

    # a privileged viewer's pop carries the full number: shown in full
    _dispatch(page, "pop", {**POP, "private": {"caller_number": "13800138000"}})
    expect(page.locator("#pop-number")).to_have_text("13800138000")
    _dispatch(page, "call", {"call_id": "another-call", "event": "ended"})
    expect(panel).to_have_attribute("data-state", "ringing")  # not this pop's call
    _dispatch(page, "call", {"call_id": POP["call_id"], "event": "connected"})
    expect(panel).to_have_attribute("data-state", "connected")
    _dispatch(page, "call", {"call_id": POP["call_id"], "event": "ended"})
    expect(panel).to_have_attribute("data-state", "ended")
    expect(page.locator("#pop-status")).to_have_text("已结束")
    screenshot(page, "desk-pop-ended")

    # a withheld number: a pop that says there is no history
    _dispatch(page, "pop", {"call_id": "anon-1", "agent": "8101", "queue": "intake",
                            "at": 1795485700.0,
                            "caller_known": False, "caller_number": "", "caller_name": "",
                            "ivr": [], "ivr_keys": [], "case_keyed": "", "case_order": None,
                            "marks": {}, "calls": [], "calls_total": 0, "orders": [],
                            "orders_total": 0, "open_orders": []})
    expect(panel).to_have_attribute("data-state", "ringing")
    expect(page.locator("#pop-number")).to_have_text("无")
    expect(page.locator("#pop-unknown")).to_be_visible()
    expect(page.locator("#pop-orders tbody")).to_have_text("没有工单。")
    expect(page.locator("#pop-calls tbody")).to_have_text("没有历史来电。")
    assert page.locator("#pop-marks .pop-badge").count() == 0
    # another agent answered it: this seat went back to ready after the ring began
    _dispatch(page, "seat", {"agent": "8101", "state": "ready", "since": 1795485650.0})
    expect(panel).to_have_attribute("data-state", "ringing")  # that was before this ring
    _dispatch(page, "seat", {"agent": "8101", "state": "ready", "since": 1795485705.0})
    expect(panel).to_have_attribute("data-state", "ended")


# ---------------------------------------------------------------------- end to end

E2E_AGENT, E2E_NAME = "8101", "弹屏坐席甲"


def test_a_kit_call_pops_on_the_open_desk_page(centre: Centre, kit: SipKit) -> None:
    """Kit call keys 1 -> rings 8101 -> composer -> desk feed -> push server -> the page."""
    with transaction(centre.sessions) as session:
        create_account(session, E2E_NAME, [OPERATOR], password=PASSWORD, agent=E2E_AGENT,
                       actor="test", now=centre.clock.now())
    ensure_ready(centre)
    commands.send(centre.bus.client, "seat.pause", {"agent": "8102", "reason": "meal"})
    caller = "13600000084"
    site = f"http://127.0.0.1:{WEB_PORT}"
    try:
        wait_until(lambda: centre.telephony.board.seat("8102").state == "paused", 10,
                   "8102 is not paused")
        with chromium() as browser:
            context = browser.new_context(locale="zh-CN",
                                          viewport={"width": 1366, "height": 768})
            page = context.new_page()
            sign_in(page, site, E2E_NAME, PASSWORD)
            expect(page.locator("#push-state")).to_have_attribute("data-state", "open",
                                                                  timeout=10_000)
            with kit.agent_phone(E2E_AGENT, agent_ip(E2E_AGENT), port=AGENT_PORT,
                                 answer_after=3.0):
                run = kit.start_calls(Call(caller_id=caller, script=(
                    Wait(1.0), Dtmf("1"), Wait(8.0), Hangup())))
                panel = page.locator("#pop")
                expect(panel).to_have_attribute("data-state", "ringing", timeout=25_000)
                expect(page.locator("#pop-number")).to_have_text("136****0084")
                expect(page.locator("#pop-keys")).to_have_text("1")
                expect(page.locator("#pop-queue")).to_have_text("综合受理")
                screenshot(page, "desk-pop-live-ringing")
                [result] = run.wait()
            assert result.outcome == "answered"
            expect(panel).to_have_attribute("data-state", "ended", timeout=20_000)
            context.close()
    finally:
        commands.send(centre.bus.client, "seat.resume", {"agent": "8102"})
