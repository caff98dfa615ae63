"""The case map (案件地图): open work orders with a place, coloured by their deadlines, and
the hotspots (热点) where open orders of one category cluster.

- `open_orders`: the open orders with a place, each with its deadline colour: red once a
  running clock is past due (or was raised red), yellow once one reached its yellow point
  (黄灯预警, tickets.deadlines) or was raised yellow, green otherwise (no clock late, or
  no clock running); bounded by a box, a category, a department and a limit.
- `find_hotspots`: pure clustering of points: a hotspot is the orders of one category
  within `radius_m` of one of them (the one with the most such neighbours), at least
  `min_count` of them; an order belongs to at most one hotspot.
- `hotspots`: the same over the open orders taken in within a window before now, found
  across the whole city: a box only picks which hotspots to return (those reaching into
  it), so a cluster cut by the view's edge is found whole and the same from every view.

Points are WGS84; distances are great-circle metres (tickets.geo.distance_m); shapely's
STRtree finds the candidate neighbours on a local metric projection.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import shapely
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from tickets import geo, workflow
from tickets.models import Category, WorkOrder, WorkOrderDeadline

COLOURS = ("green", "yellow", "red")
MAX_ORDERS = 2_000  # on one map at once
MAX_HOTSPOT_ORDERS = 10_000  # looked at for hotspots in one window


@dataclass(frozen=True)
class Box:
    """A WGS84 bounding box: south-west and north-east corners."""

    min_lat: float
    min_lon: float
    max_lat: float
    max_lon: float


@dataclass(frozen=True)
class MapOrder:
    case_number: str
    category_code: str
    category_kind: str
    category_name: str
    state: str
    urgency: str
    address: str
    latitude: float
    longitude: float
    department_code: str
    created_at: datetime
    colour: str  # green | yellow | red
    due_at: datetime | None  # the soonest running clock's due time


@dataclass(frozen=True)
class MapOrders:
    items: list[MapOrder]
    total: int  # how many match, of which `items` holds at most the limit (newest first)


@dataclass(frozen=True)
class Point:
    """An order's place, for clustering."""

    case_number: str
    category_code: str
    category_kind: str
    latitude: float
    longitude: float


@dataclass(frozen=True)
class Hotspot:
    category_code: str
    category_kind: str
    count: int
    latitude: float  # the members' mean
    longitude: float
    radius_m: float  # the farthest member from that mean
    case_numbers: tuple[str, ...]  # by case number


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def deadline_colour(yellow_at: datetime, due_at: datetime, warning: str,
                    now: datetime) -> str:
    """One running clock's colour at `now`: what a sweep at `now` would have raised, or
    the warning it already carries, whichever is worse."""
    level = "red" if _utc(due_at) < now else "yellow" if _utc(yellow_at) <= now else "green"
    raised = warning if warning in COLOURS else "green"
    return max(level, raised, key=COLOURS.index)


def _matching(box: Box | None, category: tuple[str, str] | None,
              department: str | None) -> list[object]:
    where: list[object] = [WorkOrder.state.in_(workflow.OPEN), WorkOrder.latitude.is_not(None),
                           WorkOrder.longitude.is_not(None)]
    if box is not None:
        where += [WorkOrder.latitude.between(box.min_lat, box.max_lat),
                  WorkOrder.longitude.between(box.min_lon, box.max_lon)]
    if category is not None:
        where += [WorkOrder.category_kind == category[0],
                  WorkOrder.category_code == category[1]]
    if department is not None:
        where.append(WorkOrder.department_code == department)
    return where


