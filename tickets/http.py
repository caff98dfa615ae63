"""HTTP adapter of the tickets room: work orders (/api/v1/orders), the survey callback list
(/api/v1/surveys), the catalogue (/api/v1/catalogue) and the city platform's inbound status
updates (/api/v1/exchange/updates). Inputs and outputs are the declared schemas below.

Who is asking comes from accounts.web; a workflow action is taken in one of the caller's
roles; phone numbers (typed into text too) are masked unless the caller may see them; a
department handler (处置部门) sees only their own department's orders.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from flask import abort, current_app, request
from flask_openapi3 import APIBlueprint, Tag
from flask_openapi3.models import RawModel
from pydantic import Field
from sqlalchemy.orm import Session, sessionmaker

from accounts.access import requires
from accounts.service import DEPARTMENT, Identity
from accounts.web import current_identity, phones_shown, reading_personal_data
from core import phones
from core.db import transaction
from core.events import EventBus
from core.schemas import (
    Body,
    BodyInt,
    ErrorBody,
    Latitude,
    Longitude,
    Moment,
    Out,
    Path,
    Query,
    QueryInt,
    Text,
    Time,
)
from tickets import catalogue, deadlines, exchange, service, surveys, workflow
from tickets.service import APPEAL_TYPES, OrderQuery, Policy

_SECURED = [{"bearer": []}]
_ERRORS: dict[int, Any] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody,
                           409: ErrorBody, 503: ErrorBody}
orders_api = APIBlueprint("orders", __name__, url_prefix="/api/v1/orders",
                          abp_tags=[Tag(name="orders")], abp_security=_SECURED,
                          abp_responses=_ERRORS)
surveys_api = APIBlueprint("surveys", __name__, url_prefix="/api/v1/surveys",
                           abp_tags=[Tag(name="surveys")], abp_security=_SECURED,
                           abp_responses=_ERRORS)
catalogue_api = APIBlueprint("catalogue", __name__, url_prefix="/api/v1/catalogue",
                             abp_tags=[Tag(name="catalogue")])
exchange_api = APIBlueprint("exchange", __name__, url_prefix="/api/v1/exchange",
                            abp_tags=[Tag(name="exchange")])
BLUEPRINTS = (orders_api, surveys_api, catalogue_api, exchange_api)
CASE_PATTERN = r"^[0-9]{1,20}$"
MAX_ROW_ID = 2**31 - 1  # a row id is a PostgreSQL integer
PEOPLES_ROLES = tuple(r for r in workflow.ROLES if r != workflow.SYSTEM)


def _sessions() -> sessionmaker[Session]:
    return current_app.extensions["hotline.sessions"]  # type: ignore[no-any-return]


def _policy() -> Policy:
    return Policy.of_app(current_app.extensions)


def _now() -> datetime:
    """The web app's clock (core.clock), never the wall clock directly."""
    return current_app.extensions["hotline.clock"].now()  # type: ignore[no-any-return]


def _who() -> Identity:
    return current_identity()


def _as_role(who: Identity, wanted: str | None) -> str:
    """The role an action is taken in: the one asked for, which the caller must hold."""
    role = wanted or (who.roles[0] if who.roles else "")
    if role not in who.roles:
        abort(403, f"role: {who.name} does not act as {role!r}")
    return role


def _department_scope(who: Identity) -> str | None:
    """The one department whose orders a department handler (and nobody else) may see and
    act on: the department their account is bound to. None: no such limit. A department
    handler bound to no department (a token made by a script, an old api user) sees no
    order at all rather than every order."""
    if DEPARTMENT not in who.roles or not set(who.roles) <= {DEPARTMENT}:
        return None
    if not who.department:
        abort(403, "department: this account is bound to no department; an administrator "
                   "binds it with `hotline users roles NAME --role department --department CODE`")
    return who.department


def _may_see(who: Identity, order: Any) -> None:
    scope = _department_scope(who)
    if scope is not None and order.department_code != scope:
        abort(403, f"case_number: {order.case_number} is not an order of your department")


