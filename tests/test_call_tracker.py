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


RECEIVED = 1795492100.0  # when the events reached the service, if not stamped


def run(events: list[dict[str, str]], tracker: CallTracker | None = None,  # type: ignore[no-untyped-def]
        received: list[float] | None = None):
    tracker = tracker or CallTracker()
    out = []
    for n, event in enumerate(events):
        out += tracker.feed(event, received[n] if received else RECEIVED)
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


def _unstamped(events: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in e.items() if k != "Timestamp"} for e in events]


def _stamps(events: list[dict[str, str]]) -> list[float]:
    return [float(e["Timestamp"]) for e in events]


RECORD_TIMES = ("started_at", "ended_at", "connected_at", "duration_seconds", "wait_seconds",
                "talk_seconds")


@pytest.mark.parametrize("name", ["answered", "abandoned"])
def test_without_timestamps_a_call_is_timed_as_its_events_arrive(name: str) -> None:
    """An AMI user without timestampevents: each event is timed when it arrived, here up to
    40 ms after Asterisk raised it, and the record matches the stamped one within 50 ms."""
    events = transcript(name)
    rng = random.Random(7)
    arrived = [t + rng.uniform(0, 0.04) for t in _stamps(events)]
    _, stamped = run(events)
    _, unstamped = run(_unstamped(events), received=arrived)
    want, got = stamped[-1].record, unstamped[-1].record
    for key in RECORD_TIMES:
        assert (want[key] is None) == (got[key] is None), key
        if want[key] is not None:
            assert got[key] == pytest.approx(want[key], abs=0.05), key
    assert (got["outcome"], got["short_abandon"], got["agent"]) == (
        want["outcome"], want["short_abandon"], want["agent"])


def test_a_backlog_that_delays_events_leaves_asterisks_own_figures() -> None:
    """The events from the agent's answer on arrive 3 s late (a busy service, no
    Timestamps): the wait is Asterisk's own HoldTime (1 s), not the 4 s the arrival times
    say; the talk time, timed by two equally late events, stays as measured."""
    events = transcript("answered")
    connect = next(i for i, e in enumerate(events) if e["Event"] == "AgentConnect")
    arrived = [t + (3.0 if i >= connect else 0.0) for i, t in enumerate(_stamps(events))]
    _, out = run(_unstamped(events), received=arrived)
    record = out[-1].record
    assert record["wait_seconds"] == 1.0  # AgentConnect HoldTime: 1
    assert record["talk_seconds"] == pytest.approx(0.604, abs=0.001)  # 7.530 - 6.926


def test_no_time_is_before_the_call_began_and_no_interval_is_negative() -> None:
    events = transcript("answered")
    begun = float(events[0]["Timestamp"])
    skewed = [dict(e) for e in events]
    for event in skewed[1:]:  # a clock stepped back by a minute after the call began
        event["Timestamp"] = repr(float(event["Timestamp"]) - 60)
    _, out = run(skewed)
    record = out[-1].record
    assert record["started_at"] == begun
    assert record["ended_at"] == begun and record["duration_seconds"] == 0
    assert record["connected_at"] == begun
    assert record["wait_seconds"] == 1.0 and record["talk_seconds"] == 0.0  # Asterisk's
    assert all(step["at"] >= begun for step in record["ivr_path"])
    assert all(leg["created_at"] >= begun and leg["ended_at"] >= begun
               for leg in record["legs"])


def test_who_hung_up_is_known() -> None:
    answered = transcript("answered")  # AgentComplete Reason: caller
    assert run(answered)[1][-1].record["hangup_by"] == "citizen"
    by_agent = [{**e, "Reason": "agent"} if e["Event"] == "AgentComplete" else e
                for e in answered if e["Event"] != "HangupRequest"]
    assert run(by_agent)[1][-1].record["hangup_by"] == "agent"
    abandoned = transcript("abandoned")  # the caller's BYE: HangupRequest on their leg
    assert run(abandoned)[1][-1].record["hangup_by"] == "citizen"
    hung_up_by_the_ivr = [e for e in abandoned if e["Event"] != "HangupRequest"]
    assert run(hung_up_by_the_ivr)[1][-1].record["hangup_by"] == "system"
    record = run(answered)[1][-1].record
    assert [(leg["role"], leg["cause"]) for leg in record["legs"]] == [("caller", 16),
                                                                       ("agent", 16)]


