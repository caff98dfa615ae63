"""FastAGI command round trip with many concurrent IVR sessions, through the real Asterisk.

    .venv/bin/python -m bench.fastagi_roundtrip [--sessions 50]   (as root: starts a sandbox)

Kit calls key 1 during the welcome; every SET VARIABLE the IVR sends is timed from write to
Asterisk's answer. The baseline is the same call placed alone (three times, one after the
other), in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from asterisk_conf.render import render
from asterisk_conf.sandbox import Sandbox
from core.config import load_settings
from core.db import make_engine, session_factory, transaction, upgrade
from ivr import fastagi
from ivr.prompts import ensure_prompts
from ivr.server import IvrInBackground
from sipkit.kit import Call, Dtmf, Hangup, SipKit, Wait
from telephony import directory

PORTS = {"HOTLINE_PBX_SIP_PORT": "27060", "HOTLINE_PBX_AMI_PORT": "27038",
         "HOTLINE_PBX_RTP_PORT_START": "33000", "HOTLINE_PBX_RTP_PORT_END": "34999",
         "HOTLINE_IVR_FASTAGI_PORT": "27573"}
timings: list[float] = []
_command = fastagi.AgiSession.command


async def _timed_command(self, text, timeout=60):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = await _command(self, text, timeout)
    if text.startswith("SET VARIABLE"):
        timings.append(time.perf_counter() - started)
    return result


def run_calls(kit: SipKit, count: int, concurrent: int) -> list[float]:
    timings.clear()
    results = kit.calls(Call(script=(Wait(0.5), Dtmf("1"), Wait(6), Hangup())), count=count,
                        rate=concurrent, concurrent=concurrent,
                        caller_ids=[f"1370000{n:04d}" for n in range(count)])
    failed = [r for r in results if r.outcome != "answered"]
    if failed:
        raise SystemExit(f"{len(failed)} of {count} calls failed: {failed[0]}")
    return sorted(timings)


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, round(q * (len(values) - 1)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50)
    sessions = parser.parse_args().sessions
    data = Path(tempfile.gettempdir()) / "hotline-bench-fastagi"
    settings = load_settings(None, {"HOTLINE_STORAGE_DATA_DIR": str(data), **PORTS})
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    with transaction(session_factory(engine)) as session:
        directory.ensure_queue(session, settings.hotline.default_queue)
        files = render(settings, directory.snapshot(session))
    ensure_prompts(settings)
    sandbox = Sandbox(settings)
    sandbox.down()
    sandbox.up(files)
    fastagi.AgiSession.command = _timed_command  # type: ignore[method-assign]
    try:
        kit = SipKit(pbx_port=settings.pbx.sip_port)
        with IvrInBackground(settings):
            alone = run_calls(kit, 3, 1)  # three calls, one at a time
            loaded = run_calls(kit, sessions, sessions)
    finally:
        sandbox.down()
    print(f"FastAGI round trip (SET VARIABLE), real Asterisk, {sessions} concurrent sessions")
    print(f"{'run':<32}{'commands':>9}{'p50 ms':>9}{'p99 ms':>9}{'p50 ratio':>11}")
    for name, values in (("one session (baseline)", alone), (f"{sessions} sessions", loaded)):
        print(f"{name:<32}{len(values):>9}{pct(values, .5):>9.2f}{pct(values, .99):>9.2f}"
              f"{pct(alone, .5) / pct(values, .5):>11.2f}")
    print(f"mean under load {statistics.mean(loaded) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