def _text(text: str, who: Identity) -> str:
    return text if who.see_phone else phones.mask_in_text(text)


# --- shapes -----------------------------------------------------------------------------------


class OrderSummary(Out):
    case_number: str = Field(description="案件编号 YYYYMMDDNNNN: the local day and its count, "
                                         "more than 4 digits after the 9,999th of a day")
    state: Literal[workflow.STATES]  # type: ignore[valid-type]
    version: int = Field(description="for expected_version")
    appeal_type: Literal[tuple(APPEAL_TYPES)]  # type: ignore[valid-type]
    category_code: str
    category_kind: str
    urgency: Literal[service.URGENCIES]  # type: ignore[valid-type]
    description: str = Field(description="numbers typed into it are masked without the "
                                         "privilege to see phones")
    channel: str
    call_id: str
    citizen_phone: str = Field(description="masked (138****8000) without the privilege")
    citizen_name: str
    address: str
    latitude: float | None = Field(description="WGS84")
    longitude: float | None
    grid_code: str = Field(description="单元网格 code")
    department_code: str
    duplicate_of: str = Field(description="a suspected repeat of this order")
    merged_into: str
    repeat_caller: bool
    rework_count: int
    first_call_resolved: bool
    created_at: Moment
    updated_at: Moment
    closed_at: Moment | None


class HistoryEntry(Out):
    seq: int
    action: str
    from_state: str = Field(alias="from")
    to: str
    actor: str
    role: str
    note: str
    at: Moment


class DeadlineView(Out):
    step: str
    round: int
    clock: str
    amount: int
    unit: str
    started_at: Moment
    yellow_at: Moment
    due_at: Moment
    extensions: int
    met_at: Moment | None
    warning: str = Field(description="\"\", yellow or red (预警, 超时)")
    on_time: bool | None


class Attachment(Out):
    kind: str
    sha256: str
    bytes: int


class SurveyView(Out):
    round: int
    state: str
    rating: int | None
    channel: str | None
    outcome: str | None
    call_attempts: int


class CallRecording(Out):
    """The recording's fingerprint; where it lies on disk is never shown."""

    sha256: str | None
    bytes: int | None


class OrderCall(Out):
    call_id: str = Field(description="the call's id (Asterisk Linkedid), as /api/v1/calls has it")
    how: Literal[service.LINK_KINDS] = Field(  # type: ignore[valid-type]
        description="intake: the order was taken in on it; agent: added later; ivr: the "
                    "citizen keyed the case number calling again; migrated: from before")
    linked_at: Moment
    pending: bool = Field(description="the call is still up: its record follows when it ends")
    started_at: Moment | None
    agent: str | None
    outcome: str | None
    talk_seconds: float | None
    recording: CallRecording | None


class WorkOrder(OrderSummary):
    history: list[HistoryEntry]
    deadlines: list[DeadlineView]
    attachments: list[Attachment]
    calls: list[OrderCall]
    surveys: list[SurveyView]
    allowed_actions: list[str]


class OrderPage(Out):
    total: int
    limit: int
    offset: int
    items: list[OrderSummary]


def _summary(order: Any, who: Identity) -> dict[str, Any]:
    view = service.order_view(order, who.see_phone)
    view["description"] = _text(order.description, who)
    return view


