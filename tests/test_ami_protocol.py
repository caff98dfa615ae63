"""The AMI stream parser on a recorded event stream cut into hostile chunks."""

from __future__ import annotations

import json
import logging
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.clock import FixedClock
from telephony.ami import _Manager, _Protocol, event_fields

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


@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_a_gbk_caller_name_reads_right_beside_utf8(chunk: int) -> None:
    """A carrier or an older PBX sends the display name in GBK; Asterisk passes the bytes
    on. Each line that is not UTF-8 is read as GB18030 (a superset of GBK)."""
    wire = (b"Event: Newchannel\r\nUniqueid: 1.5\r\nCallerIDName: "
            + "王先生".encode("gbk") + b"\r\nConnectedLineName: " + "张三".encode()
            + b"\r\n\r\n")
    protocol, collector = _protocol()
    for start in range(0, len(wire), chunk):
        protocol.data_received(wire[start:start + chunk])
    [event] = collector.events
    assert (event["CallerIDName"], event["ConnectedLineName"]) == ("王先生", "张三")


def test_repeated_headers_become_plain_strings() -> None:
    """Asterisk repeats ChanVariable (one per channel variable, manager.conf channelvars);
    panoramisk hands a repeated header over as a list, which must never become the text
    "['...', '...']" of a call record."""
    wire = (b"Event: AgentConnect\r\nUniqueid: 1.6\r\nMemberName: 8001\r\n"
            b"ChanVariable: HOTLINE_QUEUE=intake\r\nChanVariable: HOTLINE_PRIORITY=10\r\n"
            b"Queue: intake\r\nQueue: other\r\n\r\n")
    protocol, _collector = _protocol()
    seen: list[dict[str, str]] = []
    protocol.handle_message = lambda message: seen.append(event_fields(message))  # type: ignore[method-assign]
    protocol.data_received(wire)
    [event] = seen
    assert event["ChanVariable(HOTLINE_QUEUE)"] == "intake"
    assert event["ChanVariable(HOTLINE_PRIORITY)"] == "10"
    assert event["Queue"] == "intake" and event["MemberName"] == "8001"
    assert not any(value.startswith("[") for value in event.values())


def test_a_message_cut_off_by_a_disconnect_is_dropped_with_one_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    protocol, collector = _protocol()
    protocol.data_received(b"Event: Newchannel\r\nUniqueid: 1.7\r\n\r\n"
                           b"Event: Hangup\r\nUniqueid: 1.7\r\nCau")
    with caplog.at_level(logging.WARNING, logger="telephony.ami"):
        protocol.connection_lost(None)
    assert [e["Event"] for e in collector.events] == ["Newchannel"]
    assert [r.getMessage() for r in caplog.records] == [
        "AMI link lost in the middle of a message: 33 bytes dropped"]  # 15 + 15 + 3


def test_every_message_is_stamped_with_when_it_arrived() -> None:
    protocol, _collector = _protocol()
    protocol.factory.clock = FixedClock(datetime(2026, 11, 29, 14, 0, tzinfo=UTC))  # type: ignore[attr-defined]
    seen: list[float] = []
    protocol.handle_message = lambda message: seen.append(message.received_at)  # type: ignore[method-assign]
    protocol.data_received(b"Event: Newchannel\r\nUniqueid: 1.8\r\n\r\n")
    assert seen == [datetime(2026, 11, 29, 14, 0, tzinfo=UTC).timestamp()]


def test_a_parsed_event_keeps_panoramisks_message_api() -> None:
    """Listeners written against panoramisk read an event as a case-insensitive mapping and by
    attribute; the parser's shortcut must not take that away."""
    wire = (b"Event: AGIExecEnd\r\nUniqueid: 1.9\r\nCallerIDName: \xe7\x8e\x8b\r\n"
            b"ChanVariable: A=1\r\nChanVariable: B=2\r\nResult: 200%20result%3D1\r\n\r\n")
    protocol, _collector = _protocol()
    seen: list[object] = []
    protocol.handle_message = seen.append  # type: ignore[method-assign]
    protocol.data_received(wire)
    [message] = seen
    assert message["uniqueid"] == message["UNIQUEID"] == "1.9"  # type: ignore[index]
    assert message.callerid_name == "" and message.calleridname == "王"  # type: ignore[attr-defined]
    assert "chanvariable" in message and "Missing" not in message  # type: ignore[operator]
    assert message.chanvariable == ["A=1", "B=2"]  # type: ignore[attr-defined]
    assert message["Result"] == "200 result=1"  # type: ignore[index]
    assert message.id is None and message.success is True  # type: ignore[attr-defined]
    assert dict(message) == {  # type: ignore[call-overload]
        "Event": "AGIExecEnd", "Uniqueid": "1.9", "CallerIDName": "王",
        "ChanVariable": ["A=1", "B=2"], "Result": "200 result=1", "content": ""}
    assert event_fields(message) == {
        "Event": "AGIExecEnd", "Uniqueid": "1.9", "CallerIDName": "王",
        "ChanVariable(A)": "1", "ChanVariable(B)": "2", "ChanVariable": "A=1",
        "Result": "200 result=1"}


def test_the_manager_hands_each_event_to_the_listeners_whose_pattern_matches() -> None:
    """The manager's dispatch (ours: it reads the name without building panoramisk's
    case-folded store) calls each listener registered for a pattern the event's name
    matches, with the manager set on the event."""
    manager = _Manager()
    every: list[tuple[str, bool]] = []
    queues: list[tuple[object, str]] = []
    manager.register_event("*", lambda _m, event: every.append(
        (event_fields(event)["Event"], "_store" in vars(event))))
    manager.register_event("Queue*", lambda m, event: queues.append((m, event.event)))
    protocol = _Protocol()
    protocol.connection_made(_Transport())
    protocol.factory, protocol.responses, protocol.queue = manager, {}, deque()
    protocol.data_received(b"Event: Newchannel\r\nUniqueid: 1.10\r\n\r\n"
                           b"Event: QueueCallerJoin\r\nUniqueid: 1.10\r\nQueue: intake\r\n\r\n"
                           b"Event: Hangup\r\nUniqueid: 1.10\r\n\r\n")
    # nothing asked for the case-folded store before the listener read the event
    assert every == [("Newchannel", False), ("QueueCallerJoin", False), ("Hangup", False)]
    assert queues == [(manager, "QueueCallerJoin")]
