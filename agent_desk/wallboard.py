"""The live wallboard (监控大屏): what supervisors and the command hall's display wall see.

`compose(...)` makes the whole board from the stored call records and the live state the
telephony service keeps (its door, telephony.wallboard): per queue and for the centre, the
callers waiting now and since when the longest of them waits, the window figures (15 min,
1 h, 24 h, this shift) and the callbacks pending; every agent's seat with its time in state,
pause reason and current caller (masked); and the alerts the thresholds of settings [board]
raise. Since it is computed from the records and Asterisk's state each time, a restart of
any process rebuilds it with no gap and no double count.

`BoardLoop` follows the event bus through its own consumer group and, after each batch of
call or seat events (and every TICK_SECONDS, so a wait or a pause crossing its threshold
raises its alert), composes the board and publishes it on the desk feed for BOARD with kind
"board"; the push server sends it to open boards (agent_desk.push). A new alert also goes
to the open desks of those who may read the board (feed.SUPERVISORS) as a "notice", and
one with "cleared": true when it no longer stands; the alerts standing now are kept under
ALERTS_KEY for a desk that opens meanwhile (current_alerts). The board itself is kept under
LATEST_KEY with the newest bus entry it covers (COVERS_KEY): a page opening while no event
has come since starts from it (latest_board), with no query of the records.

Display tokens (大屏令牌), which let the display wall open /board/wall with no login form,
are agent_desk.displays: stored, listed and revoked one by one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session, sessionmaker

from agent_desk import feed
from core.clock import Clock
from core.config import Settings
from core.events import EventBus, gather_burst
from core.phones import mask
from telephony import wallboard
from telephony.wallboard import CENTRE

log = logging.getLogger(__name__)

BOARD = feed.BOARD  # the desk feed's "agent" of board entries, and their kind
EVENTS_GROUP = "wallboard"
BLOCK_MS = 500
TICK_SECONDS = 5.0
# boards at most this often in a burst of events (bench/wallboard_browser.py: p95 <= 300 ms
# from the AMI event to the page)
COALESCE_SECONDS = 0.15
# after a read that found events, the rest of the burst (gather_burst): no longer than
# COALESCE_SECONDS, so no board comes later for it
GATHER_SECONDS = COALESCE_SECONDS
WINDOWS = (("15m", timedelta(minutes=15)), ("1h", timedelta(hours=1)),
           ("24h", timedelta(hours=24)))
SHIFT = "shift"
ALERTS_KEY = "hotline:board:alerts"  # the alerts standing now, as last published
LATEST_KEY = "hotline:board:latest"  # the board last published (a page's first board)
COVERS_KEY = "hotline:board:covers"  # the bus and its newest entry that board reflects
LATEST_SECONDS = 3 * TICK_SECONDS  # how old that may be: the loop publishes every tick


def _masked(number: str) -> str:
    if not number:
        return ""
    try:
        return mask(number)
    except Exception:  # not a number phonenumbers can read: show none of it
        return "*" * len(number)


def shift_start(now: datetime, starts: tuple[str, ...], timezone: str) -> datetime:
    """When the shift running at `now` began: the latest of the day's shift starts at or
    before now, in the centre's time zone, else the last one of the day before."""
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    for day in (local.date(), local.date() - timedelta(days=1)):
        for text in sorted(starts, reverse=True):
            hour, minute = (int(part) for part in text.split(":"))
            began = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
            if began <= local:
                return began.astimezone(now.tzinfo)
    raise ValueError("no shift start")  # unreachable with one start or more


