"""Asterisk's channel event log (CEL): its own record of every call, read back when the
telephony service missed how a call ended (a crash, a restart, a broken AMI link).

Asterisk writes CEL rows to a SQLite file (asterisk_conf/templates/cel.conf.tmpl,
cel_sqlite3_custom.conf.tmpl) whatever the AMI link does. `rebuild` turns the rows of one
call (one linkedid) into the call as the live path (telephony.calls) would have built it:
started, queued, connected to an agent, talk ended, who hung up, each leg's hang-up cause,
the recording; pure, no I/O. `CelStore` is the adapter that reads and trims the file.

The log tells no IVR path and no Asterisk whole-second figures (HoldTime, TalkTime): a
rebuilt call has none. Calls the hotline places itself (survey calls, callbacks, agents'
own calls) are told apart by channel variables the log does not carry: only citizens'
calls into the hotline are rebuilt, the others stay `incomplete` as before.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.config import Settings
from telephony.calls import Leg, LiveCall, _text
from telephony.seats import agent_of

# The store in Asterisk's log directory (astlogdir): cel_sqlite3_custom.conf names it by its
# category, and Asterisk adds ".db".
CEL_STORE = "hotline-cel"

# The dialplan contexts citizens' calls enter by (pjsip.conf endpoints citizens, trunk).
INBOUND_CONTEXTS = frozenset({"from-citizens", "from-trunk"})
# Asterisk's names of the Q.850 causes a call commonly ends with (main/causes.h), as AMI's
# Cause-txt gives them; another cause keeps its number and no text.
CAUSE_TEXTS = {
    0: "Unknown", 1: "Unallocated (unassigned) number", 3: "No route to destination",
    16: "Normal Clearing", 17: "User busy", 18: "No user responding",
    19: "User alerting, no answer", 21: "Call Rejected", 22: "Number changed",
    27: "Destination out of order", 28: "Invalid number format (incomplete number)",
    31: "Normal, unspecified", 34: "Circuit/channel congestion",
    38: "Network out of order", 41: "Temporary failure", 42: "Switching equipment congestion",
    58: "Bearer capability not available", 127: "Interworking, unspecified",
}
_UNIQUE_SUFFIX = re.compile(r"-[0-9a-f]+$")  # PJSIP/8101-00000005 -> PJSIP/8101
COLUMNS = ("eventtype", "eventtime", "cidname", "cidnum", "exten", "context", "channame",
           "appname", "appdata", "accountcode", "uniqueid", "linkedid", "userfield", "peer",
           "userdeftype", "eventextra")


@dataclass(frozen=True)
class CelRow:
    """One CEL row: what happened (`event`, CEL's eventtype) to which channel, when."""

    event: str
    at: float
    caller_name: str = ""
    caller_number: str = ""
    exten: str = ""
    context: str = ""
    channel: str = ""
    app: str = ""
    app_data: str = ""
    account_code: str = ""
    uniqueid: str = ""
    linkedid: str = ""
    user_field: str = ""
    peer: str = ""
    user_type: str = ""
    extra: str = ""

    def extra_fields(self) -> dict[str, object]:
        """The row's extra (JSON for HANGUP, BRIDGE_ENTER ...); {} when it is not JSON."""
        try:
            found = json.loads(self.extra) if self.extra else {}
        except ValueError:
            return {}
        return found if isinstance(found, dict) else {}


def row_from(values: Sequence[object]) -> CelRow | None:
    """A CelRow from the store's columns (COLUMNS order); None for a row without a
    readable time or ids."""
    if len(values) != len(COLUMNS):
        return None
    text = ["" if v is None else str(v) for v in values]
    try:
        at = float(text[1])
    except ValueError:
        return None
    if not text[10] or not text[11] or at <= 0:
        return None
    return CelRow(text[0], at, *text[2:])


def ended(rows: Sequence[CelRow]) -> bool:
    """Whether the log shows the call over: its last channel is gone (LINKEDID_END)."""
    return any(row.event == "LINKEDID_END" for row in rows)


def rebuild(rows: Sequence[CelRow]) -> LiveCall | None:
    """The finished call these rows (of one linkedid, any order) tell, as telephony.calls
    would have built it from AMI events; None when they do not show a citizen's call that
    is over (no LINKEDID_END, no caller's CHAN_START, or a call the hotline placed)."""
    rows = sorted(rows, key=lambda r: r.at)  # a stable sort keeps the store's order on ties
    if not rows or not ended(rows):
        return None
    linkedid = rows[0].linkedid
    start = next((r for r in rows if r.event == "CHAN_START" and r.uniqueid == linkedid), None)
    if start is None or start.context not in INBOUND_CONTEXTS:
        return None
    call = LiveCall(call_id=linkedid, caller_number=_text(start.caller_number, 40),
                    caller_name=_text(start.caller_name, 100),
                    entry_number=_text(start.exten, 40), started_at=start.at)
    in_queue = False
    for row in rows:
        if row.linkedid != linkedid:
            continue
        at = call.at(row.at)
        leg = call.legs.get(row.uniqueid)
        if row.event == "CHAN_START" and leg is None:
            leg = call.legs[row.uniqueid] = Leg(
                uniqueid=row.uniqueid, channel=_text(row.channel),
                role="caller" if row.uniqueid == linkedid else "other",
                number=_text(row.caller_number, 40), name=_text(row.caller_name, 100),
                created_at=at)
            if leg.role == "other" and in_queue and call.connected_at is None:
                _rung(call, leg, at)
        elif leg is None:
            continue
        elif row.event == "ANSWER":
            leg.answered_at = leg.answered_at or at
        elif row.event == "APP_START" and leg.role == "caller":
            _app_started(call, row, at)
            in_queue = in_queue or (row.app.lower() == "queue")
        elif row.event == "APP_END" and leg.role == "caller" and row.app.lower() == "queue":
            in_queue = False
            call.queue_left_at = call.queue_left_at or at
        elif row.event == "BRIDGE_ENTER" and leg.role == "agent" and call.connected_at is None:
            _connected(call, leg, at)
        elif (row.event == "BRIDGE_EXIT" and call.connected_at is not None
              and call.talk_ended_at is None and leg.role in ("caller", "agent")):
            call.talk_ended_at = at
        elif row.event in ("BLINDTRANSFER", "ATTENDEDTRANSFER"):
            extra = row.extra_fields()
            call.transfers.append({
                "at": at, "kind": "blind" if row.event == "BLINDTRANSFER" else "attended",
                "to": _text(extra.get("extension") or extra.get("transferee_channel_name")),
                "result": ""})
        elif row.event == "HANGUP":
            _hung_up(call, leg, row, at)
        elif row.event == "CHAN_END" and leg.ended_at is None:
            leg.ended_at = at
    if call.caller_leg is None or call.ended_at() is None:
        return None
    if (call.queue_joined_at is not None and call.connected_at is None
            and call.hangup_by == "citizen"):
        call.abandoned = True  # the caller left the queue: live, QueueCallerAbandon
    if call.transfers and call.hangup_by != "citizen":
        call.hangup_by = "transfer"
    return call


def _app_started(call: LiveCall, row: CelRow, at: float) -> None:
    app, first = row.app.lower(), row.app_data.split(",")[0].strip()
    if app == "queue" and call.queue_joined_at is None and first:
        call.queue, call.queue_joined_at = _text(first, 40), at
    elif app == "mixmonitor" and first:
        call.recording = call.recording or _text(first)


def _rung(call: LiveCall, leg: Leg, at: float) -> None:
    """A leg made while the caller waits in the queue: an agent's phone ringing."""
    leg.role = "agent"
    call.agent_attempts.append({
        "agent": agent_of({"Interface": _UNIQUE_SUFFIX.sub("", leg.channel)}),
        "queue": call.queue or "", "rang_at": at, "outcome": "ringing", "ended_at": None,
        "uniqueid": leg.uniqueid})


def _attempt(call: LiveCall, leg: Leg) -> dict[str, object] | None:
    return next((a for a in call.agent_attempts if a["uniqueid"] == leg.uniqueid), None)


def _connected(call: LiveCall, leg: Leg, at: float) -> None:
    attempt = _attempt(call, leg)
    if attempt is not None:
        attempt.update(outcome="connected", ended_at=at)
    call.agent = agent_of({"Interface": _UNIQUE_SUFFIX.sub("", leg.channel)}) or None
    call.connected_at = at
    call.queue_left_at = call.queue_left_at or at


def _hung_up(call: LiveCall, leg: Leg, row: CelRow, at: float) -> None:
    extra = row.extra_fields()
    cause = extra.get("hangupcause")
    if leg.ended_at is None:
        leg.ended_at = at
        leg.cause = cause if isinstance(cause, int) else None
        leg.cause_text = CAUSE_TEXTS.get(leg.cause, "") if leg.cause is not None else ""
    attempt = _attempt(call, leg)
    if attempt is not None and attempt["outcome"] == "ringing":
        attempt.update(outcome="no_answer", ended_at=at)
    if leg.role != "caller" or call.hangup_by:
        return
    # who ended it: the channel Asterisk names as the hang-up's source
    source = _UNIQUE_SUFFIX.sub("", str(extra.get("hangupsource") or ""))
    agents = {_UNIQUE_SUFFIX.sub("", other.channel) for other in call.legs.values()
              if other.role == "agent" and call.connected_at is not None}
    if source and source == _UNIQUE_SUFFIX.sub("", leg.channel):
        call.hangup_by = "citizen"
    elif source and source in agents:
        call.hangup_by = "agent"


def store_path(settings: Settings) -> Path:
    """Where the centre reads the CEL store: pbx.cel_file, else the sandbox's log bind."""
    return settings.pbx.cel_file or settings.storage.data_dir / "pbx" / "log" / f"{CEL_STORE}.db"


class CelStore:
    """The CEL SQLite file Asterisk writes (pbx.cel_file): read, and trimmed by the centre.
    A missing file, or one without the table yet, is a store with nothing in it."""

    def __init__(self, path: Path, busy_seconds: float = 5.0) -> None:
        self.path = path
        self.busy_seconds = busy_seconds

    @contextlib.contextmanager
    def _open(self, write: bool = False) -> Iterator[sqlite3.Connection | None]:
        if not self.path.exists():
            yield None
            return
        uri = f"file:{self.path}?mode={'rw' if write else 'ro'}"
        conn = sqlite3.connect(uri, uri=True, timeout=self.busy_seconds)
        try:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                                "AND name = 'cel'").fetchone():
                yield None
                return
            yield conn
            if write:
                conn.commit()
        finally:
            conn.close()

    def ended_between(self, since: float, until: float = float("inf")) -> list[str]:
        """Calls (linkedids) whose last channel went in [since, until), oldest first."""
        with self._open() as conn:
            if conn is None:
                return []
            return [linkedid for (linkedid,) in conn.execute(
                "SELECT linkedid FROM cel WHERE eventtype = 'LINKEDID_END' "
                "AND CAST(eventtime AS REAL) >= ? AND CAST(eventtime AS REAL) < ? "
                "GROUP BY linkedid ORDER BY MIN(CAST(eventtime AS REAL))",
                (since, until if until != float("inf") else 1e18))]

    def rows(self, linkedid: str) -> list[CelRow]:
        """The rows of one call in the order Asterisk wrote them."""
        return self.rows_of([linkedid]).get(linkedid, [])

    def rows_of(self, linkedids: Sequence[str]) -> dict[str, list[CelRow]]:
        """The rows of each of these calls, in the order Asterisk wrote them; one pass over
        the table for up to 500 calls (the table has no index of Asterisk's making)."""
        found: dict[str, list[CelRow]] = {}
        with self._open() as conn:
            if conn is None:
                return found
            for first in range(0, len(linkedids), 500):
                chunk = list(linkedids[first:first + 500])
                for values in conn.execute(
                        f"SELECT {', '.join(COLUMNS)} FROM cel WHERE linkedid IN "
                        f"({', '.join('?' * len(chunk))}) ORDER BY rowid", chunk):
                    row = row_from(values)
                    if row is not None:
                        found.setdefault(row.linkedid, []).append(row)
        return found

    def trim(self, before: float, stored: Sequence[str] = ()) -> int:
        """Delete the rows older than `before` and those of the `stored` calls (their
        records are the centre's now); how many rows went."""
        with self._open(write=True) as conn:
            if conn is None:
                return 0
            gone = conn.execute("DELETE FROM cel WHERE CAST(eventtime AS REAL) < ?",
                                (before,)).rowcount
            for linkedid in stored:
                gone += conn.execute("DELETE FROM cel WHERE linkedid = ?",
                                     (linkedid,)).rowcount
            return gone
