"""The transcription worker: RQ on the centre's Redis, the real vosk engine, a real worker
process (`hotline speech worker`). What must hold: a recording queued twice is transcribed
once; a work-horse killed mid-job has its job run again, once, and the transcript is stored
once; the progress is visible; with no model the centre says once what it does not do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from asterisk_conf.sandbox import Sandbox
from core.config import Settings
from core.db import make_engine, session_factory, transaction, upgrade
from core.events import STREAM
from core.live import connect_redis
from hotline.centre import speech_off
from hotline.cli import cli
from recordings import transcribe_worker, transcripts
from recordings.catalogue import fingerprint
from recordings.transcribe_worker import TranscriptionJob
from tests.conftest import make_settings
from tests.speech_audio import CALLER_TEXT, CALLER_WORDS, MODEL_DIR, speak_korean, words_heard
from tests.test_stopping import Running
from tests.test_stopping import _env as stopping_env

NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)


@pytest.fixture
def place(tmp_path: Path) -> Iterator[tuple[Settings, dict[str, str]]]:
    env = {"HOTLINE_STORAGE_DATA_DIR": str(tmp_path / "data"),
           "HOTLINE_SPEECH_MODEL_PATH": str(MODEL_DIR), "HOTLINE_SPEECH_RETRIES": "2",
           # the Korean model's words stand in for 煤气泄漏 …: an alert when heard
           "HOTLINE_SPEECH_ALERT_KEYWORDS": "라디오,여름"}
    settings = make_settings(tmp_path / "data", **{k: v for k, v in env.items()
                                                   if k != "HOTLINE_STORAGE_DATA_DIR"})
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    engine.dispose()
    connect_redis(settings)  # the embedded Redis the worker process will share
    yield settings, env


def _worker(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("HOTLINE_") and k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.Popen([sys.executable, "-c", "from hotline.cli import main; main()",
                             "speech", "worker", *args],
                            env={**base, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def _recording(settings: Settings, name: str, repeat: int = 1) -> tuple[str, str]:
    folder = settings.storage.recordings_dir / "2026" / "11" / "30"
    folder.mkdir(parents=True, exist_ok=True)
    once = speak_korean(CALLER_TEXT, folder / f"{name}-once.wav")
    path = folder / f"{name}-caller.wav"
    subprocess.run(["sox", *[str(once)] * repeat, str(path)], check=True)
    found = fingerprint(path, 0)
    assert found is not None
    return found.sha256, str(path)


def _job(settings: Settings, sha256: str) -> TranscriptionJob | None:
    sessions = session_factory(make_engine(settings.storage.database_url))
    with sessions() as session:
        return session.scalar(select(TranscriptionJob).where(TranscriptionJob.sha256 == sha256))


def test_a_recording_queued_twice_is_transcribed_once(place) -> None:
    settings, env = place
    sha256, path = _recording(settings, "1764468000.7")
    client = connect_redis(settings)
    sessions = session_factory(make_engine(settings.storage.database_url))
    with transaction(sessions) as session:
        queued = [transcribe_worker.queue_recording(
            session, client, settings, sha256=sha256, call_id=call, leg="caller", path=path,
            now=NOW) for call in ("1764468000.7", "1764468000.7", "1764468999.1")]
    assert queued == [True, False, False]
    transcribe_worker.enqueue(client, settings, sha256)  # and once more behind the row's back
    assert _job(settings, sha256).state == "queued"  # type: ignore[union-attr]

    done = _worker(env, "--burst")
    output = done.communicate(timeout=300)[0].decode()
    assert done.returncode == 0, output

    job = _job(settings, sha256)
    assert job is not None and (job.state, job.attempts, job.call_id) == (
        "done", 1, "1764468000.7"), output
    assert job.audio_seconds and job.work_seconds and job.worker_pid
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(transcripts.Transcript)) == 1
        stored = transcripts.call_transcripts(session, "1764468000.7")
    assert [t["leg"] for t in stored] == ["caller"]
    assert len(words_heard(CALLER_WORDS, stored[0]["text"])) >= 2, stored[0]["text"]
    assert {s["speaker"] for s in stored[0]["segments"]} == {"caller"}

    status = CliRunner().invoke(cli, ["speech", "status", "--json"], env={
        **env, "HOTLINE_STORAGE_DATA_DIR": str(settings.storage.data_dir)})
    assert status.exit_code == 0, status.output
    assert '"done": 1' in status.output and '"attempts": 1' in status.output


def test_a_work_horse_killed_mid_job_runs_the_job_again_once(place) -> None:
    settings, env = place
    sha256, path = _recording(settings, "1764468100.3", repeat=8)  # about 25 s of speech
    client = connect_redis(settings)
    sessions = session_factory(make_engine(settings.storage.database_url))
    with transaction(sessions) as session:
        assert transcribe_worker.queue_recording(
            session, client, settings, sha256=sha256, call_id="1764468100.3", leg="caller",
            path=path, now=NOW)
    worker = _worker(env)
    try:
        deadline = time.monotonic() + 60
        while (job := _job(settings, sha256)) is None or job.state != "running":
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        horse = job.worker_pid
        assert horse and horse != worker.pid  # the work-horse, forked for the job
        time.sleep(0.5)  # well into the recognition
        os.kill(horse, signal.SIGKILL)
        deadline = time.monotonic() + 30  # seen dead, written down, queued again by RQ
        while (job := _job(settings, sha256)) is None or job.attempts < 2:
            assert time.monotonic() < deadline, f"not run again: {job and job.state}"
            if job.state != "running":  # with no retries left it would say failed
                assert (job.state, job.error[:10]) == ("queued", "work-horse")
            time.sleep(0.02)
        deadline = time.monotonic() + 180
        while (job := _job(settings, sha256)) is None or job.state != "done":
            assert time.monotonic() < deadline, f"not done again: {job and job.state}"
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        output = worker.communicate(timeout=60)[0].decode()
    assert (job.attempts, job.state) == (2, "done"), output
    assert job.worker_pid != horse
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(transcripts.Transcript)) == 1
        segments = session.scalar(select(func.count()).select_from(transcripts.Segment))
    assert segments and segments >= 1
    # the keyword heard raised one alert on the bus, though the job ran twice
    alerts = [json.loads(fields[b"data"]) for _id, fields in client.xrange(STREAM)
              if fields[b"type"] == b"speech.keyword"]
    assert [(a["keyword"], a["call_id"], a["leg"]) for a in alerts] == [
        ("라디오", "1764468100.3", "caller")]
    queue = transcribe_worker.speech_queue(client)
    rq_job = queue.fetch_job(transcribe_worker.job_id(sha256))
    assert rq_job is not None and rq_job.get_status() == "finished"


def test_without_a_model_the_centre_says_once_what_speech_it_does_not_do(tmp_path: Path
                                                                        ) -> None:
    """The real `hotline serve`, started and stopped with no model: one line of its output
    names what is off (transcripts, live transcription, spoken menu choices) and the setting
    that turns them on; the parts' own notes are below the centre's log level."""
    data = tmp_path / "off"
    env = stopping_env(data)
    sandbox = Sandbox(make_settings(data, **env))
    try:
        for step in (["pbx", "up"], ["db", "upgrade"]):
            done = subprocess.run([sys.executable, "-m", "hotline", *step], env=env,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
        run = Running(["-v", "serve"], env)  # the parts' info lines shown too
        try:
            run.wait_for("serving:")
            run.stop(signal.SIGTERM)
        finally:
            run.kill()
    finally:
        sandbox.down()
    said = [line for line in run.lines
            if any(word in line for word in ("transcri", "spoken", "model_path"))]
    assert len(said) == 1, run.output
    assert all(what in said[0] for what in ("transcripts", "live transcription",
                                            "spoken menu choices", "speech.model_path")), said
    # with a model, what the settings switch off is named with its setting
    with_model = {"HOTLINE_SPEECH_MODEL_PATH": str(MODEL_DIR)}
    assert speech_off(make_settings(data, **with_model)) is None
    assert speech_off(make_settings(data, **with_model, HOTLINE_SPEECH_LIVE="false")) == (
        "speech: live transcription is off: speech.live is false")
    assert speech_off(make_settings(data, **with_model, HOTLINE_SPEECH_LIVE="false",
                                    HOTLINE_IVR_SPOKEN_CHOICES="false")) == (
        "speech: live transcription and spoken menu choices are off: speech.live is false, "
        "ivr.spoken_choices is false")
    # the worker alone refuses to run without one
    refused = CliRunner().invoke(cli, ["speech", "worker", "--burst"],
                                 env={"HOTLINE_STORAGE_DATA_DIR": str(data)})
    assert refused.exit_code == 1 and "transcripts are off" in refused.output
