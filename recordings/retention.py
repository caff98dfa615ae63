"""Retention of recordings (录音保存期限): deleted after a configured period unless kept.

A recording is kept while it is younger than `retention.recording_days`, while it is on
legal hold (法律保全: who placed it and why, audited; released the same way), and while the
work order it belongs to is still open: that last fact is the tickets room's, given to `run`
as a function by the composition above (this room stands below telephony and tickets).

Every deletion is a row of `recording_deletions` (what: the call and the file, when, why,
the file's SHA-256), written and committed *before* the file is unlinked: the row's unique
call id is the claim, so two runs at once never delete one recording twice, and a run that
died between claim and unlink finishes the claim the next time. With the mixed file go the
call's other files (each leg's, `<id>-caller.wav`, `<id>-agent.wav`), their catalogue rows,
its transcripts with their segments and search-index rows, and its transcription jobs end as
"gone": each file and transcript is in the audit log (recording_file_deleted,
transcript_deleted: leg, checksum, why), written in the claim's transaction. Other rooms'
traces (the call record's file name) go through hooks registered with `on_delete`.

The disk's free space under the recordings directory is watched (`watch_disk`): under
`retention.min_free_mb` it says so in the log and on the bus (`recordings.disk_low`) before
MixMonitor runs out of room, once each time it goes low, and notes when it has room again.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar

from sqlalchemy import Integer, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from accounts import audit
from core.db import Base, UtcDateTime, transaction
from core.errors import HotlineError, NotFound
from core.events import DomainEvent, announce
from recordings import catalogue, transcribe_worker, transcripts
from recordings.catalogue import CASES_DIR, LEGS

log = logging.getLogger(__name__)

REASON_EXPIRED = "expired"  # older than the retention period, nothing keeps it


class RecordingHold(Base):
    """A legal hold (法律保全) on a call's recording: it survives retention until released."""

    __tablename__ = "recording_holds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(String(500))
    placed_by: Mapped[str] = mapped_column(String(64))
    placed_at: Mapped[datetime] = mapped_column(UtcDateTime())
    released_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    released_by: Mapped[str] = mapped_column(String(64), default="")
    release_reason: Mapped[str] = mapped_column(String(500), default="")


