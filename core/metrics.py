"""Prometheus metrics (监控指标) of this process, declared once. The rooms update them where
the thing happens (a queue's wait when an agent answers, an AMI event's lag when it is
handled, a request's latency); `hotline.metrics` serves them at /metrics beside the figures
any process of the centre keeps in Redis, read at scrape time (calls in progress, agents by
state, the event bus's consumer lag, job queues)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

QUEUE_WAIT = Histogram(
    "hotline_queue_wait_seconds",
    "How long callers waited in a queue before an agent answered or they hung up",
    ["queue", "outcome"], buckets=(5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600))
AMI_EVENT_LAG = Histogram(
    "hotline_ami_event_lag_seconds",
    "From the time Asterisk stamped an AMI event to the telephony service handling it",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
HTTP_LATENCY = Histogram(
    "hotline_http_request_duration_seconds", "HTTP requests by route, method and status",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
WORKER_FAILURES = Counter(
    "hotline_worker_failures", "Failures logged with a traceback, by the logger that logged "
    "them (a worker's job, an AGI route, an AMI handler)", ["worker"])
