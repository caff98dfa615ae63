"""Bounded queues (issue 15, item 4): where a producer can outrun its consumer, the queue
keeps to its bound, drops what it says it drops, and counts it.

- A live stream whose recogniser falls behind (a recogniser that is stuck, then slow: the
  consumer itself being slow, on a real bus) holds 5 s of audio, 250 frames of 20 ms, drops
  the oldest beyond that and counts them; the recogniser is then fed the newest audio, at most
  one second at a time.
- A desk page that does not read is closed when 1 000 entries wait for it (counted).
- The SIP guard counts failures from at most `limit` addresses at once: an attack from many
  addresses leaves it at the cap, the least recently failed address forgotten and counted.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import REGISTRY

from accounts.service import Identity
from agent_desk.push import Desk, Entry, PushServer
from core.clock import FixedClock
from core.db import make_engine, session_factory
from core.events import EventBus
from core.live import connect_redis
from recordings.live import LiveStream
from telephony.sipguard import FailureCounter
from tests.conftest import make_settings, wait_until

FRAME = bytes(320)  # 20 ms of 8 kHz 16-bit silence, as chan_audiosocket sends it


def _sample(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    assert value is not None, f"{name} is not registered"
    return value


class StuckThenSlowRecogniser:
    """The consumer that falls behind: its first feed waits until the test lets it go,
    each feed after that takes 10 ms. It hears nothing (no text to publish)."""

    def __init__(self) -> None:
        self.fed: list[int] = []
        self.go = threading.Event()

    def feed(self, pcm: bytes) -> list:
        self.fed.append(len(pcm))
        self.go.wait(20)
        time.sleep(0.01)
        return []

    def finish(self) -> list:
        return []


def test_a_live_stream_whose_recogniser_falls_behind_keeps_5_s_and_drops_the_oldest(
        tmp_path: Path) -> None:
    bus = EventBus(connect_redis(make_settings(tmp_path)))
    slow = StuckThenSlowRecogniser()
    dropped_before = _sample("hotline_live_frames_dropped_total")
    streams_before = _sample("hotline_live_streams")
    stream = LiveStream("1764000000.1", slow, bus, lambda: (), time.time).start()  # type: ignore[arg-type]
    try:
        assert _sample("hotline_live_streams") == streams_before + 1
        for _ in range(10):  # a tenth of a second: the recogniser's first chunk
            stream.hear(FRAME)
        wait_until(lambda: slow.fed == [3200], 5, "the recogniser was not fed its first chunk")

        for _ in range(1000):  # 20 s of audio while the recogniser is stuck
            stream.hear(FRAME)
            assert stream.frames.qsize() <= 250
        assert stream.frames.qsize() == 250  # 5 s waiting, no more
        assert stream.dropped == 750  # the oldest 15 s
        assert _sample("hotline_live_frames_dropped_total") == dropped_before + 750
        assert _sample("hotline_live_frames_waiting") >= 250
    finally:
        slow.go.set()
        stream.end()
        stream.thread.join(10)
    assert not stream.thread.is_alive()
    # the first chunk, then the 250 newest frames (80 000 bytes) a second at most at a time
    assert slow.fed[0] == 3200 and sum(slow.fed[1:]) == 250 * 320
    assert max(slow.fed) <= 16000
    assert _sample("hotline_live_streams") == streams_before


def test_a_stream_that_keeps_up_drops_nothing(tmp_path: Path) -> None:
    bus = EventBus(connect_redis(make_settings(tmp_path)))
    slow = StuckThenSlowRecogniser()
    slow.go.set()
    stream = LiveStream("1764000000.2", slow, bus, lambda: (), time.time).start()  # type: ignore[arg-type]
    for _ in range(100):  # 2 s of audio in real time's pace, 20 ms a frame
        stream.hear(FRAME)
        time.sleep(0.02)
    stream.end()
    stream.thread.join(10)
    assert stream.dropped == 0 and sum(slow.fed) == 100 * 320


def test_the_sip_guard_counts_at_most_its_limit_of_addresses() -> None:
    forgotten_before = _sample("hotline_sip_guard_forgotten_total")
    guard = FailureCounter(threshold=3, window_seconds=60, limit=100)
    for n in range(250):  # 250 addresses fail once each within 25 s (the window is 60 s)
        assert guard.failed(f"203.0.113.{n}", 1000.0 + n / 10) is None
    assert len(guard) == 100  # the cap
    assert _sample("hotline_sip_guard_forgotten_total") == forgotten_before + 150
    assert _sample("hotline_sip_guard_addresses") >= 100

    # the newest addresses are still counted: two more failures ban 203.0.113.249
    assert guard.failed("203.0.113.249", 1030.0) is None
    assert guard.failed("203.0.113.249", 1031.0) == 3
    # the forgotten one starts afresh
    assert guard.failed("203.0.113.0", 1032.0) is None
    assert guard.failed("203.0.113.0", 1033.0) is None

    # once the window has passed, the stale addresses go without being counted as forgotten
    forgotten = _sample("hotline_sip_guard_forgotten_total")
    assert guard.failed("198.51.100.1", 2000.0) is None
    assert len(guard) == 1
    assert _sample("hotline_sip_guard_forgotten_total") == forgotten


def test_a_desk_that_does_not_read_is_closed_at_its_queue_limit(tmp_path: Path) -> None:
    """1 000 entries wait for a desk page that reads none: the 1 001st closes its stream
    (counted), the queue never holding more than 1 000; the page reconnects later and is
    sent what it missed from the feed (test_desk_push)."""
    settings = make_settings(tmp_path)
    engine = make_engine(settings.storage.database_url)
    server = PushServer(settings, session_factory(engine), connect_redis(settings),
                        FixedClock(datetime(2026, 11, 30, 9, 0, tzinfo=UTC)))
    engine.dispose()  # the server is not started: it asks the database nothing here
    desk = Desk("8101", Identity("8101", ("agent",), False, agent="8101"), "127.0.0.1")
    server._desks["8101"] = {desk}  # as _stream opens one, without the socket
    closed_before = _sample("hotline_push_streams_closed_slow_total")

    def entry(n: int) -> Entry:
        return Entry(f"1764493200000-{n}", "8101", "seat", "{}", None, f"e{n}")

    for n in range(1000):
        server._fan_out(entry(n))
    assert desk.queue.qsize() == 1000 and server.open_desks == 1
    assert _sample("hotline_push_queue_deepest") >= 1000
    assert _sample("hotline_push_streams") >= 1
    server._fan_out(entry(1000))
    assert server.open_desks == 0
    assert _sample("hotline_push_streams_closed_slow_total") == closed_before + 1
    # the stream ends after what it had: 999 entries, then its end
    waiting = [desk.queue.get_nowait() for _ in range(desk.queue.qsize())]
    assert len(waiting) == 1000 and waiting[-1] is None
