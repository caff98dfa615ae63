"""`hotline up`: start the whole centre on this machine, and show it working with real calls.

The demo seats two kit agent phones, then places calls through the sandbox PBX the way
citizens would: one keys the menu and speaks, two call at once. It prints what each side saw,
what Asterisk reported over AMI, and the recordings made.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

from accounts.service import ensure_first_admin
from asterisk_conf.render import render
from asterisk_conf.sandbox import Sandbox
from core.config import Settings
from core.db import transaction
from core.live import connect_redis, redis_location
from hotline import stopping
from hotline.centre import Centre
from hotline.compose import build
from ivr.prompts import ensure_prompts, speak
from recordings.audio import wav_stats
from sipkit.kit import Call, Dtmf, Hangup, Say, SipKit, Wait
from telephony import commands, directory, records
from telephony.ami import EventTap
from tickets import catalogue, geo, knowledge, surveys
from tickets import service as orders

DEMO_GRIDS = Path(catalogue.__file__).with_name("demo_grids.geojson")
DEMO_AGENTS = (("8001", "张敏", "127.0.0.3"), ("8002", "李强", "127.0.0.5"))
CITIZEN_SAYS = "你好，我要反映一个问题，人民路口有暴露垃圾，已经好几天没人清理了。"
SHOWN_EVENTS = ("Newchannel", "DTMFEnd", "QueueCallerJoin", "AgentCalled", "AgentConnect",
                "AgentComplete", "MixMonitorStart", "Hangup")


def prepare(settings: Settings, demo_agents: bool) -> dict[str, str]:
    """Database, default queue (and demo agents); returns the rendered PBX configuration."""
    parts = build(settings, publish=False)
    with transaction(parts.sessions) as session:
        directory.ensure_queue(session, settings.hotline.default_queue, "综合受理")
        known = {a.number for a in directory.snapshot(session).agents}
        for number, name, ip in DEMO_AGENTS if demo_agents else ():
            if number not in known:
                directory.add_agent(session, number, name,
                                    static_contact=f"sip:{number}@{ip}:5060",
                                    queues=(settings.hotline.default_queue,))
        snapshot = directory.snapshot(session)
        if demo_agents and not geo.grid_count(session):
            geo.load_grids(session, geo.read_geojson(DEMO_GRIDS))
        if demo_agents:  # the knowledge base's demo articles (知识库), on an empty one
            knowledge.ensure_demo(session, now=parts.clock.now())
    return render(settings, snapshot)


def run_centre(settings: Settings, *, demo: bool, serve: bool, echo: Callable[[str], None],
               wait: Callable[[float | None], None]) -> None:
    echo(f"settings: {settings.source}; data in {settings.storage.data_dir}")
    sandbox = Sandbox(settings) if settings.pbx.mode == "sandbox" else None
    if sandbox is not None:
        sandbox.preflight()
    files = prepare(settings, demo_agents=demo)
    echo(f"database: {settings.as_dict()['storage']['database_url']} (migrated)")
    parts = build(settings, publish=False)
    with transaction(parts.sessions) as session:
        first_admin = ensure_first_admin(session, now=parts.clock.now())
    if first_admin:
        name, password = first_admin
        echo(f"accounts: first administrator {name}, password {password} (shown once; "
             f"change it with 'hotline users passwd {name}')")
    connect_redis(settings)
    echo(f"redis: {redis_location(settings)} (answering)")
    made = ensure_prompts(settings)
    echo(f"prompts: {settings.storage.prompts_dir} ({len(made)} generated)")
    started_pbx = False  # `up` stops the PBX it started, and only that one
    try:
        if sandbox is None:
            echo("pbx: external Asterisk (pbx.mode); write its configuration with "
                 "'hotline pbx render'; no demo calls")
        else:
            started_pbx = not sandbox.running()
            if started_pbx:  # a stop that overruns kills it rather than leave it running
                stopping.on_overrun(sandbox.kill)
            echo(f"pbx: {sandbox.up(files)}; SIP {settings.pbx.bind_address}:"
                 f"{settings.pbx.sip_port}, AMI :{settings.pbx.ami_port}")
        with Centre(settings) as centre:
            echo(f"ivr: FastAGI on {settings.ivr.fastagi_host}:{settings.ivr.fastagi_port}")
            echo("telephony: AMI connected; call records and events flowing")
            scheme = "http" if settings.web.tls == "off" else "https"
            site = f"{scheme}://{settings.web.host}:{settings.web.port}"
            echo(f"web: sign in at {site}/login (each role has its home page); the agent's "
                 f"desk at {site}/desk; the API's docs at {site}/api/v1/docs "
                 f"(OpenAPI at /api/v1/openapi.json)")
            if demo and sandbox is not None:
                run_demo(settings, centre, echo)
            if serve:
                echo(f"\nThe centre is running. Call {settings.hotline.entry_number} from a SIP "
                     f"phone on {settings.pbx.caller_networks[0]} or with 'hotline sipcall'. "
                     "Ctrl-C stops it.")
                wait(None)
    finally:
        if sandbox is not None and started_pbx and (serve or stopping.received()):
            echo(f"pbx: {sandbox.down()}")
        elif sandbox is not None and serve:
            echo("pbx: left running (it ran before 'hotline up'; 'hotline pbx down' stops it)")


def run_demo(settings: Settings, centre: Centre, echo: Callable[[str], None]) -> None:
    demo_dir = settings.storage.data_dir / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    voice = demo_dir / "citizen.wav"
    if not voice.exists():
        speak(CITIZEN_SAYS, voice)
    kit = SipKit(pbx_host=settings.pbx.bind_address, pbx_port=settings.pbx.sip_port)
    number = settings.hotline.entry_number
    echo("\ndemo: two agent phones are seated; three citizens call "
         f"{number} (one keys 1 and speaks, then two call at once)")
    for agent, _name, _ip in DEMO_AGENTS:  # queue members are dynamic: the seats log in
        if not centre.telephony.board.seat(agent).queues:
            commands.send(centre.bus.client, "seat.login", {"agent": agent})
    first_event = centre.bus.last_id()
    with EventTap(settings) as tap, \
            kit.agent_phone(*_phone(0), answer_after=1.0) as phone_a, \
            kit.agent_phone(*_phone(1), answer_after=1.5, talk_seconds=12) as phone_b:
        first = kit.call(Call(to=number, caller_id="13800138000", caller_name="王先生",
                              script=(Wait(1), Dtmf("1"), Wait(7), Say(voice), Wait(1),
                                      Hangup())))
        script = (Wait(1), Dtmf("1"), Wait(7), Say(voice), Hangup())
        more = kit.calls(Call(to=number, script=script), count=2, rate=2,
                         caller_ids=["13912345678", "02788886666"])
        time.sleep(1)
        events = tap.snapshot()
    for r in [first, *more]:
        echo(f"  {r.summary()}")
    for phone in (phone_a, phone_b):
        for a in phone.results():
            echo(f"  agent {phone.number}: {a.summary()}")
    counts = Counter(e.get("Event") for e in events)
    echo("  AMI events: " + ", ".join(f"{name} x{counts[name]}" for name in SHOWN_EVENTS))
    digits = [e.get("Digit") for e in events
              if e.get("Event") == "DTMFEnd" and e.get("Direction") == "Received"
              and e.get("Channel", "").startswith("PJSIP/citizens")]
    echo(f"  digits Asterisk heard from callers: {''.join(d or '' for d in digits) or 'none'}")
    _wait_until_stored(centre, 3)
    published = Counter(event["type"] for _id, event in centre.bus.read(first_event, 10_000))
    echo("  domain events on Redis: " + ", ".join(f"{k} x{v}" for k, v in published.items()))
    with centre.sessions() as session:
        _total, calls = records.find_calls(session, records.CallQuery(since=first.invite_at,
                                                                      limit=10))
    for call in reversed(calls):
        recording = call["recording"] or {}
        path = Path(recording.get("path") or "-")
        loudness = ""
        if path.exists():
            stats = wav_stats(path)
            loudness = f", {stats.seconds:.1f} s {'silent' if stats.silent else 'audible'}"
        echo(f"  call record {call['caller_number']}: {call['outcome']}, queue "
             f"{call['queue']}, agent {call['agent']}, wait {call['wait_seconds']} s, talk "
             f"{call['talk_seconds']} s, recording sha256 "
             f"{(recording.get('sha256') or '-')[:12]}{loudness}")
    first_call = next((c for c in calls if c["caller_number"] == "13800138000"), None)
    run_order_loop(settings, centre, kit, first_call["call_id"] if first_call else "", echo)


# The demo's case runs through every step, each taken by its role.
DEMO_STEPS = (("open", "shift_chief", "值班长 赵刚"), ("dispatch", "dispatcher", "派遣员 孙丽"),
              ("sign", "department", "市容环卫局"), ("feedback", "department", "市容环卫局"),
              ("request_check", "dispatcher", "派遣员 孙丽"),
              ("check_passed", "supervisor", "监督员 周涛"),
              ("close", "shift_chief", "值班长 赵刚"))


def run_order_loop(settings: Settings, centre: Centre, kit: SipKit, call_id: str,
                   echo: Callable[[str], None]) -> None:
    """The first caller's report becomes a work order that runs the whole case loop, and
    the citizen is called back by the survey line and keys 2 (满意)."""
    policy = centre.parts.policy
    with transaction(centre.sessions) as session:
        order = orders.open_order(
            session, appeal_type="complaint", channel="phone", actor=DEMO_AGENTS[0][1],
            description=CITIZEN_SAYS, citizen_phone="13800138000", citizen_name="王先生",
            category_code="0102", address="南岗区示范街道人民路口", latitude=45.7504,
            longitude=126.6306, call_id=call_id, policy=policy, now=centre.clock.now())
        case = order.case_number
        echo(f"\ndemo: work order {case} (grid {order.grid_code}, department "
             f"{order.department_code}) from call {call_id or '-'}")
        for action, role, actor in DEMO_STEPS:
            order = orders.transition(session, case, action, actor=actor, role=role,
                                      policy=policy, now=centre.clock.now())
        [survey] = [s for s in surveys.surveys_of(session, order.id) if s.state == "scheduled"]
        echo(f"  {' → '.join(a for a, _r, _w in DEMO_STEPS)}: {order.state}; survey due "
             f"{survey.next_attempt_at.astimezone(ZoneInfo(settings.calendar.timezone))}"
             ", called now for the demo")
        surveys.call_now(session, survey.id, centre.clock.now())
    with kit.agent_phone("citizen", settings.pbx.trunk_host, port=settings.pbx.trunk_port,
                         answer_after=1.0, talk_seconds=40, script=(Wait(3), Dtmf("2"))
                         ) as citizen:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with centre.sessions() as session:
                [survey] = surveys.surveys_of(session, order.id)
                state = orders.get_order(session, case).state
            if survey.state == "done" and any(r.ended_at for r in citizen.results()):
                break
            time.sleep(0.5)
    for r in citizen.results():
        echo(f"  survey call to {r.to_user}: {r.summary()}")
    echo(f"  survey: {survey.state}, rating {survey.rating} "
         f"({surveys.RATINGS.get(survey.rating or 0, '-')}), order {state}")


def _wait_until_stored(centre: Centre, count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while centre.telephony.stored < count and time.monotonic() < deadline:
        time.sleep(0.2)


def _phone(index: int) -> tuple[str, str]:
    number, _name, ip = DEMO_AGENTS[index]
    return number, ip
