"""The citizens' portal on the web (公众服务门户): its pages under /portal and their JSON
endpoints under /api/v1/portal (in the API document), all public: a citizen has no account,
their phone number is confirmed by an SMS code and their order is reached by a private link.

Thin: each endpoint checks its input (declared pydantic models; the photos by their content
in channels.portal), counts its rate limits (core.limits: per address, and per phone number
for codes) before anything is stored, and calls channels.portal in one transaction. Forms
are multipart (photos) and carry the CSRF token of the page they came from.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from flask import (
    Blueprint,
    abort,
    current_app,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, BeforeValidator, Field, ValidationError
from sqlalchemy.orm import Session, sessionmaker

from accounts.access import PUBLIC, requires
from channels import portal
from core import limits
from core.config import Portal as Rules
from core.db import transaction
from core.events import EventBus
from core.schemas import ErrorBody, Out, Query, Text
from tickets import catalogue, geo, maps, service
from tickets.policy import Policy

portal_pages = Blueprint("portal", __name__, url_prefix="/portal", template_folder="templates")
# a refusal names the field (400), no such link (404), a finished order (409), a photo too
# large (413) or not a photo (415), too many requests (429 with Retry-After)
_ERRORS: dict[int, Any] = {status: ErrorBody for status in (400, 404, 409, 413, 415, 429, 503)}
portal_api = APIBlueprint("portal_api", __name__, url_prefix="/api/v1/portal",
                          abp_tags=[Tag(name="portal", description="the citizens' portal "
                                        "(公众服务门户): public, no account")],
                          abp_responses=_ERRORS)
TOKEN = re.compile(r"[A-Za-z0-9_-]{20,64}")
SHA256 = re.compile(r"[0-9a-f]{64}")
FORM_MARGIN = 256 << 10  # the form's text around its photos
UPLOADS = ("portal_api.submit", "portal_api.add_info")


# How the public timeline words each public step (channels.portal.PUBLIC_STEPS), in the
# page's language (called per request)
def step_words() -> dict[str, str]:
    return {
        "received": _("Your report was received"),
        "verifying": _("An inspector is checking on site"),
        "accepted": _("Accepted as a case"),
        "dispatched": _("Sent to the department responsible"),
        "handling": _("The department is handling it"),
        "redispatching": _("Being sent to the right department"),
        "extended": _("The time to handle it was extended"),
        "parked": _("Planned for later work"),
        "handled": _("The department reports it handled"),
        "checking": _("An inspector is checking the result"),
        "rework": _("Sent back to be handled again"),
        "checked": _("The result was checked"),
        "closed": _("Finished"),
        "rated": _("Rated"),
        "reopened": _("Reopened after your rating"),
        "deferred": _("Postponed"),
        "voided": _("Not taken up (outside the hotline's remit or a repeat)"),
        "merged": _("Handled together with a report of the same problem"),
        "citizen_info": _("You added information"),
    }


def state_words() -> dict[str, str]:
    return {
        "intake": _("Received"), "verifying": _("Being checked"), "opened": _("Accepted"),
        "dispatched": _("Sent to a department"), "handling": _("Being handled"),
        "reported": _("Handled, being checked"), "checking": _("Handled, being checked"),
        "checked": _("Handled, being checked"), "closed": _("Finished"),
        "evaluated": _("Closed and rated"), "parked": _("Planned for later"),
        "deferred": _("Postponed"), "voided": _("Not taken up"),
        "merged": _("Handled with another report"),
    }


def rating_words() -> dict[int, str]:
    return {1: _("Very satisfied"), 2: _("Satisfied"), 3: _("Fairly satisfied"),
            4: _("Dissatisfied"), 5: _("Very dissatisfied")}


def appeal_words() -> dict[str, str]:
    return {"complaint": _("Report a problem (complaint)"),
            "report": _("Report a violation"), "help": _("Ask for help"),
            "suggestion": _("A suggestion"), "enquiry": _("A question"), "praise": _("Praise")}


def _sessions() -> sessionmaker[Session]:
    return current_app.extensions["hotline.sessions"]  # type: ignore[no-any-return]


def _now() -> datetime:
    return current_app.extensions["hotline.clock"].now()  # type: ignore[no-any-return]


def _rules() -> Rules:
    return current_app.extensions["hotline.settings"].portal  # type: ignore[no-any-return]


def _secret() -> str:
    return str(current_app.extensions["hotline.settings"].accounts.session_secret)


def _attachments() -> Path:
    return current_app.extensions["hotline.settings"].storage.data_dir / "attachments"  # type: ignore[no-any-return]


def _policy() -> Policy:
    return Policy.of_app(current_app.extensions)


def _token(token: str) -> str:
    if not TOKEN.fullmatch(token):
        abort(404, "link: no report has this link")
    return token


def _every_request() -> None:
    """Every portal request counts against the address's limit; an upload may be larger
    than the app's 1 MiB (set before the CSRF check reads the form: the app's first hook)."""
    if request.blueprint not in ("portal", "portal_api"):
        return
    rules = _rules()
    if request.endpoint in UPLOADS:
        request.max_content_length = rules.max_photos * rules.photo_max_bytes + FORM_MARGIN
    limits.enforce(rules.requests_per_address, scope="portal")
    if request.method == "POST" and request.mimetype == "multipart/form-data" and (
            any(not key for key in request.form) or any(not key for key in request.files)):
        # Flask-WTF's CSRF check, next, fails with a 500 on a field without a name
        abort(400, "form: every field needs a name")


portal_pages.record_once(
    lambda state: state.app.before_request_funcs.setdefault(None, []).insert(0, _every_request))


@contextlib.contextmanager
def _filing() -> Iterator[list[Path]]:
    """The photo files a transaction writes, removed again if it fails: no orphan files."""
    written: list[Path] = []
    try:
        yield written
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


# --- form fields ------------------------------------------------------------------------------


def _blank_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


FormLatitude = Annotated[Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)] | None,
                         BeforeValidator(_blank_none)]
FormLongitude = Annotated[Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)] | None,
                          BeforeValidator(_blank_none)]


class ReportForm(BaseModel):
    """A report (multipart/form-data); `photos` are files (0-6: JPEG, PNG or WebP)."""

    category: Text(30, min_length=1) = Field(description="a plain-language choice, "
                                                          "'event:0102'")
    appeal_type: Literal[catalogue.APPEAL_TYPES] = "complaint"  # type: ignore[valid-type]
    description: Text(service.MAX_DESCRIPTION, min_length=1)
    address: Text(200) = ""
    latitude: FormLatitude = None
    longitude: FormLongitude = None
    phone: Text(30, min_length=1) = Field(description="a mainland mobile number")
    share_location: bool = Field(False, description="keep the photos' GPS location")


class CodeForm(BaseModel):
    code: Text(12, min_length=1) = Field(description="the 6 digits sent by SMS")


class InfoForm(BaseModel):
    note: Text(portal.MAX_NOTE) = ""
    share_location: bool = False


class RatingForm(BaseModel):
    rating: Annotated[int, Field(ge=1, le=5)] = Field(
        description="1 very satisfied .. 5 very dissatisfied")


def _form(model: type[BaseModel]) -> Any:
    """The form's fields as `model` declares them; a 400 naming the first wrong field."""
    data = {k: v for k, v in request.form.items() if k in model.model_fields}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        name = ".".join(str(p) for p in first["loc"])
        message = "required" if first["type"] == "missing" else first["msg"]
        abort(400, f"{name}: {message}")