def open_orders(session: Session, now: datetime, *, box: Box | None = None,
                category: tuple[str, str] | None = None, department: str | None = None,
                limit: int = 500) -> MapOrders:
    """The open orders with a place (newest first, at most `limit`), each coloured by its
    running clocks at `now`. `category` is (kind, code); `department` limits to that
    department's orders."""
    now = _utc(now)
    limit = max(1, min(limit, MAX_ORDERS))
    where = _matching(box, category, department)
    total = session.scalar(select(func.count()).select_from(WorkOrder).where(*where)) or 0
    rows = session.execute(
        select(WorkOrder, Category.name)
        .outerjoin(Category, (Category.code == WorkOrder.category_code)
                   & (Category.kind == WorkOrder.category_kind))
        .where(*where).order_by(WorkOrder.created_at.desc(), WorkOrder.id.desc())
        .limit(limit)).all()
    colours: dict[int, str] = {}
    due: dict[int, datetime] = {}
    ids = [order.id for order, _name in rows]
    for start in range(0, len(ids), 500):
        clocks: Select[tuple[int, datetime, datetime, str]] = select(
            WorkOrderDeadline.order_id, WorkOrderDeadline.yellow_at, WorkOrderDeadline.due_at,
            WorkOrderDeadline.warning).where(WorkOrderDeadline.order_id.in_(ids[start:start + 500]),
                                             WorkOrderDeadline.met_at.is_(None))
        for order_id, yellow_at, due_at, warning in session.execute(clocks):
            colour = deadline_colour(yellow_at, due_at, warning, now)
            colours[order_id] = max(colours.get(order_id, "green"), colour, key=COLOURS.index)
            if order_id not in due or _utc(due_at) < due[order_id]:
                due[order_id] = _utc(due_at)
    items = [MapOrder(o.case_number, o.category_code, o.category_kind, name or "", o.state,
                      o.urgency, o.address, float(o.latitude or 0.0), float(o.longitude or 0.0),
                      o.department_code, _utc(o.created_at), colours.get(o.id, "green"),
                      due.get(o.id)) for o, name in rows]
    return MapOrders(items, total)


def categories_on_map(session: Session, department: str | None = None
                      ) -> list[tuple[str, str, str, int]]:
    """(kind, code, name, count) of the categories open orders with a place have, by code:
    the map's filter."""
    rows = session.execute(
        select(WorkOrder.category_kind, WorkOrder.category_code, Category.name, func.count())
        .outerjoin(Category, (Category.code == WorkOrder.category_code)
                   & (Category.kind == WorkOrder.category_kind))
        .where(*_matching(None, None, department), WorkOrder.category_code != "")
        .group_by(WorkOrder.category_kind, WorkOrder.category_code, Category.name)
        .order_by(WorkOrder.category_code, WorkOrder.category_kind)).all()
    return [(kind, code, name or "", count) for kind, code, name, count in rows]


# --- hotspots ------------------------------------------------------------------------------


def _projected(points: Sequence[Point]) -> np.ndarray:
    """Points on a local equirectangular plane in metres, around their mean, as an (n, 2)
    array: within a city its error is far below the radii asked for; near the radius,
    members are confirmed by great-circle distance."""
    lat = np.array([p.latitude for p in points])
    lon = np.array([p.longitude for p in points])
    scale = math.radians(1) * geo.EARTH_RADIUS_M
    across = scale * math.cos(math.radians(float(lat.mean())))
    return np.column_stack(((lon - lon.mean()) * across, (lat - lat.mean()) * scale))


