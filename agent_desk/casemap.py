"""The case map page (案件地图) for shift chiefs, dispatchers, supervisors and administrators,
and a department handler for their own department's orders: open orders on a Leaflet map
coloured by their deadlines, filtered by category, the hotspots (热点) where orders of one
category cluster, the city's grids (单元网格) as the ground. Needs no base-map tiles.

Thin endpoints over tickets.casemap, each query declared and bounded (limit, bbox). The map
may draw tiles of another datum (web.map_coordinates: GCJ-02 for Chinese web maps): points
and boxes cross that edge here, everything stored is WGS84. The page is pushed, not polled:
it holds a stream of the desk push server (agent=map, a push ticket renewed at
/map/push-ticket) and redraws when an order is opened, moved or closed (agent_desk.relay).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, current_app, g, render_template
from flask_openapi3 import APIBlueprint
from pydantic import Field, field_validator
from sqlalchemy.orm import Session, sessionmaker

from accounts.access import requires
from accounts.pages import guard_pages, titles
from accounts.service import DEPARTMENT
from accounts.web import current_identity
from agent_desk import maps, push_ticket
from agent_desk.board_pages import push_url, renewed_ticket, viewer_ticket
from agent_desk.feed import CASE_MAP
from core.schemas import Moment, Out, Query, QueryInt, Text
from tickets import casemap, geo

map_page = guard_pages(Blueprint("casemap", __name__, template_folder="templates"))
map_data = guard_pages(APIBlueprint("casemap_data", __name__, url_prefix="/map",
                                    doc_ui=False))

CATEGORY_CODE = r"^[0-9]{2,16}$"
# minLon,minLat,maxLon,maxLat as plain decimals (no exponents, no NaN, no infinity)
_DECIMAL = r"-?[0-9]{1,3}(?:\.[0-9]{1,12})?"
BBOX = rf"^{_DECIMAL},{_DECIMAL},{_DECIMAL},{_DECIMAL}$"


def _sessions() -> sessionmaker[Session]:
    return current_app.extensions["hotline.sessions"]  # type: ignore[no-any-return]


def _now() -> datetime:
    return current_app.extensions["hotline.clock"].now()  # type: ignore[no-any-return]



def _department() -> str | None:
    """The one department whose orders the caller sees: a department handler's own ("" if
    bound to none: they see no order); None for the roles that see every order."""
    who = current_identity()
    if DEPARTMENT not in who.roles or set(who.roles) - {DEPARTMENT}:
        return None
    return who.department or ""



# --- queries ------------------------------------------------------------------------------


class MapQuery(Query):
    category: Text(16, pattern=CATEGORY_CODE) | None = Field(
        None, description="a category code: only that category's orders")
    kind: Literal["event", "component"] = "event"
    bbox: Text(80, pattern=BBOX) | None = Field(
        None, description="minLon,minLat,maxLon,maxLat in the map's datum")
    limit: QueryInt(1, casemap.MAX_ORDERS) = 500

    @field_validator("bbox")
    @classmethod
    def _box_in_range(cls, value: str | None) -> str | None:
        if value is None:
            return value
        min_lon, min_lat, max_lon, max_lat = (float(part) for part in value.split(","))
        if not (-180 <= min_lon < max_lon <= 180 and -90 <= min_lat < max_lat <= 90):
            raise ValueError("minLon,minLat,maxLon,maxLat with min < max, longitudes in "
                             "-180..180 and latitudes in -90..90")
        return value

    def box(self) -> casemap.Box | None:
        if self.bbox is None:
            return None
        min_lon, min_lat, max_lon, max_lat = (float(part) for part in self.bbox.split(","))
        if maps.uses_gcj02():  # the map's corners to WGS84; a hair wider for the datum's curvature
            min_lat, min_lon = geo.gcj02_to_wgs84(min_lat, min_lon)
            max_lat, max_lon = geo.gcj02_to_wgs84(max_lat, max_lon)
            min_lat, min_lon = max(-90.0, min_lat - 0.001), max(-180.0, min_lon - 0.001)
            max_lat, max_lon = min(90.0, max_lat + 0.001), min(180.0, max_lon + 0.001)
        return casemap.Box(min_lat, min_lon, max_lat, max_lon)

    def chosen(self) -> tuple[str, str] | None:
        return None if self.category is None else (self.kind, self.category)


# --- answers ------------------------------------------------------------------------------


class MapOrderOut(Out):
    case_number: str
    category_code: str
    category_kind: str
    category_name: str
    state: str
    urgency: str
    address: str
    latitude: float = Field(description="in the map's datum")
    longitude: float
    department_code: str
    created_at: Moment
    colour: Literal["green", "yellow", "red"] = Field(
        description="red: a clock past due; yellow: past its yellow point; green: neither")
    due_at: Moment | None


class MapOrdersOut(Out):
    items: list[MapOrderOut]
    total: int = Field(description="how many match; items holds at most the limit")
    limit: int


class HotspotOut(Out):
    category_code: str
    category_kind: str
    category_name: str
    count: int
    latitude: float = Field(description="the members' mean, in the map's datum")
    longitude: float
    radius_m: float
    case_numbers: list[str]


class HotspotsOut(Out):
    items: list[HotspotOut]
    radius_m: int
    window_hours: int
    min_count: int


# --- the page and its data ------------------------------------------------------------------



@map_page.get("/map")
@requires("map.read")
def page() -> str:
    department = _department()
    with _sessions()() as session:
        categories = casemap.categories_on_map(session, department) if department != "" \
            else []
    tickets = current_app.extensions["hotline.settings"].tickets
    stream = push_url()
    g.csp_connect_src = ("{0.scheme}://{0.netloc}".format(urlsplit(stream)),)
    return render_template("agent_desk/map.html", who=current_identity(), titles=titles(),
                           map=maps.page_settings(), categories=categories,
                           hotspot={"radius_m": tickets.hotspot_radius_m,
                                    "window_hours": tickets.hotspot_window_hours,
                                    "min_count": tickets.hotspot_min_count},
                           push_url=stream, push_ticket=viewer_ticket(CASE_MAP),
                           push_ticket_seconds=push_ticket.TICKET_SECONDS)


@map_page.get("/map/push-ticket")
@requires("map.read")
def renew_push_ticket() -> Response:
    """A fresh ticket for the map's push stream (agent=map), before the last one expires."""
    ticket = viewer_ticket(CASE_MAP)
    if not ticket:
        abort(404, "no account: this caller has no map to push to")
    return renewed_ticket(ticket)


