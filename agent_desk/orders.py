"""The desk's order form (工单受理) while the call is up: thin endpoints behind
_order.html / desk/order.js, each calling the tickets room's door.

- categories: the catalogue searched by code, name or pinyin initials (ljdf -> 垃圾堆放)
- place: the grid (单元网格) and the department (处置部门) a map pin resolves to
- duplicate: the open order of the same category nearby that the new one would repeat
- grids: the city's grid outlines, for the map (which needs no tiles)
- save: the order taken in on the live call, linked to it (work_order_calls)

The page's map may use tiles of another datum (web.map_coordinates: Chinese web maps draw
GCJ-02); points cross that edge here, everything stored is WGS84. A pin outside China or
outside the city's grids is refused with the field named, before anything is written.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from flask import abort, current_app
from flask_openapi3 import APIBlueprint
from pydantic import Field
from sqlalchemy.orm import Session, sessionmaker

from accounts.access import requires
from accounts.pages import guard_pages
from accounts.web import current_identity
from agent_desk import maps
from core.db import transaction
from core.events import EventBus
from core.schemas import Body, Latitude, Longitude, Query, Text
from tickets import catalogue, geo, service
from tickets.policy import Policy

desk_orders = guard_pages(APIBlueprint("desk_orders", __name__, url_prefix="/desk/orders",
                                       doc_ui=False))

Kind = Literal["event", "component"]
# query strings are text: these parse "45.75", finite and in range
QueryLatitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
QueryLongitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
CATEGORY_CODE = r"^[0-9]{2,16}$"


def _sessions() -> sessionmaker[Session]:
    return current_app.extensions["hotline.sessions"]  # type: ignore[no-any-return]


def _now() -> datetime:
    return current_app.extensions["hotline.clock"].now()  # type: ignore[no-any-return]




@desk_orders.app_context_processor
def order_form() -> dict[str, Any]:
    """For _order.html: the appeal types (诉求类型) and the map's settings, when asked."""
    return {"order_appeal_types": catalogue.APPEAL_TYPES, "order_urgencies": service.URGENCIES,
            "order_map": maps.page_settings}


def _stored_point(lat: float, lon: float) -> tuple[float, float]:
    """A pin from the map as WGS84, or a 400 naming the location if it lies outside China
    or outside the city's grids (tickets.maps, shared with the citizens' portal)."""
    with _sessions()() as session:
        try:
            return maps.stored_point(session, lat, lon)
        except geo.GeoError as exc:
            abort(400, f"location: {exc}")



# --- category search ----------------------------------------------------------------------


class CategorySearch(Query):
    q: Text(catalogue.MAX_QUERY) = Field("", description="a code, words of the name or "
                                                          "pinyin initials")


@desk_orders.get("/categories")
@requires("orders.open")
def categories(query: CategorySearch) -> Any:
    with _sessions()() as session:
        found = catalogue.search_categories(session, query.q, limit=8)
    return {"items": [{"kind": f.kind, "code": f.code, "name": f.name,
                       "initials": f.initials} for f in found]}


# --- the pin: grid, department, a repeat nearby ----------------------------------------------


class Place(Query):
    lat: QueryLatitude
    lon: QueryLongitude
    category_code: Text(16, pattern=CATEGORY_CODE) | None = None
    category_kind: Kind = "event"


@desk_orders.get("/place")
@requires("orders.open")
def place(query: Place) -> Any:
    """The grid and department a pin resolves to, as the order would get them."""
    lat, lon = _stored_point(query.lat, query.lon)
    with _sessions()() as session:
        grid = geo.grid_at(session, lat, lon)
        grid_code = grid.code if grid else ""
        department = catalogue.department_for(session, query.category_code, grid_code,
                                              kind=query.category_kind) \
            if query.category_code else ""
        names = {d.code: d.name for d in catalogue.departments(session, active_only=False)}
    return {"latitude": lat, "longitude": lon, "grid_code": grid_code,
            "grid_name": grid.name if grid else "", "department_code": department,
            "department_name": names.get(department, "")}