def _full_view(session: Session, order: Any, who: Identity) -> dict[str, Any]:
    view = _summary(order, who)
    view["history"] = [{
        "seq": e.seq, "action": e.action, "from": e.from_state, "to": e.to_state,
        "actor": e.actor, "role": e.role, "note": _text(e.note, who), "at": e.at}
        for e in service.history(session, order.case_number)]
    view["deadlines"] = [{
        "step": d.step, "round": d.round, "clock": d.clock, "amount": d.amount, "unit": d.unit,
        "started_at": d.started_at, "yellow_at": d.yellow_at, "due_at": d.due_at,
        "extensions": d.extensions, "met_at": d.met_at, "warning": d.warning,
        "on_time": d.on_time} for d in deadlines.deadlines(session, order.case_number)]
    view["attachments"] = [{"kind": a.kind, "sha256": a.sha256, "bytes": a.bytes}
                           for a in service.attachments(session, order.case_number)]
    view["calls"] = service.calls_of_order(session, order.case_number)
    view["surveys"] = [{"round": s.round, "state": s.state, "rating": s.rating,
                        "channel": s.channel, "outcome": s.outcome,
                        "call_attempts": s.call_attempts}
                       for s in surveys.surveys_of(session, order.id)]
    view["allowed_actions"] = sorted({a for role in who.roles
                                      for a in workflow.allowed(order.state, role)})
    return WorkOrder.model_validate(view).model_dump(mode="json", by_alias=True)


# --- orders -----------------------------------------------------------------------------------


class NewOrder(Body):
    appeal_type: Literal[tuple(APPEAL_TYPES)]  # type: ignore[valid-type]
    description: Text(service.MAX_DESCRIPTION, min_length=1)
    channel: Literal[service.CHANNELS] = "web"  # type: ignore[valid-type]
    citizen_phone: Text(40) = ""
    citizen_name: Text(50) = ""
    category_code: Text(10) = ""
    category_kind: Literal["event", "component"] = "event"
    urgency: Literal[service.URGENCIES] = "normal"  # type: ignore[valid-type]
    address: Text(200) = ""
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    call_id: Text(64) = ""


class OrderHeaders(Query):
    idempotency_key: Text(80) = Field(
        "", alias="Idempotency-Key",
        description="8-80 characters of your choosing, one per order: the same request sent "
                    "again (after a 503 or a lost answer) gets the order the first took in, "
                    "never a second; the same key with another body: 409")


@orders_api.post("", summary="Take in a work order (受理)", responses={201: WorkOrder})
@requires("orders.open")
def open_order(header: OrderHeaders, body: NewOrder) -> Any:
    who = _who()
    _as_role(who, workflow.OPERATOR)
    bus = EventBus(current_app.extensions["hotline.redis"])  # is the call_id a live call?
    recordings_dir = current_app.extensions["hotline.settings"].storage.recordings_dir
    key = header.idempotency_key
    with transaction(_sessions()) as session:
        earlier = service.earlier_request(
            session, actor=who.name, key=key, now=_now(),
            body_sha256=service.request_sha256(body.model_dump(mode="json"))) if key else None
        if earlier is not None:  # sent again: the order it took in, as it stands now
            order = service.get_order(session, earlier)
            view = _full_view(session, order, who)
            phones_shown(session, [order.case_number], what="order")
            return view, 201
        order = service.open_order(
            session, **body.model_dump(exclude={"latitude", "longitude"}),
            latitude=body.latitude, longitude=body.longitude, actor=who.name, bus=bus,
            policy=_policy(), now=_now())
        if body.call_id:  # a call that has ended already: its recording under the case now
            service.link_call(session, order.case_number, body.call_id, actor=who.name,
                              how="intake", bus=bus, recordings_dir=recordings_dir,
                              now=_now())
        if key:
            service.file_request(session, actor=who.name, key=key,
                                 case_number=order.case_number)
        view = _full_view(session, order, who)
        phones_shown(session, [order.case_number], what="order")
    return view, 201


class OrdersQuery(Query):
    state: Literal[workflow.STATES] | None = None  # type: ignore[valid-type]
    appeal_type: Literal[tuple(APPEAL_TYPES)] | None = None  # type: ignore[valid-type]
    department_code: Text(20) | None = None
    grid_prefix: Text(15) | None = None
    citizen_phone: Text(40) | None = Field(
        None, description="any form of the number; needs the privilege to see phones")
    q: Text(100) | None = Field(None, description="text in the description")
    since: Time | None = Field(None, description="taken in at or after this moment")
    until: Time | None = Field(None, description="taken in before this moment")
    limit: QueryInt(1, 500) = 50
    offset: QueryInt(0, 10_000_000) = 0


