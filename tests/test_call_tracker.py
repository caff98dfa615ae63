"""The call model on AMI transcripts recorded from the sandbox (tests/data/ami_*.json)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telephony.calls import CallTracker
from telephony.events import CallEnded

DATA = Path(__file__).with_name("data")


def transcript(name: str) -> list[dict[str, str]]:
    return json.loads((DATA / f"ami_{name}.json").read_text(encoding="utf-8"))


def run(events: list[dict[str, str]], tracker: CallTracker | None = None):  # type: ignore[no-untyped-def]
    tracker = tracker or CallTracker()
    out = []
    for event in events:
        out += tracker.feed(event)
    return tracker, out


def test_an_answered_call_becomes_one_record() -> None:
    tracker, out = run(transcript("answered"))
    types = [e.type for e in out]
    assert types == ["call.started", "call.ivr_step", "call.ivr_step", "call.queue_joined",
                     "call.agent_ringing", "call.agent_connected", "call.ended"]
    record = out[-1].record
    assert record["caller_number"] == "13800138000" and record["caller_name"] == "王先生"
    assert record["entry_number"] == "12319"
    assert record["outcome"] == "answered"
    assert (record["queue"], record["agent"], record["queue_position"]) == ("intake", "8001", 1)
    assert record["wait_seconds"] == pytest.approx(1.01, abs=0.01)
    assert record["talk_seconds"] == pytest.approx(0.604, abs=0.01)
    assert [(s["node"], s["value"]) for s in record["ivr_path"]] == [("digit", "1"),
                                                                     ("menu", "1")]
    assert record["agent_attempts"][0]["outcome"] == "connected"
    assert record["recording"].endswith("/hotline12319-1795492049.0.wav")
    assert sorted(leg["role"] for leg in record["legs"]) == ["agent", "caller"]
    assert record["hangup_cause"] == 16 and not record["incomplete"]
    assert tracker.calls == {}


def test_a_replayed_stream_changes_nothing() -> None:
    events = transcript("answered")
    tracker, first = run(events)
    _, again = run(events, tracker)
    assert again == []
    assert sum(isinstance(e, CallEnded) for e in first) == 1


def test_an_abandon_is_counted_with_its_wait() -> None:
    _, out = run(transcript("abandoned"))
    abandon = [e for e in out if e.type == "call.abandoned"]
    assert len(abandon) == 1 and abandon[0].wait_seconds == pytest.approx(7.615, abs=0.01)
    assert not abandon[0].short
    record = out[-1].record
    assert record["outcome"] == "abandoned" and record["agent"] is None
    assert record["talk_seconds"] is None
    assert record["agent_attempts"][0]["outcome"] == "cancel"
    _, out = run(transcript("abandoned"), CallTracker(short_abandon_seconds=10))
    assert out[-1].record["short_abandon"] is True


def test_resync_closes_calls_that_ended_while_disconnected_and_adopts_new_ones() -> None:
    events = transcript("answered")
    cut = next(i for i, e in enumerate(events) if e["Event"] == "AgentConnect") + 1
    tracker, _ = run(events[:cut])
    assert len(tracker.calls) == 1
    stranger = {"Channel": "PJSIP/citizens-00000009", "Uniqueid": "x-1.9", "Linkedid": "x-1.9",
                "CallerIDNum": "13700000000", "CallerIDName": "李", "Exten": "12319"}
    out = tracker.resync([stranger], at=1795492100.0)
    ended = [e for e in out if isinstance(e, CallEnded)]
    assert len(ended) == 1 and ended[0].record["incomplete"]
    assert ended[0].record["outcome"] == "answered"
    assert ended[0].record["ended_at"] == 1795492100.0
    assert list(tracker.calls) == ["x-1.9"] and tracker.calls["x-1.9"].incomplete
    # the events missed meanwhile arrive after all: nothing is recorded twice
    _, late = run(events[cut:], tracker)
    assert not [e for e in late if isinstance(e, CallEnded)]


@pytest.mark.parametrize("event", [
    {}, {"Event": "Newchannel"}, {"Event": "Hangup", "Uniqueid": "nope"},
    {"Event": "Newchannel", "Uniqueid": "a", "Timestamp": "yesterday"},
    {"Event": "QueueCallerJoin", "Uniqueid": "a", "Position": "first"},
    {"Event": "Newchannel", "Uniqueid": "b", "CallerIDName": "\x00\x1b[31m张\udcff" * 100},
])
def test_garbage_events_are_survived(event: dict[str, str]) -> None:
    tracker, _ = run([event])
    run(transcript("answered"), tracker)  # still tracks real calls afterwards
    for call in tracker.calls.values():
        assert "\x1b" not in call.caller_name and len(call.caller_name) <= 100


@settings(max_examples=150, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(0, 6))
def test_shuffled_or_damaged_streams_never_raise(rng: random.Random, damage: int) -> None:
    events = transcript("answered") + transcript("abandoned")
    events = [dict(e) for e in events]
    rng.shuffle(events)
    for event in rng.sample(events, k=min(damage * 5, len(events))):
        key = rng.choice(sorted(event))
        event[key] = rng.choice(["", "-1", "\x00", "9" * 40, "零"])
    _, out = run(events)
    ended = [e.call_id for e in out if isinstance(e, CallEnded)]
    assert len(ended) == len(set(ended))  # never two records for one call
