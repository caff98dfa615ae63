"""The desk relay (坐席状态转发): telephony's events on the bus become desk feed entries.

It follows the event bus (hotline:events) through its own consumer group, so what is
published while the centre is down is relayed when it returns, and turns:
- `seat.changed` into a "seat" entry for that agent with the seat's live state, as the
  telephony service keeps it (telephony.seats.SEATS_KEY): agent, state, reason, since,
  queues, and wrap_up_until and wrap_up_extended (the seat panel's countdown and its one
  extension) as the service keeps them;
- `call.agent_connected` and `call.ended` into a "call" entry for the agent concerned:
  {call_id, event: "connected"|"ended", ...}; the caller's full number goes under
  data["private"], the masked one in the open;
- `work_order.opened` and `work_order.moved` into a "map" entry for the open case maps
  (feed.CASE_MAP): {case_number, event: "opened"|"moved", action, state, department_code},
  so a map redraws an order opened, moved or closed without being reloaded.
- `speech.keyword` (a configured keyword said in a call, heard live or in a stored
  transcript) into a "notice" for the supervisors' desks (feed.SUPERVISORS), with the masked
  utterance;
- `sip.banned` (an address banned after failed SIP sign-ins) into a "notice" for the
  supervisors' desks, with the address, its failures and until when;
- `speech.live` (the caller's words heard during the call, recordings.live) into a "live"
  entry for the desk of the agent talking to that caller.

The screen pop ("pop") is another loop's (agent_desk's pop composer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any

from agent_desk import feed
from core.events import EventBus, gather_burst
from core.phones import mask
from telephony.seats import SEATS_KEY
from telephony.wallboard import LIVE_CALLS_KEY

log = logging.getLogger(__name__)

EVENTS_GROUP = "desk-relay"  # the relay's consumer group on the event stream
# the event types `entry_for` makes a desk entry of; the others are skipped undecoded
RELAYED_TYPES = frozenset({"seat.changed", "call.agent_connected", "work_order.opened",
                           "work_order.moved", "call.ended", "speech.keyword", "sip.banned",
                           "speech.live"})
BLOCK_MS = 1_000  # how long one read waits for events (so a stop is seen within it)
GATHER_SECONDS = 0.1  # after a read that found events, the rest of the burst (gather_burst)
SEAT_FIELDS = ("agent", "state", "reason", "since", "queues", "wrap_up_until",
               "wrap_up_extended")


def _masked(number: str) -> str:
    try:
        return mask(number)
    except Exception:  # not a number phonenumbers can read: show none of it
        return "*" * len(number)


class DeskRelay:
    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        # one consumer per host: after a restart it finds what it had read but not relayed
        self.consumer = f"desk-relay-{socket.gethostname()}"
        bus.ensure_group(EVENTS_GROUP)  # before anything is published for it to miss

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            before = self.bus.read_up_to.get(EVENTS_GROUP)
            try:
                await asyncio.to_thread(self.relay, BLOCK_MS)
            except Exception:  # Redis away for a moment: the group keeps the events
                log.exception("desk relay failed; trying again")
                await asyncio.sleep(1.0)
            if self.bus.read_up_to.get(EVENTS_GROUP) != before:
                await gather_burst(stop, GATHER_SECONDS)

    def relay(self, block_ms: int | None = None) -> list[str]:
        """Relay what the bus has for the desks (waiting up to `block_ms` for it); the
        desk feed ids written. The batch's live states are read in one round trip, its
        entries written in another, and its events acknowledged once written (if the writing
        fails, they are all read again)."""
        relayed: list[str] = []
        events: list[dict[str, Any]] = []
        for entry_id, event in self.bus.consume(EVENTS_GROUP, self.consumer,
                                                block_ms=block_ms, types=RELAYED_TYPES):
            relayed.append(entry_id)
            events.append(event)
        live = self._live_of(events)
        entries = [made for event in events if (made := self.entry_for(event, live))]
        written = feed.publish_all(self.bus.client, entries)
        self.bus.ack(EVENTS_GROUP, *relayed)
        return written

    def _live_of(self, events: list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
        """The live states the events' entries show, read at once: {(hash, field): raw}."""
        wanted = {SEATS_KEY: sorted({str(e["agent"]) for e in events
                                     if e.get("type") == "seat.changed" and e.get("agent")}),
                  LIVE_CALLS_KEY: sorted({str(e["call_id"]) for e in events
                                          if e.get("type") == "speech.live" and e.get("call_id")})}
        wanted = {key: fields for key, fields in wanted.items() if fields}
        if not wanted:
            return {}
        with self.bus.client.pipeline(transaction=False) as pipe:
            for key, fields in wanted.items():
                pipe.hmget(key, fields)
            answers = pipe.execute()
        return {(key, field): raw for (key, fields), got in zip(wanted.items(), answers,
                                                                 strict=True)
                for field, raw in zip(fields, got, strict=True)}

    def entry_for(self, event: dict[str, Any], live: dict[tuple[str, str], Any] | None = None
                  ) -> tuple[str, str, dict[str, Any]] | None:
        """(agent, kind, data) of the desk entry an event makes, or None. `live`: the live
        states read for its batch (`_live_of`); without it they are read now."""
        kind = event.get("type")
        if kind == "seat.changed" and event.get("agent"):
            return str(event["agent"]), "seat", self.seat_state(event, live)
        if kind == "call.agent_connected" and event.get("agent"):
            return str(event["agent"]), "call", {
                "call_id": event.get("call_id", ""), "event": "connected",
                "queue": event.get("queue", ""), "wait_seconds": event.get("wait_seconds"),
                "at": event.get("at")}
        if kind in ("work_order.opened", "work_order.moved") and event.get("case_number"):
            opened = kind == "work_order.opened"
            return feed.CASE_MAP, "map", {
                "case_number": event["case_number"],
                "event": "opened" if opened else "moved",
                "action": "create" if opened else event.get("action", ""),
                "state": "intake" if opened else event.get("to_state", ""),
                "department_code": event.get("department_code", ""), "at": event.get("at")}
        if kind == "call.ended":
            record = event.get("record") or {}
            if not isinstance(record, dict) or not record.get("agent"):
                return None  # nobody answered it: no desk had it
            caller = str(record.get("caller_number") or "")
            return str(record["agent"]), "call", {
                "call_id": event.get("call_id") or record.get("call_id", ""),
                "event": "ended", "queue": record.get("queue", ""),
                "outcome": record.get("outcome", ""),
                "talk_seconds": record.get("talk_seconds"),
                "hangup_by": record.get("hangup_by", ""), "at": record.get("ended_at"),
                "caller_number": _masked(caller),
                feed.PRIVATE: {"caller_number": caller}}
        if kind == "speech.keyword":  # a keyword heard in a stored transcript (关键词告警)
            return feed.SUPERVISORS, "notice", {
                "source": "speech", "at": event.get("at"),
                "alert": {"key": event.get("id", ""), "kind": "keyword",
                          "keyword": event.get("keyword", ""),
                          "call_id": event.get("call_id", ""), "leg": event.get("leg", ""),
                          "offset_seconds": event.get("offset_seconds"),
                          "excerpt": event.get("excerpt", ""),
                          "live": bool(event.get("live"))}}
        if kind == "sip.banned":  # an address banned after failed SIP sign-ins (SIP 封禁)
            return feed.SUPERVISORS, "notice", {
                "source": "sip", "at": event.get("at"),
                "alert": {"key": event.get("id", ""), "kind": "sip_ban",
                          "address": event.get("address", ""),
                          "threshold": event.get("failures"), "until": event.get("until"),
                          "reason": event.get("reason", "")}}
        if kind == "speech.live" and event.get("call_id"):
            return self.live_transcript(event, live)
        return None

    def live_transcript(self, event: dict[str, Any], live: dict[tuple[str, str], Any] | None = None
                        ) -> tuple[str, str, dict[str, Any]] | None:
        """The caller's words heard live (speech.live) for the desk of the agent talking to
        them now (the telephony service's live calls); None while nobody has answered."""
        raw = self._live(live, LIVE_CALLS_KEY, str(event["call_id"]))
        try:
            agent = json.loads(raw).get("agent") if raw else None
        except (ValueError, AttributeError):
            agent = None
        if not agent:
            return None
        return str(agent), "live", {
            "call_id": event["call_id"], "utterance": event.get("utterance"),
            "final": bool(event.get("final")), "text": event.get("text", ""),
            "at": event.get("at")}

    def seat_state(self, event: dict[str, Any], live: dict[tuple[str, str], Any] | None = None
                   ) -> dict[str, Any]:
        """The seat as the telephony service keeps it now (it writes the live state before
        it publishes the change); from the event itself if it keeps none."""
        raw = self._live(live, SEATS_KEY, str(event["agent"]))
        try:
            seat = json.loads(raw) if raw else None
        except ValueError:
            seat = None
        if not isinstance(seat, dict):
            seat = {"agent": event["agent"], "state": event.get("state", ""),
                    "reason": event.get("reason", ""), "since": event.get("at"),
                    "queues": []}
        return {key: seat[key] for key in SEAT_FIELDS if key in seat}

    def _live(self, live: dict[tuple[str, str], Any] | None, key: str, field: str) -> Any:
        if live is not None and (key, field) in live:
            return live[key, field]
        return self.bus.client.hget(key, field)
