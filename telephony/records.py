"""Call records: stored once per call, read by the API, the CLI and (later) the KPIs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, delete, func, select, text, update
from sqlalchemy.orm import Session

from core import phones
from core.db import insert_for, page_total, relocate_paths
from core.errors import HotlineError, NotFound
from core.events import EventBus
from recordings.catalogue import RecordingFile
from telephony import rollups
from telephony.events import CallStarted
from telephony.models import CallRecord, PendingCallDisposition

OUTCOMES = ("answered", "abandoned", "unanswered", "ivr")
DIRECTIONS = ("inbound", "outbound")
_DETAIL_KEYS = ("ivr_path", "agent_attempts", "transfers", "legs")


def as_time(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _when(epoch: float | None) -> datetime | None:
    return None if epoch is None else as_time(epoch)


def _epoch(when: datetime | None) -> float | None:
    if when is None:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def store_call(session: Session, record: dict[str, Any],
               recording: RecordingFile | None = None,
               repeat_window: timedelta = rollups.DEFAULT_REPEAT_WINDOW) -> bool:
    """Insert the record, with its repeat-caller flag and its hour's rollup (in this
    transaction: never one without the other); False (and nothing written) if this call is
    stored already, by an earlier try or by a concurrent writer (one statement, no ORM
    unit of work: a record is stored at every call's end)."""
    row = {
        "call_id": record["call_id"], "direction": record.get("direction", "inbound"),
        "purpose": record.get("purpose", ""), "caller_number": record["caller_number"],
        "citizen_number": phones.normalise_or_empty(record.get("citizen_number")
                                                    or record["caller_number"]),
        "caller_name": record["caller_name"], "entry_number": record["entry_number"],
        "started_at": _when(record["started_at"]), "ended_at": _when(record["ended_at"]),
        "duration_seconds": record["duration_seconds"], "outcome": record["outcome"],
        "queue": record["queue"], "queue_position": record["queue_position"],
        "wait_seconds": record["wait_seconds"], "short_abandon": record["short_abandon"],
        "agent": record["agent"], "connected_at": _when(record["connected_at"]),
        "talk_seconds": record["talk_seconds"], "hold_seconds": record["hold_seconds"],
        "hangup_by": record.get("hangup_by", ""), "hangup_cause": record["hangup_cause"],
        "hangup_cause_text": record["hangup_cause_text"],
        "recording_path": str(recording.path) if recording else record.get("recording"),
        "recording_sha256": recording.sha256 if recording else None,
        "recording_bytes": recording.size if recording else None,
        "incomplete": record["incomplete"],
        "details": {key: record[key] for key in _DETAIL_KEYS},
    }
    row_id = session.scalar(_insert_call(session.get_bind().dialect.name), row)
    if row_id is None:
        return False
    rollups.call_stored(session.connection(), SimpleNamespace(id=row_id, **row),
                        repeat_window, stored_with=set())
    return True


@lru_cache(maxsize=4)
def _insert_call(dialect: str) -> Any:
    """INSERT ... ON CONFLICT (call_id) DO NOTHING RETURNING id: the new row's id, or none
    when the call is stored already (built once per kind of database)."""
    return (insert_for(dialect, CallRecord.__table__)
            .on_conflict_do_nothing(index_elements=["call_id"])
            .returning(CallRecord.__table__.c.id))


def as_dict(row: CallRecord) -> dict[str, Any]:
    return {
        "call_id": row.call_id, "direction": row.direction, "purpose": row.purpose,
        "caller_number": row.caller_number,
        "citizen_number": phones.national(row.citizen_number),
        "caller_name": row.caller_name, "entry_number": row.entry_number,
        "started_at": _epoch(row.started_at), "ended_at": _epoch(row.ended_at),
        "duration_seconds": row.duration_seconds, "outcome": row.outcome,
        "queue": row.queue, "queue_position": row.queue_position,
        "wait_seconds": row.wait_seconds, "short_abandon": row.short_abandon,
        "agent": row.agent, "connected_at": _epoch(row.connected_at),
        "talk_seconds": row.talk_seconds, "hold_seconds": row.hold_seconds,
        "hangup_by": row.hangup_by, "hangup_cause": row.hangup_cause,
        "hangup_cause_text": row.hangup_cause_text,
        "recording": None if row.recording_path is None else {
            "path": row.recording_path, "sha256": row.recording_sha256,
            "bytes": row.recording_bytes},
        "incomplete": row.incomplete, "case_number": row.case_number,
        "disposition": row.disposition,
        **{key: (row.details or {}).get(key, []) for key in _DETAIL_KEYS},
    }


@dataclass(frozen=True)
class CallQuery:
    since: float | None = None
    until: float | None = None
    caller_number: str | None = None
    outcome: str | None = None
    agent: str | None = None
    direction: str | None = None
    limit: int = 50
    offset: int = 0


def find_calls(session: Session, query: CallQuery) -> tuple[int, list[dict[str, Any]]]:
    """(total matching, one page newest first)."""
    conditions = []
    if query.since is not None:
        conditions.append(CallRecord.started_at >= _when(query.since))
    if query.until is not None:
        conditions.append(CallRecord.started_at < _when(query.until))
    if query.caller_number:  # any form of the number: +86 451 ..., 0451-...
        citizen = phones.normalise_or_empty(query.caller_number)
        conditions.append(CallRecord.citizen_number == citizen if citizen
                          else CallRecord.caller_number == query.caller_number)
    if query.outcome:
        conditions.append(CallRecord.outcome == query.outcome)
    if query.agent:
        conditions.append(CallRecord.agent == query.agent)
    if query.direction:
        conditions.append(CallRecord.direction == query.direction)
    rows = session.scalars(
        select(CallRecord).where(*conditions)
        .order_by(CallRecord.started_at.desc(), CallRecord.id.desc())
        .limit(query.limit).offset(query.offset)
    ).all()
    total = page_total(len(rows), query.limit, query.offset, lambda: session.scalar(
        select(func.count(CallRecord.id)).where(*conditions)) or 0)
    return total, [as_dict(row) for row in rows]


# built once: storing each call's record reads it back and looks for a pending disposition
_CALL = select(CallRecord).where(CallRecord.call_id == bindparam("call_id"))
_PENDING = select(PendingCallDisposition).where(
    PendingCallDisposition.call_id == bindparam("call_id"))


def get_call(session: Session, call_id: str) -> dict[str, Any] | None:
    row = session.scalar(_CALL, {"call_id": call_id})
    return None if row is None else as_dict(row)


# --- the door the rooms above use to bind a call to what it was about ----------------------


def stored_ids(session: Session, call_ids: list[str]) -> dict[str, int]:
    """The record row id of each of `call_ids` that is stored (its call has ended)."""
    if not call_ids:
        return {}
    rows = session.execute(select(CallRecord.call_id, CallRecord.id).where(
        CallRecord.call_id.in_(call_ids)))
    return {call_id: row_id for call_id, row_id in rows}


def _of_calls(session: Session, call_ids: list[str], column: Any) -> dict[str, Any]:
    """`column` of each stored call of `call_ids` where it has a value, a bounded IN at a
    time (a long report's or search's calls)."""
    wanted = sorted(set(call_ids))
    found: dict[str, Any] = {}
    for at in range(0, len(wanted), 500):
        found.update((call_id, value) for call_id, value in session.execute(
            select(CallRecord.call_id, column).where(
                CallRecord.call_id.in_(wanted[at:at + 500]))) if value is not None)
    return found


def queues_of(session: Session, call_ids: list[str]) -> dict[str, str]:
    """The queue each of `call_ids` came through, for the stored calls that had one."""
    return {c: q for c, q in _of_calls(session, call_ids, CallRecord.queue).items() if q}


def started_at_of(session: Session, call_ids: list[str]) -> dict[str, datetime]:
    """When each of `call_ids` that is stored began (UTC); a call not stored (still up, or
    never recorded here) is left out."""
    return _of_calls(session, call_ids, CallRecord.started_at)


def call_started(bus: EventBus | None, call_id: str) -> bool:
    """Whether this service announced the call's start (`call.started`): a call still up,
    or one whose record is about to be stored. Without a bus nothing is known of live
    calls."""
    return bus is not None and bus.published(CallStarted(at=0.0, call_id=call_id).id)


def mark_case(session: Session, call_id: str, case_number: str) -> None:
    """The call record shows the case number of the work order it belongs to."""
    session.execute(update(CallRecord).where(CallRecord.call_id == call_id)
                    .values(case_number=case_number)
                    .execution_options(synchronize_session=False))


def calls_of(session: Session, record_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The stored calls with these row ids, as `as_dict` shows them."""
    if not record_ids:
        return {}
    rows = session.scalars(select(CallRecord).where(CallRecord.id.in_(record_ids)))
    return {row.id: as_dict(row) for row in rows}


# --- dispositions (话后小结): what the agent says the call was -------------------------------


class NotYourCall(HotlineError):
    """Only the agent who took the call, or a supervisor, may say what it was."""

    status = 403


# PostgreSQL: the transaction that stores a call's record and one that chooses its
# disposition take this lock (with the call id's hash) so that one sees the other's commit
_DISPOSITION_LOCK = 12319_0033


def _one_at_a_time(session: Session, call_id: str) -> None:
    """Whoever stores the record and whoever chooses the disposition, one after the other
    for this call: each then sees what the other committed, so a choice is never left
    pending beside a stored record. SQLite's write transactions are one at a time already."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:space, hashtext(:call_id))"),
                        {"space": _DISPOSITION_LOCK, "call_id": call_id})


def choose_disposition(session: Session, call_id: str, code: str, *, agent: str,
                       chosen_by: str, supervisor: bool, started: bool, now: datetime
                       ) -> bool:
    """Set the call's disposition `code` (checked against the settings by the caller): True
    if set on the stored record, False if kept pending until the record is stored (the
    call is still up, or its record is being written), when `started` says the call is
    known. `agent` is the chooser's agent number ("" for none); a supervisor may choose for
    any call. The pending choice of an agent is applied only if that agent took the call."""
    _one_at_a_time(session, call_id)
    row = session.scalar(_CALL, {"call_id": call_id})
    if row is not None:
        if not supervisor and (not agent or row.agent != agent):
            raise NotYourCall(f"agent: {chosen_by} did not take call {call_id}")
        row.disposition, row.disposition_by = code, chosen_by
        return True
    if not started:
        raise NotFound(f"call_id: no call {call_id}")
    if not supervisor and not agent:
        raise NotYourCall(f"agent: {chosen_by} has no agent number and took no call")
    pending = session.scalar(_PENDING, {"call_id": call_id})
    if pending is None:
        pending = PendingCallDisposition(call_id=call_id)
        session.add(pending)
    pending.code, pending.chosen_by, pending.chosen_at = code, chosen_by, now
    pending.agent = "" if supervisor else agent
    return False


def apply_pending_disposition(session: Session, call_id: str) -> bool:
    """Move a pending disposition onto the call's stored record (dropped if the agent who
    chose it did not take the call); whether one was applied. The writer of the record
    calls this in the transaction that stores it, the chooser after its commit: with the
    two one at a time (`_one_at_a_time`), whichever comes second applies."""
    _one_at_a_time(session, call_id)
    pending = session.scalar(_PENDING, {"call_id": call_id})
    if pending is None:
        return False
    row = session.scalar(_CALL, {"call_id": call_id})
    if row is None:
        return False
    applies = pending.agent in ("", row.agent)
    if applies:
        row.disposition, row.disposition_by = pending.code, pending.chosen_by
    # by id, not session.delete: the other side may have applied and removed it meanwhile
    session.execute(delete(PendingCallDisposition).where(
        PendingCallDisposition.id == pending.id).execution_options(synchronize_session=False))
    return applies


# --- the recordings a retention run looks at (recordings.retention) -------------------------


def recordings_before(session: Session, before: datetime,
                      limit: int = 10_000) -> list[dict[str, Any]]:
    """Calls started before `before` that have a recording, oldest first: call id, the
    recording's path, when the call started and its case number."""
    rows = session.execute(
        select(CallRecord.call_id, CallRecord.recording_path, CallRecord.started_at,
               CallRecord.case_number)
        .where(CallRecord.started_at < before, CallRecord.recording_path.is_not(None))
        .order_by(CallRecord.started_at, CallRecord.id).limit(limit))
    return [{"call_id": c, "path": p, "started_at": s, "case_number": n}
            for c, p, s, n in rows]


def recording_deleted(session: Session, call_id: str) -> None:
    """Retention deleted the call's recording: the record no longer names a file (its
    checksum stays; the deletion log says when and why)."""
    session.execute(update(CallRecord).where(CallRecord.call_id == call_id)
                    .values(recording_path=None)
                    .execution_options(synchronize_session=False))


# --- backup and restore (hotline/backup.py) ---------------------------------------------------


def recording_paths(session: Session) -> list[tuple[str, str | None]]:
    """(path, sha256) of every recording a call record names."""
    return [(p, s) for p, s in session.execute(
        select(CallRecord.recording_path, CallRecord.recording_sha256)
        .where(CallRecord.recording_path.is_not(None)).order_by(CallRecord.id))]


def relocate_recordings(session: Session, old_root: str, new_root: str) -> int:
    """The recordings directory moved (a restore elsewhere): the call records follow."""
    return relocate_paths(session, CallRecord.recording_path, old_root, new_root)
