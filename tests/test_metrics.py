"""Observability (issue 15, item 8): `GET /metrics` for Prometheus against the real centre
with kit calls: a caller waiting shows as in progress with the longest wait growing, both
agents paused show by state, an answered call's queue wait and the AMI link and event lag,
a request's latency by its route; worker failures counted; only the configured networks may
read it. Log lines carry the call id and the case number, as text or JSON lines."""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from core import logs
from core.clock import FixedClock
from core.db import make_engine, session_factory, upgrade
from core.live import connect_redis
from hotline.centre import Centre
from hotline.web import create_app
from sipkit.kit import Call, Dtmf, Hangup, SipKit, Wait
from telephony import commands
from tests.conftest import (
    AGENT_PORT,
    TEST_AGENTS,
    WEB_PORT,
    agent_ip,
    api,
    ensure_ready,
    make_settings,
    wait_until,
)

AGENTS = tuple(TEST_AGENTS)


def _scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{WEB_PORT}/metrics", timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        body = reply.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body) for sample in family.samples}


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_follow_a_waiting_caller_the_seats_and_an_answered_call(
        centre: Centre, kit: SipKit) -> None:
    ensure_ready(centre)
    for agent in AGENTS:
        commands.send(centre.bus.client, "seat.pause", {"agent": agent, "reason": "meal"})
    wait_until(lambda: all(centre.telephony.board.seat(a).state == "paused" for a in AGENTS),
               10, "the test agents are not paused")
    wait_until(lambda: _value(_scrape(), "hotline_ami_link_up") == 1, 10,
               "the AMI link is not up")
    before = _scrape()
    assert _value(before, "hotline_agents", state="paused") == 2
    answered_before = _value(before, "hotline_queue_wait_seconds_count", queue="intake",
                             outcome="answered")
    try:
        # "1" is keyed 2.5 s in, during the 5.3 s welcome: a key pressed at once can meet
        # the IVR between AGI commands (Asterisk drops it there) when this process stalls
        # at the call's start, and then only the menu's fallback, ~36 s later, queues the
        # caller; this test is about the metrics (early keys: tests/test_ivr_rules.py)
        run = kit.start_calls(Call(caller_id="13600000300", max_seconds=60, script=(
            Wait(2.5), Dtmf("1"), Wait(40.0), Hangup())))
        wait_until(lambda: _value(_scrape(), "hotline_calls_in_progress", queue="intake",
                                  state="waiting") == 1, 15, "the caller is not waiting")
        first = _value(_scrape(), "hotline_queue_longest_wait_seconds", queue="intake")
        time.sleep(2.5)
        later = _value(_scrape(), "hotline_queue_longest_wait_seconds", queue="intake")
        assert later >= first + 2  # the wait grows while nobody answers

        with kit.agent_phone("8101", agent_ip("8101"), port=AGENT_PORT, answer_after=0.5,
                             talk_seconds=3.0):
            commands.send(centre.bus.client, "seat.resume", {"agent": "8101"})
            wait_until(lambda: _value(_scrape(), "hotline_calls_in_progress", queue="intake",
                                      state="talking") == 1, 20, "the call was not answered")
            run.wait()
        after = _scrape()
    finally:
        for agent in AGENTS:
            commands.send(centre.bus.client, "seat.resume", {"agent": agent})
    assert _value(after, "hotline_queue_wait_seconds_count", queue="intake",
                  outcome="answered") == answered_before + 1
    waited = (_value(after, "hotline_queue_wait_seconds_sum", queue="intake",
                     outcome="answered")
              - _value(before, "hotline_queue_wait_seconds_sum", queue="intake",
                       outcome="answered"))
    assert later <= waited <= 30  # at least the wait last scraped, well under the 40 s
    assert _value(after, "hotline_ami_event_lag_seconds_count") > _value(
        before, "hotline_ami_event_lag_seconds_count")
    assert _value(after, "hotline_bus_stream_length") > 0
    assert _value(after, "process_open_fds") > 0  # prometheus-client's process figures


def test_each_request_is_timed_by_its_route(centre: Centre) -> None:
    route = "/api/v1/calls/<call_id>"
    labels = {"method": "GET", "route": route, "status": "404"}
    before = _value(_scrape(), "hotline_http_request_duration_seconds_count", **labels)
    assert api("/api/v1/calls/no-such-call")[0] == 404
    assert api("/api/v1/calls/another-missing-call")[0] == 404
    after = _value(_scrape(), "hotline_http_request_duration_seconds_count", **labels)
    assert after == before + 2  # one series per route, not per URL