class RecordingDeletion(Base):
    """One recording deleted by retention: claimed (the row), then unlinked (`deleted_at`)."""

    __tablename__ = "recording_deletions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))  # of the file as it was deleted
    bytes: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(200))
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())  # the call's start
    claimed_at: Mapped[datetime] = mapped_column(UtcDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    run_by: Mapped[str] = mapped_column(String(64))


class HoldError(HotlineError):
    status = 409


@dataclass(frozen=True)
class Stored:
    """A call's recording as the call records know it (telephony's door gives these)."""

    call_id: str
    path: str
    recorded_at: datetime
    case_number: str | None = None


@dataclass(frozen=True)
class Decision:
    call_id: str
    path: str
    action: str  # delete | keep
    why: str


DeleteHook = Callable[[Session, str], None]
"""Called with (session, call id) in the claim's transaction: remove what else belongs to
the recording (its transcript, the legs' files). Registered by the rooms that keep them."""
_hooks: list[DeleteHook] = []


def on_delete(hook: DeleteHook) -> None:
    """Register `hook` once; it runs for every recording retention deletes."""
    if hook not in _hooks:
        _hooks.append(hook)


# --- legal holds ----------------------------------------------------------------------------

def _text(value: str, field: str, limit: int) -> str:
    value = (value or "").strip()
    if not value:
        raise HoldError(f"{field}: required")
    if len(value) > limit:
        raise HoldError(f"{field}: at most {limit} characters")
    return value


def active_hold(session: Session, call_id: str) -> RecordingHold | None:
    return session.scalar(select(RecordingHold).where(
        RecordingHold.call_id == call_id, RecordingHold.released_at.is_(None)))


def place_hold(session: Session, call_id: str, *, reason: str, actor: str, now: datetime,
               address: str = "") -> RecordingHold:
    """Put the call's recording on legal hold; audited (recording_held). A call already on
    hold is refused (409): one hold, one release."""
    reason = _text(reason, "reason", 500)
    if active_hold(session, call_id) is not None:
        raise HoldError(f"call {call_id}: its recording is on hold already")
    if deletion(session, call_id) is not None:
        raise HoldError(f"call {call_id}: its recording was deleted by retention")
    hold = RecordingHold(call_id=call_id, reason=reason, placed_by=actor[:64], placed_at=now)
    session.add(hold)
    session.flush()
    audit.record(session, audit.RECORDING_HELD, actor=actor, now=now, target=call_id,
                 address=address, detail={"reason": reason})
    return hold


def release_hold(session: Session, call_id: str, *, reason: str, actor: str, now: datetime,
                 address: str = "") -> RecordingHold:
    """Release the call's hold; audited (recording_released). No hold: 404."""
    reason = _text(reason, "reason", 500)
    hold = active_hold(session, call_id)
    if hold is None:
        raise NotFound(f"call {call_id}: its recording is on no hold")
    hold.released_at, hold.released_by, hold.release_reason = now, actor[:64], reason
    session.flush()
    audit.record(session, audit.RECORDING_RELEASED, actor=actor, now=now, target=call_id,
                 address=address, detail={"reason": reason})
    return hold


def holds(session: Session, *, active_only: bool = True) -> list[RecordingHold]:
    query = select(RecordingHold).order_by(RecordingHold.placed_at.desc(), RecordingHold.id)
    if active_only:
        query = query.where(RecordingHold.released_at.is_(None))
    return list(session.scalars(query))


def held_calls(session: Session, call_ids: Iterable[str]) -> set[str]:
    ids = list(call_ids)
    return {call_id for part in _chunks(ids) for call_id in session.scalars(
        select(RecordingHold.call_id).where(RecordingHold.call_id.in_(part),
                                            RecordingHold.released_at.is_(None)))}


# --- the deletion log -----------------------------------------------------------------------

def deletion(session: Session, call_id: str) -> RecordingDeletion | None:
    return session.scalar(select(RecordingDeletion).where(RecordingDeletion.call_id == call_id))


def deletions(session: Session, limit: int = 200, offset: int = 0) -> list[RecordingDeletion]:
    return list(session.scalars(select(RecordingDeletion).order_by(
        RecordingDeletion.claimed_at.desc(), RecordingDeletion.id.desc())
        .limit(limit).offset(offset)))


def deleted_calls(session: Session, call_ids: Iterable[str]) -> set[str]:
    ids = list(call_ids)
    return {call_id for part in _chunks(ids) for call_id in session.scalars(
        select(RecordingDeletion.call_id).where(RecordingDeletion.call_id.in_(part)))}


def _chunks(items: list[str], size: int = 500) -> list[list[str]]:
    """Ids a few hundred at a time: one IN (...) may name only so many."""
    return [items[i:i + size] for i in range(0, len(items), size)]


# --- a run ----------------------------------------------------------------------------------

def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as audio:
        for block in iter(lambda: audio.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def _inside(recordings_dir: Path, stored: str) -> Path | None:
    """The recording's host path, if it lies inside the recordings directory (a path from
    a record never leads retention to delete anything else)."""
    root = recordings_dir.resolve()
    path = Path(stored)
    candidate = (path if path.is_absolute() else root / path).resolve()
    return candidate if candidate.is_relative_to(root) and candidate != root else None


def decide(session: Session, candidates: Iterable[Stored], *, days: int, now: datetime,
           open_cases: Callable[[set[str]], set[str]]) -> list[Decision]:
    """What retention does with each recording, and why: `open_cases` names which of the
    given case numbers are orders still open."""
    cutoff = now - timedelta(days=days)
    listed = [c for c in candidates if c.path]
    held = held_calls(session, (c.call_id for c in listed))
    gone = deleted_calls(session, (c.call_id for c in listed))
    cases = sorted({c.case_number for c in listed if c.case_number})
    still_open = {case for part in _chunks(cases) for case in open_cases(set(part))}
    out = []
    for c in listed:
        if c.call_id in gone:
            continue
        if c.recorded_at >= cutoff:
            out.append(Decision(c.call_id, c.path, "keep", f"younger than {days} days"))
        elif c.call_id in held:
            out.append(Decision(c.call_id, c.path, "keep", "legal hold"))
        elif c.case_number and c.case_number in still_open:
            out.append(Decision(c.call_id, c.path, "keep",
                                f"work order {c.case_number} is open"))
        else:
            out.append(Decision(c.call_id, c.path, "delete",
                                f"{REASON_EXPIRED}: older than {days} days"
                                + (f", work order {c.case_number} closed"
                                   if c.case_number else "")))
    return out


@dataclass
class Outcome:
    deleted: list[str]
    kept: list[Decision]
    skipped: list[str]  # another run had claimed them, or the file was gone already
    dry_run: bool


def run(sessions: sessionmaker[Session], candidates: Iterable[Stored], *,
        recordings_dir: Path, days: int, now: datetime,
        open_cases: Callable[[set[str]], set[str]], actor: str = "retention",
        dry_run: bool = False) -> Outcome:
    """Delete what may go; with `dry_run`, only say what would. Each deletion: a claim
    committed with its log row (its checksum read from the file), the file unlinked, the
    row marked deleted. Unfinished claims of an earlier run are finished first."""
    listed = list(candidates)
    with sessions() as session:
        decisions = decide(session, listed, days=days, now=now, open_cases=open_cases)
    outcome = Outcome([], [d for d in decisions if d.action == "keep"], [], dry_run)
    doomed = [d for d in decisions if d.action == "delete"]
    if dry_run:
        outcome.deleted = [d.call_id for d in doomed]
        return outcome
    recorded = {c.call_id: c.recorded_at for c in listed}
    for decided in doomed:
        if _delete_one(sessions, decided, recordings_dir, recorded[decided.call_id], now,
                       actor):
            outcome.deleted.append(decided.call_id)
        else:
            outcome.skipped.append(decided.call_id)
    _finish_claims(sessions, recordings_dir, now)
    return outcome


def _delete_one(sessions: sessionmaker[Session], decided: Decision, recordings_dir: Path,
                recorded_at: datetime, now: datetime, actor: str) -> bool:
    path = _inside(recordings_dir, decided.path)
    if path is None or not path.is_file():
        log.warning("retention: call %s: recording %s is not a file in the recordings "
                    "directory; nothing deleted", decided.call_id, decided.path)
        return False
    try:
        checksum, size = sha256_of(path), path.stat().st_size
        legs = [(leg, found, sha256_of(found), found.stat().st_size)
                for leg, found in _leg_files(sessions, recordings_dir, path, decided.call_id)]
    except FileNotFoundError:  # another run claimed and unlinked it while this one read
        return False
    try:
        with transaction(sessions) as session:
            # checked again under the write lock: a hold placed since the decision wins
            if active_hold(session, decided.call_id) is not None:
                return False
            session.add(RecordingDeletion(
                call_id=decided.call_id, path=str(path), sha256=checksum, bytes=size,
                reason=decided.why, recorded_at=recorded_at, claimed_at=now, run_by=actor))
            session.flush()
            said = _forget_the_rest(session, decided, legs, now, actor)
            for hook in _hooks:
                hook(session, decided.call_id)
            announce(session, RecordingDeleted(at=now.timestamp(), call_id=decided.call_id,
                                               sha256=checksum, reason=decided.why))
    except IntegrityError:  # another run claimed it first: it is that run's to delete
        return False
    _unlink(recordings_dir, path, decided.call_id, [found for _leg, found, _s, _b in legs])
    with transaction(sessions) as session:
        row = deletion(session, decided.call_id)
        if row is not None:
            row.deleted_at = now
    log.info("retention: deleted the recording of call %s (%s, sha256 %s): %s",
             decided.call_id, path, checksum, decided.why)
    for line in said:
        log.info("retention: deleted %s of call %s: %s", line, decided.call_id, decided.why)
    return True


def _leg_files(sessions: sessionmaker[Session], recordings_dir: Path, mixed: Path,
               call_id: str) -> list[tuple[str, Path]]:
    """The legs' files of the call on disk: where the catalogue filed them, else where
    MixMonitor writes them beside the mixed file (a call filed before legs were catalogued)."""
    with sessions() as session:
        filed = {f.leg: f.path for f in catalogue.files_of_call(session, call_id)}
    out = []
    for leg in LEGS:
        found = _inside(recordings_dir, filed.get(leg) or str(catalogue.leg_path(mixed, leg)))
        if found is not None and found.is_file() and found != mixed:
            out.append((leg, found))
    return out


def _forget_the_rest(session: Session, decided: Decision,
                     legs: list[tuple[str, Path, str, int]], now: datetime,
                     actor: str) -> list[str]:
    """In the claim's transaction: the audit rows of the legs' files, and the call's
    catalogue rows, transcripts (segments, index rows) and jobs removed; what was deleted,
    said for the log."""
    said = []
    for leg, found, checksum, size in legs:
        audit.record(session, audit.RECORDING_FILE_DELETED, actor=actor, now=now,
                     target=decided.call_id, detail={"leg": leg, "file": found.name,
                                                     "sha256": checksum, "bytes": size,
                                                     "reason": decided.why})
        said.append(f"the {leg} leg's file ({found}, sha256 {checksum})")
    catalogue.forget_call(session, decided.call_id)
    for transcript in transcripts.forget_call(session, decided.call_id):
        audit.record(session, audit.TRANSCRIPT_DELETED, actor=actor, now=now,
                     target=decided.call_id, detail={"leg": transcript.leg,
                                                     "sha256": transcript.sha256,
                                                     "reason": decided.why})
        said.append(f"the {transcript.leg} leg's transcript (of sha256 {transcript.sha256})")
    transcribe_worker.forget_call(session, decided.call_id, now)
    return said


def _unlink(recordings_dir: Path, path: Path, call_id: str,
            legs: list[Path] | None = None) -> None:
    """The mixed file, its names in the case catalogue, and the legs' files (by default
    where MixMonitor writes them beside it)."""
    if legs is None:
        legs = [found for found in (_inside(recordings_dir, str(catalogue.leg_path(path, leg)))
                                    for leg in LEGS) if found is not None]
    for leg_file in legs:
        leg_file.unlink(missing_ok=True)
    cases = recordings_dir.resolve() / CASES_DIR
    if cases.is_dir():  # the case catalogue's name for it would lead nowhere now (first:
        # glob passes over a link whose file is gone)
        for folder in cases.iterdir():
            link = folder / f"{call_id}{path.suffix}"
            if link.is_symlink():
                link.unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def _finish_claims(sessions: sessionmaker[Session], recordings_dir: Path,
                   now: datetime) -> None:
    """Claims whose unlink never happened (the run died in between): unlink the file if it
    is still the one claimed (same checksum), and mark the row."""
    with sessions() as session:
        open_claims = list(session.scalars(select(RecordingDeletion).where(
            RecordingDeletion.deleted_at.is_(None))))
    for claim in open_claims:
        path = _inside(recordings_dir, claim.path)
        if path is not None and _still_claimed(path, claim.sha256):
            _unlink(recordings_dir, path, claim.call_id)
        with transaction(sessions) as session:
            row = session.get(RecordingDeletion, claim.id)
            if row is not None and row.deleted_at is None:
                row.deleted_at = now


def _still_claimed(path: Path, sha256: str) -> bool:
    """The file is still the one claimed, or gone already (the legs beside it may not be
    yet): also when another run unlinks it while this one reads it."""
    try:
        return not path.exists() or (path.is_file() and sha256_of(path) == sha256)
    except FileNotFoundError:
        return True


# --- events and the disk --------------------------------------------------------------------

@dataclass(frozen=True)
class RecordingDeleted(DomainEvent):
    type: ClassVar[str] = "recordings.deleted"
    call_id: str
    sha256: str
    reason: str

    def identity(self) -> tuple[object, ...]:
        return (self.call_id,)


@dataclass(frozen=True)
class DiskLow(DomainEvent):
    """Free space under the recordings directory fell below retention.min_free_mb."""

    type: ClassVar[str] = "recordings.disk_low"
    directory: str
    free_mb: int
    threshold_mb: int

    def identity(self) -> tuple[object, ...]:
        return (self.directory, int(self.at))


def free_mb(directory: Path) -> int:
    target = directory
    while not target.exists() and target != target.parent:
        target = target.parent
    return shutil.disk_usage(target).free // (1 << 20)


def watch_disk(directory: Path, threshold_mb: int, *, now: datetime, was_low: bool,
               publish: Callable[[DiskLow], object] | None = None) -> DiskLow | None:
    """The warning when the recordings' disk has less than `threshold_mb` free; None while
    there is room. Said once per low spell (`was_low`: the last check found it low):
    logged and, with `publish` (the bus), published as `recordings.disk_low` when it goes
    low; a note in the log when it has room again. Checked every minute, a warning at
    each check would bury the log while the disk stays low."""
    free = free_mb(directory)
    if free >= threshold_mb:
        if was_low:
            log.info("recordings: the disk has room again under %s: %d MB free "
                     "(retention.min_free_mb = %d)", directory, free, threshold_mb)
        return None
    warning = DiskLow(at=now.timestamp(), directory=str(directory), free_mb=free,
                      threshold_mb=threshold_mb)
    if not was_low:
        log.warning("recordings: only %d MB free under %s (retention.min_free_mb = %d): "
                    "recording will fail when the disk is full", free, directory, threshold_mb)
        if publish is not None:
            publish(warning)
    return warning
