"""Retention of recordings (issue 13, item 8): after `retention.recording_days` a recording
is deleted unless its work order is still open or it is on legal hold; each deletion is in
the log with its checksum, the hold and its release are audited, two runs at once delete
nothing twice, and the disk's free space is watched with a warning on the bus.

The clock is pinned: 2026-11-24 10:00 in Beijing; the period is 30 days. Four calls of
2026-09-01 (84 days old): one of a closed order, one of an open order, one held, one of no
order; one call of 2026-11-20 (4 days old)."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from accounts.audit import AuditEntry
from core.db import make_engine, session_factory, transaction, upgrade
from core.events import EventBus, publish_on_commit
from core.live import connect_redis
from hotline import cli
from hotline.retention import RetentionLoop, run_retention
from recordings import retention
from telephony import records
from tests.conftest import REDIS_SERVER_URL, make_settings
from tickets import service

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
OLD = datetime(2026, 9, 1, 2, 0, tzinfo=UTC)
RECENT = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
CLOSED, OPEN, HELD, LOOSE, YOUNG = "1756692000.1", "1756692000.2", "1756692000.3", \
    "1756692000.4", "1763604000.5"


def _store(session, call_id: str, at: datetime, recording: Path) -> None:
    recording.parent.mkdir(parents=True, exist_ok=True)
    recording.write_bytes(b"RIFF" + call_id.encode() * 50)
    started = at.timestamp()
    records.store_call(session, {
        "call_id": call_id, "caller_number": "13800138000", "caller_name": "",
        "entry_number": "12319", "started_at": started, "ended_at": started + 60,
        "duration_seconds": 60, "outcome": "answered", "queue": "intake",
        "queue_position": 1, "wait_seconds": 3, "short_abandon": False, "agent": "8001",
        "connected_at": started + 3, "talk_seconds": 57, "hold_seconds": 0,
        "hangup_cause": 16, "hangup_cause_text": "", "ivr_path": [], "agent_attempts": [],
        "transfers": [], "legs": [], "recording": str(recording), "incomplete": False})


@pytest.fixture
def world(database_url: str, tmp_path: Path):
    settings = make_settings(tmp_path, DATABASE_URL=database_url,
                             HOTLINE_RETENTION_RECORDING_DAYS="30")
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    folder = settings.storage.recordings_dir / "2026"
    paths = {c: folder / f"{c}.wav" for c in (CLOSED, OPEN, HELD, LOOSE, YOUNG)}
    with transaction(sessions) as session:
        from tickets import catalogue
        catalogue.seed(session)
        for call_id, path in paths.items():
            _store(session, call_id, RECENT if call_id == YOUNG else OLD, path)
        for call_id, closes in ((CLOSED, True), (OPEN, False)):
            order = service.open_order(session, appeal_type="enquiry", description="咨询",
                                       channel="phone", actor="受理员", now=OLD)
            service.link_call(session, order.case_number, call_id, actor="受理员",
                              recordings_dir=settings.storage.recordings_dir, now=OLD)
            if closes:
                service.transition(session, order.case_number, "resolve_on_call",
                                   actor="受理员", role="operator", now=OLD)
        retention.place_hold(session, HELD, reason="法院调取 (2026)黑0102民初123号",
                             actor="管理员", now=NOW - timedelta(days=1))
    yield settings, sessions, paths
    engine.dispose()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_retention_deletes_only_what_it_may_and_logs_each_deletion(world) -> None:
    settings, sessions, paths = world
    digests = {c: _digest(p) for c, p in paths.items()}
    case_link = next((settings.storage.recordings_dir / "cases").glob(f"*/{CLOSED}.wav"))

    trial = run_retention(sessions, settings, NOW, dry_run=True)
    assert sorted(trial.deleted) == sorted([CLOSED, LOOSE])
    assert all(p.is_file() for p in paths.values())  # a dry run deletes nothing

    outcome = run_retention(sessions, settings, NOW)
    assert sorted(outcome.deleted) == sorted([CLOSED, LOOSE])
    assert {k.call_id: k.why.split(" ")[0] for k in outcome.kept} == {
        OPEN: "work", HELD: "legal"}
    assert not paths[CLOSED].exists() and not paths[LOOSE].exists()
    assert paths[OPEN].is_file() and paths[HELD].is_file() and paths[YOUNG].is_file()
    assert not case_link.is_symlink()  # the case catalogue names no missing file
    with sessions() as session:
        log = {r.call_id: r for r in retention.deletions(session)}
    assert sorted(log) == sorted([CLOSED, LOOSE])
    for call_id in (CLOSED, LOOSE):
        assert log[call_id].sha256 == digests[call_id]
        assert log[call_id].deleted_at == NOW
        assert log[call_id].reason.startswith("expired: older than 30 days")
        assert log[call_id].path == str(paths[call_id].resolve())
    assert "closed" in log[CLOSED].reason
    with sessions() as session:  # the call records offer the deleted ones no more
        assert records.get_call(session, CLOSED)["recording"] is None
        assert records.get_call(session, OPEN)["recording"]["path"] == str(paths[OPEN])

    again = run_retention(sessions, settings, NOW + timedelta(days=1))
    assert again.deleted == []  # nothing is deleted, or logged, twice


def test_a_released_hold_lets_retention_delete_and_both_are_audited(world) -> None:
    settings, sessions, paths = world
    with pytest.raises(retention.HoldError), transaction(sessions) as session:
        retention.place_hold(session, HELD, reason="again", actor="管理员", now=NOW)
    with transaction(sessions) as session:
        retention.release_hold(session, HELD, reason="案件审结", actor="管理员", now=NOW)
    outcome = run_retention(sessions, settings, NOW)
    assert HELD in outcome.deleted and not paths[HELD].exists()
    with sessions() as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.target == HELD)
                               .order_by(AuditEntry.id)).all()
    assert [(r.action, r.actor, json.loads(r.detail)["reason"]) for r in rows] == [
        ("recording_held", "管理员", "法院调取 (2026)黑0102民初123号"),
        ("recording_released", "管理员", "案件审结")]


def test_two_runs_at_once_delete_each_recording_once(world) -> None:
    settings, sessions, _paths = world
    outcomes: list[retention.Outcome] = []
    start = threading.Barrier(2)

    def one_run() -> None:
        start.wait()
        outcomes.append(run_retention(sessions, settings, NOW, actor="run"))

    runners = [threading.Thread(target=one_run) for _ in range(2)]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join(60)
    deleted = sorted(c for o in outcomes for c in o.deleted)
    assert deleted == sorted([CLOSED, LOOSE])  # each by one run only
    with sessions() as session:
        assert len(retention.deletions(session)) == 2


def test_a_recording_another_run_unlinks_while_this_one_reads_it_is_skipped(
        world, monkeypatch) -> None:
    """The other run claimed and unlinked CLOSED's file between this run's look and its
    checksum (the race of two runs at once, made certain): this run skips it, goes on
    with LOOSE, and finishes without an error."""
    settings, sessions, paths = world
    reading = retention.sha256_of

    def unlinked_first(path: Path) -> str:
        if path == paths[CLOSED].resolve():
            path.unlink()
        return reading(path)

    monkeypatch.setattr(retention, "sha256_of", unlinked_first)
    outcome = run_retention(sessions, settings, NOW, actor="run")
    assert (outcome.deleted, outcome.skipped) == ([LOOSE], [CLOSED])


def test_an_unfinished_claim_is_finished_by_the_next_run(world) -> None:
    """A run that died after committing its claim and before unlinking the file."""
    settings, sessions, paths = world
    leg = paths[LOOSE].with_name(f"{LOOSE}-caller.wav")  # uncatalogued, beside the mixed file
    leg.write_bytes(b"caller leg")
    with transaction(sessions) as session:
        session.add(retention.RecordingDeletion(
            call_id=LOOSE, path=str(paths[LOOSE].resolve()), sha256=_digest(paths[LOOSE]),
            bytes=paths[LOOSE].stat().st_size, reason="expired", recorded_at=OLD,
            claimed_at=NOW, run_by="died"))
    outcome = run_retention(sessions, settings, NOW)
    assert outcome.deleted == [CLOSED]
    assert not paths[LOOSE].exists() and not leg.exists()
    with sessions() as session:
        assert retention.deletion(session, LOOSE).deleted_at == NOW


def test_the_cli_says_what_a_dry_run_would_delete(world, monkeypatch) -> None:
    settings, _sessions, paths = world
    monkeypatch.setattr(cli, "load_settings", lambda _path=None: settings)
    result = CliRunner().invoke(cli.cli, ["recordings", "retention", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["dry_run"] is True
    assert sorted(answer["deleted"]) == sorted([CLOSED, LOOSE])
    assert all(p.is_file() for p in paths.values())


def test_low_disk_space_warns_on_the_bus_and_in_the_log_once_until_it_recovers(
        world, caplog) -> None:
    """Once per low spell (checked every minute): a warning when it goes low, a note when
    it recovers, a warning again when it goes low again."""
    settings, sessions, _paths = world
    free = retention.free_mb(settings.storage.recordings_dir)
    low = replace(settings, retention=replace(settings.retention, min_free_mb=free + 10_000))
    client = connect_redis(replace(settings, storage=replace(settings.storage,
                                                             redis_url=REDIS_SERVER_URL)))
    bus = EventBus(client, stream=f"test:retention:{NOW.timestamp()}:{id(settings)}")
    publish_on_commit(sessions, bus)  # as the centre's parts relay their events
    loop = RetentionLoop(low, sessions, bus, clock=None)  # type: ignore[arg-type]

    def said() -> list[tuple[str, str]]:
        return [(r.levelname, r.getMessage().split(" under ")[0]) for r in caplog.records
                if r.name == "recordings.retention"]

    with caplog.at_level("INFO", logger="recordings.retention"):
        warning = loop.check_disk(NOW)
        assert warning is not None and warning.threshold_mb == free + 10_000
        assert "recording will fail when the disk is full" in caplog.text
        events = [e for _id, e in bus.read()]
        assert [(e["type"], e["threshold_mb"]) for e in events] == [
            ("recordings.disk_low", free + 10_000)]
        for minutes in (1, 2):  # still low: warned already
            assert loop.check_disk(NOW + timedelta(minutes=minutes)) is not None
        assert len(bus.read()) == 1
        assert [level for level, _ in said()] == ["WARNING"]
        loop.settings = settings  # the default threshold: this disk has room again
        assert loop.check_disk(NOW + timedelta(minutes=3)) is None
        assert loop.check_disk(NOW + timedelta(minutes=4)) is None
        loop.settings = low  # low again: said again
        assert loop.check_disk(NOW + timedelta(minutes=5)) is not None
        assert loop.check_disk(NOW + timedelta(minutes=6)) is not None
    assert [level for level, _ in said()] == ["WARNING", "INFO", "WARNING"]
    assert said()[1][1].startswith("recordings: the disk has room again")
    assert len(bus.read()) == 2  # the bus too: once per low spell
    client.delete(bus.stream)


def test_holds_over_the_api_refuse_bad_input_and_change_nothing(world) -> None:
    from accounts import service as accounts
    from core.clock import FixedClock
    from hotline.web import create_app

    settings, sessions, _paths = world
    settings = replace(settings, storage=replace(settings.storage, redis_url=REDIS_SERVER_URL))
    tokens = {}
    with transaction(sessions) as session:
        for name, role in (("管理员", "admin"), ("审计员", "auditor"), ("监督员", "supervisor")):
            accounts.create_account(session, name, [role], password=None, actor="测试",
                                    now=NOW)
            tokens[role] = {"Authorization": "Bearer " + accounts.issue_token(
                session, name, scope=None, actor="测试", now=NOW)}
    client = create_app(settings, sessions, connect_redis(settings),
                        FixedClock(NOW)).test_client()
    url = f"/api/v1/recordings/{LOOSE}"
    empty = client.post(f"{url}/hold", headers=tokens["admin"], json={"reason": ""})
    assert empty.status_code == 400 and empty.json["detail"].startswith("reason")
    extra = client.post(f"{url}/hold", headers=tokens["admin"], json={"reason": "x", "by": 1})
    assert extra.status_code == 400
    assert client.post(f"{url}/hold", headers=tokens["supervisor"],
                       json={"reason": "调取"}).status_code == 403
    with sessions() as session:
        assert retention.active_hold(session, LOOSE) is None  # nothing half-stored
    placed = client.post(f"{url}/hold", headers=tokens["admin"], json={"reason": "信访复查"})
    assert placed.status_code == 201
    assert (placed.json["placed_by"], placed.json["reason"]) == ("管理员", "信访复查")
    assert client.post(f"{url}/hold", headers=tokens["admin"],
                       json={"reason": "再次"}).status_code == 409
    held = client.get("/api/v1/recordings/holds", headers=tokens["auditor"]).json["items"]
    assert sorted(h["call_id"] for h in held) == sorted([HELD, LOOSE])
    assert run_retention(sessions, settings, NOW).deleted == [CLOSED]
    released = client.post(f"{url}/release", headers=tokens["admin"], json={"reason": "复查结束"})
    assert released.status_code == 200 and released.json["release_reason"] == "复查结束"
    assert client.post(f"{url}/release", headers=tokens["admin"],
                       json={"reason": "又一次"}).status_code == 404
    log = client.get("/api/v1/recordings/deletions", headers=tokens["auditor"]).json["items"]
    assert [(d["call_id"], d["sha256"]) for d in log] == [
        (CLOSED, hashlib.sha256(b"RIFF" + CLOSED.encode() * 50).hexdigest())]
    assert "path" not in log[0]  # where a recording lay on disk is never shown


def test_the_centre_runs_retention_once_a_day_at_its_hour(world) -> None:
    from core.clock import FixedClock

    settings, sessions, paths = world
    client = connect_redis(replace(settings, storage=replace(settings.storage,
                                                             redis_url=REDIS_SERVER_URL)))
    bus = EventBus(client, stream=f"test:retention-loop:{id(settings)}")
    clock = FixedClock(datetime(2026, 11, 23, 18, 30, tzinfo=UTC))  # 02:30 Beijing
    loop = RetentionLoop(settings, sessions, bus, clock)
    loop.tick()
    assert paths[LOOSE].is_file()  # before retention.run_hour (3)
    clock.advance(timedelta(hours=1))  # 03:30
    loop.tick()
    assert not paths[LOOSE].exists() and not paths[CLOSED].exists()
    with transaction(sessions) as session:
        retention.release_hold(session, HELD, reason="审结", actor="管理员", now=clock.now())
    clock.advance(timedelta(hours=2))  # the same day: no second run
    loop.tick()
    assert paths[HELD].is_file()
    clock.advance(timedelta(days=1))
    loop.tick()
    assert not paths[HELD].exists()
    client.delete(bus.stream)


# --- the speech side: the legs' files, their catalogue rows, transcripts, the index, jobs ---
# The three calls of 2026-09-01 with legs: CLOSED (deleted), HELD and OPEN (kept). Each
# caller leg has a transcript of one utterance (its own phrase); each agent leg a queued job.
SAID = {CLOSED: "井盖 丢失 了 很 危险", HELD: "路灯 不亮 已经 三 天", OPEN: "夜里 施工 噪音 扰民"}


class _DeafEngine:
    """Stands in for vosk: a job that reaches the engine fails the test."""

    name, model = "vosk", "none"

    def transcribe(self, audio: Path) -> list:
        raise AssertionError(f"{audio} should never be transcribed")


def _with_legs(settings, sessions, paths) -> dict[str, dict[str, str]]:
    """Write the legs beside the mixed files, catalogue them, store the caller legs'
    transcripts and queue the agent legs; each leg's checksum (worked out here)."""
    from recordings import catalogue, transcribe_worker, transcripts
    from recordings.speech import Utterance, Word

    sums: dict[str, dict[str, str]] = {}
    with transaction(sessions) as session:
        for call_id in SAID:
            mixed = paths[call_id]
            sums[call_id] = {}
            for leg in ("caller", "agent"):
                audio = f"{leg}:{call_id}".encode() * 40
                mixed.with_name(f"{call_id}-{leg}.wav").write_bytes(audio)
                sums[call_id][leg] = hashlib.sha256(audio).hexdigest()
            catalogue.catalogue_call(session, call_id, *catalogue.call_files(mixed))
            words = SAID[call_id].split()
            transcripts.store(session, sha256=sums[call_id]["caller"], call_id=call_id,
                              leg="caller", engine="vosk", model="fixture", utterances=[
                                  Utterance(1.0, 1.0 + len(words), SAID[call_id], tuple(
                                      Word(w, 1.0 + i, 2.0 + i, 0.9)
                                      for i, w in enumerate(words)))],
                              audio_seconds=10.0, now=OLD)
            session.add(transcribe_worker.TranscriptionJob(
                sha256=sums[call_id]["agent"], call_id=call_id, leg="agent",
                path=str(mixed.with_name(f"{call_id}-agent.wav")), state="queued",
                attempts=0, error="", queued_at=OLD))
    return sums