@orders_api.get("", summary="Search work orders, newest first", responses={200: OrderPage})
@requires("orders.read")
def find_orders(query: OrdersQuery) -> Any:
    who = _who()
    if query.citizen_phone is not None and not who.see_phone:
        abort(403, "citizen_phone: searching by phone needs the privilege to see phones")
    if query.citizen_phone is not None and not phones.normalise_or_empty(query.citizen_phone):
        abort(400, "citizen_phone: a phone number, e.g. 13800138000 or 0451-88888888")
    department = query.department_code
    scope = _department_scope(who)
    if scope is not None:
        if department is not None and department != scope:
            abort(403, "department_code: a department handler sees only their department")
        department = scope
    search = OrderQuery(
        state=query.state, appeal_type=query.appeal_type, department_code=department,
        grid_prefix=query.grid_prefix, citizen_phone=query.citizen_phone, text=query.q,
        since=query.since, until=query.until, limit=query.limit, offset=query.offset)
    with reading_personal_data(_sessions()) as session:
        total, found = service.find_orders(session, search)
        items = [_summary(o, who) for o in found]
        phones_shown(session, [o.case_number for o in found], what="order")
    return OrderPage.model_validate({"total": total, "limit": search.limit,
                                     "offset": search.offset, "items": items}).model_dump(
        mode="json")


class OrderPath(Path):
    case_number: Text(20, pattern=CASE_PATTERN)


@orders_api.get("/<case_number>", summary="One order with its history, clocks and surveys",
                responses={200: WorkOrder})
@requires("orders.read")
def get_order(path: OrderPath) -> Any:
    who = _who()
    with reading_personal_data(_sessions()) as session:
        order = service.get_order(session, path.case_number)
        _may_see(who, order)
        phones_shown(session, [order.case_number], what="order")
        return _full_view(session, order, who)


class ActionPath(Path):
    case_number: Text(20, pattern=CASE_PATTERN)
    action: Literal[tuple(workflow.ACTIONS)]  # type: ignore[valid-type]


class ActionBody(Body):
    role: Literal[PEOPLES_ROLES] | None = Field(  # type: ignore[valid-type]
        None, description="the role to act in; the caller's first role when not given")
    note: Text(2000) = ""
    expected_version: BodyInt(1, 2_000_000_000) | None = Field(
        None, description="refuse (409) if the order changed since this version")
    into: Text(20) = Field("", description="merge: the surviving order")
    amount: BodyInt(1, 1_000_000_000) | None = Field(
        None, description="grant_extension: how much longer, in the running clock's own "
                          "unit (minutes, hours or days); at most its original limit at a time")


@orders_api.post("/<case_number>/actions/<action>",
                 summary="Take a workflow action (立案, 派遣, 签收, 反馈, 结案, 并单, 延期 ...)",
                 responses={200: WorkOrder})
@requires("orders.act")
def take_action(path: ActionPath, body: ActionBody) -> Any:
    case_number, action, who = path.case_number, path.action, _who()
    role = _as_role(who, body.role)
    version, note = body.expected_version, body.note
    with transaction(_sessions()) as session:
        _may_see(who, service.get_order(session, case_number))
        order = service.act(session, case_number, action, actor=who.name, role=role,
                            note=note, expected_version=version, into=body.into,
                            amount=body.amount, policy=_policy(), now=_now())
        view = _full_view(session, order, who)
        phones_shown(session, [order.case_number], what="order")
    return view


class CallLink(Body):
    call_id: Text(64, min_length=1) = Field(
        description="the call's id (Asterisk Linkedid): a finished call, or one still up "
                    "whose record follows when it ends")


@orders_api.post("/<case_number>/calls",
                 summary="Add a later call about the same case to the order (a call belongs "
                         "to at most one order: 409 if another has it)",
                 responses={201: OrderCall, 200: OrderCall})