def test_the_agent_who_hung_up_is_known_when_agentcomplete_comes_after_the_call() -> None:
    """The agent's phone sends BYE (HangupRequest on the agent's leg); app_queue's
    AgentComplete comes from a thread of its own and, on a loaded machine, after both
    legs' Hangup, when the call is over: the agent still hung up, not the system."""
    answered = transcript("answered")
    agent_leg = {"Channel": "PJSIP/8001-00000001", "Uniqueid": "hotline12319-1795492055.1",
                 "Linkedid": "hotline12319-1795492049.0"}
    late = next({**e, "Reason": "agent"} for e in answered if e["Event"] == "AgentComplete")
    events = [{**e, **agent_leg} if e["Event"] == "HangupRequest" else e
              for e in answered if e["Event"] != "AgentComplete"] + [late]
    tracker, out = run(events)
    assert out[-1].type == "call.ended" and tracker.calls == {}
    assert out[-1].record["hangup_by"] == "agent"
    # without the agent's BYE (the PBX ended the agent's leg) nobody asked: the system
    no_bye = [e for e in events if e["Event"] != "HangupRequest"]
    assert run(no_bye)[1][-1].record["hangup_by"] == "system"
    # an agent rung first who refused the call (their phone's 486: a HangupRequest on
    # their leg) did not end it: nobody asked, the system ended it
    refused = {"Channel": "PJSIP/8002-00000002", "Uniqueid": "hotline12319-1795492055.2",
               "Linkedid": "hotline12319-1795492049.0", "Timestamp": "1795492055.09"}
    connect = next(n for n, e in enumerate(no_bye) if e["Event"] == "AgentConnect")
    rung = [*no_bye[:connect],
            {"Event": "Newchannel", "CallerIDNum": "8002", "Exten": "intake", **refused},
            {**no_bye[connect], "Event": "AgentCalled", "Timestamp": refused["Timestamp"],
             "DestUniqueid": refused["Uniqueid"], "Interface": "PJSIP/8002",
             "MemberName": "8002"},
            {"Event": "HangupRequest", **refused},
            {"Event": "Hangup", "Cause": "21", **refused},
            *no_bye[connect:]]
    record = run(rung)[1][-1].record
    assert sorted(leg["role"] for leg in record["legs"]) == ["agent", "agent", "caller"]
    assert record["hangup_by"] == "system"
    # the agent's leg ends after a transfer (the transferer's BYE): the transfer ended it
    blind = {"Event": "BlindTransfer", "Timestamp": "1795492056.6",
             "TransfererUniqueid": "hotline12319-1795492055.1", "Extension": "8002",
             "Context": "from-agents", "Result": "Success"}
    at = next(n for n, e in enumerate(events) if e["Event"] == "HangupRequest")
    transferred = [*events[:at], blind, *events[at:-1],
                   {**late, "Reason": "transfer"}]
    assert run(transferred)[1][-1].record["hangup_by"] == "transfer"


def test_a_static_queue_member_is_the_agent_its_device_names() -> None:
    """queues.conf `member => PJSIP/8001,0,王芳`: its events say MemberName 王芳 and
    Interface PJSIP/8001; the agent is 8001, as for a dynamic login."""
    events = [{**e, "MemberName": "王芳"} if "MemberName" in e else e
              for e in transcript("answered")]
    _, out = run(events)
    assert [e.agent for e in out if e.type in ("call.agent_ringing",
                                               "call.agent_connected")] == ["8001", "8001"]
    record = out[-1].record
    assert record["agent"] == "8001" and record["agent_attempts"][0]["agent"] == "8001"


def test_a_recording_any_dialplan_started_is_linked() -> None:
    """A dialplan of the city's own (not ours) records with MixMonitor: Asterisk sets
    MIXMONITOR_FILENAME on the channel, and the call record links that file."""
    path = "/var/spool/asterisk/monitor/2026/11/29/city-1795492049.0.wav"
    events = []
    for event in transcript("answered"):
        if event.get("Variable", "").lstrip("_") == "HOTLINE_RECORDING":
            continue  # not recorded by our [hotline-queue]
        events.append(event)
        if event["Event"] == "MixMonitorStart":
            events.append({**event, "Event": "VarSet", "Variable": "MIXMONITOR_FILENAME",
                           "Value": path})
    _, out = run(events)
    assert out[-1].record["recording"] == path


def test_a_call_the_hotline_places_is_recorded_as_outbound() -> None:
    """A survey call (the Originate sets HOTLINE_OUTBOUND_PURPOSE and _NUMBER on the
    citizen's channel): outbound, its purpose, the citizen's number; answered when the
    citizen's phone picked up, whoever hung up first."""
    leg = {"Channel": "PJSIP/trunk-00000007", "Uniqueid": "h-1.20", "Linkedid": "h-1.20",
           "CallerIDNum": "", "CallerIDName": "", "Exten": "s"}
    t0 = 1795500000.0
    events = [
        {"Event": "Newchannel", "Timestamp": repr(t0), "ChannelState": "0", **leg},
        {"Event": "VarSet", "Timestamp": repr(t0), "Variable": "HOTLINE_OUTBOUND_PURPOSE",
         "Value": "survey", **leg},
        {"Event": "VarSet", "Timestamp": repr(t0), "Variable": "HOTLINE_OUTBOUND_NUMBER",
         "Value": "+8613900139000", **leg},
        {"Event": "Newstate", "Timestamp": repr(t0 + 4), "ChannelState": "6", **leg},
        {"Event": "DTMFEnd", "Timestamp": repr(t0 + 9), "Digit": "2", "Direction": "Received",
         **leg},
        {"Event": "HangupRequest", "Timestamp": repr(t0 + 12), **leg},
        {"Event": "Hangup", "Timestamp": repr(t0 + 12), "Cause": "16", **leg},
    ]
    record = run(events)[1][-1].record
    assert (record["direction"], record["purpose"], record["citizen_number"]) == (
        "outbound", "survey", "+8613900139000")
    assert (record["outcome"], record["hangup_by"], record["queue"]) == (
        "answered", "citizen", None)
    unanswered = run([e for e in events if e["Event"] != "Newstate"])[1][-1].record
    assert unanswered["outcome"] == "unanswered"