def _photos(share_location: bool) -> list[bytes]:
    """The form's photos, each checked by its content and re-encoded (channels.portal)."""
    rules = _rules()
    files = [f for f in request.files.getlist("photos") if f and (f.filename or f.mimetype)]
    if len(files) > rules.max_photos:
        abort(400, f"photos: at most {rules.max_photos}")
    cleaned = []
    for number, upload in enumerate(files, 1):
        content = upload.read(rules.photo_max_bytes + 1)
        cleaned.append(portal.clean_photo(content, number=number,
                                          share_location=share_location, rules=rules))
    return cleaned


def _multipart() -> None:
    if request.mimetype != "multipart/form-data":
        abort(415, "Content-Type: multipart/form-data (the portal's forms)")


def _doc_form(model: type[BaseModel], files: bool) -> dict[str, Any]:
    """The request body as the document shows it (the form is read by hand: the library's
    form parsing turns "13800138000" into a number)."""
    schema = model.model_json_schema()
    if files:
        schema["properties"]["photos"] = {"type": "array", "maxItems": 6, "items": {
            "type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": schema}}}}


# --- the pages ----------------------------------------------------------------------------------


def _english() -> bool:
    return str(get_locale() or "").startswith("en")


@portal_pages.get("")
@requires(PUBLIC)
def report_page() -> Any:
    """Report a problem: plain-language groups, description, photos, a pin or an address,
    the phone number for the code."""
    english = _english()
    with _sessions()() as session:
        offered = [(g.en if english else g.title,
                    [(c.value, c.en if english else c.label) for c in g.choices])
                   for g in portal.groups(session)]
    return render_template("portal/report.html", groups=offered, appeal_words=appeal_words(),
                           map=maps.page_settings(), rules=_rules())


def _message(title: str, text: str, status: int) -> Any:
    return render_template("portal/message.html", title=title, text=text), status