@requires("orders.open")
def link_call(path: OrderPath, body: CallLink) -> Any:
    """201 when linked, 200 when the call was this order's already."""
    who = _who()
    _as_role(who, workflow.OPERATOR)
    bus = EventBus(current_app.extensions["hotline.redis"])
    recordings_dir = current_app.extensions["hotline.settings"].storage.recordings_dir
    with transaction(_sessions()) as session:
        _may_see(who, service.get_order(session, path.case_number))
        before = {c["call_id"] for c in service.calls_of_order(session, path.case_number)}
        link = service.link_call(session, path.case_number, body.call_id, actor=who.name,
                                 bus=bus, recordings_dir=recordings_dir, now=_now())
        view = next(c for c in service.calls_of_order(session, path.case_number)
                    if c["call_id"] == link.call_id)
    answer = OrderCall.model_validate(view).model_dump(mode="json")
    return answer, 200 if link.call_id in before else 201


class PhotoBytes(RawModel):
    mimetypes = ["image/jpeg", "image/png", "image/webp"]  # noqa: RUF012


@orders_api.post("/<case_number>/photos",
                 summary="Add a photo to an order (处置照片), at most 8 MiB: by a role that may "
                         "act on the order now (403), not once it is finished (409)",
                 responses={201: Attachment, 200: Attachment, 413: ErrorBody, 415: ErrorBody})
@requires("orders.act")
def add_photo(path: OrderPath, raw: PhotoBytes) -> Any:
    """A photo for the order (the department's feedback, 处置反馈照片): the raw image bytes,
    Content-Type image/jpeg, image/png or image/webp. 201 when added, 200 with the one
    already kept when the order has these very bytes."""
    who = _who()
    request.max_content_length = service.MAX_PHOTO_BYTES
    if request.mimetype not in PhotoBytes.mimetypes:
        abort(415, "Content-Type: image/jpeg, image/png or image/webp")
    settings = current_app.extensions["hotline.settings"]
    # Read before the transaction: on SQLite it holds the write lock from its start, and a
    # slow upload must not keep every other writer waiting.
    content = request.get_data(cache=False)
    with transaction(_sessions()) as session:
        _may_see(who, service.get_order(session, path.case_number))
        row, added = service.store_photo(
            session, path.case_number, content, settings.storage.data_dir / "attachments",
            roles=who.roles, now=_now())
        answer = {"kind": row.kind, "sha256": row.sha256, "bytes": row.bytes}
    return answer, 201 if added else 200


# --- surveys ----------------------------------------------------------------------------------


class CallbackItem(Out):
    survey_id: int
    case_number: str
    round: int
    phone: str = Field(description="masked without the privilege to see phones")
    call_attempts: int
    note: str


class CallbackList(Out):
    items: list[CallbackItem]


@surveys_api.get("/callback-list",
                 summary="Surveys the survey line and SMS could not finish (人工回访)",
                 responses={200: CallbackList})
@requires("surveys.read")
def callback_list() -> Any:
    who = _who()
    with reading_personal_data(_sessions()) as session:
        items = [{"survey_id": s.id, "case_number": case, "round": s.round,
                  "phone": service.show_phone(s.phone, who.see_phone),
                  "call_attempts": s.call_attempts, "note": _text(s.note or "", who)}
                 for s, case in surveys.agent_list(session)]
        phones_shown(session, [i["case_number"] for i in items], what="survey")
    return CallbackList.model_validate({"items": items}).model_dump(mode="json")


class SurveyPath(Path):
    survey_id: QueryInt(1, MAX_ROW_ID)


class SurveyResult(Body):
    rating: BodyInt(min(surveys.RATINGS), max(surveys.RATINGS)) | None = Field(
        None, description="1 (very satisfied) to 5 (very dissatisfied), or null if the "
                          "citizen could not be reached")
    note: Text(500) = ""