def test_retention_deletes_the_legs_transcripts_and_index_rows_with_the_recording(world):
    from sqlalchemy import text

    from recordings import catalogue, transcribe_worker, transcripts

    settings, sessions, paths = world
    sums = _with_legs(settings, sessions, paths)
    folder = paths[CLOSED].parent
    with sessions() as session:
        closed_segments = list(session.scalars(select(transcripts.Segment.id).where(
            transcripts.Segment.call_id == CLOSED)))
        assert len(closed_segments) == 1
        assert [h.call_id for h in transcripts.search(session, "井盖丢失")[1]] == [CLOSED]

    outcome = run_retention(sessions, settings, NOW)
    assert sorted(outcome.deleted) == sorted([CLOSED, LOOSE])

    # the deleted call's legs are gone from disk and from the catalogue
    assert not (folder / f"{CLOSED}-caller.wav").exists()
    assert not (folder / f"{CLOSED}-agent.wav").exists()
    for kept in (HELD, OPEN):  # a legal hold or an open order keeps every file of the call
        assert (folder / f"{kept}-caller.wav").is_file()
        assert (folder / f"{kept}-agent.wav").is_file()
    with sessions() as session:
        assert catalogue.files_of_call(session, CLOSED) == []
        assert [f.leg for f in catalogue.files_of_call(session, HELD)] == [
            "mixed", "caller", "agent"]
        # its transcript, segments and index rows are gone: the phrase finds nothing
        assert transcripts.search(session, "井盖丢失") == (["井盖", "丢失"], [])
        assert transcripts.call_transcripts(session, CLOSED) == []
        assert session.scalar(select(transcripts.Segment.id).where(
            transcripts.Segment.call_id == CLOSED)) is None
        assert session.execute(text(
            "SELECT count(*) FROM transcript_index WHERE segment_id = :id"),
            {"id": closed_segments[0]}).scalar() == 0
        assert session.execute(text("SELECT count(*) FROM transcript_index")).scalar() == 2
        assert not any("井盖" in terms for terms in transcripts.index_rows(session))
        # the held call's and the open order's transcripts are found as before
        assert [h.call_id for h in transcripts.search(session, "路灯不亮")[1]] == [HELD]
        assert [h.call_id for h in transcripts.search(session, "噪音扰民")[1]] == [OPEN]
        assert [t["leg"] for t in transcripts.call_transcripts(session, HELD)] == ["caller"]
        # the deleted call's queued job is gone; the kept calls' are still queued
        jobs = {j.call_id: j.state for j in session.scalars(
            select(transcribe_worker.TranscriptionJob))}
        assert jobs == {CLOSED: "gone", HELD: "queued", OPEN: "queued"}
        # each leg's file and the transcript are in the audit log: what, checksum, why
        logged = [(r.action, r.actor, json.loads(r.detail)) for r in session.scalars(
            select(AuditEntry).where(AuditEntry.target == CLOSED).order_by(AuditEntry.id))]
    why = "expired: older than 30 days, work order"
    assert [(a, actor, d["leg"], d["sha256"], d["reason"].startswith(why))
            for a, actor, d in logged] == [
        ("recording_file_deleted", "retention", "caller", sums[CLOSED]["caller"], True),
        ("recording_file_deleted", "retention", "agent", sums[CLOSED]["agent"], True),
        ("transcript_deleted", "retention", "caller", sums[CLOSED]["caller"], True)]
    assert [d.get("bytes") for _a, _actor, d in logged] == [
        len(f"caller:{CLOSED}".encode()) * 40, len(f"agent:{CLOSED}".encode()) * 40, None]

    # the queued job of the deleted leg, when RQ runs it, ends as gone: no engine, no retry
    transcribe_worker.prepare(replace(settings, storage=replace(
        settings.storage, redis_url=REDIS_SERVER_URL)), engine=_DeafEngine())
    try:
        assert transcribe_worker.transcribe(sums[CLOSED]["agent"]) == "gone"
    finally:
        transcribe_worker._context = None

    # a second run deletes nothing and logs nothing twice
    assert run_retention(sessions, settings, NOW + timedelta(days=1)).deleted == []
    with sessions() as session:
        assert len(session.scalars(select(AuditEntry).where(
            AuditEntry.target == CLOSED)).all()) == 3
        assert len(retention.deletions(session)) == 2


def test_a_queued_job_whose_file_vanished_ends_as_gone_not_failed(world) -> None:
    from recordings import transcribe_worker

    settings, sessions, paths = world
    sums = _with_legs(settings, sessions, paths)
    (paths[OPEN].parent / f"{OPEN}-agent.wav").unlink()
    transcribe_worker.prepare(replace(settings, storage=replace(
        settings.storage, redis_url=REDIS_SERVER_URL)), engine=_DeafEngine())
    try:
        assert transcribe_worker.transcribe(sums[OPEN]["agent"]) == "gone"
    finally:
        transcribe_worker._context = None
    with sessions() as session:
        job = session.scalar(select(transcribe_worker.TranscriptionJob).where(
            transcribe_worker.TranscriptionJob.call_id == OPEN))
    assert (job.state, job.attempts, job.error) == (
        "gone", 0, "the recording is no longer on disk")
