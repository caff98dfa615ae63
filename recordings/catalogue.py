"""Where a call's recording lives on this host, and its fingerprint for the call record."""

from __future__ import annotations

import hashlib
import os
import re
import time
import wave
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Float, Integer, String, UniqueConstraint, bindparam, insert, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.config import Settings
from core.db import Base, relocate_paths


@dataclass(frozen=True)
class RecordingFile:
    path: Path
    sha256: str
    size: int


def host_path(settings: Settings, pbx_path: str) -> Path | None:
    """The host path of a file Asterisk wrote under pbx.recordings_path_in_pbx; None if the
    path is elsewhere (never trust a path from the PBX to leave the recordings directory)."""
    inside = settings.pbx.recordings_path_in_pbx.rstrip("/") + "/"
    if not pbx_path.startswith(inside):
        return None
    root = settings.storage.recordings_dir.resolve()
    candidate = (root / pbx_path.removeprefix(inside)).resolve()
    return candidate if candidate.is_relative_to(root) else None


MIXED_SETTLE_SECONDS = 3.0  # MixMonitor closes the mixed file just after the hang-up
LEG_SETTLE_SECONDS = 1.0  # the legs, when there are any, close with it
_POLL_SECONDS = 0.2


def fingerprint(path: Path, settle_seconds: float = MIXED_SETTLE_SECONDS
                ) -> RecordingFile | None:
    """SHA-256 of a finished recording. MixMonitor closes the file just after the hang-up,
    so wait until its size stops changing (at most `settle_seconds`)."""
    return fingerprints({path: settle_seconds})[path]


def fingerprints(files: dict[Path, float]) -> dict[Path, RecordingFile | None]:
    """`fingerprint` of several files (each path with its own settle time) in one wait:
    a call's mixed file and its legs close together, so each poll looks at all of them
    (one 0.2 s pause for the three, where they took one each)."""
    start = time.monotonic()
    last: dict[Path, int] = dict.fromkeys(files, -1)
    settled: dict[Path, int] = {}
    while True:
        for path, settle_seconds in files.items():
            if path in settled:
                continue
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                size = -1
            if size >= 0 and size == last[path]:
                settled[path] = size
            elif time.monotonic() - start > settle_seconds:
                settled[path] = size  # as it is: still growing, or never there (-1)
            last[path] = size
        if len(settled) == len(files):
            break
        time.sleep(_POLL_SECONDS)
    return {path: _digest(path) if size >= 0 else None for path, size in settled.items()}


def _digest(path: Path) -> RecordingFile | None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as audio:
            for block in iter(lambda: audio.read(1 << 16), b""):
                digest.update(block)
            size = os.fstat(audio.fileno()).st_size
    except FileNotFoundError:
        return None  # removed while it settled
    return RecordingFile(path=path, sha256=digest.hexdigest(), size=size)


# Each recording that belongs to a work order is found by its case number (案件编号) under
# cases/<case number>/<call id><suffix>: a relative symlink to the recording where
# MixMonitor left it, so the catalogue of a case is a directory listing and survives the
# recordings directory being moved whole.
CASES_DIR = "cases"
_CASE = re.compile(r"[0-9]{12,16}")
_CALL = re.compile(r"[0-9A-Za-z_-][0-9A-Za-z._-]{0,63}")


def file_under_case(recordings_dir: Path, recording: Path, case_number: str,
                    call_id: str) -> Path | None:
    """Name `recording` (of call `call_id`) under its case number; the link's path, or None
    when the recording lies outside `recordings_dir` or is gone. Filing it again changes
    nothing; a call's recording is filed under one case only, the one given last."""
    if not _CASE.fullmatch(case_number) or not _CALL.fullmatch(call_id):
        raise ValueError(f"case {case_number[:20]!r} / call {call_id[:64]!r}: not a name")
    root = recordings_dir.resolve()
    target = recording.resolve()
    if not target.is_relative_to(root) or not target.is_file():
        return None
    folder = root / CASES_DIR / case_number
    link = folder / f"{call_id}{target.suffix}"
    relative = os.path.relpath(target, folder)
    if link.is_symlink() and os.readlink(link) == relative:
        return link
    folder.mkdir(parents=True, exist_ok=True)
    for old in (root / CASES_DIR).glob(f"*/{call_id}{target.suffix}"):
        if old != link:  # the call moved to another order
            old.unlink(missing_ok=True)
    partial = folder / f".{call_id}.{os.getpid()}.part"
    partial.unlink(missing_ok=True)
    partial.symlink_to(relative)
    os.replace(partial, link)  # never a half-made name, even with two fileing at once
    return link


def recordings_of_case(recordings_dir: Path, case_number: str) -> list[Path]:
    """The recordings filed under a case number, each as the recording's own path."""
    if not _CASE.fullmatch(case_number):
        return []
    folder = recordings_dir.resolve() / CASES_DIR / case_number
    if not folder.is_dir():
        return []
    return sorted(link.resolve() for link in folder.iterdir()
                  if link.is_symlink() and not link.name.startswith(".")
                  and link.resolve().is_file())


