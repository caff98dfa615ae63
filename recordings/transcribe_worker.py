"""The transcription worker (转写任务): recordings transcribed off the call path, on RQ.

When a call's record is stored, each leg's recording gets one row in `transcription_jobs`, by
its SHA-256, and one RQ job on the queue `speech` (job id `transcribe-<sha256>`): a recording
queued again, for the same call or another, is neither queued nor transcribed again. A job
counts its attempts in its row; one that raises is retried by RQ (`speech.retries`), and a
work-horse that dies mid-job (killed, out of memory) fails the job, which RQ then retries the
same way: the attempt runs again, once per retry, and stores the transcript once. Progress is
in the rows (queued, running, done, failed) and in RQ's own registries: `hotline speech status`
and `GET /api/v1/speech/status` show both.

The worker (`hotline speech worker`, started by `hotline serve` when a model is configured)
loads the model once; each job's work-horse is forked from it with the model in memory.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from rq import Queue, Retry, Worker
from rq.registry import FailedJobRegistry, StartedJobRegistry
from sqlalchemy import DateTime, Float, Integer, String, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from core.clock import SYSTEM_CLOCK, Clock
from core.config import Settings
from core.db import (
    Base,
    UtcDateTime,
    make_engine,
    relocate_paths,
    retrying,
    session_factory,
    transaction,
)
from core.events import EventBus, announce, publish_on_commit
from recordings import keywords, transcripts
from recordings.catalogue import LEGS, CallFile
from recordings.speech import Engine, engine_for

log = logging.getLogger(__name__)

QUEUE = "speech"
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
GONE = "gone"  # the recording was deleted (retention) before it was transcribed: nothing to do
STATES = (QUEUED, RUNNING, DONE, FAILED, GONE)
_ = DateTime  # (the column type UtcDateTime wraps)


class TranscriptionJob(Base):
    __tablename__ = "transcription_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    call_id: Mapped[str] = mapped_column(String(64))
    leg: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(500))
    state: Mapped[str] = mapped_column(String(12), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(String(500), default="")
    worker_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    queued_at: Mapped[datetime] = mapped_column(UtcDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    audio_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    work_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)


def job_id(sha256: str) -> str:
    return f"transcribe-{sha256}"


def speech_queue(client: redis.Redis) -> Queue:
    return Queue(QUEUE, connection=client)


_said_off = False


def transcripts_on(settings: Settings) -> bool:
    """Whether a model is configured; notes once per process when it is not (at debug:
    the centre says what speech is off, hotline.centre.speech_off)."""
    global _said_off
    if settings.speech.model_path is None:
        if not _said_off:
            _said_off = True
            log.debug("speech: transcripts are off: speech.model_path is not set "
                        "(README, 'Transcripts')")
        return False
    return True


def queue_recording(session: Session, client: redis.Redis, settings: Settings, *,
                    sha256: str, call_id: str, leg: str, path: str, now: datetime) -> bool:
    """Queue one recording for transcription, once per checksum; whether it was queued
    now. The row is written in the caller's transaction; the RQ job after its flush (a job
    that runs before the commit finds no row and is retried by RQ)."""
    if session.scalar(select(TranscriptionJob.id).where(TranscriptionJob.sha256 == sha256)):
        return False
    session.add(TranscriptionJob(sha256=sha256, call_id=call_id, leg=leg, path=path,
                                 state=QUEUED, attempts=0, error="", queued_at=now))
    session.flush()
    enqueue(client, settings, sha256)
    return True


def enqueue(client: redis.Redis, settings: Settings, sha256: str) -> None:
    speech_queue(client).enqueue(
        "recordings.transcribe_worker.transcribe", sha256, job_id=job_id(sha256),
        job_timeout=settings.speech.job_timeout_seconds, result_ttl=86_400,
        failure_ttl=7 * 86_400,
        retry=Retry(max=settings.speech.retries) if settings.speech.retries else None)


def queue_call(session: Session, client: redis.Redis, settings: Settings, files: list[CallFile],
               now: datetime) -> int:
    """Queue each leg of a call (the caller's, the agent's); how many were queued now."""
    if not transcripts_on(settings):
        return 0
    return sum(queue_recording(session, client, settings, sha256=f.sha256, call_id=f.call_id,
                               leg=f.leg, path=f.path, now=now)
               for f in files if f.leg in LEGS)


# --- the job --------------------------------------------------------------------------------


@dataclass
class _Context:
    settings: Settings
    engine: Engine
    clock: Clock


_context: _Context | None = None


def prepare(settings: Settings, engine: Engine | None = None, clock: Clock = SYSTEM_CLOCK
            ) -> None:
    """Load the model and jieba's dictionary for this process's jobs (forked work-horses
    inherit both; loaded in each, jieba alone cost a job half a second)."""
    global _context
    loaded = engine or engine_for(settings.speech.model_path)
    if loaded is None:
        raise transcripts.TranscriptError("speech: no model is configured "
                                          "(speech.model_path)")
    transcripts.load_segmenter()
    _context = _Context(settings, loaded, clock)


def _parts(settings: Settings, clock: Clock = SYSTEM_CLOCK
           ) -> tuple[sessionmaker[Session], EventBus]:
    from core.live import connect_redis  # per work-horse: nothing shared across a fork

    sessions = session_factory(make_engine(settings.storage.database_url))
    bus = EventBus(connect_redis(settings))
    publish_on_commit(sessions, bus, clock)  # the alerts stored with a transcript go out
    return sessions, bus


def transcribe(sha256: str) -> str:
    """The RQ job: transcribe the recording with this checksum, store and index it, and
    alert supervisors to the keywords heard. What it did: done | already | gone (the
    recording was deleted before it was heard: ends there, never retried)."""
    if _context is None:
        from core.config import load_settings  # started by a plain `rq worker`
        prepare(load_settings())
    assert _context is not None
    settings, engine, clock = _context.settings, _context.engine, _context.clock
    sessions, _bus = _parts(settings, clock)
    with transaction(sessions) as session:
        job = session.scalar(select(TranscriptionJob).where(TranscriptionJob.sha256 == sha256))
        if job is None:
            raise LookupError(f"no transcription job for {sha256}")
        if job.state == GONE:
            return GONE
        if transcripts.find_transcript(session, sha256) is not None:
            job.state = DONE
            return "already"
        if not Path(job.path).is_file():  # deleted since it was queued: retrying won't help
            job.state, job.finished_at = GONE, clock.now()
            job.error = "the recording is no longer on disk"
            return GONE
        job.state, job.attempts = RUNNING, job.attempts + 1
        job.started_at, job.worker_pid, job.error = clock.now(), os.getpid(), ""
        path, call_id, leg = Path(job.path), job.call_id, job.leg
    began = time.monotonic()
    try:
        utterances = engine.transcribe(path)
        audio_seconds = _seconds(path)
    except Exception as exc:
        with transaction(sessions) as session:
            job = session.scalar(select(TranscriptionJob).where(
                TranscriptionJob.sha256 == sha256))
            if job is None or job.state == GONE:  # deleted under it: not a failure
                return GONE
            job.state, job.error = FAILED, f"{type(exc).__name__}: {exc}"[:500]
        raise
    words = keywords.seeded(sessions, settings.speech.alert_keywords, clock.now())
    work_seconds = round(time.monotonic() - began, 3)

    def keep() -> bool:
        with transaction(sessions) as session:
            job = session.scalar(select(TranscriptionJob).where(
                TranscriptionJob.sha256 == sha256).with_for_update())
            if job is None or job.state == GONE:  # retention deleted it while it was heard
                return False
            transcript = transcripts.store(
                session, sha256=sha256, call_id=call_id, leg=leg, engine=engine.name,
                model=engine.model, utterances=utterances, audio_seconds=audio_seconds,
                now=clock.now())
            job.state, job.finished_at = DONE, clock.now()
            job.audio_seconds, job.work_seconds = audio_seconds, work_seconds
            for event in transcripts.keyword_hits(
                    transcript, transcripts.segments_of(session, transcript), words,
                    clock.time()):
                # with the transcript; each once per call and keyword: the bus drops an id
                # it has had, a keyword heard live (recordings.live) among them
                announce(session, event)
            return True

    # the recording heard is not heard again for a database restart: its transcript is
    # stored when the database is back (`transcripts.store` keeps one per checksum)
    kept = False
    for attempt in retrying(f"speech: storing the transcript of {sha256[:12]}"):
        with attempt:
            kept = keep()
    return DONE if kept else GONE


def _seconds(path: Path) -> float:
    import wave
    try:
        with wave.open(str(path), "rb") as wav:
            return round(wav.getnframes() / float(wav.getframerate()), 2)
    except (wave.Error, EOFError, OSError):
        return 0.0


# --- the worker and its progress ------------------------------------------------------------


def _mark(settings: Settings, sha256: str, state: str, error: str) -> None:
    sessions, _bus = _parts(settings)
    with transaction(sessions) as session:
        row = session.scalar(select(TranscriptionJob).where(TranscriptionJob.sha256 == sha256))
        if row is not None and row.state == RUNNING:
            row.state, row.error = state, error[:500]


class SpeechWorker(Worker):
    """RQ's forking worker that also writes down, in the job's row, a work-horse that died:
    queued again while RQ has retries left, failed when it has none."""

    def handle_work_horse_killed(self, job: Any, retpid: int, ret_val: int, rusage: Any
                                 ) -> None:
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        if _context is None or not job.args:
            return
        left = bool(job.retries_left)
        try:
            _mark(_context.settings, str(job.args[0]), QUEUED if left else FAILED,
                  f"work-horse {retpid} died (wait status {ret_val})")
        except Exception:
            log.exception("speech: could not mark job %s", job.id)


def run_worker(settings: Settings, client: redis.Redis, *, burst: bool = False,
               engine: Engine | None = None) -> bool:
    """Work the speech queue (until stopped, or until it is empty with `burst`)."""
    prepare(settings, engine)
    worker = SpeechWorker([speech_queue(client)], connection=client,
                    name=f"speech-{socket.gethostname()}-{os.getpid()}")
    return bool(worker.work(burst=burst, logging_level="WARNING"))


def forget_call(session: Session, call_id: str, now: datetime) -> list[TranscriptionJob]:
    """Retention deleted the call's recordings: its jobs not done end as gone (a queued one
    then does nothing when it runs; the row stays, so the checksum is never queued again)."""
    jobs = jobs_of_call(session, call_id)
    for job in jobs:
        if job.state != DONE:
            job.state, job.finished_at = GONE, now
            job.error = "the recording was deleted by retention"
    session.flush()
    return jobs


def jobs_of_call(session: Session, call_id: str) -> list[TranscriptionJob]:
    return list(session.scalars(select(TranscriptionJob).where(
        TranscriptionJob.call_id == call_id).order_by(TranscriptionJob.leg)))


def status(session: Session, client: redis.Redis | None = None, *, limit: int = 20
           ) -> dict[str, Any]:
    """Counts of jobs by state, the latest jobs, and RQ's own view of the queue."""
    counts = dict.fromkeys(STATES, 0)
    for state, n in session.execute(select(TranscriptionJob.state, func.count())
                                    .group_by(TranscriptionJob.state)):
        counts[state] = n
    latest = session.scalars(select(TranscriptionJob).order_by(
        TranscriptionJob.queued_at.desc(), TranscriptionJob.id.desc()).limit(limit)).all()
    out: dict[str, Any] = {
        "counts": counts,
        "jobs": [{"sha256": j.sha256, "call_id": j.call_id, "leg": j.leg, "state": j.state,
                  "attempts": j.attempts, "error": j.error, "queued_at": j.queued_at,
                  "started_at": j.started_at, "finished_at": j.finished_at,
                  "audio_seconds": j.audio_seconds, "work_seconds": j.work_seconds}
                 for j in latest]}
    if client is not None:
        queue = speech_queue(client)
        out["queue"] = {"waiting": queue.count,
                        "started": StartedJobRegistry(queue=queue).count,
                        "failed": FailedJobRegistry(queue=queue).count,
                        "workers": Worker.count(queue=queue)}
    return out


def relocate(session: Session, old_root: str, new_root: str) -> int:
    """The recordings directory moved (a restore elsewhere): queued jobs follow."""
    return relocate_paths(session, TranscriptionJob.path, old_root, new_root)