def compose(session: Session, client: Any, settings: Settings, now: datetime,
            cache: wallboard.FigureCache | None = None) -> dict[str, Any]:
    """The whole board at `now` (JSON-ready); the window figures from `cache` (the loop's,
    kept up to date) when given, else computed afresh (a page's first board)."""
    board = settings.board
    began = shift_start(now, board.shift_starts, settings.calendar.timezone)
    windows = {name: now - width for name, width in WINDOWS}
    windows[SHIFT] = began
    figures = (cache.figures if cache is not None else wallboard.window_figures)(
        session, now, windows, service_seconds=float(board.service_seconds))
    pending = wallboard.callbacks_pending(session)
    calls = wallboard.live_calls(client)
    moment = now.timestamp()
    queues = sorted({q for by_queue in figures.values() for q in by_queue if q != CENTRE}
                    | {c.queue for c in calls} | {q for q in pending if q != CENTRE})
    live: dict[str, dict[str, Any]] = {}
    for queue in [CENTRE, *queues]:
        mine = [c for c in calls if queue in (CENTRE, c.queue)]
        waiting = [c for c in mine if c.agent is None]
        live[queue] = {
            "waiting": len(waiting), "talking": len(mine) - len(waiting),
            "longest_since": min((c.joined_at for c in waiting), default=None),
            "longest_wait_seconds": round(max((moment - c.joined_at for c in waiting),
                                              default=0.0), 1) if waiting else None,
            "callbacks_pending": pending.get(queue, 0)}
    talking = {c.agent: c for c in calls if c.agent}
    agents = []
    for seat in wallboard.seats_now(client):
        call = talking.get(str(seat["agent"]))
        since = float(seat.get("since") or 0.0)
        agents.append({
            "agent": str(seat["agent"]), "state": seat.get("state", ""),
            "reason": seat.get("reason", ""), "since": since,
            "seconds_in_state": round(max(0.0, moment - since), 1) if since else None,
            "queues": seat.get("queues", []),
            "caller": _masked(call.caller) if call else "", "queue": call.queue if call else ""})
    zone = ZoneInfo(settings.calendar.timezone)  # the hall reads the centre's own time
    return {"at": now.astimezone(zone).isoformat(), "at_epoch": moment,
            "shift_start": began.astimezone(zone).isoformat(),
            "windows": [name for name, _ in WINDOWS] + [SHIFT], "queues": queues,
            "live": live, "figures": figures, "agents": agents,
            "alerts": alerts(settings, live, figures, agents, moment)}


def alerts(settings: Settings, live: dict[str, dict[str, Any]],
           figures: dict[str, dict[str, dict[str, Any]]], agents: list[dict[str, Any]],
           moment: float) -> list[dict[str, Any]]:
    """What crosses the thresholds of settings [board] (告警): service level of the last
    hour under its percent, a caller waiting longer than waiting_alert_seconds, an agent
    paused longer than paused_alert_minutes. Each has a stable `key` (what it is about)."""
    board = settings.board
    found: list[dict[str, Any]] = []
    floor = board.service_level_alert_percent / 100
    for queue, shown in figures.get("1h", {}).items():
        level = shown.get("service_level")
        if level is not None and level < floor:
            found.append({"key": f"service_level:{queue}", "kind": "service_level",
                          "queue": queue, "value": level, "threshold": floor})
    for queue, now_live in live.items():
        longest = now_live["longest_wait_seconds"]
        if queue != CENTRE and longest is not None and longest > board.waiting_alert_seconds:
            found.append({"key": f"waiting:{queue}", "kind": "waiting", "queue": queue,
                          "value": longest, "threshold": board.waiting_alert_seconds})
    for agent in agents:
        paused_for = agent["seconds_in_state"]
        if agent["state"] == "paused" and paused_for is not None \
                and paused_for > board.paused_alert_minutes * 60:
            found.append({"key": f"paused:{agent['agent']}", "kind": "paused",
                          "agent": agent["agent"], "reason": agent["reason"],
                          "value": paused_for, "threshold": board.paused_alert_minutes * 60})
    return found


