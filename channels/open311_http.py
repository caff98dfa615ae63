"""HTTP adapter of Open311 GeoReport v2 (channels.open311): the specification's own paths,
fields, formats and errors, so that existing Open311 clients work unchanged.

    GET  /open311/discovery.{format}                    the service discovery document
    GET  /open311/v2/services.{format}                  service list
    GET  /open311/v2/services/{service_code}.{format}   service definition
    POST /open311/v2/requests.{format}                  a service request (form-encoded)
    GET  /open311/v2/requests.{format}                  service requests
    GET  /open311/v2/requests/{service_request_id}.{format}
    GET  /open311/v2/tokens/{token}.{format}

`format` is xml or json, chosen by the path's suffix; everything is UTF-8, every time W3C
with its zone. Errors are the specification's: 404 for a missing resource, 403 for a missing
or wrong api_key, 400 for everything else (an oversized body too), as
`<errors><error><code/><description/></error></errors>` or `[{"code", "description"}]`;
429 (with Retry-After) over a rate limit, per client address and, for posting, per key.

Reading is open to anyone; posting needs an api_key from `hotline channels open311-key`.
The route table calls the routes PUBLIC: the key is the specification's guard, checked here
before the form is validated (a 403 whatever else is wrong).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from flask import Flask, Response, current_app, g, request
from flask_openapi3 import APIBlueprint, Tag
from flask_openapi3.models import MediaType, RequestBody
from pydantic import BeforeValidator, ConfigDict, Field, RootModel, ValidationError
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.exceptions import HTTPException

from accounts.access import PUBLIC, requires
from channels import open311
from core import limits
from core.config import Settings
from core.db import transaction
from core.errors import HotlineError
from core.schemas import Out, Path, Query, Text, clean_text
from tickets.service import Policy

FORM = "application/x-www-form-urlencoded"
CHANGESET = datetime(2026, 11, 30, tzinfo=UTC)  # the discovery document's last change
XML_TYPE, JSON_TYPE = "text/xml; charset=utf-8", "application/json; charset=utf-8"
MAX_FIELDS = 100  # form fields in one POST: the spec's dozen and some attributes
MAX_ATTRIBUTES = 40
_ATTRIBUTE_FIELD = re.compile(r"attribute\[([^\[\]]{1,40})\](\[\])?")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_ITEM_TAGS = {"services": "service", "attributes": "attribute", "values": "value",
              "endpoints": "endpoint", "formats": "format", "service_requests": "request",
              "errors": "error"}


def _xml_doc(description: str) -> dict[str, Any]:
    return {"content": {"text/xml": {"schema": {"type": "string", "description": description}}}}


open311_api = APIBlueprint(
    "open311", __name__, url_prefix="/open311",
    abp_tags=[Tag(name="open311", description="Open311 GeoReport v2 "
                  "(http://wiki.open311.org/GeoReport_v2): XML or JSON by the path's suffix")])
BLUEPRINTS = (open311_api,)


def init_app(app: Flask) -> None:
    """The Open311 routes, and no CSRF token for them: a post carries its api_key and no
    one's session (the routes never look at who is signed in)."""
    app.register_api(open311_api)
    app.extensions["csrf"].exempt(open311_api)


def _settings() -> Settings:
    return current_app.extensions["hotline.settings"]  # type: ignore[no-any-return]


def _sessions() -> sessionmaker[Session]:
    return current_app.extensions["hotline.sessions"]  # type: ignore[no-any-return]


def _now() -> datetime:
    return current_app.extensions["hotline.clock"].now()  # type: ignore[no-any-return]


def _zone() -> ZoneInfo:
    return ZoneInfo(_settings().calendar.timezone)


