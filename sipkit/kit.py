"""The SIP test kit: real SIP calls and agent phones driven from Python, through SIPp.

    kit = SipKit(pbx_host="127.0.0.1", pbx_port=5060)
    with kit.agent_phone("8001", "127.0.0.3", answer_after=1.0) as phone:
        result = kit.call(Call(caller_id="13800138000",
                               script=(Wait(2), Dtmf("1"), Say(Path("voice.wav")), Hangup())))
    assert result.outcome == "answered"

A call's script runs from the moment it is answered: waits, DTMF digits (RFC 4733), audio
played as the caller's voice, and an optional hang-up; without one the caller waits for the
far end to hang up. Each role runs on its own loopback address so the PBX tells them apart.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from core.errors import HotlineError
from sipkit import scenarios
from sipkit.media import RtpTimeline, alaw_from_audio

SIPP = "sipp"
START_ATTEMPTS = 3  # a SIPp started again when a port it was given was taken meanwhile
# Every SIPp run keeps its SIP messages, the kit's KIT lines and its errors in its workdir.
_TRACE = ("-trace_msg", "-message_file", "messages.log", "-trace_logs", "-log_file",
          "calls.log", "-trace_err", "-error_file", "errors.log")


class KitError(HotlineError):
    """SIPp could not run the calls at all (missing binary, address in use, bad input)."""


# ---------------------------------------------------------------------------- call scripts

@dataclass(frozen=True)
class Wait:
    seconds: float


@dataclass(frozen=True)
class Dtmf:
    """Digits sent as RFC 4733 events; `gap` seconds between digits."""

    digits: str
    gap: float = 0.3
    duration: float = 0.16


@dataclass(frozen=True)
class Say:
    """An audio file (any format sox reads) played as the caller's voice."""

    audio: Path


@dataclass(frozen=True)
class Hangup:
    """The caller hangs up here; a script without it waits for the far end."""


Step = Wait | Dtmf | Say | Hangup


@dataclass(frozen=True)
class Call:
    to: str = "12319"
    caller_id: str = "13800138000"
    caller_name: str = ""
    script: tuple[Step, ...] = ()
    max_seconds: float = 120.0


@dataclass
class CallResult:
    """One call as the caller saw it. Times are Unix epoch seconds."""

    call_number: int
    caller_id: str
    outcome: str = "failed"  # answered | rejected | failed
    status: int | None = None  # final SIP status: 200 or the rejection code
    hangup_by: str | None = None  # caller | far_end | wait_timeout
    invite_at: float | None = None
    ringing_at: float | None = None
    answered_at: float | None = None
    ended_at: float | None = None

    @property
    def setup_seconds(self) -> float | None:
        if self.invite_at is None or self.answered_at is None:
            return None
        return self.answered_at - self.invite_at

    @property
    def talk_seconds(self) -> float | None:
        if self.answered_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.answered_at

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "setup_seconds": self.setup_seconds,
                "talk_seconds": self.talk_seconds}

    def summary(self) -> str:
        return (f"caller {self.caller_id}: {self.outcome} (SIP {self.status}), setup "
                f"{_seconds(self.setup_seconds)}, talk {_seconds(self.talk_seconds)}, "
                f"hung up by {self.hangup_by}")


@dataclass
class AgentCallResult:
    """One call offered to an agent phone."""

    call_number: int
    from_user: str | None = None
    to_user: str | None = None  # the number dialled (Request-URI user)
    outcome: str = "failed"  # answered | refused | cancelled | failed
    status: int | None = None
    hangup_by: str | None = None  # agent | far_end
    offered_at: float | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    held_at: float | None = None  # the phone put the far end on hold ...
    unheld_at: float | None = None  # ... and took it back
    transferred_to: str | None = None  # the phone's blind transfer was accepted

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        moved = f", transferred to {self.transferred_to}" if self.transferred_to else ""
        return (f"call from {self.from_user}: {self.outcome}, hung up by {self.hangup_by}"
                f"{moved}")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


@dataclass
class CallPlan:
    """What SIPp needs for a call script: the RTP pcap and when to hang up."""

    pcap: Path | None
    hangup_ms: int | None
    length: float


