"""The desk push path, end to end (issue 10, item 3): the real centre (its push server on a
port of its own, its relay following the bus) and Chromium with desk pages open.

An entry on the desk feed reaches the agent's open page as the DOM event "desk:<kind>" and
never another agent's page; a page whose stream dropped (the push server restarted) gets
what was published meanwhile once, and nothing twice; the private part of an entry is
dropped for a viewer who may not see numbers and shown, audited, to one who may; a bad,
expired, forged or other agent's ticket, or a disabled account, is refused; a real seat
change and a real call, through Asterisk, reach the page as desk:seat and desk:call."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from accounts import audit
from accounts.service import OPERATOR, create_account, get_account, set_disabled, sign_out
from agent_desk import feed, push_ticket
from agent_desk import push as push_module
from agent_desk.push import PushServer
from agent_desk.relay import DeskRelay
from asterisk_conf.sandbox import Sandbox
from core.clock import FixedClock
from core.config import Settings
from core.db import transaction
from hotline.centre import Centre
from sipkit.kit import Call, Dtmf, Hangup, SipKit, Wait
from telephony import commands
from telephony.ami import EventTap
from tests.browser import chromium, screenshot, sign_in
from tests.conftest import AGENT_PORT, PUSH_PORT, WEB_PORT, agent_ip, ensure_ready, wait_until

SITE = f"http://127.0.0.1:{WEB_PORT}"
PUSH = f"http://127.0.0.1:{PUSH_PORT}/desk/push"
PASSWORD = "desk-push-测试-密码"
MASKED, SEEING = "推送坐席甲", "推送坐席乙"  # agent 8101 sees numbers masked; 8102 in full
# Every desk:<kind> event the page hears, in order (an init script: CDP, not the page's CSP).
COLLECT = """
window.deskHeard = [];
for (const kind of ["seat", "call", "pop", "notice"]) {
  document.addEventListener("desk:" + kind,
                            (e) => window.deskHeard.push({kind, detail: e.detail}));
}
"""


@pytest.fixture(scope="module")
def desk_accounts(centre: Centre) -> dict[str, str]:
    with transaction(centre.sessions) as session:
        create_account(session, MASKED, [OPERATOR], password=PASSWORD, agent="8101",
                       actor="test", now=centre.clock.now())
        create_account(session, SEEING, [OPERATOR], password=PASSWORD, agent="8102",
                       see_phone=True, actor="test", now=centre.clock.now())
    return {MASKED: "8101", SEEING: "8102"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


@pytest.fixture
def desks(browser: Browser, desk_accounts: dict[str, str]) -> Iterator[Any]:
    """Opens a desk page signed in as a name; every page is closed after the test."""
    with ExitStack() as stack:
        def open_desk(name: str) -> Page:
            context = browser.new_context(locale="zh-CN", viewport={"width": 1366,
                                                                    "height": 768})
            stack.callback(context.close)
            page = context.new_page()
            page.add_init_script(COLLECT)
            sign_in(page, SITE, name, PASSWORD)
            expect(page.locator("#push-state")).to_have_attribute("data-state", "open",
                                                                  timeout=10_000)
            return page

        yield open_desk


def heard(page: Page) -> list[dict[str, Any]]:
    return page.evaluate("window.deskHeard")  # type: ignore[no-any-return]


def wait_heard(page: Page, predicate: Any, what: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in heard(page) if predicate(e)]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"{what}: the page heard {heard(page)}"
        time.sleep(0.1)


def status_of(url: str, origin: str = SITE) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, headers={"Origin": origin})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, dict(reply.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


def audit_rows(centre: Centre, actor: str) -> list[audit.AuditEntry]:
    with centre.sessions() as session:
        _total, rows = audit.find(session, audit.AuditQuery(actor=actor,
                                                            action=audit.PHONE_SHOWN))
    return rows


def test_an_entry_reaches_its_own_desk_only_with_the_private_part_as_the_viewer_may(
        centre: Centre, desks: Any) -> None:
    masked, seeing = desks(MASKED), desks(SEEING)
    expect(masked.locator("#push-state")).to_have_text("实时推送：已连接")
    client = centre.bus.client
    feed.publish(client, "8101", "notice", {"text": "给8101的", "n": 1})
    feed.publish(client, "8102", "notice", {"text": "给8102的", "n": 2})
    feed.publish(client, feed.EVERY_DESK, "notice", {"text": "全体", "n": 3})
    pop = {"call_id": "push-call-1", "caller_number": "138****8000",
           feed.PRIVATE: {"caller_number": "13800138000"}}
    feed.publish(client, "8101", "pop", pop)
    feed.publish(client, "8102", "pop", {**pop, "call_id": "push-call-2"})
    wait_heard(masked, lambda e: e["kind"] == "pop", "no pop on 8101's desk")
    wait_heard(seeing, lambda e: e["kind"] == "pop", "no pop on 8102's desk")
    time.sleep(0.5)  # anything else on its way arrives too
    assert heard(masked) == [
        {"kind": "notice", "detail": {"text": "给8101的", "n": 1}},
        {"kind": "notice", "detail": {"text": "全体", "n": 3}},
        {"kind": "pop", "detail": {"call_id": "push-call-1", "caller_number": "138****8000"}}]
    assert heard(seeing) == [
        {"kind": "notice", "detail": {"text": "给8102的", "n": 2}},
        {"kind": "notice", "detail": {"text": "全体", "n": 3}},
        {"kind": "pop", "detail": {"call_id": "push-call-2", "caller_number": "138****8000",
                                   "private": {"caller_number": "13800138000"}}}]
    assert "13800138000" not in masked.content()
    assert audit_rows(centre, MASKED) == []
    [shown] = audit_rows(centre, SEEING)
    assert (shown.target, json.loads(shown.detail)["what"]) == ("push-call-2", "desk:pop")
    assert shown.address == "127.0.0.1"
    screenshot(masked, "desk-push-open")


def test_a_dropped_stream_gets_what_it_missed_once(centre: Centre, desks: Any) -> None:
    page = desks(MASKED)
    client = centre.bus.client
    feed.publish(client, "8101", "notice", {"n": 1})
    wait_heard(page, lambda e: e["detail"] == {"n": 1}, "the first entry never came")
    # the push server goes away (a restart): the page's stream drops ...
    centre._push_loop.run(centre.push.close(), 10)  # type: ignore[union-attr]
    expect(page.locator("#push-state")).to_have_attribute("data-state", "reconnecting",
                                                          timeout=10_000)
    screenshot(page, "desk-push-reconnecting")
    # ... what is published meanwhile waits on the feed ...
    feed.publish(client, "8101", "notice", {"n": 2})
    feed.publish(client, "8102", "notice", {"n": 99})
    feed.publish(client, "8101", "notice", {"n": 3})
    time.sleep(1)
    centre.push = PushServer(centre.settings, centre.sessions, client, centre.clock)
    centre._push_loop.run(centre.push.start(), 15)  # type: ignore[union-attr]
    # ... and arrives once the browser is back with Last-Event-ID, each entry once
    expect(page.locator("#push-state")).to_have_attribute("data-state", "open",
                                                          timeout=15_000)
    wait_heard(page, lambda e: e["detail"] == {"n": 3}, "what was missed never came")
    feed.publish(client, "8101", "notice", {"n": 4})
    wait_heard(page, lambda e: e["detail"] == {"n": 4}, "the stream after the resume")
    time.sleep(0.5)
    assert [e["detail"] for e in heard(page)] == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]


def test_bad_tickets_and_another_agents_desk_are_refused(
        centre: Centre, desks: Any, desk_accounts: dict[str, str]) -> None:
    page = desks(MASKED)
    ticket = page.locator("#push-state").get_attribute("data-ticket")
    assert ticket
    status, headers = status_of(f"{PUSH}?agent=8101&ticket={ticket}")
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    assert headers["Access-Control-Allow-Origin"] == SITE
    _, elsewhere = status_of(f"{PUSH}?agent=8101&ticket={ticket}", "http://evil.example")
    assert "Access-Control-Allow-Origin" not in elsewhere
    assert status_of(f"{PUSH}?agent=8101&ticket=garbage")[0] == 401
    assert status_of(f"{PUSH}?agent=8101")[0] == 401
    assert status_of(f"{PUSH}?agent=8102&ticket={ticket}")[0] == 403  # 8102's desk
    secret = centre.settings.accounts.session_secret
    with centre.sessions() as session:
        account_id = get_account(session, MASKED).id
    forged = push_ticket.issue("not-the-secret", centre.clock, account_id=account_id,
                               session_user="", agent="8101", see_phone=True, origin=SITE)
    assert status_of(f"{PUSH}?agent=8101&ticket={forged}")[0] == 401
    stale_clock = FixedClock(centre.clock.now() - timedelta(minutes=10))
    stale = push_ticket.issue(secret, stale_clock, account_id=account_id, session_user="",
                              agent="8101", see_phone=False, origin=SITE)
    assert status_of(f"{PUSH}?agent=8101&ticket={stale}")[0] == 401
    with transaction(centre.sessions) as session:
        set_disabled(session, MASKED, True, actor="test", now=centre.clock.now())
    try:
        assert status_of(f"{PUSH}?agent=8101&ticket={ticket}")[0] == 403
    finally:
        with transaction(centre.sessions) as session:
            set_disabled(session, MASKED, False, actor="test", now=centre.clock.now())
    # the page's ticket came from its sign-in session, which disabling ended for good
    assert status_of(f"{PUSH}?agent=8101&ticket={ticket}")[0] == 403
    # signing out ends a session's tickets too
    again = desks(MASKED).locator("#push-state").get_attribute("data-ticket")
    assert status_of(f"{PUSH}?agent=8101&ticket={again}")[0] == 200
    with transaction(centre.sessions) as session:
        sign_out(session, account_id, now=centre.clock.now(), address="127.0.0.1")
    assert status_of(f"{PUSH}?agent=8101&ticket={again}")[0] == 403


def test_a_real_seat_change_reaches_the_desk(
        centre: Centre, pbx: Sandbox, pbx_settings: Settings, desks: Any) -> None:
    ensure_ready(centre, ("8101",))
    page = desks(MASKED)
    commands.send(centre.bus.client, "seat.pause", {"agent": "8101", "reason": "meal"})
    try:
        seat = wait_heard(page, lambda e: e["kind"] == "seat"
                          and e["detail"]["state"] == "paused", "no desk:seat paused")
    finally:
        commands.send(centre.bus.client, "seat.resume", {"agent": "8101"})
    detail = seat["detail"]
    assert (detail["agent"], detail["reason"]) == ("8101", "meal")
    assert detail["queues"] == sorted([pbx_settings.hotline.default_queue, "aftercall"])
    assert abs(detail["since"] - time.time()) < 30
    wait_heard(page, lambda e: e["kind"] == "seat" and e["detail"]["state"] == "ready",
               "no desk:seat ready after the resume")
    assert all(e["detail"]["agent"] == "8101" for e in heard(page) if e["kind"] == "seat")


def test_a_real_call_reaches_the_answering_agents_desk(
        centre: Centre, kit: SipKit, ami: EventTap, desks: Any) -> None:
    ensure_ready(centre, ("8101",))
    commands.send(centre.bus.client, "seat.pause", {"agent": "8102", "reason": "meal"})
    wait_until(lambda: centre.telephony.board.seat("8102").state == "paused", 10,
               "8102 is not paused")
    page, other = desks(MASKED), desks(SEEING)
    caller = "13600000072"
    try:
        with kit.agent_phone("8101", agent_ip("8101"), port=AGENT_PORT, answer_after=1.0):
            run = kit.start_calls(Call(caller_id=caller, script=(
                Wait(1.0), Dtmf("1"), Wait(8.0), Hangup())))
            connected = wait_heard(page, lambda e: e["kind"] == "call"
                                   and e["detail"]["event"] == "connected",
                                   "no desk:call connected", 25)
            [result] = run.wait()
        assert result.outcome == "answered"
        ended = wait_heard(page, lambda e: e["kind"] == "call"
                           and e["detail"]["event"] == "ended", "no desk:call ended", 20)
    finally:
        commands.send(centre.bus.client, "seat.resume", {"agent": "8102"})
    call_id = connected["detail"]["call_id"]
    assert ended["detail"]["call_id"] == call_id
    assert ended["detail"]["outcome"] == "answered"
    assert ended["detail"]["caller_number"] == "136****0072"
    assert "private" not in ended["detail"]  # 8101 sees numbers masked
    assert [e for e in heard(other) if e["kind"] == "call"] == []


def test_the_page_renews_its_ticket_and_carries_on_where_it_was(
        centre: Centre, desks: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(push_ticket, "TICKET_SECONDS", 4)  # the page renews after 2.4 s
    page = desks(MASKED)
    renewals: list[str] = []
    page.on("request", lambda r: renewals.append(r.url) if "/desk/push-ticket" in r.url
            else None)
    client = centre.bus.client
    for n in range(1, 11):  # 10 s: past two tickets' lives; each stream ends with its ticket
        feed.publish(client, "8101", "notice", {"n": n})
        time.sleep(1.0)
    wait_heard(page, lambda e: e["detail"] == {"n": 10}, "the last entry never came")
    time.sleep(0.5)
    assert [e["detail"]["n"] for e in heard(page)] == list(range(1, 11))
    assert len(renewals) >= 3
    expect(page.locator("#push-state")).to_have_attribute("data-state", "open")
    # an old page's ticket, past its life, opens nothing
    ticket = page.locator("#push-state").get_attribute("data-ticket")
    time.sleep(4.5)
    assert status_of(f"{PUSH}?agent=8101&ticket={ticket}")[0] == 401


def test_the_desk_page_hands_out_push_tickets_for_its_own_desk(
        database_url: str, tmp_path: Any) -> None:
    from tests import api_world

    world = api_world.build(database_url, tmp_path)
    try:
        operator = world.tokens["operator"]
        reply = world.client.get("/desk/push-ticket", headers=operator)
        assert reply.status_code == 200
        assert reply.headers["Cache-Control"] == "no-store"
        settings = world.app.extensions["hotline.settings"]
        assert reply.json["url"] == f"http://localhost:{settings.web.push_port}/desk/push"
        assert reply.json["expires_in"] == 300
        ticket = push_ticket.verify(settings.accounts.session_secret,
                                    world.app.extensions["hotline.clock"],
                                    reply.json["ticket"])
        with world.sessions() as session:
            assert ticket.account_id == get_account(session, "operator-account").id
        assert (ticket.agent, ticket.see_phone, ticket.session_user, ticket.origin) == (
            "", False, "", "http://localhost")
        page = world.client.get("/desk", headers=operator)
        assert f"http://localhost:{settings.web.push_port};" in \
            page.headers["Content-Security-Policy"]
        assert 'data-ticket="' in page.get_data(as_text=True)
        anonymous = world.client.get("/desk/push-ticket")  # a page's: to the sign-in
        assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
        assert world.client.get("/desk/push-ticket",
                                headers=world.tokens["dispatcher"]).status_code == 403
    finally:
        world.engine.dispose()


def test_the_stream_on_the_wire(centre: Centre, desk_accounts: dict[str, str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """What an EventSource reads: retry, then each entry as id/event/data, and heartbeat
    comments while nothing happens."""
    monkeypatch.setattr(push_module, "HEARTBEAT_SECONDS", 0.5)
    with centre.sessions() as session:
        account_id = get_account(session, MASKED).id
    ticket = push_ticket.issue(centre.settings.accounts.session_secret, centre.clock,
                               account_id=account_id, session_user="", agent="8101",
                               see_phone=False, origin=SITE)
    with urllib.request.urlopen(f"{PUSH}?agent=8101&ticket={ticket}", timeout=10) as stream:
        assert stream.readline() == b"retry: 2000\n"
        assert stream.readline() == b"\n"
        assert stream.readline() == b": heartbeat\n"  # nothing yet: a comment in 0.5 s
        assert stream.readline() == b"\n"
        entry_id = feed.publish(centre.bus.client, "8101", "notice",
                                {"text": "两行\n文字", feed.PRIVATE: {"x": 1}})
        lines = [stream.readline() for _ in range(4)]
        while lines[0] == b": heartbeat\n":
            lines = [*lines[2:], stream.readline(), stream.readline()]
    assert lines == [f"id: {entry_id}\n".encode(), b"event: notice\n",
                     'data: {"text":"两行\\n文字"}\n'.encode(), b"\n"]


def test_the_relay_turns_telephony_events_into_desk_entries() -> None:
    """Without a centre: what each bus event becomes (the seat's live state as the
    telephony service keeps it, the call's end with the caller masked in the open)."""
    import redis as redis_client

    from core.events import EventBus
    from telephony.seats import SEATS_KEY
    from tests.conftest import REDIS_SERVER_URL

    client = redis_client.Redis.from_url(REDIS_SERVER_URL)
    relay = DeskRelay(EventBus(client, stream=f"test-relay-{time.monotonic_ns()}"))
    try:
        client.hset(SEATS_KEY, "7991", json.dumps({
            "agent": "7991", "state": "wrap_up", "reason": "", "since": 1000.5,
            "queues": ["intake"], "unanswered_in_a_row": 0, "seconds_in_state": {},
            "wrap_up_until": 1030.5, "wrap_up_extended": False}))
        assert relay.entry_for({"type": "seat.changed", "agent": "7991", "state": "wrap_up",
                                "at": 1000.5}) == ("7991", "seat", {
            "agent": "7991", "state": "wrap_up", "reason": "", "since": 1000.5,
            "queues": ["intake"], "wrap_up_until": 1030.5, "wrap_up_extended": False})
        # a seat the service keeps nothing of yet: what the event says
        assert relay.entry_for({"type": "seat.changed", "agent": "7992", "state": "paused",
                                "reason": "meal", "at": 2000.0}) == ("7992", "seat", {
            "agent": "7992", "state": "paused", "reason": "meal", "since": 2000.0,
            "queues": []})
        assert relay.entry_for({"type": "call.agent_connected", "call_id": "c-1",
                                "agent": "7991", "queue": "intake", "wait_seconds": 3.5,
                                "at": 1001.0}) == ("7991", "call", {
            "call_id": "c-1", "event": "connected", "queue": "intake", "wait_seconds": 3.5,
            "at": 1001.0})
        ended = {"type": "call.ended", "call_id": "c-1", "record": {
            "call_id": "c-1", "agent": "7991", "caller_number": "13800138000",
            "queue": "intake", "outcome": "answered", "talk_seconds": 42.0,
            "hangup_by": "citizen", "ended_at": 1050.0}}
        assert relay.entry_for(ended) == ("7991", "call", {
            "call_id": "c-1", "event": "ended", "queue": "intake", "outcome": "answered",
            "talk_seconds": 42.0, "hangup_by": "citizen", "at": 1050.0,
            "caller_number": "138****8000", "private": {"caller_number": "13800138000"}})
        abandoned = {"type": "call.ended", "call_id": "c-2", "record": {
            "call_id": "c-2", "agent": None, "caller_number": "13800138000"}}
        assert relay.entry_for(abandoned) is None  # no desk had it
        assert relay.entry_for({"type": "call.agent_ringing", "call_id": "c-3",
                                "agent": "7991"}) is None  # the pop's, not the relay's
    finally:
        client.hdel(SEATS_KEY, "7991")
        client.delete(relay.bus.stream)
        client.close()


def test_the_relay_reads_and_writes_a_batch_in_a_few_round_trips(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A batch of bus events costs the relay the same few round trips whatever its size:
    the reads (unacked, new, the handled marks), the skipped ones acknowledged, the live
    states its entries show in one, its entries written in one, the batch acknowledged in
    one (each event used to cost a read of the live state and a write). If the writing
    fails, nothing is acknowledged and the next relay writes every entry."""
    import redis as redis_client

    from core.events import EventBus
    from telephony.seats import SEATS_KEY
    from telephony.wallboard import LIVE_CALLS_KEY
    from tests.conftest import REDIS_SERVER_URL

    client = redis_client.Redis.from_url(REDIS_SERVER_URL)
    bus = EventBus(client, stream=f"test-relay-{time.monotonic_ns()}")
    relay = DeskRelay(bus)
    call_id = f"batch-{time.monotonic_ns()}"
    try:
        client.hset(SEATS_KEY, mapping={
            "7993": json.dumps({"agent": "7993", "state": "talking", "reason": "",
                                "since": 10.0, "queues": ["intake"]}),
            "7994": json.dumps({"agent": "7994", "state": "paused", "reason": "meal",
                                "since": 20.0, "queues": []})})
        client.hset(LIVE_CALLS_KEY, call_id, json.dumps({"agent": "7993"}))
        sent = [("seat.changed", {"agent": "7993", "state": "ringing", "at": 9.0}),
                ("call.agent_connected", {"call_id": call_id, "agent": "7993",
                                          "queue": "intake", "wait_seconds": 2.0, "at": 9.5}),
                ("call.queue_joined", {"call_id": call_id, "queue": "intake"}),  # skipped
                ("seat.changed", {"agent": "7993", "state": "talking", "at": 10.0}),
                ("speech.live", {"call_id": call_id, "utterance": 1, "final": True,
                                 "text": "路灯坏了", "at": 11.0}),
                ("seat.changed", {"agent": "7994", "state": "paused", "at": 20.0})]
        for n, (kind, payload) in enumerate(sent):
            bus.append(f"{call_id}-{n}", kind, {"type": kind, **payload})
        talking = ("7993", "seat", {"agent": "7993", "state": "talking", "reason": "",
                                    "since": 10.0, "queues": ["intake"]})
        expected = [talking,
                    ("7993", "call", {"call_id": call_id, "event": "connected",
                                      "queue": "intake", "wait_seconds": 2.0, "at": 9.5}),
                    talking,  # both seat entries show the seat as it is now
                    ("7993", "live", {"call_id": call_id, "utterance": 1, "final": True,
                                      "text": "路灯坏了", "at": 11.0}),
                    ("7994", "seat", {"agent": "7994", "state": "paused", "reason": "meal",
                                      "since": 20.0, "queues": []})]

        def entries(ids: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
            return [(f[b"agent"].decode(), f[b"kind"].decode(), json.loads(f[b"data"]))
                    for i in ids for _id, f in client.xrange(feed.DESK_STREAM, i, i)]

        real_publish_all = feed.publish_all
        monkeypatch.setattr(feed, "publish_all", lambda *_args: (_ for _ in ()).throw(
            redis_client.ConnectionError("Redis went away")))
        with pytest.raises(redis_client.ConnectionError):
            relay.relay(block_ms=100)
        monkeypatch.setattr(feed, "publish_all", real_publish_all)
        pool = client.connection_pool
        round_trips = 0
        get_connection = pool.get_connection

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal round_trips
            round_trips += 1
            return get_connection(*args, **kwargs)
        monkeypatch.setattr(pool, "get_connection", counted)
        written = relay.relay(block_ms=100)
        monkeypatch.setattr(pool, "get_connection", get_connection)
        assert entries(written) == expected  # nothing lost to the failed write
        # the unacked read (the failed relay's five), the new read, the handled marks, the
        # live states, the writes, the ack (the skipped one the failed relay acknowledged)
        assert round_trips == 6
        assert client.xpending(bus.stream, "desk-relay")["pending"] == 0
        assert relay.relay(block_ms=100) == []  # each relayed once
    finally:
        client.hdel(SEATS_KEY, "7993", "7994")
        client.hdel(LIVE_CALLS_KEY, call_id)
        for key in client.scan_iter(f"{bus.stream}*"):
            client.delete(key)
        client.close()


def test_the_callers_words_heard_live_show_on_the_call_panel(centre: Centre,
                                                             desks: Any) -> None:
    """desk:live (the relay's entry of speech.live) on the screen pop of the call on show:
    each utterance's final text stays, the partial under way follows it; another call's
    words are not shown."""
    client = centre.bus.client
    page = desks(MASKED)
    pop = {"call_id": "live-call-1", "caller_number": "138****0000", "queue": "default",
           "at": time.time()}
    feed.publish(client, "8101", "pop", pop)
    expect(page.locator("#pop-card")).to_be_visible(timeout=10_000)
    for entry in ({"call_id": "live-call-1", "utterance": 0, "final": False, "text": "煤气"},
                  {"call_id": "live-call-1", "utterance": 0, "final": False,
                   "text": "煤气 泄漏"},
                  {"call_id": "live-call-1", "utterance": 0, "final": True,
                   "text": "煤气 泄漏 了"},
                  {"call_id": "other-call", "utterance": 0, "final": False, "text": "别的"},
                  {"call_id": "live-call-1", "utterance": 1, "final": False, "text": "快 来"}):
        feed.publish(client, "8101", "live", entry)
    expect(page.locator("#pop-live-final")).to_have_text("煤气 泄漏 了", timeout=10_000)
    expect(page.locator("#pop-live-partial")).to_have_text("快 来", timeout=10_000)
    expect(page.locator("#pop-live")).not_to_contain_text("别的")
    expect(page.locator("#pop")).to_contain_text("来电人正在说")
