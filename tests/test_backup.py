"""Backups (issue 15, item 7): `hotline backup` while the centre runs, `hotline restore` into
an empty data directory, and the same orders, calls and recordings read back.

What must survive: every order with its history, every call record, every recording and
photo byte for byte (checked against the SHA-256 written here from the bytes the test made),
the case catalogue's links, the generated secrets; the stored paths follow the new data
directory. What is refused, with nothing written: a database that is not empty, a damaged
archive, a file that is no archive. A call still up when the backup is taken is not in it."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text

from asterisk_conf.sandbox import Sandbox
from core.config import Settings
from core.db import make_engine, session_factory, transaction, upgrade
from hotline import backup
from hotline.centre import Centre
from recordings import catalogue
from sipkit.kit import Call, Dtmf, SipKit, Wait
from telephony import records
from tests.conftest import (
    AGENT_PORT,
    POSTGRES_ADMIN_URL,
    agent_ip,
    ensure_ready,
    make_settings,
    wait_until,
)
from tickets import catalogue as order_catalogue
from tickets import service
from tickets.models import WorkOrder, WorkOrderEvent

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
ANSWERED, SECOND = "1763949600.1", "1763949700.2"
MIXED_BYTES = b"RIFF" + b"mixed-recording " * 64
CALLER_BYTES = b"RIFF" + b"caller-leg " * 64
PHOTO = b"\x89PNG\r\n\x1a\n" + b"photo of the pavement " * 10
HOTLINE = str(Path(sys.executable).with_name("hotline"))


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@pytest.fixture
def empty_database(database_url: str) -> Iterator[str]:
    """A second fresh database of the same kind as `database_url`: where the restore goes."""
    if database_url.startswith("sqlite"):
        yield database_url.replace("hotline.db", "restored.db")
        return
    name = f"hotline_restore_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL.replace("postgresql:", "postgresql+psycopg:", 1),
                          isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _store(session: Any, call_id: str, recording: Path | None, talk: int) -> None:
    started = NOW.timestamp()
    records.store_call(session, {
        "call_id": call_id, "caller_number": "13800138000", "caller_name": "",
        "entry_number": "12319", "started_at": started, "ended_at": started + talk + 3,
        "duration_seconds": talk + 3, "outcome": "answered", "queue": "intake",
        "queue_position": 1, "wait_seconds": 3, "short_abandon": False, "agent": "8001",
        "connected_at": started + 3, "talk_seconds": talk, "hold_seconds": 0,
        "hangup_cause": 16, "hangup_cause_text": "", "ivr_path": [], "agent_attempts": [],
        "transfers": [], "legs": [], "recording": str(recording) if recording else None,
        "incomplete": False}, catalogue.fingerprint(recording, 0) if recording else None)


def _source(tmp_path: Path, database_url: str) -> tuple[Settings, str]:
    """A centre's data: two calls (one recorded, with its caller's leg), an order taken on
    the recorded call with a photo; the case number."""
    settings = make_settings(tmp_path / "source", DATABASE_URL=database_url)
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    folder = settings.storage.recordings_dir / "2026" / "11"
    folder.mkdir(parents=True)
    mixed = folder / f"{ANSWERED}.wav"
    mixed.write_bytes(MIXED_BYTES)
    (folder / f"{ANSWERED}-caller.wav").write_bytes(CALLER_BYTES)
    with transaction(session_factory(engine)) as session:
        order_catalogue.seed(session)
        _store(session, ANSWERED, mixed, 57)
        _store(session, SECOND, None, 20)
        catalogue.catalogue_call(session, ANSWERED, *catalogue.call_files(mixed))
        order = service.open_order(session, appeal_type="complaint", description="井盖缺失",
                                   channel="phone", actor="受理员", now=NOW)
        service.link_call(session, order.case_number, ANSWERED, actor="受理员",
                          recordings_dir=settings.storage.recordings_dir, now=NOW)
        service.store_photo(session, order.case_number, PHOTO,
                            settings.storage.data_dir / "attachments", roles=["operator"],
                            now=NOW)
        case_number = order.case_number
    engine.dispose()
    return settings, case_number


def _hotline(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env.update(HOTLINE_STORAGE_DATA_DIR=str(settings.storage.data_dir),
               DATABASE_URL=settings.storage.database_url)
    return subprocess.run([HOTLINE, *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_a_restore_into_an_empty_data_directory_reads_the_same_data_back(
        tmp_path: Path, database_url: str, empty_database: str) -> None:
    source, case_number = _source(tmp_path, database_url)
    archive = tmp_path / "backups" / "hotline.tar.gz"
    made = _hotline(source, "backup", "--out", str(archive))
    assert made.returncode == 0, made.stderr
    assert "3 files" in made.stdout  # the mixed recording, the caller's leg, the photo
    assert archive.stat().st_mode & 0o777 == 0o600  # it holds the secrets

    target = make_settings(tmp_path / "target", DATABASE_URL=empty_database)
    fresh_secrets = (target.storage.data_dir / "secrets.toml").read_text()
    done = _hotline(target, "restore", str(archive))
    assert done.returncode == 0, done.stderr
    assert "3 files" in done.stdout

    secrets = target.storage.data_dir / "secrets.toml"
    assert secrets.read_text() == (source.storage.data_dir / "secrets.toml").read_text()
    assert secrets.read_text() != fresh_secrets and secrets.stat().st_mode & 0o777 == 0o600
    engine = make_engine(target.storage.database_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM work_orders")).scalar() == 1
        with session_factory(engine)() as session:
            order = service.get_order(session, case_number)
            assert (order.state, order.description) == ("intake", "井盖缺失")
            actions = [e.action for e in session.scalars(
                select(WorkOrderEvent).where(WorkOrderEvent.order_id == order.id)
                .order_by(WorkOrderEvent.seq))]
            assert actions[0] == "create"
            answered = records.get_call(session, ANSWERED)
            assert answered["talk_seconds"] == 57 and answered["case_number"] == case_number
            assert records.get_call(session, SECOND)["recording"] is None
            new_recordings = target.storage.recordings_dir / "2026" / "11"
            assert answered["recording"]["path"] == str(new_recordings / f"{ANSWERED}.wav")
            assert answered["recording"]["sha256"] == _sha(MIXED_BYTES)
            files = {f.leg: f for f in catalogue.files_of_call(session, ANSWERED)}
            assert {leg: Path(f.path).read_bytes() for leg, f in files.items()} == {
                "mixed": MIXED_BYTES, "caller": CALLER_BYTES}
            assert all(Path(f.path).is_relative_to(target.storage.data_dir)
                       for f in files.values())
            [photo] = service.attachments(session, case_number)
            assert Path(photo.path).is_relative_to(target.storage.data_dir / "attachments")
            assert Path(photo.path).read_bytes() == PHOTO and photo.sha256 == _sha(PHOTO)
        assert catalogue.recordings_of_case(target.storage.recordings_dir, case_number) == [
            (new_recordings / f"{ANSWERED}.wav").resolve()]
    finally:
        engine.dispose()


def _tampered(archive: Path, out: Path) -> None:
    """The same archive with one recording's bytes changed, its manifest left as it was."""
    with tarfile.open(archive, "r:gz") as source, tarfile.open(out, "w:gz") as copy:
        for member in source.getmembers():
            data = source.extractfile(member).read() if member.isfile() else None
            if member.name.endswith(f"{ANSWERED}.wav"):
                data = data.replace(b"mixed", b"MIXED")
                member.size = len(data)
            copy.addfile(member, io.BytesIO(data) if data is not None else None)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_restore_refuses_a_database_in_use_and_a_damaged_archive_and_writes_nothing(
        tmp_path: Path, database_url: str, empty_database: str) -> None:
    source, _case = _source(tmp_path, database_url)
    archive = tmp_path / "hotline.tar.gz"
    assert _hotline(source, "backup", "--out", str(archive)).returncode == 0

    onto_itself = _hotline(source, "restore", str(archive))
    assert onto_itself.returncode == 2
    assert "is not empty" in onto_itself.stderr and "Traceback" not in onto_itself.stderr

    target = make_settings(tmp_path / "target", DATABASE_URL=empty_database)
    secrets_before = (target.storage.data_dir / "secrets.toml").read_bytes()
    damaged = tmp_path / "damaged.tar.gz"
    _tampered(archive, damaged)
    refused = _hotline(target, "restore", str(damaged))
    assert refused.returncode == 2 and "does not match its checksum" in refused.stderr
    not_an_archive = tmp_path / "notes.tar.gz"
    not_an_archive.write_text("这不是备份")
    refused_too = _hotline(target, "restore", str(not_an_archive))
    assert refused_too.returncode == 2 and "Traceback" not in refused_too.stderr
    assert not Path(empty_database.removeprefix("sqlite:///")).exists()
    assert not target.storage.recordings_dir.exists() or not any(
        target.storage.recordings_dir.rglob("*.wav"))
    assert (target.storage.data_dir / "secrets.toml").read_bytes() == secrets_before


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_backup_taken_while_orders_are_written_is_one_consistent_moment(
        tmp_path: Path, database_url: str, empty_database: str) -> None:
    """Orders keep being opened during the backup: the restored database holds each order it
    holds whole (its opening event with it), never one without the other."""
    source, _case = _source(tmp_path, database_url)
    engine = make_engine(source.storage.database_url)
    sessions = session_factory(engine)
    stop, writing = threading.Event(), threading.Event()
    written: list[str] = []

    def open_orders() -> None:
        while not stop.is_set():
            with transaction(sessions) as session:
                written.append(service.open_order(
                    session, appeal_type="complaint", description="占道经营", channel="phone",
                    actor="受理员", now=NOW).case_number)
            if len(written) >= 3:
                writing.set()

    writer = threading.Thread(target=open_orders)
    writer.start()
    try:
        assert writing.wait(60)
        archive = tmp_path / "hotline.tar.gz"
        made = backup.backup(source, archive, NOW)
    finally:
        stop.set()
        writer.join()
        engine.dispose()
    target = make_settings(tmp_path / "target", DATABASE_URL=empty_database)
    backup.restore(target, archive)
    restored = make_engine(target.storage.database_url)
    try:
        with restored.connect() as conn:
            orders = conn.execute(select(func.count()).select_from(WorkOrder)).scalar()
            opened = conn.execute(select(func.count(func.distinct(WorkOrderEvent.order_id)))
                                  .where(WorkOrderEvent.action == "create")).scalar()
    finally:
        restored.dispose()
    assert orders == opened == made.manifest["tables"]["work_orders"]
    assert orders >= 4  # the first order and three written before the backup began ...
    assert len(written) + 1 > orders  # ... and more while it ran, not in it