class SurveyOutcome(Out):
    survey_id: int
    outcome: str


@surveys_api.post("/<survey_id>/result",
                  summary="An agent's callback: the rating, or unreachable",
                  responses={200: SurveyOutcome})
@requires("surveys.record")
def survey_result(path: SurveyPath, body: SurveyResult) -> Any:
    who = _who()
    _as_role(who, workflow.OPERATOR)
    with transaction(_sessions()) as session:
        outcome = surveys.agent_result(session, path.survey_id, body.rating,
                                       actor=who.name, note=body.note, policy=_policy(),
                                       now=_now())
    return {"survey_id": path.survey_id, "outcome": outcome}


# --- catalogue --------------------------------------------------------------------------------


class Category(Out):
    code: str
    kind: str
    name: str


class Department(Out):
    code: str
    name: str


class Catalogue(Out):
    categories: list[Category]
    departments: list[Department]
    appeal_types: list[str]


@catalogue_api.get("", summary="Event and component categories, departments, appeal types",
                   responses={200: Catalogue})
@requires("public")
def read_catalogue() -> Any:
    with _sessions()() as session:
        return Catalogue.model_validate({
            "categories": [{"code": c.code, "kind": c.kind, "name": c.name}
                           for c in catalogue.categories(session)],
            "departments": [{"code": d.code, "name": d.name}
                            for d in catalogue.departments(session)],
            "appeal_types": list(APPEAL_TYPES)}).model_dump(mode="json")


# --- the city platform ------------------------------------------------------------------------


class SignedHeaders(Query):
    idempotency_key: Text(200) = Field("", alias="Idempotency-Key",
                                       description="8-80 characters: one per update")
    timestamp: Text(40) = Field("", alias="X-Hotline-Timestamp",
                                description="Unix seconds when signed")
    signature: Text(200) = Field("", alias="X-Hotline-Signature",
                                 description="sha256=<hex HMAC of timestamp.body>")


class SignedUpdate(RawModel):
    mimetypes = ["application/json"]  # noqa: RUF012


class ExchangeAnswer(Out):
    ok: bool
    case_number: str
    action: str
    state: str
    version: int


class ExchangeRefusal(ErrorBody):
    ok: bool = False
    retry: bool | None = Field(None, description="true: a race; send it again")
    state: str | None = None
    version: int | None = None


@exchange_api.post("/updates",
                   summary="A signed status update from the city platform (idempotent)",
                   responses={200: ExchangeAnswer, **{code: ExchangeRefusal for code in (
                       400, 401, 404, 409, 413, 422)}, 503: ErrorBody})
@requires("public")  # signed with the platform's shared secret: exchange checks it
def inbound_update(header: SignedHeaders, raw: SignedUpdate) -> Any:
    """A status update from the city platform, signed with the shared secret."""
    settings = current_app.extensions["hotline.settings"]
    if (request.content_length or 0) > exchange.MAX_INBOUND_BYTES:
        abort(413, f"body: at most {exchange.MAX_INBOUND_BYTES} bytes")
    body = request.stream.read(exchange.MAX_INBOUND_BYTES + 1)  # chunked: stop one past
    with transaction(_sessions()) as session:
        status, answer = exchange.apply_inbound(
            session, idempotency_key=header.idempotency_key, body_bytes=body,
            timestamp=header.timestamp, signature=header.signature,
            secret=settings.exchange.webhook_secret, now=_now(), policy=_policy())
    if status < 400:
        return ExchangeAnswer.model_validate(answer).model_dump(mode="json"), status
    refusal = {**answer, "detail": answer["error"], "error": _REASONS.get(status, "Error")}
    headers = {"WWW-Authenticate": 'Signature realm="exchange"'} if status == 401 else {}
    return ExchangeRefusal.model_validate(refusal).model_dump(mode="json",
                                                              exclude_none=True), status, headers


_REASONS = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 409: "Conflict",
            413: "Content Too Large", 422: "Unprocessable Content"}
