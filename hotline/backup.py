"""Backups (备份) of a running centre, and their restore into an empty data directory.

`hotline backup` writes one archive (tar.gz, readable by its owner only: it holds secrets):
- `database/`: a consistent copy taken while the centre runs: SQLite's online backup API, or
  `pg_dump` of a snapshot exported from the transaction that also lists the files below;
- `secrets/secrets.toml`: the generated secrets (AMI, webhook, session cookie);
- `files/recordings/...`, `files/attachments/...`: every recording and order attachment the
  copied database names, hashed as they are read, and the case catalogue's links;
- `MANIFEST.json`: when, the schema revision, the row count of every table, every file with
  its checksum (a file the database names but the disk no longer has is listed as missing).
A recording still being written is in no copied row, so it is not in the archive either.
Redis holds only live state (seats, delivered events): not backed up; the telephony service
rebuilds the seats at its resync.

`hotline restore` refuses a non-empty database and checks everything before writing: then
the database, the secrets (the old ones kept beside), every file checked against its
checksum, the stored paths moved to this data directory, and the schema upgraded.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, inspect, select, table
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from core.config import Settings
from core.db import make_engine, upgrade
from core.errors import HotlineError
from recordings import catalogue, transcribe_worker
from telephony import records
from tickets import service as orders

FORMAT = 1
MANIFEST = "MANIFEST.json"
SECRETS = "secrets.toml"
CASES = catalogue.CASES_DIR


class BackupError(HotlineError):
    exit_code = 2


@dataclass
class Backup:
    archive: Path
    manifest: dict[str, Any]


@dataclass
class Restored:
    tables: dict[str, int]
    files: int
    relocated: int
    revision: str
    problems: list[str] = field(default_factory=list)


def _roots(settings: Settings) -> dict[str, Path]:
    """The folders whose files the database names: each is archived under files/<kind>/."""
    return {"recordings": settings.storage.recordings_dir,
            "attachments": settings.storage.data_dir / "attachments"}


def _is_postgres(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """The database URL for pg_dump/pg_restore, its password in the environment instead of
    the command line (where `ps` would show it)."""
    parsed = make_url(url)
    env = {**os.environ}
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError(f"database: {url!r} is not a file")
    return Path(database)


def _tables(conn: Connection) -> dict[str, int]:
    names = sorted(inspect(conn).get_table_names())
    return {name: int(conn.execute(select(func.count()).select_from(table(name))).scalar_one())
            for name in names}


def _revision(conn: Connection) -> str:
    if "alembic_version" not in inspect(conn).get_table_names():
        return ""
    return str(conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() or "")


def _named_files(session: Session) -> dict[str, dict[str, str | None]]:
    """kind -> {path: sha256} of every file the database names."""
    recordings: dict[str, str | None] = dict(records.recording_paths(session))
    for row in catalogue.catalogued(session):
        recordings[row.path] = row.sha256
    return {"recordings": recordings, "attachments": dict(orders.attachment_files(session))}


@contextmanager
def _snapshot(settings: Settings, work: Path) -> Iterator[tuple[Path, Session]]:
    """A consistent copy of the database in `work` and a session reading that same state."""
    url = settings.storage.database_url
    engine = make_engine(url)
    try:
        if _is_postgres(url):
            dump = work / "hotline.pgdump"
            with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
                snapshot = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
                target, env = _libpq(url)
                done = subprocess.run(
                    ["pg_dump", "--format=custom", "--no-owner", f"--snapshot={snapshot}",
                     f"--file={dump}", f"--dbname={target}"],
                    env=env, capture_output=True, text=True, check=False)
                if done.returncode:
                    raise BackupError(f"pg_dump: {done.stderr.strip()[:500]}")
                with Session(bind=conn) as session:
                    yield dump, session
            return
        copy = work / "hotline.db"
        with engine.connect() as conn:
            source = conn.connection.driver_connection
            target_db = sqlite3.connect(copy)
            try:
                source.backup(target_db)  # type: ignore[union-attr]
                target_db.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            finally:
                target_db.close()
        copied = make_engine(f"sqlite:///{copy}")
        try:
            with copied.connect() as conn, Session(bind=conn) as session:
                yield copy, session
        finally:
            copied.dispose()
    finally:
        engine.dispose()


def _relative(path: str, root: Path) -> str | None:
    """`path` as a name under `root` (as stored, or with links resolved); None outside it."""
    for base in {root.absolute(), root.resolve()}:
        candidate = Path(path)
        if candidate.is_relative_to(base):
            return candidate.relative_to(base).as_posix()
        resolved = candidate.resolve()
        if resolved.is_relative_to(root.resolve()):
            return resolved.relative_to(root.resolve()).as_posix()
    return None


def _add_file(tar: tarfile.TarFile, source: Path, name: str) -> tuple[str, int]:
    """Add `source` as `name`, hashing the very bytes archived."""
    digest = hashlib.sha256()
    with source.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        info = tar.gettarinfo(fileobj=handle, arcname=name)
        info.size, info.mode, info.uid, info.gid, info.uname, info.gname = size, 0o600, 0, 0, "", ""

        class Hashing:  # what tarfile reads, hashed on the way
            def read(self, size: int = -1) -> bytes:
                chunk = handle.read(size)
                digest.update(chunk)
                return chunk

        tar.addfile(info, Hashing())  # type: ignore[arg-type]
    return digest.hexdigest(), size


def _add_bytes(tar: tarfile.TarFile, name: str, content: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(content), 0o600
    tar.addfile(info, io.BytesIO(content))


def backup(settings: Settings, out: Path, now: datetime) -> Backup:
    """Write the archive `out` (mode 600) of the centre's data as it is now."""
    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    roots = _roots(settings)
    part = out.with_name(f".{out.name}.{os.getpid()}.part")
    with tempfile.TemporaryDirectory(prefix="hotline-backup-") as work:
        with _snapshot(settings, Path(work)) as (dump, session):
            conn = session.connection()
            tables, revision = _tables(conn), _revision(conn)
            named = _named_files(session)
        manifest: dict[str, Any] = {
            "format": FORMAT, "taken_at": now.isoformat(), "revision": revision,
            "database": "postgresql" if _is_postgres(settings.storage.database_url)
            else "sqlite", "tables": tables,
            "roots": {kind: sorted({str(r.absolute()), str(r.resolve())})
                      for kind, r in roots.items()},
            "files": [], "links": [], "missing": [], "outside": []}
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz",
                                                          compresslevel=1) as tar:
                tar.add(dump, arcname=f"database/{dump.name}")
                secrets_file = settings.storage.data_dir / SECRETS
                if secrets_file.is_file():
                    _add_file(tar, secrets_file, f"secrets/{SECRETS}")
                archived: set[Path] = set()
                for kind, files in named.items():
                    for path, expected in sorted(files.items()):
                        name = _relative(path, roots[kind])
                        if name is None:
                            manifest["outside"].append({"kind": kind, "path": path})
                            continue
                        source = roots[kind] / name
                        if not source.is_file():
                            manifest["missing"].append({"kind": kind, "path": name})
                            continue
                        sha256, size = _add_file(tar, source, f"files/{kind}/{name}")
                        archived.add(source.resolve())
                        manifest["files"].append({"kind": kind, "path": name, "sha256": sha256,
                                                  "bytes": size, "expected": expected})
                cases = roots["recordings"] / CASES
                for link in sorted(cases.glob("*/*")) if cases.is_dir() else []:
                    if link.is_symlink() and link.resolve() in archived:
                        manifest["links"].append({
                            "path": link.relative_to(roots["recordings"]).as_posix(),
                            "target": os.readlink(link)})
                _add_bytes(tar, MANIFEST, json.dumps(manifest, ensure_ascii=False,
                                                     indent=1).encode())
            os.replace(part, out)
        finally:
            part.unlink(missing_ok=True)
    return Backup(archive=out, manifest=manifest)