def test_failures_logged_by_a_worker_are_counted() -> None:
    from core.metrics import WORKER_FAILURES

    counter = logs.FailureCounter()
    worker = logging.getLogger("tests.a_worker")
    worker.addHandler(counter)
    worker.propagate = False  # a counter on the root (the CLI's logging) would count again
    try:
        before = WORKER_FAILURES.labels(worker="tests.a_worker")._value.get()
        try:
            raise RuntimeError("the job broke")
        except RuntimeError:
            worker.exception("job failed")
        worker.error("a refusal without a traceback is not a failure")
        assert WORKER_FAILURES.labels(worker="tests.a_worker")._value.get() == before + 1
    finally:
        worker.removeHandler(counter)
        worker.propagate = True


@pytest.fixture
def app_for(tmp_path):
    made = []

    def build(**env: str):
        settings = make_settings(tmp_path, **env)
        engine = make_engine(settings.storage.database_url)
        upgrade(engine)
        made.append(engine)
        return create_app(settings, session_factory(engine), connect_redis(settings),
                          FixedClock(datetime(2026, 11, 24, 2, 0, tzinfo=UTC))).test_client()

    yield build
    for engine in made:
        engine.dispose()


def test_only_the_configured_networks_may_read_the_metrics(app_for) -> None:
    client = app_for()
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200
    refused = client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert refused.status_code == 403 and "metrics_networks" in refused.get_json()["detail"]
    wider = app_for(HOTLINE_OBSERVABILITY_METRICS_NETWORKS="10.0.0.0/8")
    assert wider.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    assert wider.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 403


def test_log_lines_carry_the_call_id_and_the_case_number() -> None:
    record = logging.LogRecord("telephony.service", logging.ERROR, __file__, 1,
                               "could not store call %s", ("1763949600.1",), None)
    call = logs.CALL_ID.set("1763949600.1")
    case = logs.CASE_NUMBER.set("202611240001")
    try:
        assert logs.CallContext().filter(record)
    finally:
        logs.CALL_ID.reset(call)
        logs.CASE_NUMBER.reset(case)
    line = json.loads(logs.JsonLines().format(record))
    assert {k: line[k] for k in ("level", "logger", "message", "call_id", "case_number")} == {
        "level": "ERROR", "logger": "telephony.service",
        "message": "could not store call 1763949600.1", "call_id": "1763949600.1",
        "case_number": "202611240001"}
    text = logging.Formatter(logs.TEXT_FORMAT).format(record)
    assert text.endswith("could not store call 1763949600.1 call=1763949600.1 "
                         "case=202611240001")
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "nothing bound", (), None)
    logs.CallContext().filter(plain)
    assert logging.Formatter(logs.TEXT_FORMAT).format(plain).endswith("x: nothing bound")
    assert "call_id" not in json.loads(logs.JsonLines().format(plain))


def test_methods_a_client_invents_are_timed_as_one_series(app_for) -> None:
    """Any token is a method: a series per invented one would grow the registry without end
    (a memory leak anyone can cause). They are timed together as "other"."""
    client = app_for()

    def count(method: str, route: str, status: str) -> float:
        body = client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).text
        return sum(sample.value for family in text_string_to_metric_families(body)
                   for sample in family.samples
                   if sample.name == "hotline_http_request_duration_seconds_count"
                   and sample.labels == {"method": method, "route": route, "status": status})

    before = count("other", "unmatched", "404"), count("other", "unmatched", "405")
    for n in range(20):
        assert client.open(f"/no-such-page-{n}", method=f"BREW{n}").status_code == 404
    assert client.open("/healthz", method="PROPFIND").status_code == 405  # matched no rule
    assert count("other", "unmatched", "404") == before[0] + 20
    assert count("other", "unmatched", "405") == before[1] + 1
    assert count("GET", "/metrics", "200") >= 1  # the known ones keep their own name
    body = client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).text
    assert "BREW" not in body and "PROPFIND" not in body


def test_metrics_answer_503_when_redis_is_away(app_for) -> None:
    client = app_for()
    client.application.extensions["hotline.redis"] = redis.Redis(host="127.0.0.1", port=9)
    reply = client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert reply.status_code == 503 and "Redis" in reply.get_json()["detail"]



