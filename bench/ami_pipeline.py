"""AMI event pipeline throughput: our parser + the manager's dispatch + call model + seat
board, against a bare read-and-split loop over the same byte stream (the least any AMI client
must do).

    .venv/bin/python -m bench.ami_pipeline [--copies 2000]

The stream is the recorded sandbox transcripts (tests/data/ami_*.json) repeated with fresh
channel ids, cut into 64 KiB reads as a socket would deliver them.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import deque
from pathlib import Path

from telephony.ami import _Manager, _Protocol, event_fields
from telephony.calls import CallTracker
from telephony.seats import SeatBoard

DATA = Path(__file__).parents[1] / "tests" / "data"
ID_KEYS = ("Uniqueid", "Linkedid", "DestUniqueid", "DestLinkedid")


def build_stream(copies: int) -> tuple[bytes, int]:
    calls = [json.loads((DATA / f"ami_{name}.json").read_text(encoding="utf-8"))
             for name in ("answered", "abandoned")]
    parts, count = [], 0
    for n in range(copies):
        for events in calls:
            for event in events:
                event = {k: (f"{v}-{n}" if k in ID_KEYS else v) for k, v in event.items()}
                parts.append("".join(f"{k}: {v}\r\n" for k, v in event.items()) + "\r\n")
                count += 1
    return "".join(parts).encode("utf-8"), count


def bare_loop(wire: bytes) -> int:
    buffer, seen = b"", 0
    for start in range(0, len(wire), 65536):
        buffer += wire[start:start + 65536]
        blocks = buffer.split(b"\r\n\r\n")
        buffer = blocks.pop()
        for block in blocks:
            fields = dict(line.partition(": ")[::2] for line in
                          block.decode("utf-8", "replace").split("\r\n"))
            seen += "Event" in fields
    return seen


class _Sink:
    """What the telephony service's listener does with each event: the call model and the
    seat board."""

    def __init__(self) -> None:
        self.tracker, self.board = CallTracker(), SeatBoard({"intake": 0})
        self.events = self.domain = 0

    def on_event(self, _manager: object, message: object) -> None:
        event = event_fields(message)
        received_at = message.received_at  # type: ignore[attr-defined]
        self.events += 1
        self.domain += (len(self.tracker.feed(event, received_at))
                        + len(self.board.feed(event, received_at)))


class _Transport:
    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


def pipeline(wire: bytes) -> tuple[int, int]:
    """The production path: our protocol hands each event to the manager, whose dispatch
    matches it against the registered patterns and calls the listener."""
    manager, sink = _Manager(), _Sink()
    manager.register_event("*", sink.on_event)
    protocol = _Protocol()
    protocol.connection_made(_Transport())
    protocol.factory, protocol.responses, protocol.queue = manager, {}, deque()
    for start in range(0, len(wire), 65536):
        protocol.data_received(wire[start:start + 65536])
    return sink.events, sink.domain


def timed(func, *args):  # type: ignore[no-untyped-def]
    best, result = float("inf"), None
    for _ in range(3):
        started = time.perf_counter()
        result = func(*args)
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=2000)
    copies = parser.parse_args().copies
    wire, count = build_stream(copies)
    base_s, base_n = timed(bare_loop, wire)
    ours_s, (ours_n, domain) = timed(pipeline, wire)
    assert base_n == ours_n == count, (base_n, ours_n, count)
    print(f"AMI pipeline: {count} events ({len(wire) / 1e6:.1f} MB, {copies * 2} calls), "
          "best of 3")
    print(f"{'run':<44}{'events/s':>12}{'ratio':>8}")
    print(f"{'bare read-and-split (baseline)':<44}{count / base_s:>12,.0f}{1:>8.2f}")
    print(f"{'parser + dispatch + call model + seat board':<44}{count / ours_s:>12,.0f}"
          f"{base_s / ours_s:>8.2f}")
    print(f"domain events produced: {domain}")


if __name__ == "__main__":
    main()