def plan_script(script: Sequence[Step], workdir: Path, max_seconds: float) -> CallPlan:
    timeline = RtpTimeline()
    cursor = 0.0
    hangup_at: float | None = None
    for step in script:
        if hangup_at is not None:
            raise KitError("nothing can follow Hangup() in a call script")
        match step:
            case Wait(seconds=seconds):
                if seconds < 0:
                    raise KitError("Wait() needs a non-negative number of seconds")
                cursor += seconds
            case Dtmf(digits=digits, gap=gap, duration=duration):
                for digit in digits:
                    try:
                        timeline.add_digit(digit, cursor, duration)
                    except ValueError as exc:
                        raise KitError(str(exc)) from None
                    cursor += duration + 0.06 + gap
            case Say(audio=audio):
                try:
                    cursor += timeline.add_voice(alaw_from_audio(Path(audio)), cursor)
                except ValueError as exc:
                    raise KitError(str(exc)) from None
            case Hangup():
                hangup_at = cursor
            case _:
                raise KitError(f"unknown call step {step!r}")
    length = hangup_at if hangup_at is not None else max_seconds
    if not timeline.packets and hangup_at is not None and hangup_at == 0:
        return CallPlan(pcap=None, hangup_ms=1, length=0)
    timeline.fill_silence(min(length, max_seconds))
    pcap = workdir / "caller.pcap"
    timeline.write_pcap(pcap)
    return CallPlan(pcap=pcap,
                    hangup_ms=None if hangup_at is None else max(1, round(hangup_at * 1000)),
                    length=length)


# ---------------------------------------------------------------------------- running SIPp

def free_port(ip: str, kind: int = socket.SOCK_DGRAM, even: bool = False) -> int:
    """A port free on `ip` now (and, for media, its +2 neighbour too)."""
    for _ in range(200):
        port = random.randrange(20000, 60000, 2 if even else 1)
        try:
            with contextlib.ExitStack() as stack:
                for p in (port, port + 2) if even else (port,):
                    s = stack.enter_context(socket.socket(socket.AF_INET, kind))
                    s.bind((ip, p))
            return port
        except OSError:
            continue
    raise KitError(f"no free port on {ip}")


_BIND_FAILED = 254  # SIPp's exit status for a socket it could not bind (-2)


def _start(command: Callable[[], list[str]], workdir: Path,
           started: Callable[[subprocess.Popen[bytes]], object]) -> subprocess.Popen[bytes]:
    """SIPp on the ports `command()` picks, once `started` has waited for it to be up (or
    to exit). The ports were free when probed (free_port) but another process may take one
    before SIPp binds it ("Unable to bind ...", exit 254, seen in full runs): SIPp is then
    started again on new ports, START_ATTEMPTS times in all."""
    for attempt in range(1, START_ATTEMPTS + 1):
        proc = _spawn(command(), workdir)
        started(proc)
        if proc.poll() != _BIND_FAILED or attempt == START_ATTEMPTS:
            return proc
        (workdir / "errors.log").unlink(missing_ok=True)
    raise AssertionError("unreachable")  # the last attempt returns


