"""`GET /metrics` for Prometheus (监控指标), from the addresses in
`observability.metrics_networks` only (anyone else: 403), no account needed.

Two kinds of figures:
- this process's own (`core.metrics`): HTTP latency by route (measured here, around every
  request), queue waits and AMI event lag (where the telephony service runs in this
  process, as under `hotline serve` or `hotline up`), failures logged by its workers, its
  bounded in-memory queues (live audio, push streams, the SIP guard, SMS receipts: depth
  and what they dropped) and prometheus-client's process figures (memory, open files, CPU);
- the centre's live state as every process keeps it in Redis, read at scrape time so any
  web process can serve them: calls in progress by queue and state and the longest wait
  now (`telephony.wallboard`), agents by state (the seat board), whether the telephony
  service holds the AMI link (`telephony.link`), the event bus (stream length, each
  consumer group's unread and unacknowledged events) and the job queues (RQ: queued,
  failed, the oldest queued job's age);
- from the database: the durable queues, which refuse nothing (each row is work that must
  be done) and are watched instead: the domain events waiting in the outbox for Redis, the
  text messages waiting for the SMS gateway, the events waiting for the city platform.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import redis
from flask import Flask, Response, abort, current_app, g, request
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from rq import Queue
from rq.registry import FailedJobRegistry
from sqlalchemy.orm import Session, sessionmaker

from accounts.access import PUBLIC, requires
from channels.outbound import outbox as sms_outbox
from core import outbox
from core.clock import Clock
from core.config import Settings
from core.events import STREAM
from core.metrics import HTTP_LATENCY
from telephony import link, wallboard
from tickets import exchange

PATH = "/metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class LiveState(Collector):
    """The centre's live figures from Redis, read when Prometheus scrapes."""

    def __init__(self, client: redis.Redis, clock: Clock) -> None:
        self.client, self.clock = client, clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.clock.time()
        calls = GaugeMetricFamily("hotline_calls_in_progress",
                                  "Callers in a queue now: waiting, or talking to an agent",
                                  labels=["queue", "state"])
        longest = GaugeMetricFamily("hotline_queue_longest_wait_seconds",
                                    "How long the longest-waiting caller of a queue has waited",
                                    labels=["queue"])
        counted: Counter[tuple[str, str]] = Counter()
        waits: dict[str, float] = {}
        for call in wallboard.live_calls(self.client):
            state = "waiting" if call.agent is None else "talking"
            counted[(call.queue, state)] += 1
            if call.agent is None:
                waits[call.queue] = max(waits.get(call.queue, 0.0), now - call.joined_at)
        for (queue, state), count in sorted(counted.items()):
            calls.add_metric([queue, state], count)
        for queue, seconds in sorted(waits.items()):
            longest.add_metric([queue], max(0.0, seconds))
        yield calls
        yield longest

        agents = GaugeMetricFamily("hotline_agents", "Agents by seat state (logged in ones)",
                                   labels=["state"])
        for state, count in sorted(Counter(str(seat.get("state", "unknown"))
                                           for seat in wallboard.seats_now(self.client)).items()):
            agents.add_metric([state], count)
        yield agents

        state = link.read(self.client)
        ami = GaugeMetricFamily("hotline_ami_link_up", "1 while the telephony service holds "
                                "a live AMI connection to Asterisk")
        ami.add_metric([], 1 if state is not None and state.connected else 0)
        yield ami
        yield from self._bus()
        yield from self._jobs(now)

    def _bus(self) -> Iterator[GaugeMetricFamily]:
        length = GaugeMetricFamily("hotline_bus_stream_length", "Entries in the event stream")
        unread = GaugeMetricFamily("hotline_bus_consumer_lag",
                                   "Events a consumer group has not read yet", labels=["group"])
        pending = GaugeMetricFamily("hotline_bus_consumer_pending",
                                    "Events a consumer group read but has not acknowledged",
                                    labels=["group"])
        if self.client.exists(STREAM):
            length.add_metric([], self.client.xlen(STREAM))
            for group in self.client.xinfo_groups(STREAM):
                name = _text(group.get("name"))
                pending.add_metric([name], int(group.get("pending") or 0))
                if group.get("lag") is not None:  # Redis 7 counts it; older ones do not
                    unread.add_metric([name], int(group["lag"]))
        else:
            length.add_metric([], 0)
        yield from (length, unread, pending)

    def _jobs(self, now: float) -> Iterator[GaugeMetricFamily]:
        queued = GaugeMetricFamily("hotline_jobs_queued", "Jobs waiting in a job queue",
                                   labels=["queue"])
        failed = GaugeMetricFamily("hotline_jobs_failed", "Jobs that failed for good",
                                   labels=["queue"])
        oldest = GaugeMetricFamily("hotline_jobs_oldest_age_seconds",
                                   "Age of the oldest job waiting in a queue", labels=["queue"])
        for queue in sorted(Queue.all(connection=self.client), key=lambda q: q.name):
            queued.add_metric([queue.name], queue.count)
            failed.add_metric([queue.name], FailedJobRegistry(queue=queue).count)
            first = queue.get_job_ids(0, 1)
            job = queue.fetch_job(first[0]) if first else None
            if job is not None and job.enqueued_at is not None:
                oldest.add_metric([queue.name], max(0.0, now - job.enqueued_at.timestamp()))
        yield from (queued, failed, oldest)


