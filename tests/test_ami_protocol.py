"""The AMI stream parser on a recorded event stream cut into hostile chunks."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import pytest

from telephony.ami import _Protocol

DATA = Path(__file__).with_name("data")


class _Collector:
    forgetable_actions = ("ping", "login")

    def __init__(self) -> None:
        self.events: list[dict[str, str]] = []
        self.awaiting_actions: deque[object] = deque()

    def dispatch(self, message: object) -> None:
        self.events.append(dict(message))  # type: ignore[call-overload]

    def connection_lost(self, exc: object) -> None:
        pass


class _Transport:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def _protocol() -> tuple[_Protocol, _Collector]:
    protocol = _Protocol()
    protocol.connection_made(_Transport())
    collector = _Collector()
    protocol.factory, protocol.responses, protocol.queue = collector, {}, deque()
    return protocol, collector


def _wire(events: list[dict[str, str]]) -> bytes:
    return "".join("".join(f"{k}: {v}\r\n" for k, v in e.items()) + "\r\n"
                   for e in events).encode("utf-8")


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000])
def test_chinese_names_survive_any_chunking(chunk: int) -> None:
    events = json.loads((DATA / "ami_answered.json").read_text(encoding="utf-8"))
    wire = b"Asterisk Call Manager/11.0.0\r\n" + _wire(events)
    protocol, collector = _protocol()
    for start in range(0, len(wire), chunk):
        protocol.data_received(wire[start:start + chunk])
    assert protocol.version == "11.0.0"
    assert len(collector.events) == len(events)
    names = {e.get("CallerIDName") for e in collector.events}
    assert {"王先生", "张三"} <= names


def test_garbage_blocks_are_counted_and_skipped() -> None:
    good = {"Event": "Newchannel", "Uniqueid": "1.1", "CallerIDName": "李四"}
    wire = (b"\x00\xff\xfe garbage without a colon\r\n\r\n"
            + b"Event: Broken\xe5\xbc\r\nUniqueid: 9\r\n\r\n"
            + b"X" * 100_000 + b"\r\n\r\n"
            + b": empty key\r\nnonsense\r\n\r\n"
            + _wire([good]))
    protocol, collector = _protocol()
    protocol.data_received(wire)
    assert protocol.garbage == 3
    assert collector.events[-1]["CallerIDName"] == "李四"
    assert collector.events[0]["Event"].startswith("Broken")  # kept, the bad byte replaced