@desk_orders.get("/duplicate")
@requires("orders.open")
def duplicate(query: Place) -> Any:
    """The open order the new one would repeat (疑似重复), or null."""
    if not query.category_code:
        return {"duplicate": None}
    lat, lon = _stored_point(query.lat, query.lon)
    policy = Policy.of_app(current_app.extensions)
    with _sessions()() as session:
        near = service.nearby_open_order(session, query.category_code, query.category_kind,
                                         lat, lon, policy=policy, now=_now())
    if near is None:
        return {"duplicate": None}
    return {"duplicate": {"case_number": near.case_number, "address": near.address,
                          "distance_m": near.distance_m,
                          "created_at": near.created_at.isoformat()}}


@desk_orders.get("/grids")
@requires("orders.open")
def grids() -> Any:
    """The city's grids as GeoJSON in the map's datum: the map's ground when it has no
    tiles."""
    with _sessions()() as session:
        return maps.grids(session)


# --- saving ----------------------------------------------------------------------------------


class DeskOrder(Body):
    """The form as the agent filled it; the pin in the map's datum."""

    appeal_type: Literal[catalogue.APPEAL_TYPES]  # type: ignore[valid-type]
    category_code: Text(16, min_length=1, pattern=CATEGORY_CODE)
    category_kind: Kind = "event"
    description: Text(service.MAX_DESCRIPTION, min_length=1)
    urgency: Literal[service.URGENCIES] = "normal"  # type: ignore[valid-type]
    address: Text(200) = ""
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    citizen_phone: Text(40) = ""
    call_id: Text(64) = Field("", description="the live call the order is taken in on")


class SaveHeaders(Query):
    idempotency_key: Text(80) = Field("", alias="Idempotency-Key",
                                      description="the form's key: saved again, not twice")


@desk_orders.post("")
@requires("orders.open")
def save(header: SaveHeaders, body: DeskOrder) -> Any:
    """Take the order in on the call (受理): one transaction, so a refusal leaves no order,
    no link and no event. Saved again with the same Idempotency-Key (after a 503 or a lost
    answer) it answers with the order taken in, never a second."""
    who = current_identity()
    if (body.latitude is None) != (body.longitude is None):
        abort(400, "location: give both latitude and longitude, or neither")
    lat = lon = None
    if body.latitude is not None and body.longitude is not None:
        lat, lon = _stored_point(body.latitude, body.longitude)
    settings = current_app.extensions["hotline.settings"]
    bus = EventBus(current_app.extensions["hotline.redis"])  # is the call_id a live call?
    now = _now()
    key = header.idempotency_key
    with transaction(_sessions()) as session:
        earlier = service.earlier_request(
            session, actor=who.name, key=key, now=now,
            body_sha256=service.request_sha256(body.model_dump(mode="json"))) if key else None
        if earlier is not None:
            order = service.get_order(session, earlier)
            return {"case_number": order.case_number, "call_id": order.call_id,
                    "grid_code": order.grid_code, "department_code": order.department_code,
                    "duplicate_of": order.duplicate_of}, 201
        order = service.open_order(
            session, appeal_type=body.appeal_type, description=body.description,
            channel="phone", actor=who.name, citizen_phone=body.citizen_phone,
            category_code=body.category_code, category_kind=body.category_kind,
            urgency=body.urgency, address=body.address, latitude=lat, longitude=lon,
            call_id=body.call_id, bus=bus, policy=Policy.of_app(current_app.extensions), now=now)
        if body.call_id:  # a call that has ended already: its recording under the case now
            service.link_call(session, order.case_number, body.call_id, actor=who.name,
                              how="intake", bus=bus,
                              recordings_dir=settings.storage.recordings_dir, now=now)
        if key:
            service.file_request(session, actor=who.name, key=key,
                                 case_number=order.case_number)
        saved = {"case_number": order.case_number, "call_id": order.call_id,
                 "grid_code": order.grid_code, "department_code": order.department_code,
                 "duplicate_of": order.duplicate_of}
    return saved, 201