class OutboxBacklog(Collector):
    """The durable queues in the database: the domain events stored and not yet relayed to
    Redis (core.outbox), which grows while Redis is away or the relay falls behind; the text
    messages the SMS gateway has not taken; the events the city platform has not taken."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.sessions() as session:
            counts = (outbox.backlog(session), sms_outbox.waiting(session),
                      exchange.waiting(session))
        for (name, text), count in zip((
                ("hotline_outbox_waiting",
                 "Domain events stored and not yet relayed to Redis (the outbox's queue)"),
                ("hotline_sms_waiting",
                 "Text messages to citizens queued or being sent, not yet sent"),
                ("hotline_webhooks_waiting",
                 "Events for the city platform not delivered yet (being retried)")),
                counts, strict=True):
            gauge = GaugeMetricFamily(name, text)
            gauge.add_metric([], count)
            yield gauge


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _allowed(address: str, networks: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net) for net in networks)


# the methods timed under their own name: any token is a method to HTTP, and a series for
# each one a client invents would let anyone grow the registry without end
TIMED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def init_app(app: Flask, settings: Settings) -> None:
    """Time every request by its route; serve /metrics."""

    @app.before_request
    def _started() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _timed(response: Response) -> Response:
        started = g.pop("metrics_started", None)
        if started is not None:
            route = request.url_rule.rule if request.url_rule else "unmatched"
            method = request.method if request.method in TIMED_METHODS else "other"
            HTTP_LATENCY.labels(method=method, route=route,
                                status=str(response.status_code)
                                ).observe(time.perf_counter() - started)
        return response

    @requires(PUBLIC)  # from observability.metrics_networks only, checked below
    def metrics() -> Response:
        if not _allowed(request.remote_addr or "", settings.observability.metrics_networks):
            abort(403, description="metrics: this address is not in "
                                   "observability.metrics_networks")
        live = CollectorRegistry(auto_describe=False)
        live.register(LiveState(current_app.extensions["hotline.redis"],
                                current_app.extensions["hotline.clock"]))
        try:
            state = generate_latest(live)
        except redis.RedisError as exc:
            abort(503, description=f"metrics: Redis cannot be read: {exc}")
        stored = CollectorRegistry(auto_describe=False)
        stored.register(OutboxBacklog(current_app.extensions["hotline.sessions"]))
        return Response(generate_latest(REGISTRY) + state + generate_latest(stored),
                        content_type=CONTENT_TYPE)

    app.add_url_rule(PATH, "metrics", metrics, methods=["GET"])