def filed_recording(recordings_dir: Path, case_number: str, call_id: str) -> Path | None:
    """The recording of call `call_id` filed under `case_number` (the recording's own path),
    or None when none is filed, it is gone, or the name leads outside `recordings_dir`."""
    if not _CASE.fullmatch(case_number) or not _CALL.fullmatch(call_id):
        return None
    root = recordings_dir.resolve()
    folder = root / CASES_DIR / case_number
    if not folder.is_dir():
        return None
    for link in sorted(folder.glob(f"{call_id}.*")):
        if link.name.startswith(".") or link.stem != call_id:
            continue
        target = link.resolve()
        if target.is_relative_to(root) and target.is_file():
            return target
    return None


# --- the files of a call (通话录音文件) ----------------------------------------------------------
# Besides the mixed recording <linkedid>.wav, MixMonitor writes each direction of the
# caller's channel apart (its r() and t() options): what the caller said (<linkedid>-caller.wav)
# and what the caller heard, the agent (<linkedid>-agent.wav). A transcript of a leg knows who
# spoke. Each file is a row of `recording_files`, linked to its call (and, through the call's
# record, to its order).
MIXED, CALLER, AGENT = "mixed", "caller", "agent"
LEGS = (CALLER, AGENT)


def leg_path(mixed: Path, leg: str) -> Path:
    """Where MixMonitor writes a leg of the mixed recording `mixed` (the dialplan's names)."""
    return mixed if leg == MIXED else mixed.with_name(f"{mixed.stem}-{leg}{mixed.suffix}")


class CallFile(Base):
    __tablename__ = "recording_files"
    __table_args__ = (UniqueConstraint("call_id", "leg"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(String(64))
    leg: Mapped[str] = mapped_column(String(8))  # mixed | caller | agent
    path: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    bytes: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)


def _seconds(path: Path) -> float:
    try:
        with wave.open(str(path), "rb") as wav:
            return round(wav.getnframes() / float(wav.getframerate()), 2)
    except (wave.Error, EOFError, OSError):
        return 0.0


def call_files(mixed_path: Path) -> tuple[RecordingFile | None, dict[str, RecordingFile]]:
    """A call's mixed recording and each leg found beside it, fingerprinted in one wait
    (`fingerprints`). It reads the files and waits for MixMonitor to finish them, so it runs
    before the transaction that stores the call and files them (`catalogue_call`): on SQLite
    a write lock held over that wait, 0.4 s a call, stopped every other writer (at 8 calls/s
    the call records were stored 13 s behind the calls)."""
    legs = {leg: leg_path(mixed_path, leg) for leg in LEGS}
    found = fingerprints({mixed_path: MIXED_SETTLE_SECONDS,
                          **dict.fromkeys(legs.values(), LEG_SETTLE_SECONDS)})
    mixed = found[mixed_path]
    if mixed is None:
        return None, {}
    return mixed, {leg: file for leg, path in legs.items()
                   if (file := found[path]) is not None}


def catalogue_call(session: Session, call_id: str, mixed: RecordingFile | None,
                   legs: dict[str, RecordingFile]) -> list[CallFile]:
    """File the call's recordings (the mixed one and its `legs`, fingerprinted already:
    `call_files`); the rows, filed once: a call filed again keeps its rows."""
    if mixed is None:
        return []
    have = {row.leg: row for row in session.scalars(_FILES, {"call_id": call_id})}
    new = [dict(call_id=call_id, leg=leg, path=str(found.path), sha256=found.sha256,
                bytes=found.size, seconds=_seconds(found.path))
           for leg, found in ((MIXED, mixed), *((leg, legs.get(leg)) for leg in LEGS))
           if leg not in have and found is not None]
    if new:  # one INSERT for the call's files, not a flush of each
        have.update((row.leg, row) for row in session.scalars(
            insert(CallFile).returning(CallFile), new))
    return [have[leg] for leg in (MIXED, *LEGS) if leg in have]


_FILES = select(CallFile).where(CallFile.call_id == bindparam("call_id"))  # every call's filing


def files_of_call(session: Session, call_id: str) -> list[CallFile]:
    order = {MIXED: 0, CALLER: 1, AGENT: 2}
    rows = session.scalars(_FILES, {"call_id": call_id}).all()
    return sorted(rows, key=lambda r: order.get(r.leg, 9))


def forget_call(session: Session, call_id: str) -> list[CallFile]:
    """Retention deleted the call's files: their rows go (the deletion log keeps what each
    was: path, checksum, why); the rows removed."""
    rows = files_of_call(session, call_id)
    for row in rows:
        session.delete(row)
    session.flush()
    return rows


# --- backup and restore (hotline/backup.py) ---------------------------------------------------


def catalogued(session: Session) -> list[CallFile]:
    """Every file the catalogue names: what a backup copies with the database."""
    return list(session.scalars(select(CallFile).order_by(CallFile.id)))


def relocate(session: Session, old_root: str, new_root: str) -> int:
    """The recordings directory moved (a restore elsewhere): the catalogue follows."""
    return relocate_paths(session, CallFile.path, old_root, new_root)
