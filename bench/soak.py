"""A soak (稳定性压测): a steady call rate through IVR, queue and kit agents for a long time,
watching what must stay flat. Issue 15's target: 30 minutes with no failed call; the
telephony service's memory and open files flat (growth <= 5 % after warm-up); every Redis
stream's length bounded.

    .venv/bin/python -m bench.soak                       (30 minutes at 2 calls/s, as root)
    .venv/bin/python -m bench.soak --minutes 6 --warmup 2   (a shorter look)

The world is bench/call_rate.py's (its own sandbox PBX, agents on SIPp phones, kit callers
keying 1 into the hotline's FastAGI menu, the centre without the web API in this process),
on its own data directory and ports so a call-rate run is not disturbed. Each minute is
one step of arrivals at `--rate`; after it, the step's calls are judged as call_rate judges
them (a SIP error, or no agent within `--max-wait` of the key, is a failed call) and the
process is measured: resident memory (VmRSS), open file descriptors, threads (the
telephony service, the IVR and the workers all run here), every Redis stream's length, and
Asterisk's resident memory. The baseline row is the first minute after `--warmup`; every
later row prints its ratio to it, and the summary says whether the targets hold.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import call_rate
from bench.call_rate import Bench, Options

SOAK_PORTS = {
    "HOTLINE_PBX_SIP_PORT": "27160",
    "HOTLINE_PBX_AMI_PORT": "27138",
    "HOTLINE_PBX_RTP_PORT_START": "34000",
    "HOTLINE_PBX_RTP_PORT_END": "34999",
    "HOTLINE_IVR_FASTAGI_PORT": "26673",
    "HOTLINE_WEB_PORT": "28519",
}
GROWTH_LIMIT = 1.05


@dataclass
class Sample:
    minute: int
    calls: int
    failed: int
    rss_mib: float
    fds: int
    threads: int
    streams: dict[str, int]
    asterisk_mib: float


def _status(pid: int | str, field: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except (FileNotFoundError, ValueError, IndexError):
        pass
    return 0.0


def _streams(bench: Bench) -> dict[str, int]:
    """Every Redis stream of the centre and its length."""
    assert bench.centre is not None
    client = bench.centre.bus.client
    lengths = {}
    for key in client.scan_iter(_type="STREAM"):
        name = key.decode() if isinstance(key, bytes) else str(key)
        lengths[name] = int(client.xlen(name))
    return lengths


def sample(bench: Bench, minute: int, calls: int, failed: int) -> Sample:
    pid = bench.asterisk_pid()
    return Sample(minute=minute, calls=calls, failed=failed,
                  rss_mib=_status("self", "VmRSS") / 1024,
                  fds=len(os.listdir("/proc/self/fd")),
                  threads=int(_status("self", "Threads")),
                  streams=_streams(bench),
                  asterisk_mib=_status(pid, "VmRSS") / 1024 if pid else 0.0)


HEADER = (f"{'min':>4} {'calls':>6} {'failed':>6} {'RSS MiB':>8} {'ratio':>6} {'fds':>5} "
          f"{'ratio':>6} {'threads':>7} {'streams':>8} {'Asterisk MiB':>12}")


def row(s: Sample, base: Sample | None) -> str:
    def ratio(value: float, baseline: float) -> str:
        return f"{value / baseline:6.3f}" if base is not None and baseline else "     -"

    return (f"{s.minute:>4} {s.calls:>6} {s.failed:>6} {s.rss_mib:>8.1f} "
            f"{ratio(s.rss_mib, base.rss_mib if base else 0)} {s.fds:>5} "
            f"{ratio(s.fds, base.fds if base else 0)} {s.threads:>7} "
            f"{sum(s.streams.values()):>8} {s.asterisk_mib:>12.1f}")


def verdict(samples: list[Sample], warmup: int, bound: int) -> list[str]:
    """The targets, each a line saying whether it holds."""
    after = [s for s in samples if s.minute > warmup]
    failed = sum(s.failed for s in samples)
    lines = [f"failed calls: {failed} of {sum(s.calls for s in samples)} "
             f"({'ok' if failed == 0 else 'FAILED'})"]
    if len(after) < 2:
        return [*lines, "too short after warm-up to judge growth"]
    base, last = after[0], after[-1]
    for name, first, final in (("telephony service memory (VmRSS)", base.rss_mib, last.rss_mib),
                               ("open files", base.fds, last.fds)):
        growth = final / first if first else 1.0
        lines.append(f"{name}: {first:.1f} -> {final:.1f}, x{growth:.3f} "
                     f"({'ok' if growth <= GROWTH_LIMIT else 'GREW'} against "
                     f"<= x{GROWTH_LIMIT})")
    longest = max((max(s.streams.values(), default=0) for s in samples), default=0)
    lines.append(f"longest stream: {longest} entries ("
                 f"{'ok' if longest <= bound else 'OVER'} against the bound {bound})")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5,
                        help="minutes before the baseline row (default %(default)s)")
    parser.add_argument("--rate", type=float, default=2.0, help="calls per second")
    parser.add_argument("--agents", type=int, default=40)
    parser.add_argument("--phones", type=int, default=10)
    parser.add_argument("--talk", type=float, default=2.0)
    parser.add_argument("--max-wait", type=float, default=5.0)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    if args.minutes <= args.warmup + 1 or args.rate <= 0:
        parser.error("--minutes must exceed --warmup by 2 or more; --rate positive")
    return args


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench.soak starts a sandbox Asterisk: run it as root", file=sys.stderr)
        return 2
    # call_rate's world on this bench's own directory and ports
    call_rate.DATA_DIR = Path(tempfile.gettempdir()) / f"hotline-bench-soak-{os.getuid()}"
    call_rate.PORTS.update(SOAK_PORTS)
    call_rate.CALLER_IP, call_rate.AGENT_NET = "127.0.2.2", "127.0.2."
    call_rate.PORTS["HOTLINE_PBX_CALLER_NETWORKS"] = "127.0.2.2/32"
    call_rate.PORTS["HOTLINE_PBX_TRUNK_HOST"] = "127.0.2.4"
    signal.signal(signal.SIGTERM, _interrupted)
    options = Options(rates=[args.rate], refine=0, resolution=0.1, step_seconds=60,
                      min_calls=1, agents=args.agents, phones=args.phones, talk=args.talk,
                      answer_after=0.5, key_after=1.0, max_wait=args.max_wait, keep=args.keep)
    bench = Bench(options)
    samples: list[Sample] = []
    base: Sample | None = None
    try:
        with bench.running() as centre:
            bound = centre.bus.maxlen
            print(f"soak: {args.minutes} min at {args.rate}/s, warm-up {args.warmup} min, "
                  f"{args.agents} agents on {len(bench.phones)} phones; load average "
                  f"{os.getloadavg()[0]:.2f}")
            print(HEADER, flush=True)
            for minute in range(1, args.minutes + 1):
                step = bench.step("hotline", args.rate)
                now = sample(bench, minute, step.calls, step.failed)
                if minute == args.warmup + 1:
                    base = now
                samples.append(now)
                print(row(now, base), flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: PBX, phones and centre stopped", file=sys.stderr)
        return 130
    print("\n".join(verdict(samples, args.warmup, bound)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
