"""The desk feed (坐席推送): what the server pushes to agents' desks, on one Redis stream.

Loops that follow the event bus turn what concerns a desk (its seat changed, a call rings it:
the screen pop) into entries here; the push server reads this one stream and sends each entry
to the open desks it is for, with the entry's stream id as the SSE event id, so a page that
reconnects (sending Last-Event-ID) misses nothing. Open wallboards (BOARD) and case maps
(CASE_MAP) hold streams of the same server and hear only their own entries.

An entry: `agent` (the agent number it is for, or EVERY_DESK), `kind` (the page hears it as the
DOM event "desk:<kind>"), `data` (JSON). What only a viewer allowed to see phone numbers may
see goes under data["private"]: the push server drops it for everyone else and audits its
showing for those who may.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis
from redis.client import Pipeline

DESK_STREAM = "hotline:desk"
EVERY_DESK = "*"
BOARD = "board"  # the open wallboards (agent_desk.wallboard): their entries' "agent"
SUPERVISORS = "supervisors"  # the open desks of those who may read the board
CASE_MAP = "map"  # the open case maps (案件地图): orders opened, moved, closed
PRIVATE = "private"
MAXLEN = 100_000  # about a day of a busy centre's pops and seat changes


def publish(client: redis.Redis, agent: str, kind: str, data: dict[str, Any] | str) -> str:
    """Append an entry for `agent`'s desk (EVERY_DESK: all of them); its stream id. `data`
    may come as its JSON already (the wallboard keeps the same text beside the feed)."""
    return _text(client.xadd(DESK_STREAM, _fields(agent, kind, data), maxlen=MAXLEN,
                             approximate=True))


def publish_all(client: redis.Redis,
                entries: Sequence[tuple[str, str, dict[str, Any] | str]]) -> list[str]:
    """Append (agent, kind, data) entries in their order, in one round trip; their ids."""
    if not entries:
        return []
    with client.pipeline(transaction=False) as pipe:
        for entry in entries:
            add_to(pipe, *entry)
        return [_text(entry_id) for entry_id in pipe.execute()]


def add_to(pipe: Pipeline, agent: str, kind: str, data: dict[str, Any] | str) -> None:
    """`publish` as one command of the caller's pipeline (its id in the pipeline's answers)."""
    pipe.xadd(DESK_STREAM, _fields(agent, kind, data), maxlen=MAXLEN, approximate=True)


def _fields(agent: str, kind: str, data: dict[str, Any] | str) -> dict[str, str]:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return {"agent": agent, "kind": kind, "data": text}


def _text(entry_id: bytes | str) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
