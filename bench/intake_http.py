"""Intake over HTTP: citizens' requests of every channel mixed, through the real web app
(hotline.web.create_app served by waitress, as the centre serves it), against the same
service calls made in process, on SQLite and PostgreSQL.

    .venv/bin/python -m bench.intake_http [--requests 1000] [--databases sqlite,postgresql]
                                          [--clients 4] [--again 0.1]

The kinds of request are one table (KINDS), each with its share of the mix (the channels'
shares of bench.orders_throughput), how it is made, how the door its adapter calls is
called in process, its exchange over HTTP (run in the clients' process, so an exchange of
several requests, a portal's report then its SMS code, is one entry too), and what it
leaves in the database:

  sms      the gateway's inbound webhook, POST /api/v1/sms/inbound, a form signed with
           X-Twilio-Signature as Twilio signs it (by hand here, from Twilio's description,
           as tests/test_sms_live.py does); in process: channels.sms_inbound.take_in
  open311  Open311 GeoReport v2 POST /open311/v2/requests.json with an api_key issued by
           channels.open311.issue_key, a place in the city's grids and the service's
           attributes answered; in process: channels.open311.key_for, then submit
  portal   the citizens' portal: its page (the CSRF token), a report with a 640 x 480 JPEG
           and a map pin (multipart), the SMS code read from the outbox as the SMS gateway
           would, the code posted: one exchange, timed whole; in process:
           channels.portal.clean_photo, submit, the code read, confirm

A share of the SMS webhooks (--again) is delivered a second time, later in the run, as a
gateway does when it missed an answer: its row shows what a re-delivery costs next to a
first delivery.

Each database gets a fresh schema with the seeded catalogue and bench.orders_throughput's
6,400 generated grids, and one list of requests, run twice with the same concurrency:
first in process (--clients threads calling the doors in one transaction each, as the
views do), then over HTTP (--clients threads with an httpx client each, in a second
process so that the clients do not share the server's interpreter; waitress runs the
centre's 4 threads). Latencies are the clients'. After each run the database is counted:
orders by channel, and each kind's own rows (the SMS kept and the replies queued, the
Open311 requests kept), must have grown by exactly the requests accepted (first deliveries
only), no case number may be answered twice, and every re-delivery must be accepted: no
order lost or duplicated. A refusal (e.g. 503 when SQLite is busy) is counted, not lost.

Rate limits would stop the bench at once (one client address, one API key, a few senders):
they are raised for the run through the settings, so they are still counted in Redis on
every request (see NOTE_LIMITS). Redis is embedded in a temporary directory unless
--redis-url names a server. No timed assertions: on this shared machine (load average
printed) every figure is an upper bound, and the ratio is what to read.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import hashlib
import hmac
import itertools
import json
import logging
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

DEFAULT_REQUESTS = 1_000  # ~2 min for both databases at a load average of 2-5 on 2 cores
SERVER_THREADS = 4  # hotline.centre serves the web app with 4 waitress threads
RAISED = "1000000/minute"  # every rate limit of the channels, for the run
LIMITS = {"HOTLINE_SMS_INBOUND_PER_ADDRESS": RAISED, "HOTLINE_SMS_INBOUND_PER_NUMBER": RAISED,
          "HOTLINE_OPEN311_ADDRESS_RATE": RAISED, "HOTLINE_OPEN311_POST_RATE": RAISED,
          "HOTLINE_PORTAL_CODES_PER_PHONE": RAISED, "HOTLINE_PORTAL_REPORTS_PER_ADDRESS": RAISED,
          "HOTLINE_PORTAL_REQUESTS_PER_ADDRESS": RAISED}
NOTE_LIMITS = ("rate limits raised for the run (still counted in Redis on every HTTP "
               f"request): sms.inbound_per_address, sms.inbound_per_number, "
               f"open311.address_rate, open311.post_rate, portal.codes_per_phone, "
               f"portal.reports_per_address, portal.requests_per_address = {RAISED}")
SMS_TOKEN = "bench-sms-auth-token"
SMS_PATH = "/api/v1/sms/inbound"
OPEN311_PATH = "/open311/v2/requests.json"
PROBLEMS = ("垃圾没人清理", "路灯不亮", "井盖丢了", "占道经营", "施工噪音扰民", "道路积水",
            "乱停车堵路", "小广告乱贴")
WARM_UP = 10  # requests of each kind run first in each mode, untimed and uncounted


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- the clients: httpx in threads, in their own process ---------------------------------------

@dataclass(frozen=True)
class Target:
    """What the clients know of the hotline: its address; the SMS gateway's auth token,
    which a gateway signs with; the database, where a fake SMS gateway would read the
    messages sent (a portal's confirmation code)."""

    base_url: str
    sms_token: str
    database_url: str


def _clients_process() -> None:
    """Reads jobs (JSON lines: a target, calls as (kind, fields), a number of clients) on
    stdin; answers each with every call's (status, body, seconds) and the wall time, in
    the calls' order."""
    for line in sys.stdin:
        job = json.loads(line)
        results, wall = _post_all(Target(**job["target"]), job["calls"], job["clients"])
        print(json.dumps({"results": results, "wall": wall}), flush=True)


def _post_all(target: Target, calls: list[tuple[str, dict[str, str]]], clients: int
              ) -> tuple[list[Any], float]:
    import httpx

    kinds = {k.name: k for k in KINDS}
    results: list[Any] = [None] * len(calls)
    taken = itertools.count()  # next() of a count is atomic under the GIL

    def work() -> None:
        with httpx.Client(timeout=120) as client:
            while (i := next(taken)) < len(calls):
                kind, fields = calls[i]
                began = time.perf_counter()
                try:
                    answer = kinds[kind].http(client, target, fields)
                except httpx.HTTPError as exc:
                    answer = (0, repr(exc))
                results[i] = (answer[0], answer[1][:500], time.perf_counter() - began)

    threads = [threading.Thread(target=work) for _ in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.perf_counter() - began


class Clients:
    """The clients' process."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.intake_http", "--clients-process"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, target: Target, calls: list[tuple[str, dict[str, str]]], clients: int
            ) -> tuple[list[tuple[int, str, float]], float]:
        assert self.process.stdin is not None and self.process.stdout is not None
        job = {"target": vars(target), "calls": calls, "clients": clients}
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        return [tuple(r) for r in answer["results"]], answer["wall"]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


# --- the world: a fresh database, the app, its parts --------------------------------------------

@dataclass
class World:
    parts: Any  # hotline.compose.Parts
    target: Target | None = None  # the served app, as the clients reach it
    api_key: str = ""  # the bench's Open311 client's
    services: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)
    portal_choices: list[str] = field(default_factory=list)  # the portal's categories


@dataclass(frozen=True)
class Request:
    """One request of a kind: its form fields, and whether it repeats an earlier one."""

    kind: str
    n: int
    fields: dict[str, str]
    again: bool = False


@dataclass
class Outcome:
    """What a request got: accepted (2xx, or no exception in process), the case number
    the answer named ("" when it names none), the error, the seconds it took."""

    accepted: bool
    case: str
    error: str
    seconds: float


@dataclass(frozen=True)
class Kind:
    """A kind of intake request: its row in the table, and everything the bench does
    with it."""

    name: str
    channel: str  # the orders' channel (work_orders.channel)
    title: str  # the row's label
    make: Callable[[World, int, random.Random], dict[str, str]]  # the n-th request's fields
    direct: Callable[[World, dict[str, str]], str]  # the door, in process: the case number
    # the same over HTTP, in the clients' process (an httpx.Client): (status, body)
    http: Callable[[Any, Target, dict[str, str]], tuple[int, str]]
    answer: Callable[[str], str]  # an accepted HTTP answer's case number, or ""
    tally: Callable[[Any], dict[str, int]]  # rows it makes, each +1 per accepted request
    repeatable: bool = False  # delivered again by --again


# SMS: the gateway's inbound webhook ------------------------------------------------------------

def _sms_make(world: World, n: int, rng: random.Random) -> dict[str, str]:
    from bench.orders_throughput import STREETS

    street, problem = rng.choice(STREETS), rng.choice(PROBLEMS)
    return {"AccountSid": "ACbench", "From": f"139{rng.randrange(10**8):08d}",
            "To": "+8610612319", "Body": f"{street}{rng.randrange(1, 400)}号{problem}",
            "MessageSid": f"SMbench{n:09d}{rng.randrange(16**8):08x}", "NumMedia": "0",
            "SmsStatus": "received"}


def _sms_direct(world: World, fields: dict[str, str]) -> str:
    """What channels.sms_http.inbound calls once the signature and limits hold."""
    from channels import sms_inbound
    from core import phones
    from core.db import transaction
    from tickets.policy import Policy

    settings = world.parts.settings
    sender = phones.normalise(fields["From"])
    sms_inbound.check_text(fields["Body"])
    rules = sms_inbound.Rules(settings.sms.opt_out_words, settings.sms.resubscribe_words,
                              settings.sms.report_appeal_type)
    with transaction(world.parts.sessions) as session:
        taken = sms_inbound.take_in(session, phone=sender, text=fields["Body"],
                                    gateway_id=fields["MessageSid"], rules=rules,
                                    policy=Policy.from_settings(settings),
                                    now=world.parts.clock.now())
    return taken.case_number if taken.new else ""


def twilio_signature(token: str, url: str, fields: dict[str, str]) -> str:
    """By hand, as Twilio describes it: the URL, then each name and value, names sorted;
    HMAC-SHA1 keyed by the auth token, base64."""
    signed = url + "".join(name + fields[name] for name in sorted(fields))
    return base64.b64encode(hmac.new(token.encode(), signed.encode(), hashlib.sha1).digest()
                            ).decode()


def _sms_http(client: Any, target: Target, fields: dict[str, str]) -> tuple[int, str]:
    url = target.base_url + SMS_PATH
    reply = client.post(url, content=urlencode(fields).encode(), headers={
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": twilio_signature(target.sms_token, url, fields)})
    return reply.status_code, reply.text


def _sms_tally(session: Any) -> dict[str, int]:
    from sqlalchemy import func, select

    from channels.models import SmsMessage

    counted = dict(session.execute(select(SmsMessage.direction, func.count()).where(
        SmsMessage.purpose.in_(("report", "reply"))).group_by(SmsMessage.direction)).all())
    return {"sms kept": counted.get("in", 0), "sms replies queued": counted.get("out", 0)}


# Open311: POST requests -------------------------------------------------------------------------

def _open311_make(world: World, n: int, rng: random.Random) -> dict[str, str]:
    from bench.orders_throughput import CENTRE, GRID_COLS, GRID_LAT, GRID_LON, GRID_ROWS, STREETS

    code, answers = rng.choice(world.services)
    street = rng.choice(STREETS)
    fields = {"api_key": world.api_key, "service_code": code,
              "lat": f"{CENTRE[0] + rng.uniform(0.0001, GRID_ROWS * GRID_LAT - 0.0001):.6f}",
              "long": f"{CENTRE[1] + rng.uniform(0.0001, GRID_COLS * GRID_LON - 0.0001):.6f}",
              "address_string": f"南岗区{street}{rng.randrange(1, 400)}号",
              "description": f"{street}附近{rng.choice(PROBLEMS)}，请尽快处理。",
              "first_name": "芳", "last_name": "王",
              "phone": f"138{rng.randrange(10**8):08d}",
              "device_id": f"bench-device-{n % 97}"}
    for attribute, values in answers.items():
        fields[f"attribute[{attribute}]"] = values[0]
    return fields


def _open311_new(fields: dict[str, str]) -> Any:
    from channels import open311

    attributes = {k[len("attribute["):-1]: [v] for k, v in fields.items()
                  if k.startswith("attribute[")}
    return open311.NewRequest(
        service_code=fields["service_code"], lat=float(fields["lat"]),
        long=float(fields["long"]), address_string=fields["address_string"],
        description=fields["description"], first_name=fields["first_name"],
        last_name=fields["last_name"], phone=fields["phone"], device_id=fields["device_id"],
        attributes=attributes)


def _open311_direct(world: World, fields: dict[str, str]) -> str:
    """What channels.open311_http calls: the key (its guard, in its own session), then the
    request taken in."""
    from channels import open311
    from core.db import transaction
    from tickets.policy import Policy

    settings = world.parts.settings
    with world.parts.sessions() as session:
        key = open311.key_for(session, fields["api_key"])
        session.expunge(key)
    with transaction(world.parts.sessions) as session:
        posted = open311.submit(session, key, _open311_new(fields),
                                appeal_type=settings.open311.appeal_type,
                                policy=Policy.from_settings(settings),
                                now=world.parts.clock.now())
    return posted.service_request_id


def _open311_http(client: Any, target: Target, fields: dict[str, str]) -> tuple[int, str]:
    reply = client.post(target.base_url + OPEN311_PATH, content=urlencode(fields).encode(),
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    return reply.status_code, reply.text


def _open311_answer(body: str) -> str:
    return str(json.loads(body)[0]["service_request_id"])


def _open311_tally(session: Any) -> dict[str, int]:
    from sqlalchemy import func, select

    from channels.open311_models import Open311Request

    return {"open311 requests kept": session.scalar(select(func.count(Open311Request.id)))}


# The citizens' portal: a report with a photo, confirmed by its SMS code --------------------------

PORTAL_REPORTS = "/api/v1/portal/reports"


@functools.cache
def portal_photo() -> bytes:
    """A phone camera's JPEG (640 x 480, with a camera model in its EXIF)."""
    import io

    from PIL import ExifTags, Image

    image = Image.new("RGB", (640, 480), (120, 160, 90))
    exif = Image.Exif()
    exif[ExifTags.Base.Model] = "BenchCam 1"
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def _portal_make(world: World, n: int, rng: random.Random) -> dict[str, str]:
    from bench.orders_throughput import CENTRE, GRID_COLS, GRID_LAT, GRID_LON, GRID_ROWS, STREETS

    street = rng.choice(STREETS)
    return {"category": rng.choice(world.portal_choices), "appeal_type": "complaint",
            "description": f"{street}{rng.randrange(1, 400)}号附近{rng.choice(PROBLEMS)}",
            "latitude": f"{CENTRE[0] + rng.uniform(0.0001, GRID_ROWS * GRID_LAT - 0.0001):.6f}",
            "longitude": f"{CENTRE[1] + rng.uniform(0.0001, GRID_COLS * GRID_LON - 0.0001):.6f}",
            "phone": f"137{n:08d}"}  # one number a report: its code is found by it


def _sent_code(sessions: Any, phone: str) -> str:
    """The code the portal sent to `phone`, read from the outbox as the SMS gateway would."""
    from sqlalchemy import select

    from channels.models import SmsMessage

    with sessions() as session:
        text = session.scalar(select(SmsMessage.text).where(
            SmsMessage.direction == "out", SmsMessage.purpose == "code",
            SmsMessage.phone == "+86" + phone).order_by(SmsMessage.id.desc()).limit(1))
    found = re.search(r"验证码是(\d{6})", text or "")
    return found.group(1) if found else ""


def _portal_direct(world: World, fields: dict[str, str]) -> str:
    """What channels.portal_pages calls: the photo cleaned, the draft kept and its code
    sent; then, with the code the citizen read, the order made."""
    from channels import portal
    from core.db import transaction
    from core.events import EventBus
    from tickets import geo
    from tickets.policy import Policy

    settings, parts = world.parts.settings, world.parts
    rules, secret = settings.portal, settings.accounts.session_secret
    phone = portal.mobile(fields["phone"])
    photos = [portal.clean_photo(portal_photo(), number=1, share_location=False, rules=rules)]
    with transaction(parts.sessions) as session:
        # tickets.maps.stored_point without the app (whose settings say the pin's datum:
        # WGS84 here): the point checked and found in the city's grids
        lat, lon = geo.check_point(float(fields["latitude"]), float(fields["longitude"]))
        if not geo.in_city(session, lat, lon):
            raise geo.GeoError(f"{lat:.5f}, {lon:.5f} is outside the city's grids")
        done = portal.submit(session, portal.Report(
            appeal_type=fields["appeal_type"], category=fields["category"],
            description=fields["description"], phone=phone, latitude=lat, longitude=lon),
            photos, rules=rules, secret=secret, now=parts.clock.now())
    code = _sent_code(parts.sessions, fields["phone"])
    written: list[Path] = []
    with transaction(parts.sessions) as session:
        confirmed = portal.confirm(
            session, done.token, code, rules=rules, secret=secret,
            tracking_link=lambda token: f"http://127.0.0.1/portal/track/{token}",
            attachments_dir=settings.storage.data_dir / "attachments",
            bus=EventBus(parts.redis), policy=Policy.from_settings(settings), written=written,
            now=parts.clock.now())
    if confirmed.refusal is not None:
        raise confirmed.refusal
    return confirmed.case_number


_client_sessions: dict[str, Any] = {}


def _portal_http(client: Any, target: Target, fields: dict[str, str]) -> tuple[int, str]:
    """The citizen's exchange: the page (its CSRF token), the report with its photo, the
    code read from the outbox (as the SMS gateway would), the code typed in."""
    if target.database_url not in _client_sessions:
        from core.db import make_engine, session_factory

        _client_sessions[target.database_url] = session_factory(make_engine(
            target.database_url))
    page = client.get(target.base_url + "/portal")
    found = re.search(r'data-csrf="([^"]+)"', page.text)
    if page.status_code != 200 or not found:
        return page.status_code or 599, "no CSRF token on the portal's page"
    headers = {"X-CSRFToken": found.group(1)}
    sent = client.post(target.base_url + PORTAL_REPORTS, data=fields, headers=headers,
                       files={"photos": ("IMG_0001.jpg", portal_photo(), "image/jpeg")})
    if sent.status_code != 201:
        return sent.status_code, sent.text
    draft = sent.json()["confirm_url"].rsplit("/", 1)[1]
    code = _sent_code(_client_sessions[target.database_url], fields["phone"])
    done = client.post(f"{target.base_url}{PORTAL_REPORTS}/{draft}/code",
                       data={"code": code}, headers=headers)
    return done.status_code, done.text


def _portal_tally(session: Any) -> dict[str, int]:
    from sqlalchemy import func, select

    from channels.models import SmsMessage
    from channels.portal_models import PortalDraft, PortalTracker
    from tickets.models import WorkOrderAttachment

    codes = session.scalar(select(func.count(SmsMessage.id)).where(
        SmsMessage.direction == "out", SmsMessage.purpose == "code"))
    drafts = session.scalar(select(func.count(PortalDraft.id)))
    return {"portal reports confirmed (codes sent - drafts left)": codes - drafts,
            "portal tracking links": session.scalar(select(func.count(PortalTracker.id))),
            "portal case numbers sent": session.scalar(select(func.count(SmsMessage.id)).where(
                SmsMessage.direction == "out", SmsMessage.purpose == "portal")),
            "photos filed (one a report)": session.scalar(
                select(func.count(WorkOrderAttachment.id)))}


KINDS: tuple[Kind, ...] = (  # a new channel's intake: one more line here
    Kind("sms", "sms", "SMS webhook (signed)", _sms_make, _sms_direct, _sms_http,
         lambda _body: "", _sms_tally, repeatable=True),
    Kind("open311", "open311", "Open311 POST requests", _open311_make, _open311_direct,
         _open311_http, _open311_answer, _open311_tally),
    Kind("portal", "web", "portal report + photo + SMS code", _portal_make, _portal_direct,
         _portal_http, lambda body: str(json.loads(body)["case_number"]), _portal_tally),
)


def open311_services(world: World) -> list[tuple[str, dict[str, list[str]]]]:
    """(service_code, answers of its required attributes) of every service: a value of
    the definition's own for the lists, a number, a time, words."""
    from channels import open311

    answers_for = {"singlevaluelist": None, "multivaluelist": None,
                   "number": "30", "datetime": "2026-11-24T08:00:00+08:00",
                   "string": "见附近", "text": "见附近"}
    found = []
    with world.parts.sessions() as session:
        for service in open311.services(session):
            answers = {}
            for attribute in service.attributes:
                if attribute.required and attribute.variable:
                    value = answers_for[attribute.datatype] or attribute.values[0][0]
                    answers[attribute.code] = [value]
            found.append((service.service_code, answers))
    return found


# --- one mode's run -----------------------------------------------------------------------------

def plan(world: World, count: int, again: float, clients: int, run: int) -> list[Request]:
    """`count` first deliveries in the kinds' shares, plus `again` of the repeatable ones
    delivered a second time, each at least two rounds of clients after its first. Every
    `run` gets the same kinds in the same order, with requests of its own (new message
    ids, senders, places: nothing of an earlier run's is repeated)."""
    from bench.orders_throughput import CHANNELS

    mix, rng = random.Random(12319), random.Random(12319 + run)
    weights = [CHANNELS.get(k.channel, 1) for k in KINDS]
    firsts = [Request(kind.name, n, kind.make(world, run * 10**6 + n, rng))
              for n, kind in enumerate(mix.choices(KINDS, weights, k=count))]
    keyed = [(float(n), r) for n, r in enumerate(firsts)]
    repeatable = {k.name for k in KINDS if k.repeatable}
    for n, first in enumerate(firsts):
        if first.kind in repeatable and mix.random() < again:
            keyed.append((rng.uniform(n + 2 * clients, count + 2 * clients),
                          Request(first.kind, first.n, first.fields, again=True)))
    return [r for _key, r in sorted(keyed, key=lambda pair: pair[0])]


def run_direct(world: World, requests: list[Request], clients: int
               ) -> tuple[list[Outcome], float]:
    kinds = {k.name: k for k in KINDS}
    outcomes: list[Outcome | None] = [None] * len(requests)
    taken = itertools.count()

    def work() -> None:
        while (i := next(taken)) < len(requests):
            request = requests[i]
            began = time.perf_counter()
            try:
                case = kinds[request.kind].direct(world, request.fields)
                error, accepted = "", True
            except Exception as exc:  # counted and shown, as a refusal
                case, accepted = "", False
                error = f"{type(exc).__name__}: {exc}"[:200]
            outcomes[i] = Outcome(accepted, case, error, time.perf_counter() - began)

    threads = [threading.Thread(target=work) for _ in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [o for o in outcomes if o is not None], time.perf_counter() - began


def run_http(world: World, clients_process: Clients, requests: list[Request], clients: int
             ) -> tuple[list[Outcome], float]:
    kinds = {k.name: k for k in KINDS}
    assert world.target is not None
    results, wall = clients_process.run(world.target, [(r.kind, r.fields) for r in requests],
                                        clients)
    outcomes = []
    for request, (status, body, seconds) in zip(requests, results, strict=True):
        accepted = 200 <= status < 300
        case = kinds[request.kind].answer(body) if accepted and not request.again else ""
        outcomes.append(Outcome(accepted, case, "" if accepted else f"{status} {body[:150]}",
                                seconds))
    return outcomes, wall


def tally(world: World) -> Counter[str]:
    """Orders by channel, and each kind's own rows."""
    from sqlalchemy import func, select

    from tickets.models import WorkOrder

    counted: Counter[str] = Counter()
    with world.parts.sessions() as session:
        for channel, number in session.execute(select(WorkOrder.channel, func.count())
                                               .group_by(WorkOrder.channel)):
            counted[f"orders ({channel})"] = number
        for kind in KINDS:
            counted.update(kind.tally(session))
    return counted


def check(world: World, requests: list[Request], outcomes: list[Outcome],
          before: Counter[str]) -> list[str]:
    """What is wrong with the database after a run: [] when every accepted request made
    exactly its rows, no case number was answered twice and every re-delivery was taken."""
    grown = tally(world)
    grown.subtract(before)
    expected: Counter[str] = Counter()
    with world.parts.sessions() as session:
        for kind in KINDS:
            accepted = sum(o.accepted for r, o in zip(requests, outcomes, strict=True)
                           if r.kind == kind.name and not r.again)
            expected[f"orders ({kind.channel})"] += accepted
            for name in kind.tally(session):
                expected[name] += accepted
    problems = [f"{name}: {grown[name]:+,} for {expected[name]:,} accepted"
                for name in sorted(set(expected) | {k for k, v in grown.items() if v})
                if grown[name] != expected[name]]
    cases = Counter(o.case for o in outcomes if o.case)
    problems += [f"case {case} answered {times} times" for case, times in cases.items()
                 if times > 1]
    refused_again = sum(not o.accepted for r, o in zip(requests, outcomes, strict=True)
                        if r.again)
    if refused_again:
        problems.append(f"{refused_again} re-deliveries refused")
    return problems


@dataclass
class Run:
    mode: str
    requests: list[Request]
    outcomes: list[Outcome]
    wall: float
    problems: list[str]
    queued: int = 0  # HTTP requests that waited for a free waitress thread

    def rows(self) -> dict[str, list[Outcome]]:
        """Outcomes by row: each kind, its re-deliveries, all."""
        rows: dict[str, list[Outcome]] = {}
        for request, outcome in zip(self.requests, self.outcomes, strict=True):
            rows.setdefault(request.kind + (" again" if request.again else ""), []).append(
                outcome)
        rows["all"] = self.outcomes
        return rows


def timed(world: World, mode: str, requests: list[Request], warm_up: list[Request],
          clients: int, clients_process: Clients) -> Run:
    def go(batch: list[Request]) -> tuple[list[Outcome], float]:
        if mode == "http":
            return run_http(world, clients_process, batch, clients)
        return run_direct(world, batch, clients)

    go(warm_up)
    before = tally(world)
    outcomes, wall = go(requests)
    return Run(mode, requests, outcomes, wall, check(world, requests, outcomes, before))


# --- the bench ----------------------------------------------------------------------------------

def _settings(directory: str, database_url: str, redis_url: str) -> Any:
    from core.config import load_settings

    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HOTLINE_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"HOTLINE_STORAGE_DATA_DIR": directory, "DATABASE_URL": database_url,
                "HOTLINE_SMS_TWILIO_AUTH_TOKEN": SMS_TOKEN, **LIMITS})
    if redis_url:
        env["REDIS_URL"] = redis_url
    return load_settings(None, env)


class Queued(logging.Filter):
    """Counts waitress's "Task queue depth" warnings: requests that found every server
    thread busy and waited for one."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        self.count += 1
        return False


queued = Queued()


def bench(kind: str, args: argparse.Namespace, clients_process: Clients) -> dict[str, Run]:
    from waitress.server import create_server

    from bench.orders_throughput import database, grids_geojson
    from channels import open311, portal
    from core.clock import SYSTEM_CLOCK
    from core.db import transaction
    from core.live import stop_embedded
    from hotline.compose import build
    from hotline.web import create_app, stop_web_server
    from tickets import catalogue, geo

    def progress(message: str) -> None:
        print(f"  [{kind}] {message}", flush=True)

    with (database(kind, args.pg) as (engine, label),
          tempfile.TemporaryDirectory(prefix="bench-intake-") as directory):
        url = engine.url.render_as_string(hide_password=False).replace("+psycopg", "")
        settings = _settings(directory, url, args.redis_url)
        parts = build(settings, SYSTEM_CLOCK)  # the centre's composition: commits published
        world = World(parts)
        with transaction(parts.sessions) as session:
            catalogue.seed(session)
            geo.load_grids(session, grids_geojson())
            world.api_key = open311.issue_key(session, "bench-app", now=SYSTEM_CLOCK.now())
        world.services = open311_services(world)
        with parts.sessions() as session:
            world.portal_choices = [c.value for g in portal.groups(session) for c in g.choices]
        app = create_app(settings, parts.sessions, parts.redis, SYSTEM_CLOCK)
        server = create_server(app, host="127.0.0.1", port=0, threads=SERVER_THREADS)
        world.target = Target(f"http://127.0.0.1:{server.effective_port}", SMS_TOKEN, url)
        logging.getLogger("waitress.queue").addFilter(queued)  # counted, not printed
        web = threading.Thread(target=server.run, daemon=True, name="web")
        web.start()
        try:
            runs = {}
            for run, mode in enumerate(("direct", "http")):  # the same mix, new requests
                requests = plan(world, args.requests, args.again, args.clients, 2 * run)
                rng = random.Random(run)
                warm = [Request(k.name, -1 - n, k.make(world, (2 * run + 1) * 10**6 + n, rng))
                        for k in KINDS for n in range(WARM_UP)]
                queued.count = 0
                runs[mode] = timed(world, mode, requests, warm, args.clients, clients_process)
                runs[mode].queued = queued.count
                progress(f"{mode}: {len(requests):,} requests in {runs[mode].wall:.1f} s"
                         + (f"; PROBLEMS: {runs[mode].problems}" if runs[mode].problems
                            else "; counted: none lost, none duplicated"))
        finally:
            stop_web_server(server, web)
            parts.engine.dispose()
            stop_embedded()  # while its directory is still there to save into
        report(label, args, runs)
        return runs


def _titles() -> dict[str, str]:
    titles = {}
    for kind in KINDS:
        titles[kind.name] = kind.title
        if kind.repeatable:
            titles[kind.name + " again"] = f"{kind.title}, re-delivered"
    titles["all"] = "all, mixed"
    return titles


def report(label: str, args: argparse.Namespace, runs: dict[str, Run]) -> None:
    direct, http = runs["direct"].rows(), runs["http"].rows()
    mix = Counter(r.kind for r in runs["http"].requests if not r.again)
    shares = ", ".join(f"{name} {mix[name] / args.requests:.0%}" for name in mix)
    print(f"\nIntake on {label}: {args.requests:,} requests ({shares}; {args.again:.0%} of "
          f"the SMS webhooks re-delivered on top), {args.clients} clients, waitress "
          f"{SERVER_THREADS} threads. ratio = HTTP / in process, of the time (the latency, or "
          "for all, the time per request at the run's rate)")
    print(f"{'kind':<36}{'mode':<12}{'requests':>9}{'refused':>8}{'req/s':>8}{'p50 ms':>8}"
          f"{'p95 ms':>8}{'ratio p50':>10}{'ratio p95':>10}{'ratio rate':>11}")
    for row, title in _titles().items():
        for mode, rows, wall in (("in process", direct, runs["direct"].wall),
                                 ("HTTP", http, runs["http"].wall)):
            found = rows.get(row, [])
            if not found:
                continue
            took = [o.seconds for o in found]
            rate = f"{len(found) / wall:>8,.0f}" if row == "all" else f"{'':>8}"
            line = (f"{title if mode == 'in process' else '':<36}{mode:<12}{len(found):>9,}"
                    f"{sum(not o.accepted for o in found):>8}{rate}"
                    f"{pct(took, .5) * 1000:>8.1f}{pct(took, .95) * 1000:>8.1f}")
            if mode == "HTTP" and direct.get(row):
                base = [o.seconds for o in direct[row]]
                line += (f"{pct(took, .5) / pct(base, .5):>10.1f}"
                         f"{pct(took, .95) / pct(base, .95):>10.1f}")
                if row == "all":
                    line += f"{wall / runs['direct'].wall * len(base) / len(found):>11.1f}"
            print(line)
    for mode, run in runs.items():
        shown = "in process" if mode == "direct" else "HTTP"
        if run.problems:
            print(f"{shown}: NOT RIGHT: " + "; ".join(run.problems))
        else:
            print(f"{shown}: orders by channel and each kind's rows grew by exactly the "
                  "requests accepted: none lost, none duplicated, every re-delivery taken")
        errors = Counter(o.error for o in run.outcomes if o.error)
        for error, times in errors.most_common(3):
            print(f"  refused {times}x: {error}")
    for kind in KINDS:
        if kind.repeatable and http.get(kind.name + " again"):
            first, again = ([o.seconds for o in runs[m].rows()[name]]
                            for m, name in (("http", kind.name), ("http", kind.name + " again")))
            kept = "" if runs["http"].problems else " (and stored and sent nothing)"
            print(f"a re-delivered {kind.name} took {pct(again, .5) / pct(first, .5):.2f}x "
                  f"a first delivery's p50 over HTTP{kept}")
    print(f"notes: {NOTE_LIMITS}; {runs['http'].queued:,} HTTP requests waited for a free "
          f"waitress thread; the HTTP run comes second, on tables holding the first "
          f"run's orders; clients in a second process; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}")


def summary(results: dict[str, dict[str, Run]]) -> None:
    print("\nHTTP / in process (p50, p95 latency; for all, time per request)")
    print(f"{'kind':<36}" + "".join(f"{kind:>24}" for kind in results))
    for row, title in _titles().items():
        cells = []
        for runs in results.values():
            direct, http = runs["direct"].rows().get(row), runs["http"].rows().get(row)
            if not direct or not http:
                cells.append(f"{'-':>24}")
                continue
            d, h = [o.seconds for o in direct], [o.seconds for o in http]
            cell = f"{pct(h, .5) / pct(d, .5):.1f} / {pct(h, .95) / pct(d, .95):.1f}"
            if row == "all":
                cell += (f" / {runs['http'].wall / runs['direct'].wall * len(d) / len(h):.1f}")
            cells.append(f"{cell:>24}")
        print(f"{title:<36}" + "".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS,
                        help=f"first deliveries per run (default {DEFAULT_REQUESTS:,})")
    parser.add_argument("--databases", default="sqlite,postgresql",
                        help="comma-separated: sqlite, postgresql (default both)")
    parser.add_argument("--clients", type=int, default=SERVER_THREADS,
                        help=f"concurrent clients, and threads in process (default "
                             f"{SERVER_THREADS}: waitress's threads)")
    parser.add_argument("--again", type=float, default=0.1,
                        help="share of the SMS webhooks delivered a second time (default 0.1)")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432",
                        help="PostgreSQL server URL without a database name; a bench_* "
                             "database is created there and dropped")
    parser.add_argument("--redis-url", default="", help="a Redis server instead of embedded")
    parser.add_argument("--clients-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clients_process:
        _clients_process()
        return
    kinds = [k.strip() for k in args.databases.split(",") if k.strip()]
    if set(kinds) - {"sqlite", "postgresql"} or not kinds or args.requests < 10 \
            or args.clients < 1 or not 0 <= args.again <= 1:
        parser.error("--databases: sqlite and/or postgresql; --requests: at least 10; "
                     "--clients: at least 1; --again: 0 to 1")

    from bench.orders_throughput import LoadWatch

    results = {}
    clients_process = Clients()
    try:
        for kind in kinds:
            started, load = time.perf_counter(), LoadWatch()
            results[kind] = bench(kind, args, clients_process)
            print(f"({kind}: {time.perf_counter() - started:,.0f} s in all; highest load "
                  f"average {load.peak:.1f} on {os.cpu_count()} CPUs)\n", flush=True)
    finally:
        clients_process.close()
    if len(results) > 1:
        summary(results)


if __name__ == "__main__":
    main()