# --- restore ----------------------------------------------------------------------------------
# The archive is read front to back twice (a gzip stream cannot seek back cheaply): once to
# check every file against the manifest, which comes last, then to write them.


def _safe_name(name: str) -> str:
    parts = Path(name).parts
    if not name or Path(name).is_absolute() or ".." in parts:
        raise BackupError(f"restore: the archive names a file outside its folder: {name[:200]!r}")
    return name


def _stream(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, mode="r|gz")
    except (tarfile.TarError, OSError) as exc:
        raise BackupError(f"restore: {archive} is not a readable archive: {exc}") from None


def _hash(stream: Any, out: Any = None) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(1 << 16), b""):
        digest.update(chunk)
        if out is not None:
            out.write(chunk)
    return digest.hexdigest()


def _checked(archive: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The manifest, and the checksum of every member, each file checked against the
    manifest: nothing is written from a damaged or foreign archive."""
    manifest: Any = None
    hashes: dict[str, str] = {}
    try:
        with _stream(archive) as tar:
            for member in tar:
                handle = tar.extractfile(member) if member.isfile() else None
                if handle is None:
                    continue
                if member.name == MANIFEST:
                    manifest = json.loads(handle.read())
                else:
                    hashes[member.name] = _hash(handle)
    except (tarfile.TarError, OSError, EOFError, json.JSONDecodeError,
            UnicodeDecodeError) as exc:
        raise BackupError(f"restore: {archive} is damaged: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"restore: not a hotline backup of format {FORMAT} "
                          f"(no readable {MANIFEST})")
    for entry in manifest["files"]:
        name = f"files/{entry['kind']}/{_safe_name(entry['path'])}"
        if hashes.get(name) != entry["sha256"]:
            raise BackupError(f"restore: {name} is missing or does not match its checksum in "
                              "the manifest: the archive is damaged")
    for link in manifest["links"]:
        _safe_name(link["path"])
    return manifest, hashes


def _check_empty(settings: Settings) -> None:
    url = settings.storage.database_url
    if not _is_postgres(url) and not _sqlite_path(url).exists():
        return
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            names = inspect(conn).get_table_names()
    finally:
        engine.dispose()
    if names:
        raise BackupError(f"restore: the database {make_url(url).render_as_string()} is not "
                          f"empty ({len(names)} tables): restore needs an empty database")


def _write(handle: Any, target: Path, sha256: str, private: bool = False) -> None:
    """Write `target` whole or not at all, from bytes that hash to `sha256`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.{os.getpid()}.part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    try:
        with os.fdopen(fd, "wb") as out:
            if _hash(handle, out) != sha256:
                raise BackupError(f"restore: {target.name} changed while it was read")
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return _hash(handle)


def restore(settings: Settings, archive: Path) -> Restored:
    """Restore `archive` into the configured (empty) database and data directory."""
    if not archive.is_file():
        raise BackupError(f"restore: no archive {archive}")
    url = settings.storage.database_url
    manifest, hashes = _checked(archive)
    kind = "postgresql" if _is_postgres(url) else "sqlite"
    if manifest.get("database") != kind:
        raise BackupError(f"restore: the backup is of a {manifest.get('database')} "
                          f"database, this centre's is {kind}")
    _check_empty(settings)
    roots = _roots(settings)
    wanted = {f"files/{e['kind']}/{e['path']}": roots[e["kind"]] / e["path"]
              for e in manifest["files"]}
    for name, target in wanted.items():
        if target.exists() and _sha256(target) != hashes[name]:
            raise BackupError(f"restore: {target} exists with other content")

    secrets_file = settings.storage.data_dir / SECRETS
    with tempfile.TemporaryDirectory(prefix="hotline-restore-") as work, \
            _stream(archive) as tar:
        dump: Path | None = None
        for member in tar:
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is None:
                continue
            if member.name.startswith("database/"):
                dump = Path(work) / Path(member.name).name
                _write(handle, dump, hashes[member.name], private=True)
            elif member.name == f"secrets/{SECRETS}":
                if secrets_file.exists():
                    shutil.copy2(secrets_file, secrets_file.with_name(f"{SECRETS}.before-restore"))
                _write(handle, secrets_file, hashes[member.name], private=True)
            elif member.name in wanted and not wanted[member.name].exists():
                _write(handle, wanted[member.name], hashes[member.name])
        if dump is None:
            raise BackupError("restore: the archive holds no database")
        _restore_database(dump, settings)
    for link in manifest["links"]:
        where = roots["recordings"] / link["path"]
        if not where.is_symlink():
            where.parent.mkdir(parents=True, exist_ok=True)
            where.symlink_to(link["target"])

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            tables = _tables(conn)
        problems = [f"{name}: {count} rows restored, {manifest['tables'].get(name)} backed up"
                    for name, count in tables.items() if manifest["tables"].get(name) != count]
        relocated = 0
        with Session(engine) as session, session.begin():
            for kind_, moves in (("recordings", (catalogue.relocate, transcribe_worker.relocate,
                                                 records.relocate_recordings)),
                                 ("attachments", (orders.relocate_attachments,))):
                new_root = str(roots[kind_].absolute())
                for old_root in manifest["roots"][kind_]:
                    for move in moves:
                        relocated += move(session, old_root, new_root)
        upgrade(engine)
        with engine.connect() as conn:
            revision = _revision(conn)
    finally:
        engine.dispose()
    return Restored(tables=tables, files=len(manifest["files"]), relocated=relocated,
                    revision=revision, problems=problems)


def _restore_database(dump: Path, settings: Settings) -> None:
    url = settings.storage.database_url
    if _is_postgres(url):
        target, env = _libpq(url)
        done = subprocess.run(
            ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error",
             f"--dbname={target}", str(dump)],
            env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            raise BackupError(f"pg_restore: {done.stderr.strip()[:500]}")
        return
    path = _sqlite_path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)  # an empty database (checked): nothing lost
    shutil.copyfile(dump, path)
