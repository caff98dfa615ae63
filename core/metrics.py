"""Prometheus metrics (监控指标) of this process, declared once. The rooms update them where
the thing happens (a queue's wait when an agent answers, an AMI event's lag when it is
handled, a request's latency); `hotline.metrics` serves them at /metrics beside the figures
any process of the centre keeps in Redis, read at scrape time (calls in progress, agents by
state, the event bus's consumer lag, job queues).

The in-memory queues where a producer can outrun its consumer are bounded where they are
(issue 15, item 4); their gauges are read at scrape time from the rooms that hold them
(`Gauge.set_function`), their counters count what a full one dropped or refused."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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

# Bounded queues (issue 15, item 4): each one's depth, and what it dropped when it was full.
LIVE_STREAMS = Gauge(
    "hotline_live_streams", "Callers' live audio streams open in this process "
    "(recordings.live), each with its recogniser thread")
LIVE_FRAMES_WAITING = Gauge(
    "hotline_live_frames_waiting", "Audio frames received and not yet taken by their live "
    "stream's recogniser, over all streams (at most recordings.live.BACKLOG_FRAMES each)")
LIVE_FRAMES_DROPPED = Counter(
    "hotline_live_frames_dropped", "Audio frames a live stream dropped, oldest first, "
    "because its recogniser fell a full backlog behind (the stored transcript still comes "
    "from the recording)")
PUSH_STREAMS = Gauge(
    "hotline_push_streams", "Desk, wallboard and map streams open on this process's push server")
PUSH_QUEUE_DEEPEST = Gauge(
    "hotline_push_queue_deepest", "Entries waiting for the slowest open push stream "
    "(closed at agent_desk.push.QUEUE_LIMIT)")
PUSH_CLOSED_SLOW = Counter(
    "hotline_push_streams_closed_slow", "Push streams closed because their page did not read "
    "(a full queue); the page reconnects and is sent what it missed")
SIP_GUARD_ADDRESSES = Gauge(
    "hotline_sip_guard_addresses", "Addresses whose failed SIP authentications are being "
    "counted (at most telephony.sipguard.MAX_ADDRESSES)")
SIP_GUARD_FORGOTTEN = Counter(
    "hotline_sip_guard_forgotten", "Addresses whose failure count was dropped before its "
    "window ended, to keep to telephony.sipguard.MAX_ADDRESSES (many addresses failing at once)")
SMS_RECEIPTS_UNMATCHED = Gauge(
    "hotline_sms_receipts_unmatched", "Delivery receipts waiting for their part to be "
    "recorded (at most channels.outbound.worker.UNMATCHED_LIMIT)")
SMS_RECEIPTS_DROPPED = Counter(
    "hotline_sms_receipts_dropped", "Delivery receipts dropped, oldest first, because too many "
    "waited for their part")
TELEPHONY_TASKS_PENDING = Gauge(
    "hotline_telephony_tasks_pending", "Work the telephony service started for AMI events "
    "and has not finished (storing calls, callbacks' steps), waiting for a thread or the "
    "database")