def _w3c(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(_zone()).isoformat(timespec="seconds")


# --- rendering ----------------------------------------------------------------------------------


def _format() -> str:
    wanted = (request.view_args or {}).get("format")
    return "json" if wanted == "json" else "xml"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else _NOT_XML.sub("", str(value))


def _element(parent: ET.Element, tag: str, value: Any) -> None:
    node = ET.SubElement(parent, tag)
    _fill(node, tag, value)


def _fill(node: ET.Element, tag: str, value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _element(node, key, item)
    elif isinstance(value, list):
        for item in value:
            _element(node, _ITEM_TAGS[tag], item)
    else:
        node.text = _text(value)


def render(root: str, value: Any, status: int = 200, fmt: str | None = None,
           headers: dict[str, str] | None = None) -> Response:
    """`value` in the requested format: XML under `root` (a list's items named by
    _ITEM_TAGS), or JSON as it is (arrays stay arrays, even of one)."""
    fmt = fmt or _format()
    if fmt == "json":
        body = json.dumps(value, ensure_ascii=False).encode()  # the spec's order of fields
        response = Response(body, status, content_type=JSON_TYPE)
    else:
        node = ET.Element(root)
        _fill(node, root, value)
        body = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(node, encoding="utf-8")
        response = Response(body, status, content_type=XML_TYPE)
    for name, header in (headers or {}).items():
        response.headers[name] = header
    return response


def _errors(status: int, description: str, headers: dict[str, str] | None = None) -> Response:
    return render("errors", [{"code": status, "description": description}], status,
                  headers=headers)


def _spec_status(status: int) -> int:
    """The specification's status for an error: 404 and 403 as they are, 400 for every
    other refusal; 429 and 503 keep theirs (a client should come back later)."""
    return status if status in (403, 404, 429, 503) else 400


@open311_api.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    description = error.description or ""
    if error.response is not None:  # the schema's refusal, rendered for the JSON API
        status = error.response.status_code
        try:
            description = error.response.get_json()["detail"]
        except (TypeError, KeyError, ValueError):
            description = "invalid request"
    if status >= 500 and status != 503:
        raise error
    if status == 413:
        description = f"body: at most {_settings().open311.max_post_bytes} bytes"
    if status == 429:
        description = f"too many requests: at most {description}; try again later"
    headers = {k: v for k, v in error.get_headers() if k.lower() == "retry-after"}
    return _errors(_spec_status(status), description, headers)


@open311_api.after_request
def _spec_errors(response: Response) -> Response:
    """Refusals made before a view runs (a path or query the schema refuses: flask-openapi3
    answers them itself) come as the JSON API's {"error", "detail"}: in the spec's body."""
    if response.status_code < 400 or response.mimetype != "application/json":
        return response
    body = response.get_json(silent=True)
    if not isinstance(body, dict) or "detail" not in body:
        return response
    kept = {k: v for k, v in response.headers.items() if k.lower() == "retry-after"}
    return _errors(_spec_status(response.status_code), str(body["detail"]), kept)


@open311_api.errorhandler(HotlineError)
def _domain_error(error: HotlineError) -> Response:
    if error.status >= 500 and error.status != 503:
        raise error
    return _errors(_spec_status(error.status), str(error))


# --- the guard: addresses' rate, and for posting the body and the api_key ----------------------


@open311_api.before_request
def _guard() -> None:
    settings = _settings().open311
    limits.enforce(settings.address_rate, scope="open311-address")
    wanted = request.values.get("jurisdiction_id", "") if request.method == "GET" else ""
    if request.method == "POST":
        request.max_content_length = settings.max_post_bytes
        if request.mimetype != FORM:
            raise open311.Open311Error(f"Content-Type: {FORM} (UTF-8)")
        raw = request.get_data(cache=True)  # too large: 413, answered as a 400
        try:
            parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict",
                      max_num_fields=MAX_FIELDS)
        except UnicodeDecodeError:
            raise open311.Open311Error("body: not UTF-8") from None
        except ValueError:
            raise open311.Open311Error(f"body: at most {MAX_FIELDS} fields") from None
        wanted = request.form.get("jurisdiction_id", "")
        with _sessions()() as session:
            key = open311.key_for(session, request.form.get("api_key", ""))  # 403
            session.expunge(key)
        g.open311_key = key
        limits.enforce(settings.post_rate, scope="open311-key", key=key.id)
    if settings.jurisdiction_id and wanted and wanted != settings.jurisdiction_id:
        raise open311.Open311Error(
            f"jurisdiction_id: this endpoint serves {settings.jurisdiction_id!r} only")


# --- shapes -------------------------------------------------------------------------------------

Format = Literal["xml", "json"]


class FormatPath(Path):
    format: Format = Field(description="xml or json")


class JurisdictionQuery(Query):
    jurisdiction_id: Text(100) | None = Field(
        None, description="needed only when an endpoint serves several jurisdictions")


class Endpoint(Out):
    specification: str
    url: str
    changeset: str
    type: Literal["production", "test"]
    formats: list[str]


class Discovery(Out):
    model_config = ConfigDict(openapi_extra=_xml_doc("<discovery>…</discovery>"))

    changeset: str
    contact: str
    key_service: str
    endpoints: list[Endpoint]


class ServiceOut(Out):
    service_code: str = Field(description="the category code: 0102 for an event, C0101 for "
                                          "a component (部件)")
    service_name: str
    description: str
    metadata: bool = Field(description="true: GET services/{service_code} has attributes")
    type: Literal["realtime", "batch", "blackbox"]
    keywords: str = Field(description="comma-separated")
    group: str = Field(description="the category's top class")


class ServiceList(RootModel[list[ServiceOut]]):
    model_config = ConfigDict(openapi_extra=_xml_doc("<services><service>…</service></services>"))


class ValueOut(Out):
    key: str
    name: str


class AttributeOut(Out):
    variable: bool
    code: str
    datatype: Literal[open311.DATATYPES]  # type: ignore[valid-type]
    required: bool
    datatype_description: str | None
    order: int
    description: str
    values: list[ValueOut]


class Definition(Out):
    model_config = ConfigDict(openapi_extra=_xml_doc(
        "<service_definition><service_code/><attributes>…</attributes></service_definition>"))

    service_code: str
    attributes: list[AttributeOut]


class PostedOut(Out):
    service_request_id: str | None = Field(None, description="the case number (案件编号)")
    token: str | None = Field(None, description="only with open311.answer_with_token, "
                                                "instead of the id")
    service_notice: str
    account_id: str | None


class PostedList(RootModel[list[PostedOut]]):
    model_config = ConfigDict(openapi_extra=_xml_doc(
        "<service_requests><request>…</request></service_requests>"))


class RequestOut(Out):
    service_request_id: str
    status: Literal["open", "closed"]
    status_notes: str = Field(description="the workflow's state in words")
    service_name: str
    service_code: str
    description: str = Field(description="only of requests posted over Open311, numbers "
                                         "masked")
    agency_responsible: str = Field(description="the department (处置部门)")
    service_notice: str
    requested_datetime: str
    updated_datetime: str
    expected_datetime: str | None = Field(description="when the current step is due")
    address: str
    address_id: str
    zipcode: str
    lat: float | None
    long: float | None
    media_url: str


class RequestList(RootModel[list[RequestOut]]):
    model_config = ConfigDict(openapi_extra=_xml_doc(
        "<service_requests><request>…</request></service_requests>"))


class TokenOut(Out):
    service_request_id: str
    token: str


class TokenList(RootModel[list[TokenOut]]):
    model_config = ConfigDict(openapi_extra=_xml_doc(
        "<service_requests><request>…</request></service_requests>"))


class ErrorOut(Out):
    code: int
    description: str


class ErrorList(RootModel[list[ErrorOut]]):
    model_config = ConfigDict(openapi_extra=_xml_doc(
        "<errors><error><code/><description/></error></errors>"))


_ERRORS: dict[int, Any] = {400: ErrorList, 404: ErrorList, 429: ErrorList}


# --- discovery and services --------------------------------------------------------------------


@open311_api.get("/discovery.<format>", summary="Open311 service discovery",
                 responses={200: Discovery, **_ERRORS})
@requires(PUBLIC)
def discovery(path: FormatPath) -> Response:
    settings = _settings().open311
    url = settings.public_url or request.host_url.rstrip("/") + "/open311/v2"
    changeset = _w3c(CHANGESET) or ""
    document = Discovery.model_validate({
        "changeset": changeset, "contact": settings.contact,
        "key_service": settings.key_service or "hotline channels open311-key NAME",
        "endpoints": [{"specification": open311.SPECIFICATION, "url": url,
                       "changeset": changeset, "type": "production",
                       "formats": ["text/xml", "application/json"]}]}).model_dump()
    return render("discovery", document)


def _service(found: open311.Service) -> dict[str, Any]:
    return {"service_code": found.service_code, "service_name": found.service_name,
            "description": found.description, "metadata": found.metadata,
            "type": "realtime", "keywords": ", ".join(found.keywords), "group": found.group}


@open311_api.get("/v2/services.<format>", summary="Open311 service list",
                 responses={200: ServiceList, **_ERRORS})
@requires(PUBLIC)
def service_list(path: FormatPath, query: JurisdictionQuery) -> Response:
    with _sessions()() as session:
        found = open311.services(session)
    return render("services", ServiceList.model_validate(
        [_service(s) for s in found]).model_dump())


class ServicePath(FormatPath):
    service_code: Text(20)


@open311_api.get("/v2/services/<service_code>.<format>", summary="Open311 service definition",
                 responses={200: Definition, **_ERRORS})
@requires(PUBLIC)
def service_definition(path: ServicePath, query: JurisdictionQuery) -> Response:
    with _sessions()() as session:
        found = open311.service_by_code(session, path.service_code)  # 404
    return render("service_definition", Definition.model_validate({
        "service_code": found.service_code,
        "attributes": [{"variable": a.variable, "code": a.code, "datatype": a.datatype,
                        "required": a.required,
                        "datatype_description": a.datatype_description or None,
                        "order": a.order, "description": a.description,
                        "values": [{"key": k, "name": n} for k, n in a.values]}
                       for a in found.attributes]}).model_dump())


# --- posting a request -------------------------------------------------------------------------


def _blank_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


Coordinate = Annotated[float | None, BeforeValidator(_blank_none)]


class RequestForm(Query):
    """POST requests, form-encoded; attribute[CODE]=value (attribute[CODE][]=value for a
    multivaluelist) answer the service definition's attributes."""

    model_config = ConfigDict(extra="allow")

    api_key: Text(200) = Field("", description="from `hotline channels open311-key` (403 "
                                               "without one in force)")
    jurisdiction_id: Text(100) = ""
    service_code: Text(20, min_length=1) = Field(description="from GET services")
    lat: Coordinate = Field(None, ge=-90, le=90, allow_inf_nan=False,
                            description="WGS84; with long, or address_string")
    long: Coordinate = Field(None, ge=-180, le=180, allow_inf_nan=False, description="WGS84")
    address_string: Text(200) = ""
    address_id: Text(100) = Field("", description="not kept here: 400")
    email: Text(200) = ""
    device_id: Text(100) = ""
    account_id: Text(100) = ""
    first_name: Text(50) = ""
    last_name: Text(50) = ""
    phone: Text(40) = Field("", description="never shown to any client")
    description: Text(4000) = ""
    media_url: Text(500) = Field("", description="http or https")


def _attributes() -> dict[str, list[str]]:
    """attribute[CODE] and attribute[CODE][] fields of the form, by code."""
    found: dict[str, list[str]] = {}
    for name in request.form:
        if not name.startswith("attribute"):
            continue
        match = _ATTRIBUTE_FIELD.fullmatch(name)
        if match is None:
            raise open311.Open311Error(f"{name[:50]}: attribute[CODE]=value, or "
                                       "attribute[CODE][]=value for several")
        values = request.form.getlist(name)
        for value in values:
            try:
                clean_text(value)
            except ValueError as exc:
                raise open311.Open311Error(f"attribute[{match.group(1)}]: {exc}") from None
            if len(value) > 2000:
                raise open311.Open311Error(f"attribute[{match.group(1)}]: at most 2000 "
                                           "characters")
        found.setdefault(match.group(1), []).extend(values)
    if len(found) > MAX_ATTRIBUTES:
        raise open311.Open311Error(f"attribute: at most {MAX_ATTRIBUTES}")
    return found


def _form() -> RequestForm:
    """The form, checked by RequestForm as it was sent: text stays text (flask-openapi3's own
    form reading would turn "13800138000" into a number first)."""
    try:
        return RequestForm.model_validate({name: request.form.get(name) for name in request.form
                                           if not name.startswith("attribute")})
    except ValidationError as exc:
        problem = exc.errors(include_url=False, include_input=False)[0]
        name = ".".join(str(p) for p in problem["loc"])
        words = "required" if problem["type"] == "missing" else problem["msg"]
        raise open311.Open311Error(f"{name}: {words}") from None


@open311_api.post("/v2/requests.<format>", summary="Open311 POST service request",
                  responses={200: PostedList, 403: ErrorList, **_ERRORS})
@requires(PUBLIC)  # the api_key is the guard (_guard): 403 without one in force
def post_request(path: FormatPath) -> Response:
    settings = _settings()
    form = _form()
    new = open311.NewRequest(
        service_code=form.service_code, lat=form.lat, long=form.long,
        address_string=form.address_string, address_id=form.address_id, email=form.email,
        device_id=form.device_id, account_id=form.account_id, first_name=form.first_name,
        last_name=form.last_name, phone=form.phone, description=form.description,
        media_url=form.media_url, attributes=_attributes())
    with transaction(_sessions()) as session:
        posted = open311.submit(session, g.open311_key, new,
                                appeal_type=settings.open311.appeal_type,
                                policy=Policy.of_app(current_app.extensions), now=_now())
    answer: dict[str, Any] = {"service_notice": posted.service_notice,
                              "account_id": posted.account_id or None}
    if settings.open311.answer_with_token:
        answer = {"token": posted.token, **answer}
    else:
        answer = {"service_request_id": posted.service_request_id, **answer}
    checked = PostedList.model_validate([answer]).model_dump(exclude_none=True)
    for item in checked:  # account_id is in every answer, null when none was sent
        item.setdefault("account_id", None)
    return render("service_requests", checked)


# The form, in the document: the view reads it itself (_form), so flask-openapi3 cannot know it.
open311_api.paths["/open311/v2/requests.{format}"].post.requestBody = RequestBody(
    required=True, content={FORM: MediaType(schema=RequestForm.model_json_schema())})


# --- reading requests --------------------------------------------------------------------------


class RequestsQuery(JurisdictionQuery):
    service_request_id: Text(20_000) | None = Field(
        None, description="comma-separated case numbers; overrides every other filter")
    service_code: Text(4_000) | None = Field(None, description="comma-separated")
    start_date: Text(40) | None = Field(None, description="W3C time with zone, included")
    end_date: Text(40) | None = Field(None, description="W3C time with zone, included; at "
                                                        "most 90 days after start_date")
    status: Text(20) | None = Field(None, description="open, closed or open,closed")


def _request(found: open311.PublicRequest) -> dict[str, Any]:
    return {
        "service_request_id": found.service_request_id, "status": found.status,
        "status_notes": found.status_notes, "service_name": found.service_name,
        "service_code": found.service_code, "description": found.description,
        "agency_responsible": found.agency_responsible,
        "service_notice": found.service_notice,
        "requested_datetime": _w3c(found.requested_datetime),
        "updated_datetime": _w3c(found.updated_datetime),
        "expected_datetime": _w3c(found.expected_datetime), "address": found.address,
        "address_id": found.address_id, "zipcode": found.zipcode, "lat": found.lat,
        "long": found.long, "media_url": found.media_url}


@open311_api.get("/v2/requests.<format>",
                 summary="Open311 GET service requests (default: the last 90 days, at most "
                         "1,000)", responses={200: RequestList, **_ERRORS})
@requires(PUBLIC)
def request_list(path: FormatPath, query: RequestsQuery) -> Response:
    wanted = open311.Query(service_request_id=query.service_request_id,
                           service_code=query.service_code, start_date=query.start_date,
                           end_date=query.end_date, status=query.status)
    with _sessions()() as session:
        found = open311.find(session, wanted, now=_now())
    return render("service_requests", RequestList.model_validate(
        [_request(r) for r in found]).model_dump())


class RequestPath(FormatPath):
    service_request_id: Text(40)


@open311_api.get("/v2/requests/<service_request_id>.<format>",
                 summary="Open311 GET service request", responses={200: RequestList, **_ERRORS})
@requires(PUBLIC)
def request_one(path: RequestPath, query: JurisdictionQuery) -> Response:
    with _sessions()() as session:
        found = open311.one(session, path.service_request_id)  # 404
    return render("service_requests", RequestList.model_validate(
        [_request(found)]).model_dump())


class TokenPath(FormatPath):
    token: Text(64)


@open311_api.get("/v2/tokens/<token>.<format>", summary="Open311 GET service_request_id "
                 "from a token", responses={200: TokenList, **_ERRORS})
@requires(PUBLIC)
def token_lookup(path: TokenPath, query: JurisdictionQuery) -> Response:
    with _sessions()() as session:
        case_number, token = open311.by_token(session, path.token)  # 404
    return render("service_requests", TokenList.model_validate(
        [{"service_request_id": case_number, "token": token}]).model_dump())