def test_events_waiting_in_the_outbox_are_counted(app_for) -> None:
    """Two events stored while no relay takes them (Redis away): the outbox's queue is 2,
    and 0 once they are relayed."""
    from core import outbox
    from core.db import transaction

    client = app_for()
    sessions = client.application.extensions["hotline.sessions"]
    with transaction(sessions) as session:
        for n in (1, 2):
            outbox.store(session, f"test.waiting:{n}", "test.waiting", {"n": n},
                         datetime(2026, 11, 24, 2, 0, tzinfo=UTC))

    def waiting() -> float:
        reply = client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"})
        assert reply.status_code == 200
        return next(sample.value for family in text_string_to_metric_families(
            reply.get_data(as_text=True)) for sample in family.samples
            if sample.name == "hotline_outbox_waiting")

    assert waiting() == 2
    with transaction(sessions) as session:
        session.execute(outbox.OutboxEvent.__table__.update().values(
            relayed_at=datetime(2026, 11, 24, 2, 0, 1, tzinfo=UTC)))
    assert waiting() == 0


def test_the_bounded_queues_show_their_depth_and_what_they_dropped(app_for) -> None:
    """A live stream whose recogniser is stuck, fed 300 frames: /metrics shows the stream,
    its 250 frames waiting (the bound) and the 50 dropped; a SIP guard counting three
    addresses shows them; the push server's and the telephony service's figures are there."""
    import threading

    from core.events import EventBus
    from recordings.live import LiveStream
    from telephony.sipguard import FailureCounter

    client = app_for()

    def scrape() -> dict[Any, float]:
        reply = client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"})
        assert reply.status_code == 200
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(reply.get_data(as_text=True))
                for sample in family.samples}

    class Stuck:
        def __init__(self) -> None:
            self.go, self.fed = threading.Event(), 0

        def feed(self, pcm: bytes) -> list:
            self.fed += 1
            self.go.wait(20)
            return []

        def finish(self) -> list:
            return []

    before = scrape()
    for name in ("hotline_live_streams", "hotline_live_frames_waiting",
                 "hotline_live_frames_dropped_total", "hotline_push_streams",
                 "hotline_push_queue_deepest", "hotline_push_streams_closed_slow_total",
                 "hotline_sip_guard_addresses", "hotline_sip_guard_forgotten_total",
                 "hotline_telephony_tasks_pending"):
        assert (name, ()) in before, name
    stuck = Stuck()
    bus = EventBus(client.application.extensions["hotline.redis"])
    stream = LiveStream("1764493200.9", stuck, bus, lambda: (), time.time).start()
    guard = FailureCounter(threshold=5, window_seconds=60)
    try:
        for _ in range(10):
            stream.hear(bytes(320))
        wait_until(lambda: stuck.fed == 1, 5, "the recogniser was not fed")
        for _ in range(300):
            stream.hear(bytes(320))
        for where in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
            guard.failed(where, 1000.0)
        after = scrape()
        assert _value(after, "hotline_live_streams") == _value(before, "hotline_live_streams") + 1
        assert _value(after, "hotline_live_frames_waiting") >= 250
        assert _value(after, "hotline_live_frames_dropped_total") == \
            _value(before, "hotline_live_frames_dropped_total") + 50
        assert _value(after, "hotline_sip_guard_addresses") >= 3
    finally:
        stuck.go.set()
        stream.end()
        stream.thread.join(10)


def test_messages_and_platform_events_waiting_are_counted(app_for) -> None:
    """One text message queued for the gateway and one event for the city platform: each
    queue is 1 on /metrics, and 0 once the message is sent and the event delivered."""
    from channels import sms
    from channels.models import SmsMessage
    from core.db import transaction
    from tickets.models import WebhookDelivery

    client = app_for()
    sessions = client.application.extensions["hotline.sessions"]
    now = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    with transaction(sessions) as session:
        sms.queue(session, "13800000301", "您的工单已受理", purpose="notice", now=now)
        session.add(WebhookDelivery(
            event_id="7a1f0000-0000-4000-8000-000000000001", event_type="work_order.open",
            case_number="202611240001", payload={}, url="https://platform.example/hook",
            state="pending", attempts=0, next_attempt_at=now, last_error="", created_at=now))

    def waiting() -> tuple[float, float]:
        reply = client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"})
        assert reply.status_code == 200
        found = {sample.name: sample.value for family in text_string_to_metric_families(
            reply.get_data(as_text=True)) for sample in family.samples}
        return found["hotline_sms_waiting"], found["hotline_webhooks_waiting"]

    assert waiting() == (1, 1)
    with transaction(sessions) as session:
        session.execute(SmsMessage.__table__.update().values(state="sent"))
        session.execute(WebhookDelivery.__table__.update().values(state="delivered"))
    assert waiting() == (0, 0)