class BoardLoop:
    """Recomputes the board on call and seat events and publishes it (see the module)."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], bus: EventBus,
                 clock: Clock) -> None:
        self.settings, self.sessions, self.bus, self.clock = settings, sessions, bus, clock
        self.consumer = f"wallboard-{socket.gethostname()}"
        self.published = 0
        # the alerts standing, by key; after a restart those the last loop published, so
        # none is sent twice and one that cleared meanwhile is still taken off the desks
        self._alerted: dict[str, dict[str, Any]] = {
            str(a["key"]): a for a in current_alerts(bus.client)["alerts"]}
        self.cache = wallboard.FigureCache()  # the window figures, kept up to date
        bus.ensure_group(EVENTS_GROUP)
        # the newest bus entry read: at the start, what the group was given before (its
        # effects are in the state compose reads; any left unacked is read again first)
        self._read_up_to = _delivered(bus, EVENTS_GROUP)
        self._covered = ""  # the newest bus entry the stored board is known to cover

    async def run(self, stop: asyncio.Event) -> None:
        last = 0.0
        while not stop.is_set():
            before = self._read_up_to
            try:
                moved = await asyncio.to_thread(self.follow, BLOCK_MS)
                if moved and time.monotonic() - last < COALESCE_SECONDS:
                    # a burst: the events until COALESCE_SECONDS after the last board go
                    # into one board (the first event after a quiet spell goes at once)
                    await asyncio.sleep(last + COALESCE_SECONDS - time.monotonic())
                    await asyncio.to_thread(self.follow)
                if moved or time.monotonic() - last >= TICK_SECONDS:
                    await asyncio.to_thread(self.publish)
                    last = time.monotonic()
                elif self._read_up_to != self._covered:
                    # nothing that moves the board: the board kept covers these events too
                    await asyncio.to_thread(self._cover, self._read_up_to)
            except Exception:  # Redis or the database away for a moment
                log.exception("wallboard failed; trying again")
                await asyncio.sleep(1.0)
            if self._read_up_to != before:
                await gather_burst(stop, GATHER_SECONDS)

    def follow(self, block_ms: int | None = None) -> bool:
        """Read what the bus has; whether any of it moves the board."""
        # only whether a call or seat event came matters: the others are skipped undecoded,
        # and all are acknowledged together
        moving = [entry_id for entry_id, _event in self.bus.consume(
            EVENTS_GROUP, self.consumer, block_ms=block_ms, types=_moves_board)]
        self.bus.ack(EVENTS_GROUP, *moving)
        newest = self.bus.read_up_to.get(EVENTS_GROUP)
        if newest and _entry_key(newest) > _entry_key(self._read_up_to):
            self._read_up_to = _text(newest)
        return bool(moving)

    def _cover(self, read_up_to: str) -> None:
        self.bus.client.set(COVERS_KEY, json.dumps({"stream": self.bus.stream,
                                                    "id": read_up_to}))
        self._covered = read_up_to

    def publish(self) -> dict[str, Any]:
        read_up_to = self._read_up_to  # every event read so far is in what compose reads
        with self.sessions() as session:
            board = compose(session, self.bus.client, self.settings, self.clock.now(),
                            self.cache)
        text = json.dumps(board, ensure_ascii=False)  # once, for the feed and the latest
        raised = {alert["key"]: alert for alert in board["alerts"]}
        with self.bus.client.pipeline(transaction=True) as kept:
            # the board to the open boards; what a board page starts from (latest_board:
            # this board, and the bus entry it covers, together), and the desks' notices
            # panel (desk/notices.js): one round trip
            feed.add_to(kept, BOARD, BOARD, text)
            kept.set(LATEST_KEY, text)
            kept.set(COVERS_KEY, json.dumps({"stream": self.bus.stream, "id": read_up_to}))
            kept.set(ALERTS_KEY, json.dumps(
                {"at": board["at"], "alerts": board["alerts"]}, ensure_ascii=False))
            kept.execute()
        self.published += 1
        self._covered = read_up_to
        for key, alert in raised.items():
            if key not in self._alerted:  # a new alert: to supervisors' desks once
                feed.publish(self.bus.client, feed.SUPERVISORS, "notice",
                             {"source": BOARD, "alert": alert, "at": board["at"]})
        for key, alert in self._alerted.items():
            if key not in raised:  # it cleared: the desks take it off their panel
                feed.publish(self.bus.client, feed.SUPERVISORS, "notice",
                             {"source": BOARD, "alert": alert, "at": board["at"],
                              "cleared": True})
        self._alerted = raised
        return board


def _moves_board(kind: str) -> bool:
    return kind.startswith(("call.", "seat."))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry_key(entry_id: bytes | str) -> tuple[int, int]:
    ms, _, seq = _text(entry_id).partition("-")
    return int(ms or 0), int(seq or 0)


def _delivered(bus: EventBus, group: str) -> str:
    """The last bus entry given to the consumer group `group` ("0-0": none, or unknown)."""
    try:
        for info in bus.client.xinfo_groups(bus.stream):
            if _text(info.get("name", b"")) == group:
                return _text(info.get("last-delivered-id") or "0-0")
    except Exception:  # an older Redis, or the stream away: the page composes its own
        log.warning("wallboard: cannot read the group %s's position", group)
    return "0-0"


def latest_board(client: Any, now: datetime) -> dict[str, Any] | None:
    """The board the loop published last, if it is current: made within LATEST_SECONDS of
    `now`, and covering every event on the bus (none came that the loop has not read into
    it). A page's first board then costs a Redis read, not a query of the records. None
    otherwise (the loop is not running, or has an event still to read): the page composes
    its own."""
    stored, covers = client.mget(LATEST_KEY, COVERS_KEY)
    if not stored or not covers:
        return None
    try:
        board = json.loads(stored)
        made = float(board["at_epoch"])
        covered = json.loads(covers)
        stream, up_to = str(covered["stream"]), _entry_key(covered["id"])
    except (ValueError, KeyError, TypeError):
        return None
    moment = now.timestamp()
    if not moment - LATEST_SECONDS <= made <= moment + 1.0:
        return None
    newest = client.xrevrange(stream, count=1)
    if newest and _entry_key(newest[0][0]) > up_to:
        return None
    return dict(board)


def current_alerts(client: Any) -> dict[str, Any]:
    """The alerts standing now as the loop last published them ({"at", "alerts"}): what a
    supervisor's desk shows when it opens, before the next notice is pushed."""
    stored = client.get(ALERTS_KEY)
    if not stored:
        return {"at": "", "alerts": []}
    try:
        return dict(json.loads(stored))
    except ValueError:
        return {"at": "", "alerts": []}