def _great_circle_m(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray,
                    lon2: np.ndarray) -> np.ndarray:
    """tickets.geo.distance_m over arrays (haversine on the mean sphere)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    h = (np.sin((p2 - p1) / 2) ** 2
         + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2)
    return 2 * geo.EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, np.sqrt(h)))


def _order_key(case_number: str) -> tuple[int, str]:
    return len(case_number), case_number  # "202611299999" came before "2026112910000"


def _neighbours(points: Sequence[Point], radius_m: float) -> list[np.ndarray]:
    """For each point, the indexes of the points within `radius_m` of it (itself too):
    candidates from shapely's STRtree on the plane with a little slack, those in the slack
    band confirmed on the sphere."""
    xy = _projected(points)
    tree = shapely.STRtree(shapely.points(xy))
    left, right = tree.query(shapely.points(xy), predicate="dwithin",
                             distance=radius_m * 1.01 + 1)
    planar = np.hypot(*(xy[left] - xy[right]).T)
    keep = planar <= radius_m * 0.99
    band = ~keep
    if band.any():
        lat = np.array([p.latitude for p in points])
        lon = np.array([p.longitude for p in points])
        keep[band] = _great_circle_m(lat[left[band]], lon[left[band]], lat[right[band]],
                                     lon[right[band]]) <= radius_m
    keep |= left == right
    left, right = left[keep], right[keep]
    order = np.argsort(left, kind="stable")
    left, right = left[order], right[order]
    bounds = np.searchsorted(left, np.arange(len(points) + 1))
    return [right[bounds[i]:bounds[i + 1]] for i in range(len(points))]


def _cluster(points: Sequence[Point], radius_m: float, min_count: int) -> list[Hotspot]:
    """The hotspots of points of one category (see the module's docstring): greedily the
    order with the most neighbours still free (at a tie the earlier case number), its free
    neighbours its members, until none has `min_count`. Neighbour counts only fall, so a
    heap of stale counts finds each next centre without recounting every order."""
    near = _neighbours(points, radius_m)
    free = np.ones(len(points), dtype=bool)
    heap = [(-len(near[i]), _order_key(points[i].case_number), i) for i in range(len(points))]
    heapq.heapify(heap)
    found: list[Hotspot] = []
    while heap:
        stale, key, centre = heapq.heappop(heap)
        if not free[centre]:
            continue
        members = near[centre][free[near[centre]]]
        if len(members) != -stale:  # fewer free now: back in line with its true count
            heapq.heappush(heap, (-len(members), key, centre))
            continue
        if len(members) < min_count:
            break
        free[members] = False
        chosen = [points[m] for m in members.tolist()]
        lat = sum(p.latitude for p in chosen) / len(chosen)
        lon = sum(p.longitude for p in chosen) / len(chosen)
        reach = max(geo.distance_m(lat, lon, p.latitude, p.longitude) for p in chosen)
        found.append(Hotspot(points[centre].category_code, points[centre].category_kind,
                             len(chosen), lat, lon, round(reach, 1),
                             tuple(sorted((p.case_number for p in chosen), key=_order_key))))
    return found


def find_hotspots(points: Iterable[Point], radius_m: float, min_count: int) -> list[Hotspot]:
    """Where points of one category cluster: groups of at least `min_count` within
    `radius_m` metres of one of them, biggest first (then by category and first case)."""
    if radius_m <= 0 or min_count < 1:
        raise ValueError("radius_m must be positive and min_count at least 1")
    by_category: dict[tuple[str, str], list[Point]] = defaultdict(list)
    for point in points:
        geo.check_point(point.latitude, point.longitude)  # GeoError for a bad one
        by_category[(point.category_kind, point.category_code)].append(point)
    found = [spot for _key, group in sorted(by_category.items())
             for spot in _cluster(group, radius_m, min_count)]
    return sorted(found, key=lambda s: (-s.count, s.category_code, s.category_kind,
                                        _order_key(s.case_numbers[0])))


def hotspots(session: Session, now: datetime, *, radius_m: float, window_hours: int,
             min_count: int, box: Box | None = None, category: tuple[str, str] | None = None,
             department: str | None = None) -> list[Hotspot]:
    """The hotspots of the open orders with a place and a category, taken in within
    `window_hours` before `now` (the newest MAX_HOTSPOT_ORDERS of them), clustered over the
    whole city; with a `box`, those whose circle (centre and reach) touches it."""
    since = _utc(now) - timedelta(hours=window_hours)
    rows = session.execute(
        select(WorkOrder.case_number, WorkOrder.category_code, WorkOrder.category_kind,
               WorkOrder.latitude, WorkOrder.longitude)
        .where(*_matching(None, category, department), WorkOrder.category_code != "",
               WorkOrder.created_at >= since, WorkOrder.created_at <= _utc(now))
        .order_by(WorkOrder.created_at.desc(), WorkOrder.id.desc())
        .limit(MAX_HOTSPOT_ORDERS)).all()
    found = find_hotspots((Point(n, code, kind, lat, lon) for n, code, kind, lat, lon in rows),
                          radius_m, min_count)
    return found if box is None else [spot for spot in found if _touches(spot, box)]


def _touches(spot: Hotspot, box: Box) -> bool:
    """Whether the hotspot's circle reaches into the box: its centre within the box widened
    by its reach (a hair more at the corners, which only ever shows one more)."""
    north = math.degrees(spot.radius_m / geo.EARTH_RADIUS_M)
    east = north / max(0.01, math.cos(math.radians(spot.latitude)))
    return (box.min_lat - north <= spot.latitude <= box.max_lat + north
            and box.min_lon - east <= spot.longitude <= box.max_lon + east)