@portal_pages.get("/confirm/<token>")
@requires(PUBLIC)
def confirm_page(token: str) -> Any:
    """Type the code sent to the phone."""
    if not TOKEN.fullmatch(token):
        return _message(_("Link not found"), _("This link has expired or was used."), 404)
    try:
        with _sessions()() as session:
            phone, expires = portal.draft_phone(session, token, _now())
    except portal.LinkNotFound:
        return _message(_("Link not found"), _("This link has expired or was used."), 404)
    return render_template("portal/confirm.html", token=token, phone=portal.public_phone(phone),
                           expires=expires)


@portal_pages.get("/track/<token>")
@requires(PUBLIC)
def track_page(token: str) -> Any:
    """The order's public timeline; add information while open, rate it when closed."""
    if not TOKEN.fullmatch(token):
        return _message(_("Link not found"), _("No report has this link."), 404)
    try:
        with _sessions()() as session:
            seen = portal.track(session, token)
            own = portal.own_photos(session, token)
    except portal.LinkNotFound:
        return _message(_("Link not found"), _("No report has this link."), 404)
    return render_template("portal/track.html", token=token, seen=seen, own_photos=own,
                           category=seen.category[1 if _english() else 0],
                           step_words=step_words(), state_words=state_words(),
                           rating_words=rating_words(), rules=_rules(),
                           new=request.args.get("new") == "1")


@portal_pages.get("/track/<token>/photos/<sha256>")
@requires(PUBLIC)
def own_photo(token: str, sha256: str) -> Any:
    """A thumbnail of a photo the citizen sent, only through their own tracking link: any
    other photo (a department's, another order's) is a 404 like a wrong link."""
    if not TOKEN.fullmatch(token) or not SHA256.fullmatch(sha256):
        abort(404, "photo: no such photo")
    try:
        with _sessions()() as session:
            thumbnail = portal.own_photo_thumbnail(session, token, sha256)
    except portal.LinkNotFound:
        abort(404, "photo: no such photo")
    response = send_file(io.BytesIO(thumbnail), mimetype="image/jpeg")
    response.headers["Cache-Control"] = "private, max-age=86400"  # the link's holder only
    return response


# --- the endpoints ------------------------------------------------------------------------------


class TokenPath(BaseModel):
    token: Text(64, min_length=20, pattern=r"^[A-Za-z0-9_-]+$")


class Submitted(Out):
    confirm_url: str
    phone: str = Field(description="masked, as the page shows it back")
    expires_at: str


class ConfirmedOut(Out):
    case_number: str
    tracking_url: str


class Step(Out):
    kind: str
    at: str
    department: str
    note: str


class TrackingOut(Out):
    case_number: str
    state: str
    category: str
    description: str
    address: str
    created_at: str
    photos: int
    may_add: bool
    may_rate: bool
    rating: int | None
    steps: list[Step]


class Place(Query):
    lat: Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
    lon: Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]


class PlaceOut(Out):
    grid_code: str
    grid_name: str


class Outcome(Out):
    outcome: str


@portal_api.post("/reports", summary="Report a problem (draft): the code goes by SMS",
                 responses={201: Submitted}, openapi_extensions=_doc_form(ReportForm, True))
@requires(PUBLIC)
def submit() -> Any:
    """A report waiting for its SMS code; nothing becomes an order until the code is
    right. 400 names the field, 413 a photo too large, 415 not a photo, 429 too many."""
    _multipart()
    rules = _rules()
    form: ReportForm = _form(ReportForm)
    limits.enforce(rules.reports_per_address, scope="portal-report")
    try:
        phone = portal.mobile(form.phone)
    except portal.PortalError as exc:
        abort(400, str(exc))
    limits.enforce(rules.codes_per_phone, scope="portal-code", key=phone)
    if (form.latitude is None) != (form.longitude is None):
        abort(400, "location: give both latitude and longitude, or neither")
    photos = _photos(form.share_location)
    lat = lon = None
    with transaction(_sessions()) as session:
        if form.latitude is not None and form.longitude is not None:
            try:
                lat, lon = maps.stored_point(session, form.latitude, form.longitude)
            except geo.GeoError as exc:
                abort(400, f"location: {exc}")
        done = portal.submit(session, portal.Report(
            appeal_type=form.appeal_type, category=form.category, description=form.description,
            phone=phone, address=form.address, latitude=lat, longitude=lon),
            photos, rules=rules, secret=_secret(), now=_now())
    return Submitted(confirm_url=url_for("portal.confirm_page", token=done.token),
                     phone=portal.public_phone(done.phone),
                     expires_at=done.expires_at.isoformat()).model_dump(), 201


@portal_api.post("/reports/<token>/code", summary="Confirm a report with its SMS code",
                 responses={201: ConfirmedOut}, openapi_extensions=_doc_form(CodeForm, False))
