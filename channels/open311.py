"""Open311 GeoReport v2 (开放311接口): the services citizens' apps may report, the requests
they post (each one a work order taken in, 受理, on the channel `open311`), and what anyone
may read back of the orders. The specification's own words and rules
(http://wiki.open311.org/GeoReport_v2); the HTTP adapter (`channels.open311_http`) renders
them as XML or JSON.

- A service is an active leaf category of the catalogue: its `service_code` is the category
  code (an event's as it is, `0102`; a component's with `C` in front, `C0101`, as the
  catalogue writes component prefixes), its group the name of its top class. Keywords,
  attributes and a notice come from `open311.yaml` beside this module.
- A client posts with an API key (`hotline channels open311-key NAME`); only the SHA-256 of
  the key is kept. Orders are made at once, so the answer is the `service_request_id` (the
  case number); every request also has a token for clients that look requests up by one.
- Anyone may read requests: category, state in words, department, place, times. Never the
  citizen's name, phone or e-mail, a staff member's name or a note; the description only of
  requests that came in over Open311 (their authors wrote it for this), numbers in it masked.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import re
import secrets
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.open311_models import Open311Key, Open311Request
from core import phones
from core.errors import ConfigError, HotlineError
from tickets import catalogue, geo, published, service, workflow

SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
EXTRAS_FILE = Path(__file__).with_name("open311.yaml")
CHANNEL = "open311"
MAX_RANGE = timedelta(days=90)  # the longest start_date..end_date, and the default window
MAX_RESULTS = published.MAX_PAGE  # the default (and only) cap on GET requests: 1,000
MAX_IDS = MAX_RESULTS
DATATYPES = ("string", "number", "datetime", "text", "singlevaluelist", "multivaluelist")
STATUSES = ("open", "closed")
CLOSED_STATES = frozenset(s for s in workflow.STATES if s not in workflow.OPEN)
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_CLIENT = re.compile(r"[^\x00-\x1f\x7f]{1,60}")
_SERVICE_CODE = re.compile(r"C?(?:[0-9]{2}){1,8}")
_CASE = re.compile(r"[0-9]{12,16}")
_TOKEN = re.compile(r"[0-9a-f]{32}")
_ATTRIBUTE_CODE = re.compile(r"[A-Z0-9_]{1,40}")
_EMAIL = re.compile(r"[^@\s<>\"']{1,100}@[^@\s<>\"']{1,100}\.[^@\s<>\"']{1,40}")
_URL = re.compile(r"https?://[^\s<>\"'\\]{1,490}")
_W3C_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})")
_CJK = re.compile(r"[\u3400-\u9fff]")

# The workflow's state in words for citizens (status_notes); a merged order's names the
# order it lives on in.
STATE_NOTES = {
    "intake": "已受理，等待立案",
    "verifying": "已受理，正在核实情况",
    "opened": "已立案，等待派遣",
    "dispatched": "已派遣至处置部门，等待签收",
    "handling": "处置部门正在处理",
    "reported": "处置部门已反馈处理结果，等待核查",
    "checking": "正在核查处理结果",
    "checked": "核查通过，等待结案",
    "closed": "已办结",
    "evaluated": "已办结，已回访",
    "parked": "暂时无法处理（挂账），待条件具备后继续",
    "deferred": "暂缓办理",
    "voided": "不予受理（已作废）",
    "merged": "已与其他案件合并办理",
}


class Open311Error(HotlineError):
    """A request the specification answers with 400; the message names the field."""


class KeyRefused(Open311Error):
    """No api_key, or one that is not in force: 403."""

    status = 403


class Missing(Open311Error):
    """No such service, request or token: 404."""

    status = 404


# --- API keys ---------------------------------------------------------------------------------


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_key(session: Session, client: str, *, now: datetime) -> str:
    """A new API key for `client` (a name, e.g. the app's), shown once: `<id>.<secret>`. A
    client may hold several (to rotate one without a gap)."""
    name = (client or "").strip()
    if not _CLIENT.fullmatch(name):
        raise Open311Error("client: 1-60 characters, no control characters")
    key_id = secrets.token_hex(8)
    key = f"{key_id}.{secrets.token_urlsafe(32)}"
    session.add(Open311Key(id=key_id, client=name, key_sha256=_digest(key), created_at=now))
    session.flush()
    return key


def revoke_key(session: Session, key_id: str, *, now: datetime) -> Open311Key:
    row = session.get(Open311Key, key_id) if _KEY_ID.fullmatch(key_id or "") else None
    if row is None or row.revoked_at is not None:
        raise Missing(f"key: no key {key_id[:20]!r} in force")
    row.revoked_at = now
    session.flush()
    return row


def keys(session: Session) -> list[Open311Key]:
    return list(session.scalars(select(Open311Key).order_by(Open311Key.client,
                                                            Open311Key.created_at)))


def key_for(session: Session, api_key: str) -> Open311Key:
    """The key in force that `api_key` is; KeyRefused otherwise (missing too)."""
    if not api_key:
        raise KeyRefused("api_key: required to post a service request")
    key_id = api_key.split(".", 1)[0]
    row = session.get(Open311Key, key_id) if _KEY_ID.fullmatch(key_id) else None
    if row is None or row.revoked_at is not None \
            or not hmac.compare_digest(row.key_sha256, _digest(api_key)):
        raise KeyRefused("api_key: not a key in force")
    return row


# --- services ---------------------------------------------------------------------------------


class _DeclaredAttribute(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    code: str = Field(pattern=_ATTRIBUTE_CODE.pattern)
    datatype: Literal[DATATYPES]  # type: ignore[valid-type]
    required: bool = False
    variable: bool = True
    description: str = Field(min_length=1, max_length=200)
    datatype_description: str = Field("", max_length=200)
    values: dict[str, str] = Field(default_factory=dict)


class _DeclaredService(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    keywords: list[str] = Field(default_factory=list)
    notice: str = Field("", max_length=300)
    attributes: list[_DeclaredAttribute] = Field(default_factory=list)


@dataclass(frozen=True)
class Attribute:
    code: str
    datatype: str
    required: bool
    variable: bool
    order: int
    description: str
    datatype_description: str
    values: tuple[tuple[str, str], ...]  # (key, name) in the order shown


@dataclass(frozen=True)
class Service:
    service_code: str
    service_name: str
    description: str
    group: str
    keywords: tuple[str, ...]
    notice: str
    attributes: tuple[Attribute, ...] = field(default=())

    @property
    def metadata(self) -> bool:
        return bool(self.attributes)

    @property
    def kind_and_code(self) -> tuple[str, str]:
        return split_code(self.service_code)


@functools.cache
def _extras(path: Path = EXTRAS_FILE) -> dict[str, _DeclaredService]:
    """The services' keywords, notices and attributes as declared; a mistake in the file is
    a ConfigError naming the service and the field (the operator's, not the client's)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out: dict[str, _DeclaredService] = {}
    for code, entry in (data.get("services") or {}).items():
        if not isinstance(code, str) or not _SERVICE_CODE.fullmatch(code):
            raise ConfigError(f"{path.name}: service code {code!r}: quote it, e.g. \"0102\"")
        try:
            declared = _DeclaredService.model_validate(entry or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{path.name}: {code}.{where}: {first['msg']}") from None
        codes = [a.code for a in declared.attributes]
        if len(set(codes)) != len(codes):
            raise ConfigError(f"{path.name}: {code}: an attribute code twice")
        for attribute in declared.attributes:
            if attribute.datatype.endswith("valuelist") != bool(attribute.values):
                raise ConfigError(f"{path.name}: {code}.{attribute.code}: values go with "
                                   "singlevaluelist and multivaluelist, and only with them")
        out[code] = declared
    return out


def split_code(service_code: str) -> tuple[str, str]:
    """(kind, category code) of a service code: C0101 -> (component, 0101)."""
    if service_code.startswith("C"):
        return "component", service_code[1:]
    return "event", service_code


def _service_code(kind: str, code: str) -> str:
    return f"C{code}" if kind == "component" else code


def services(session: Session) -> list[Service]:
    """Every service: the catalogue's active leaf categories, events first, by code."""
    rows = catalogue.categories(session)
    names = {(c.kind, c.code): c.name for c in rows}
    parents = {(c.kind, c.code[:-2]) for c in rows if len(c.code) > 2}
    extras = _extras()
    out = []
    for row in rows:
        if (row.kind, row.code) in parents or len(row.code) < 4:
            continue  # a class with subclasses, or a top class: the subclasses are reported
        code = _service_code(row.kind, row.code)
        declared = extras.get(code) or _DeclaredService()
        group = names.get((row.kind, row.code[:2]), "")
        kind_word = "部件" if row.kind == "component" else "事件"
        out.append(Service(
            service_code=code, service_name=row.name,
            description=f"{group}（{kind_word}）：{row.name}" if group else row.name,
            group=group, keywords=tuple(declared.keywords), notice=declared.notice,
            attributes=tuple(Attribute(
                a.code, a.datatype, a.required, a.variable, order, a.description,
                a.datatype_description, tuple(a.values.items()))
                for order, a in enumerate(declared.attributes, start=1))))
    return out


def service_by_code(session: Session, service_code: str) -> Service:
    found = next((s for s in services(session) if s.service_code == service_code), None)
    if found is None:
        raise Missing(f"service_code: no service {service_code[:20]!r}")
    return found


# --- posting a request ------------------------------------------------------------------------


@dataclass(frozen=True)
class NewRequest:
    """A POST requests as the client sent it (text already bounded and cleaned)."""

    service_code: str
    lat: float | None = None
    long: float | None = None
    address_string: str = ""
    address_id: str = ""
    email: str = ""
    device_id: str = ""
    account_id: str = ""
    first_name: str = ""
    last_name: str = ""
    phone: str = ""
    description: str = ""
    media_url: str = ""
    attributes: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Posted:
    service_request_id: str
    token: str
    service_notice: str
    account_id: str


def _answers(found: Service, given: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """The attributes' answers checked against the service definition: {code: value or
    [values]}; Open311Error naming attribute[code] for anything the definition refuses."""
    declared = {a.code: a for a in found.attributes}
    for code in given:
        if code not in declared or not declared[code].variable:
            raise Open311Error(f"attribute[{code[:40]}]: not a question of service "
                               f"{found.service_code}")
    answers: dict[str, Any] = {}
    for attribute in found.attributes:
        values = [v.strip() for v in given.get(attribute.code, ()) if v.strip()]
        name = f"attribute[{attribute.code}]"
        if not values:
            if attribute.required and attribute.variable:
                raise Open311Error(f"{name}: required by service {found.service_code}")
            continue
        keys = [k for k, _ in attribute.values]
        if attribute.datatype == "multivaluelist":
            wrong = [v for v in values if v not in keys]
            if wrong:
                raise Open311Error(f"{name}: {wrong[0][:40]!r} is not one of {', '.join(keys)}")
            answers[attribute.code] = list(dict.fromkeys(values))
            continue
        if len(values) > 1:
            raise Open311Error(f"{name}: one value")
        value = values[0]
        if attribute.datatype == "singlevaluelist" and value not in keys:
            raise Open311Error(f"{name}: one of {', '.join(keys)}")
        if attribute.datatype == "number":
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not math.isfinite(number) or len(value) > 30:
                raise Open311Error(f"{name}: a number")
        if attribute.datatype == "datetime":
            _w3c_time(value, name)
        limit = 2000 if attribute.datatype == "text" else 200
        if len(value) > limit:
            raise Open311Error(f"{name}: at most {limit} characters")
        answers[attribute.code] = value
    return answers


def _answers_in_words(found: Service, answers: Mapping[str, Any]) -> str:
    lines = []
    for attribute in found.attributes:
        if attribute.code not in answers:
            continue
        names = dict(attribute.values)
        value = answers[attribute.code]
        shown = "、".join(names[v] for v in value) if isinstance(value, list) \
            else names.get(value, value)
        lines.append(f"{attribute.description}{shown}")
    return "\n".join(lines)


def _w3c_time(text: str, name: str) -> datetime:
    if not _W3C_TIME.fullmatch(text):
        raise Open311Error(f"{name}: a W3C time with its zone, e.g. 2026-11-24T08:00:00+08:00")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Open311Error(f"{name}: not a real time: {text[:30]!r}") from None
    if not 1970 <= moment.year <= 2200:
        raise Open311Error(f"{name}: a year from 1970 to 2200")
    return moment


def _citizen_name(first: str, last: str) -> str:
    """Chinese names put the family name first (王 + 芳 = 王芳); others "first last"."""
    if _CJK.search(first + last):
        return f"{last}{first}"
    return " ".join(part for part in (first, last) if part)


def submit(session: Session, key: Open311Key, new: NewRequest, *, appeal_type: str,
           policy: service.Policy, now: datetime) -> Posted:
    """Take the request in as a work order (受理) on the channel open311, with its grid and
    department from the place, in the caller's transaction: all of it or, on any refusal
    (Open311Error, 400), nothing."""
    if not _SERVICE_CODE.fullmatch(new.service_code):
        raise Open311Error("service_code: required, a service_code of GET services")
    try:
        found = service_by_code(session, new.service_code)
    except Missing as exc:
        raise Open311Error(str(exc)) from None  # a field of the request, not the resource
    if new.address_id:
        raise Open311Error("address_id: this jurisdiction keeps no address repository; "
                           "send lat and long, or address_string")
    if (new.lat is None) != (new.long is None):
        raise Open311Error("lat and long: both, or neither")
    if new.lat is None and not new.address_string:
        raise Open311Error("lat and long, or address_string: where the problem is")
    if new.lat is not None and new.long is not None:
        try:
            lat, lon = geo.check_point(new.lat, new.long)
        except geo.GeoError as exc:
            raise Open311Error(f"lat/long: {exc}") from None
        if not geo.in_city(session, lat, lon):
            raise Open311Error("lat/long: outside the area this hotline serves")
    if new.email and not _EMAIL.fullmatch(new.email):
        raise Open311Error("email: an e-mail address")
    if new.media_url and not _URL.fullmatch(new.media_url):
        raise Open311Error("media_url: an http or https URL, at most 500 characters")
    answers = _answers(found, new.attributes)
    words = _answers_in_words(found, answers)
    text = new.description.strip() or f"（未填写描述）{found.service_name}"
    description = f"{text}\n{words}" if words else text
    if len(description) > service.MAX_DESCRIPTION:
        raise Open311Error(f"description: at most {service.MAX_DESCRIPTION - len(words) - 1} "
                           "characters with these attributes")
    kind, code = found.kind_and_code
    try:
        order = service.open_order(
            session, appeal_type=appeal_type, description=description, channel=CHANNEL,
            actor=f"open311:{key.client}"[:50], citizen_phone=new.phone,
            citizen_name=_citizen_name(new.first_name, new.last_name)[:50],
            category_code=code, category_kind=kind, address=new.address_string,
            latitude=new.lat, longitude=new.long, policy=policy, now=now)
    except service.OrderError as exc:
        raise Open311Error(_field_words(str(exc))) from None
    token = secrets.token_hex(16)
    session.add(Open311Request(
        case_number=order.case_number, token=token, key_id=key.id,
        service_code=found.service_code, attributes=answers, email=new.email,
        device_id=new.device_id, account_id=new.account_id, media_url=new.media_url,
        created_at=now))
    session.flush()
    notice = found.notice or f"已受理，案件编号 {order.case_number}。"
    return Posted(order.case_number, token, notice, new.account_id)


def _field_words(message: str) -> str:
    """The order's refusal in the request's field names (citizen_phone -> phone)."""
    for ours, theirs in (("citizen_phone", "phone"), ("citizen_name", "first_name/last_name"),
                         ("address", "address_string"), ("location", "lat/long")):
        if message.startswith(ours):
            return theirs + message[len(ours):]
    return message


# --- reading requests -------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """GET requests' filters as the client sent them (text; checked by `find`)."""

    service_request_id: str | None = None
    service_code: str | None = None
    start_date: str | None = None
    end_date: str | None = None
    status: str | None = None


@dataclass(frozen=True)
class PublicRequest:
    service_request_id: str
    status: str
    status_notes: str
    service_name: str
    service_code: str
    description: str
    agency_responsible: str
    service_notice: str
    requested_datetime: datetime
    updated_datetime: datetime
    expected_datetime: datetime | None
    address: str
    address_id: str
    zipcode: str
    lat: float | None
    long: float | None
    media_url: str


def status_of(state: str) -> str:
    return "closed" if state in CLOSED_STATES else "open"


def _comma_list(text: str, name: str, limit: int) -> list[str]:
    items = [part.strip() for part in text.split(",")]
    if not items or any(not part for part in items):
        raise Open311Error(f"{name}: a comma-separated list without empty items")
    if len(items) > limit:
        raise Open311Error(f"{name}: at most {limit} at a time")
    return list(dict.fromkeys(items))


def find(session: Session, query: Query, *, now: datetime) -> list[PublicRequest]:
    """GET requests: service_request_id (a comma list) overrides every other filter; else
    service_code (a comma list), start_date and end_date (W3C times with zone, both
    included, at most 90 days apart; either alone spans 90 days from it; neither: the last
    90 days), status (open, closed or both). Newest first, at most 1,000."""
    if query.service_request_id is not None:
        ids = _comma_list(query.service_request_id, "service_request_id", MAX_IDS)
        wanted = [i for i in ids if _CASE.fullmatch(i)]  # anything else names no request
        return _public(session, published.orders(session, case_numbers=wanted))
    categories = None
    if query.service_code is not None:
        codes = _comma_list(query.service_code, "service_code", 200)
        known = {s.service_code for s in services(session)}
        for code in codes:
            if code not in known:
                raise Open311Error(f"service_code: no service {code[:20]!r}")
        categories = [split_code(c) for c in codes]
    start = _w3c_time(query.start_date, "start_date") if query.start_date is not None else None
    end = _w3c_time(query.end_date, "end_date") if query.end_date is not None else None
    if start is not None and end is not None:
        if end < start:
            raise Open311Error("end_date: not before start_date")
        if end - start > MAX_RANGE:
            raise Open311Error("start_date and end_date: at most 90 days apart")
    elif start is not None:
        end = start + MAX_RANGE
    elif end is not None:
        start = end - MAX_RANGE
    else:
        start, end = now - MAX_RANGE, now
    states = None
    if query.status is not None:
        wanted_status = _comma_list(query.status, "status", 2)
        if any(s not in STATUSES for s in wanted_status):
            raise Open311Error("status: open, closed, or open,closed")
        states = [s for s in workflow.STATES if status_of(s) in wanted_status]
    return _public(session, published.orders(session, categories=categories, states=states,
                                             since=start, until=end))


def one(session: Session, service_request_id: str) -> PublicRequest:
    found = _public(session, published.orders(
        session, case_numbers=[service_request_id])) if _CASE.fullmatch(service_request_id) \
        else []
    if not found:
        raise Missing(f"service_request_id: no request {service_request_id[:20]!r}")
    return found[0]


def by_token(session: Session, token: str) -> tuple[str, str]:
    """(service_request_id, token) of a request posted here."""
    row = session.scalar(select(Open311Request).where(Open311Request.token == token)) \
        if _TOKEN.fullmatch(token) else None
    if row is None:
        raise Missing(f"token: no request with token {token[:40]!r}")
    return row.case_number, row.token


def _public(session: Session, orders: list[published.PublishedOrder]) -> list[PublicRequest]:
    catalogue_names = {s.service_code: s for s in services(session)}
    names = {(c.kind, c.code): c.name for c in catalogue.categories(session, active_only=False)}
    posted = {r.case_number: r for r in session.scalars(select(Open311Request).where(
        Open311Request.case_number.in_([o.case_number for o in orders])))} if orders else {}
    out = []
    for order in orders:
        code = _service_code(order.category_kind, order.category_code)
        extra = posted.get(order.case_number)
        notes = STATE_NOTES.get(order.state, order.state)
        if order.state == "merged" and order.merged_into:
            notes = f"已并入案件 {order.merged_into} 一并办理"
        own = catalogue_names.get(code)
        out.append(PublicRequest(
            service_request_id=order.case_number, status=status_of(order.state),
            status_notes=notes,
            service_name=names.get((order.category_kind, order.category_code), ""),
            service_code=code,
            description=_shown(order.description) if order.channel == CHANNEL else "",
            agency_responsible=order.department_name,
            service_notice=own.notice if own else "",
            requested_datetime=order.created_at, updated_datetime=order.updated_at,
            expected_datetime=order.expected_at if status_of(order.state) == "open" else None,
            address=order.address, address_id="", zipcode="",
            lat=order.latitude, long=order.longitude,
            media_url=extra.media_url if extra else ""))
    return out


def _shown(text: str) -> str:
    """A description as other clients see it: numbers typed into it masked, and no control
    or format characters."""
    masked = phones.mask_in_text(text)
    return "".join(c for c in masked if c == "\n" or unicodedata.category(c) not in ("Cc", "Cf"))