def test_a_backup_taken_during_calls_restores_the_calls_that_ended_before_it(
        pbx: Sandbox, pbx_settings: Settings, kit: SipKit, tmp_path: Path) -> None:
    centre = Centre(pbx_settings, web=False).start()
    callers = ("13700000071", "13700000072")

    def stored(caller: str) -> list[dict[str, Any]]:
        with centre.sessions() as session:
            return records.find_calls(session, records.CallQuery(caller_number=caller))[1]

    try:
        ensure_ready(centre)
        with kit.agent_phone("8101", agent_ip("8101"), port=AGENT_PORT, answer_after=0.5,
                             talk_seconds=3), \
                kit.agent_phone("8102", agent_ip("8102"), port=AGENT_PORT, answer_after=0.5,
                                talk_seconds=3):
            kit.call(Call(caller_id=callers[0], script=(Wait(1), Dtmf("1")), max_seconds=30))
            wait_until(lambda: bool(stored(callers[0])), 20, "the first call was not stored")
        ensure_ready(centre)
        with kit.agent_phone("8101", agent_ip("8101"), port=AGENT_PORT, answer_after=0.5,
                             talk_seconds=15), \
                kit.agent_phone("8102", agent_ip("8102"), port=AGENT_PORT, answer_after=0.5,
                                talk_seconds=15):
            after = centre.bus.last_id()
            run = kit.start_calls(Call(caller_id=callers[1], script=(Wait(1), Dtmf("1")),
                                       max_seconds=40))
            wait_until(lambda: any(e["type"] == "call.agent_connected"
                                   for _id, e in centre.bus.read(after)), 20,
                       "the second call did not reach an agent")
            archive = tmp_path / "during-calls.tar.gz"
            backup.backup(pbx_settings, archive, NOW)  # the second call is up meanwhile
            assert not stored(callers[1])
            run.wait()
            wait_until(lambda: bool(stored(callers[1])), 20, "the second call was not stored")
        [first] = stored(callers[0])
    finally:
        centre.stop()

    target = make_settings(tmp_path / "target")
    done = backup.restore(target, archive)
    assert not done.problems
    engine = make_engine(target.storage.database_url)
    try:
        with session_factory(engine)() as session:
            [again] = records.find_calls(session, records.CallQuery(caller_number=callers[0]))[1]
            assert not records.find_calls(session,
                                          records.CallQuery(caller_number=callers[1]))[1]
    finally:
        engine.dispose()
    for key in ("call_id", "outcome", "agent", "talk_seconds", "queue", "started_at"):
        assert again[key] == first[key], key
    assert first["recording"]["sha256"] and again["recording"]["sha256"] == first[
        "recording"]["sha256"]
    restored = Path(again["recording"]["path"])
    assert restored.is_relative_to(target.storage.recordings_dir)
    assert _sha(restored.read_bytes()) == first["recording"]["sha256"]