@requires(PUBLIC)
def confirm(path: TokenPath) -> Any:
    """The right code makes the work order and answers its case number and private
    tracking link; a wrong one is a 400 with the attempts left, the last one a 404 (the
    report is gone)."""
    form: CodeForm = _form(CodeForm)
    bus = EventBus(current_app.extensions["hotline.redis"])
    with _filing() as written, transaction(_sessions()) as session:
        done = portal.confirm(
            session, path.token, form.code, rules=_rules(), secret=_secret(),
            tracking_link=lambda t: url_for("portal.track_page", token=t, _external=True),
            attachments_dir=_attachments(), bus=bus, policy=_policy(),
            written=written, now=_now())
    if done.refusal is not None:  # the wrong attempt is counted (committed) first
        raise done.refusal
    return ConfirmedOut(case_number=done.case_number, tracking_url=url_for(
        "portal.track_page", token=done.tracking_token, new=1)).model_dump(), 201


@portal_api.post("/reports/<token>/resend", summary="Send a new SMS code for a report",
                 responses={202: Submitted})
@requires(PUBLIC)
def resend(path: TokenPath) -> Any:
    rules = _rules()
    limits.enforce(rules.reports_per_address, scope="portal-resend")
    with _sessions()() as session:
        phone, _expires = portal.draft_phone(session, path.token, _now())
    limits.enforce(rules.codes_per_phone, scope="portal-code", key=phone)
    with transaction(_sessions()) as session:
        portal.resend(session, path.token, rules=rules, secret=_secret(), now=_now())
        _phone, expires = portal.draft_phone(session, path.token, _now())
    return Submitted(confirm_url=url_for("portal.confirm_page", token=path.token),
                     phone=portal.public_phone(phone),
                     expires_at=expires.isoformat()).model_dump(), 202


@portal_api.get("/track/<token>", summary="A report's public timeline",
                responses={200: TrackingOut})
@requires(PUBLIC)
def tracking(path: TokenPath) -> Any:
    with _sessions()() as session:
        return TrackingOut.model_validate(portal.as_dict(
            portal.track(session, path.token))).model_dump()


@portal_api.post("/track/<token>/info", summary="Add a note and photos while it is open",
                 responses={201: TrackingOut}, openapi_extensions=_doc_form(InfoForm, True))
@requires(PUBLIC)
def add_info(path: TokenPath) -> Any:
    """A citizen's entry in the timeline (409 once the order is finished)."""
    _multipart()
    form: InfoForm = _form(InfoForm)
    photos = _photos(form.share_location)
    if not form.note.strip() and not photos:
        abort(400, "note: write something or add a photo")
    with _filing() as written, transaction(_sessions()) as session:
        portal.add_info(session, path.token, form.note, photos,
                        attachments_dir=_attachments(), written=written, now=_now())
    with _sessions()() as session:
        return TrackingOut.model_validate(portal.as_dict(
            portal.track(session, path.token))).model_dump(), 201


@portal_api.post("/track/<token>/rating", summary="Rate the closed order (the survey)",
                 responses={200: Outcome}, openapi_extensions=_doc_form(RatingForm, False))
@requires(PUBLIC)
def rating(path: TokenPath) -> Any:
    """The same survey as by phone: satisfied, or reopened (不满意重办) as the policy says;
    409 when no survey waits for an answer."""
    form: RatingForm = _form(RatingForm)
    with transaction(_sessions()) as session:
        outcome = portal.rate(session, path.token, form.rating, policy=_policy(), now=_now())
    return {"outcome": outcome}


@portal_api.get("/grids", summary="The city's grids (GeoJSON), the portal map's ground",
                responses={200: {"description": "a GeoJSON FeatureCollection in the map's datum",
                                 "content": {"application/json": {"schema": {"type": "object"}}}}})
@requires(PUBLIC)
def grids() -> Any:
    with _sessions()() as session:
        return maps.grids(session)


@portal_api.get("/place", summary="The grid a map pin lies in", responses={200: PlaceOut})
@requires(PUBLIC)
def place(query: Place) -> Any:
    """400 naming the location when the pin is outside China or the city's grids."""
    with _sessions()() as session:
        try:
            lat, lon = maps.stored_point(session, query.lat, query.lon)
        except geo.GeoError as exc:
            abort(400, f"location: {exc}")
        grid = geo.grid_at(session, lat, lon)
    return {"grid_code": grid.code if grid else "", "grid_name": grid.name if grid else ""}


BLUEPRINTS = (portal_api,)


@portal_pages.app_template_filter("portal_time")
def portal_time(moment: datetime) -> str:
    """A moment in the centre's time zone, as the timeline shows it."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(current_app.extensions["hotline.settings"].calendar.timezone)
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")