@map_data.get("/orders", responses={200: MapOrdersOut})
@requires("map.read")
def orders(query: MapQuery) -> Any:
    """The open orders with a place, newest first, coloured by their deadlines."""
    department = _department()
    if department == "":
        return {"items": [], "total": 0, "limit": query.limit}
    with _sessions()() as session:
        found = casemap.open_orders(session, _now(), box=query.box(), category=query.chosen(),
                                    department=department, limit=query.limit)
    items = []
    for o in found.items:
        lat, lon = maps.shown(o.latitude, o.longitude)
        items.append({**o.__dict__, "latitude": lat, "longitude": lon})
    return MapOrdersOut.model_validate(
        {"items": items, "total": found.total, "limit": query.limit}).model_dump(mode="json")


@map_data.get("/hotspots", responses={200: HotspotsOut})
@requires("map.read")
def hotspots(query: MapQuery) -> Any:
    """Where open orders of one category cluster (tickets.hotspot_* settings)."""
    tickets = current_app.extensions["hotline.settings"].tickets
    department = _department()
    found: list[casemap.Hotspot] = []
    names: dict[tuple[str, str], str] = {}
    if department != "":
        with _sessions()() as session:
            found = casemap.hotspots(session, _now(), radius_m=tickets.hotspot_radius_m,
                                     window_hours=tickets.hotspot_window_hours,
                                     min_count=tickets.hotspot_min_count, box=query.box(),
                                     category=query.chosen(), department=department)
            names = {(kind, code): name for kind, code, name, _n in
                     casemap.categories_on_map(session, department)}
    items = []
    for spot in found[:query.limit]:
        lat, lon = maps.shown(spot.latitude, spot.longitude)
        items.append({**spot.__dict__, "latitude": lat, "longitude": lon,
                      "case_numbers": list(spot.case_numbers),
                      "category_name": names.get((spot.category_kind, spot.category_code), "")})
    return HotspotsOut.model_validate(
        {"items": items, "radius_m": tickets.hotspot_radius_m,
         "window_hours": tickets.hotspot_window_hours,
         "min_count": tickets.hotspot_min_count}).model_dump(mode="json")


@map_data.get("/grids")
@requires("map.read")
def grids() -> Any:
    """The city's grids as GeoJSON in the map's datum: the map's ground with no tiles."""
    with _sessions()() as session:
        return maps.grids(session)

