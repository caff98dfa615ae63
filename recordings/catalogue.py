"""Where a call's recording lives on this host, and its fingerprint for the call record."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from core.config import Settings


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


def fingerprint(path: Path, settle_seconds: float = 3.0) -> RecordingFile | None:
    """SHA-256 of a finished recording. MixMonitor closes the file just after the hang-up,
    so wait until its size stops changing (at most `settle_seconds`)."""
    deadline = time.monotonic() + settle_seconds
    last = -1
    while True:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = -1
        if size >= 0 and size == last:
            break
        if time.monotonic() > deadline:
            if size < 0:
                return None
            break
        last = size
        time.sleep(0.2)
    digest = hashlib.sha256()
    with path.open("rb") as audio:
        for block in iter(lambda: audio.read(1 << 16), b""):
            digest.update(block)
    return RecordingFile(path=path, sha256=digest.hexdigest(), size=path.stat().st_size)