def _media_bound(proc: subprocess.Popen[bytes], ip: str, port: int,
                 timeout: float = 5.0) -> None:
    """Wait until a starting SIPp has its media sockets (`port` and the video one at +2),
    has exited, or `timeout` passed (whatever holds it up is for the call's result to say)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if udp_bound(ip, port) and udp_bound(ip, port + 2):
            return
        time.sleep(0.01)


def udp_bound(ip: str, port: int) -> bool:
    """Whether a UDP socket of this machine is bound to `ip`:`port` (IPv4), read from the
    kernel's table: a probe that binds the port itself held it for a moment, and a phone's
    SIPp binding then failed and exited (seen once in a full run)."""
    # the table prints the address as the 32-bit word it is in memory
    wanted = f"{int.from_bytes(socket.inet_aton(ip), sys.byteorder):08X}:{port:04X}"
    with open("/proc/net/udp") as table:
        return any(line.split()[1] == wanted for line in itertools.islice(table, 1, None))


def _require_sipp() -> str:
    path = shutil.which(SIPP)
    if path is None:
        raise KitError("sipp is not installed (apt-get install sip-tester)")
    return path


def _spawn(command: list[str], workdir: Path) -> subprocess.Popen[bytes]:
    with (workdir / "screen.log").open("wb") as screen:
        return subprocess.Popen(command, cwd=workdir, stdout=screen, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def _parse_log(path: Path) -> dict[int, list[tuple[str, float, str]]]:
    """KIT lines -> {call_number: [(event, time, detail)]} in order."""
    calls: dict[int, list[tuple[str, float, str]]] = {}
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return calls
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 6 or parts[0] != "KIT":
            continue
        try:
            number, when = int(parts[1]), float(parts[3]) + float(parts[4]) / 1e6
        except ValueError:
            continue
        calls.setdefault(number, []).append((parts[2], when, " ".join(parts[5:])))
    return calls


def _tail(path: Path, lines: int = 3) -> str:
    try:
        content = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        return ""
    return " | ".join(content[-lines:])


class CallRun:
    """Calls placed in the background; `wait()` returns their results."""

    def __init__(self, proc: subprocess.Popen[bytes], workdir: Path, count: int,
                 caller_ids: Sequence[str], deadline: float, keep: bool) -> None:
        self.proc, self.workdir, self.count = proc, workdir, count
        self.caller_ids, self.deadline, self.keep = caller_ids, deadline, keep

    def wait(self) -> list[CallResult]:
        try:
            self.proc.wait(timeout=max(1.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        results = self._results()
        if not any(r.invite_at for r in results):
            detail = _tail(self.workdir / "errors.log") or _tail(self.workdir / "screen.log")
            raise KitError(f"sipp placed no call (exit {self.proc.returncode}): {detail}")
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return results

    def _results(self) -> list[CallResult]:
        events = _parse_log(self.workdir / "calls.log")
        results = []
        for n in range(1, self.count + 1):
            result = CallResult(call_number=n,
                                caller_id=self.caller_ids[(n - 1) % len(self.caller_ids)])
            for event, when, detail in events.get(n, []):
                match event:
                    case "invite":
                        result.invite_at = when
                    case "ringing":
                        result.ringing_at = result.ringing_at or when
                    case "answered":
                        result.answered_at, result.outcome, result.status = when, "answered", 200
                    case "rejected":
                        result.outcome, result.status, result.ended_at = (
                            "rejected", int(detail), when)
                    case "caller_hangup" | "far_end_hangup" | "wait_timeout":
                        result.hangup_by = {"caller_hangup": "caller",
                                            "far_end_hangup": "far_end"}.get(event, event)
                        result.ended_at = when
            results.append(result)
        return results


class AgentPhone:
    """A kit desk phone listening on `ip`:`port` until stopped."""

    def __init__(self, number: str, ip: str, *, port: int = 5060, behaviour: str = "answer",
                 answer_after: float = 1.0, talk_seconds: float | None = None,
                 refuse_code: int = 486, workdir: Path | None = None,
                 script: Sequence[Step] = (), hold: tuple[float, float] | None = None,
                 transfer: tuple[float, str] | None = None, password: str | None = None,
                 registrar: tuple[str, int] | None = None) -> None:
        """`script` (waits, digits, audio) is played on every answered call; `hold` =
        (seconds after answering, seconds on hold) puts the far end on hold and back;
        `transfer` = (seconds after that, number) transfers it blind (REFER). With
        `password` and `registrar` (the PBX's host and port) the phone registers there
        from its own address and port before it listens, and unregisters when stopped."""
        if bool(password) != bool(registrar):
            raise KitError("a registering phone needs both its password and the registrar")
        self.password, self.registrar = password, registrar
        if transfer and not re.fullmatch(r"[A-Za-z0-9*#+_-]{1,40}", transfer[1]):
            raise KitError("transfer: a number or extension to send the caller to")
        self.number, self.ip, self.port = number, ip, port
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"kit-agent-{number}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        plan = plan_script(script, self.workdir, talk_seconds or 60) if script else None
        self.scenario = scenarios.agent_phone(
            behaviour, round(answer_after * 1000),
            None if talk_seconds is None else round(talk_seconds * 1000), refuse_code,
            plan.pcap.name if plan and plan.pcap else None,
            hold=(round(hold[0] * 1000), round(hold[1] * 1000)) if hold else None,
            transfer=(round(transfer[0] * 1000), transfer[1]) if transfer else None)
        self.echo = plan is None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def contact(self) -> str:
        return f"sip:{self.number}@{self.ip}:{self.port}"

    def start(self) -> AgentPhone:
        sipp = _require_sipp()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.password and self.registrar:
            status = register(*self.registrar, self.number, self.password, self.ip,
                              port=self.port, expires=3600)
            if status != [200]:
                raise KitError(f"agent phone {self.number} could not register: {status}")
        (self.workdir / "agent.xml").write_text(self.scenario)

        def command() -> list[str]:
            self.control_port = free_port("127.0.0.1")
            return [
                sipp, "-sf", "agent.xml", "-i", self.ip, "-p", str(self.port), "-bind_local",
                "-mi", self.ip, "-mp", str(free_port(self.ip, even=True)),
                *(["-rtp_echo"] if self.echo else []),
                "-cp", str(self.control_port), "-nostdin", "-aa",
                *_TRACE,
            ]

        self.proc = _start(command, self.workdir, self._wait_listening)
        if self.proc.poll() is not None:
            raise KitError(f"agent phone {self.number} on {self.ip}:{self.port} did not "
                           f"start: {_tail(self.workdir / 'errors.log')} "
                           f"{_tail(self.workdir / 'screen.log')}")
        return self

    def _wait_listening(self, proc: subprocess.Popen[bytes]) -> None:
        """Wait until the phone listens or its SIPp exited; KitError after 5 s of neither."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and proc.poll() is None:
            if udp_bound(self.ip, self.port):
                return
            time.sleep(0.05)
        if proc.poll() is None:
            raise KitError(
                f"agent phone {self.number} is not listening on {self.ip}:{self.port}")

    def results(self) -> list[AgentCallResult]:
        results = []
        for number, events in sorted(_parse_log(self.workdir / "calls.log").items()):
            result = AgentCallResult(call_number=number)
            for event, when, detail in events:
                match event:
                    case "offered":
                        result.offered_at = when
                        result.from_user, _, result.to_user = detail.partition(" ")
                    case "answered":
                        result.answered_at, result.outcome, result.status = when, "answered", 200
                    case "refused":
                        result.outcome, result.status, result.ended_at = (
                            "refused", int(detail), when)
                    case "cancelled":
                        result.outcome, result.ended_at = "cancelled", when
                    case "hold":
                        result.held_at = when
                    case "unhold":
                        result.unheld_at = when
                    case "transferred":
                        result.transferred_to = detail
                    case "agent_hangup" | "far_end_hangup":
                        result.hangup_by = "agent" if event == "agent_hangup" else "far_end"
                        result.ended_at = when
            results.append(result)
        return results

    def stop(self) -> list[AgentCallResult]:
        if self.proc is not None and self.proc.poll() is None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ctl:
                ctl.sendto(b"Q", ("127.0.0.1", self.control_port))
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        if self.password and self.registrar and self.proc is not None:
            register(*self.registrar, self.number, self.password, self.ip, port=self.port,
                     expires=0)
            self.proc = None
        return self.results()

    def __enter__(self) -> AgentPhone:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class SipKit:
    pbx_host: str = "127.0.0.1"
    pbx_port: int = 5060
    caller_ip: str = "127.0.0.2"
    keep_files: bool = False

    def call(self, call: Call) -> CallResult:
        return self.calls(call, count=1)[0]

    def calls(self, call: Call, count: int = 1, rate: float = 1.0,
              concurrent: int | None = None, caller_ids: Iterable[str] | None = None
              ) -> list[CallResult]:
        return self.start_calls(call, count, rate, concurrent, caller_ids).wait()

    def start_calls(self, call: Call, count: int = 1, rate: float = 1.0,
                    concurrent: int | None = None, caller_ids: Iterable[str] | None = None
                    ) -> CallRun:
        """Place `count` calls at `rate` per second (at most `concurrent` at once)."""
        sipp = _require_sipp()
        if count < 1 or rate <= 0:
            raise KitError("count must be at least 1 and rate above 0")
        ids = list(caller_ids) if caller_ids is not None else [call.caller_id]
        if not ids or not all(i and i.isprintable() and ";" not in i for i in ids):
            raise KitError("caller IDs must be printable and contain no ';'")
        workdir = Path(tempfile.mkdtemp(prefix="kit-call-"))
        plan = plan_script(call.script, workdir, call.max_seconds)
        (workdir / "caller.xml").write_text(
            scenarios.caller(plan.pcap.name if plan.pcap else None, plan.hangup_ms,
                             round(call.max_seconds * 1000)))
        name = (call.caller_name or "").replace(";", ",").replace('"', "")
        (workdir / "callers.csv").write_text(
            "SEQUENTIAL\n" + "".join(f"{i};{name};\n" for i in ids), encoding="utf-8")
        limit = concurrent or count
        timeout = int(plan.length + count / rate + 60)
        media = 0

        def command() -> list[str]:
            nonlocal media
            media = free_port(self.caller_ip, even=True)
            return [
                sipp, f"{self.pbx_host}:{self.pbx_port}", "-sf", "caller.xml", "-s", call.to,
                "-inf", "callers.csv", "-i", self.caller_ip, "-bind_local",
                "-p", str(free_port(self.caller_ip)),
                "-mi", self.caller_ip, "-mp", str(media),
                "-cp", str(free_port("127.0.0.1")),
                "-m", str(count), "-r", str(rate), "-rp", "1000", "-l", str(limit),
                "-timeout", str(timeout), "-timeout_error", "-nostdin", "-aa",
                *_TRACE,
            ]

        proc = _start(command, workdir, lambda p: _media_bound(p, self.caller_ip, media))
        return CallRun(proc, workdir, count, ids, time.monotonic() + timeout + 10,
                       self.keep_files or bool(os.environ.get("HOTLINE_KIT_KEEP")))

    def register(self, user: str, password: str, ip: str, attempts: int = 1,
                 expires: int = 60) -> list[int | None]:
        """Register as `user` with `password` from `ip`, `attempts` times one after the
        other; each attempt's final status (200 registered, 401 wrong password, 403
        refused outright; None: no answer). Expires 0 unregisters."""
        return register(self.pbx_host, self.pbx_port, user, password, ip, attempts=attempts,
                        expires=expires, keep=self.keep_files)

    def agent_phone(self, number: str, ip: str, **options: object) -> AgentPhone:
        """A desk phone; with `password=` it registers (digest) with this kit's PBX."""
        if options.get("password"):
            options["registrar"] = (self.pbx_host, self.pbx_port)
        return AgentPhone(number, ip, **options)  # type: ignore[arg-type]


def register(pbx_host: str, pbx_port: int, user: str, password: str, ip: str, *,
             port: int | None = None, attempts: int = 1, expires: int = 60,
             keep: bool = False) -> list[int | None]:
    """REGISTER as `user` from `ip` (on `port`, the phone's own, or any free one), answering
    the digest challenge with `password`; each attempt's final status."""
    sipp = _require_sipp()
    if attempts < 1 or not re.fullmatch(r"[A-Za-z0-9._-]{1,40}", user):
        raise KitError("register: a SIP user name and at least one attempt")
    if not password.isprintable() or not password or " " in password:
        raise KitError("register: a password without spaces")
    workdir = Path(tempfile.mkdtemp(prefix=f"kit-register-{user}-"))
    (workdir / "register.xml").write_text(scenarios.registration(user, expires))
    def command() -> list[str]:
        return [
            sipp, f"{pbx_host}:{pbx_port}", "-sf", "register.xml",
            "-i", ip, "-bind_local", "-p", str(port or free_port(ip)),
            "-cp", str(free_port("127.0.0.1")),
            "-au", user, "-ap", password, "-m", str(attempts), "-l", "1", "-r", "5",
            "-timeout", str(10 + 5 * attempts), "-nostdin", "-aa", "-recv_timeout", "4000",
            *_TRACE,
        ]

    def finished(proc: subprocess.Popen[bytes]) -> None:
        try:
            proc.wait(timeout=20 + 5 * attempts)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    proc = _start(command, workdir, finished)
    events = _parse_log(workdir / "calls.log")
    if not events:
        detail = _tail(workdir / "errors.log") or _tail(workdir / "screen.log")
        raise KitError(f"sipp sent no REGISTER (exit {proc.returncode}): {detail}")
    statuses: list[int | None] = []
    for n in range(1, attempts + 1):
        final = [int(d) for e, _, d in events.get(n, [])
                 if e in ("registered", "denied", "forbidden")]
        statuses.append(final[-1] if final else None)
    if not (keep or os.environ.get("HOTLINE_KIT_KEEP")):
        shutil.rmtree(workdir, ignore_errors=True)
    return statuses


def results_json(results: Sequence[CallResult | AgentCallResult]) -> str:
    return json.dumps([r.as_dict() for r in results], ensure_ascii=False, indent=2)
