"""Places: unit grids (万米单元网格) and coordinates.

Grid outlines come as GeoJSON (RFC 7946) in WGS84, longitude first. Everything stored is
WGS84: phones and GPS give it; Chinese web maps give GCJ-02 (火星坐标), which is converted
at the edge with `gcj02_to_wgs84`.
"""

from __future__ import annotations

import json
import math
import re
from itertools import pairwise
from pathlib import Path
from typing import Any

import shapely
import shapely.geometry
from shapely.geometry.base import BaseGeometry
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.errors import HotlineError
from tickets.models import Grid

DEMO_GRIDS = Path(__file__).with_name("demo_grids.geojson")

# 6 county + 3 street + 3 community + 2 grid (CJ/T 213-2005); GB/T 30428 variants use 15
_GRID_CODE = re.compile(r"[0-9]{14,15}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
MAX_FEATURES = 100_000
MAX_POSITIONS = 20_000  # per feature: a surveyed grid has tens; more is a mistake or an attack
EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG)


class GeoError(HotlineError):
    """A coordinate or grid outline that cannot be taken; the message names the feature."""


# --- points ----------------------------------------------------------------------------


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GeoError(f"{what} must be a number, got {str(value)[:30]!r}")
    try:
        number = float(value)
    except OverflowError:  # an int too big for a float
        raise GeoError(f"{what} is out of range") from None
    if not math.isfinite(number):
        raise GeoError(f"{what} must be a finite number, got {number}")
    return number


def check_point(lat: Any, lon: Any) -> tuple[float, float]:
    """(lat, lon) as floats, or GeoError for a non-number, NaN, infinity or a value outside
    -90..90 / -180..180."""
    lat_f, lon_f = _number(lat, "latitude"), _number(lon, "longitude")
    if not -90 <= lat_f <= 90:
        raise GeoError(f"latitude {lat_f} is outside -90..90")
    if not -180 <= lon_f <= 180:
        raise GeoError(f"longitude {lon_f} is outside -180..180")
    return lat_f, lon_f


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine on the mean sphere; within 0.5% of the
    ellipsoid, plenty for "is this the same pothole")."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


# --- GCJ-02 (the public conversion formulae; the offset is 100-700 m in China) ----------

_KRASOVSKY_A = 6_378_245.0
_KRASOVSKY_EE = 0.00669342162296594323


def out_of_china(lat: float, lon: float) -> bool:
    """GCJ-02 equals WGS84 outside this rough box, as the public formulae have it."""
    return not (72.004 <= lon <= 137.8347 and 0.8293 <= lat <= 55.8271)


def _offset(lat: float, lon: float) -> tuple[float, float]:
    x, y = lon - 105.0, lat - 35.0
    wave = (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2 / 3
    dlat = (-100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y
            + 0.2 * math.sqrt(abs(x)) + wave
            + (20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)) * 2 / 3
            + (160.0 * math.sin(y / 12.0 * math.pi) + 320.0 * math.sin(y / 30.0 * math.pi))
            * 2 / 3)
    dlon = (300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y
            + 0.1 * math.sqrt(abs(x)) + wave
            + (20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)) * 2 / 3
            + (150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi))
            * 2 / 3)
    rad = math.radians(lat)
    magic = 1 - _KRASOVSKY_EE * math.sin(rad) ** 2
    dlat = dlat * 180.0 / (_KRASOVSKY_A * (1 - _KRASOVSKY_EE) / (magic * math.sqrt(magic))
                           * math.pi)
    dlon = dlon * 180.0 / (_KRASOVSKY_A / math.sqrt(magic) * math.cos(rad) * math.pi)
    return dlat, dlon


def wgs84_to_gcj02(lat: float, lon: float) -> tuple[float, float]:
    """WGS84 -> GCJ-02 (what a Chinese web map expects)."""
    lat, lon = check_point(lat, lon)
    if out_of_china(lat, lon):
        return lat, lon
    dlat, dlon = _offset(lat, lon)
    return lat + dlat, lon + dlon


def gcj02_to_wgs84(lat: float, lon: float) -> tuple[float, float]:
    """GCJ-02 -> WGS84. The formulae only run forwards, so this iterates until the forward
    conversion of the answer lands on the input (to about a millimetre)."""
    lat, lon = check_point(lat, lon)
    if out_of_china(lat, lon):
        return lat, lon
    wlat, wlon = lat, lon
    for _ in range(30):
        glat, glon = wgs84_to_gcj02(wlat, wlon)
        elat, elon = glat - lat, glon - lon
        wlat, wlon = wlat - elat, wlon - elon
        if abs(elat) < 1e-9 and abs(elon) < 1e-9:
            break
    return wlat, wlon


# --- grids -----------------------------------------------------------------------------


def read_geojson(path: str | Path) -> Any:
    """A GeoJSON file as data; a missing or broken one is a GeoError naming the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GeoError(f"grids {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise GeoError(f"grids {path} is not valid JSON: {exc}") from None


def load_grids(session: Session, geojson: Any) -> int:
    """Add or update the grids of a FeatureCollection (code, name, Polygon or MultiPolygon);
    the number of grids loaded. Every feature is checked before anything is written; grids
    the collection does not name are kept (a file may cover one district)."""
    grids = _parse_collection(geojson)
    codes = list(grids)
    existing: dict[str, Grid] = {}
    for start in range(0, len(codes), 500):  # keeps IN lists within SQLite's limits
        chunk = codes[start:start + 500]
        existing.update((g.code, g) for g in session.scalars(
            select(Grid).where(Grid.code.in_(chunk))))
    for code, (name, geometry) in grids.items():
        box = _bbox(geometry)
        row = existing.get(code)
        if row is None:
            row = Grid(code=code)
            session.add(row)
        row.name, row.geometry = name, geometry
        row.min_lon, row.min_lat, row.max_lon, row.max_lat = box
    session.flush()
    return len(grids)


def grid_at(session: Session, lat: float, lon: float) -> Grid | None:
    """The grid a WGS84 point lies in, or None. A point on the edge two grids share
    belongs to exactly one of them."""
    lat, lon = check_point(lat, lon)
    candidates = session.scalars(select(Grid).where(
        Grid.min_lon >= lon - _WIDEST, Grid.min_lon <= lon, Grid.max_lon >= lon,
        Grid.min_lat <= lat, Grid.max_lat >= lat).order_by(Grid.code))
    return next((g for g in candidates if contains(g.geometry, lat, lon)), None)


# the widest grid's width, from its index (ix_grids_width), and a margin of ~1 cm for the
# rounding of `lon - width`: a grid holding the point starts no further west than this
_WIDTH = Grid.max_lon - Grid.min_lon
_WIDEST = select(_WIDTH + 1e-7).order_by(_WIDTH.desc()).limit(1).scalar_subquery()


def contains(geometry: dict[str, Any], lat: float, lon: float) -> bool:
    """Whether a checked Polygon or MultiPolygon holds the point (holes excluded), by
    shapely. A point on the outline is held only if a point a hair (about 0.1 mm) east and
    north of it is inside: so of two grids sharing an edge or a corner exactly one claims
    it, the eastern or northern one, and the grids tile the city without overlap."""
    shape = _shape(geometry)
    point = shapely.Point(lon, lat)
    if shape.contains(point):
        return True
    if not shape.touches(point):
        return False
    return bool(shape.contains(shapely.Point(lon + _NUDGE, lat + _NUDGE * _NUDGE_SLOPE)))


_NUDGE = 1e-9  # degrees: ~0.1 mm, far below any survey and far above a double's spacing
_NUDGE_SLOPE = 0.6180339887  # an irrational-like slope, so the nudge runs along no edge


def _shape(geometry: dict[str, Any]) -> BaseGeometry:
    return shapely.geometry.shape(geometry)


def _bbox(geometry: dict[str, Any]) -> tuple[float, float, float, float]:
    polygons = (geometry["coordinates"] if geometry["type"] == "MultiPolygon"
                else [geometry["coordinates"]])
    lons = [p[0] for rings in polygons for p in rings[0]]  # holes lie inside the shell
    lats = [p[1] for rings in polygons for p in rings[0]]
    return min(lons), min(lats), max(lons), max(lats)


def _parse_collection(geojson: Any) -> dict[str, tuple[str, dict[str, Any]]]:
    if not isinstance(geojson, dict) or geojson.get("type") != "FeatureCollection":
        raise GeoError("grids: expected a GeoJSON FeatureCollection")
    features = geojson.get("features")
    if not isinstance(features, list):
        raise GeoError("grids: 'features' must be a list")
    if len(features) > MAX_FEATURES:
        raise GeoError(f"grids: {len(features)} features, at most {MAX_FEATURES} per load")
    grids: dict[str, tuple[str, dict[str, Any]]] = {}
    for i, feature in enumerate(features):
        where = f"grids: feature {i}"
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise GeoError(f"{where}: expected a GeoJSON Feature")
        props = feature.get("properties")
        if not isinstance(props, dict):
            raise GeoError(f"{where}: properties with code and name are missing")
        code = props.get("code")
        if isinstance(code, int) and not isinstance(code, bool):
            code = str(code)  # GIS exports often write codes as numbers
        if not isinstance(code, str) or not _GRID_CODE.fullmatch(code):
            raise GeoError(f"{where}: code {str(code)[:30]!r} must be 14 digits "
                           "(CJ/T 213-2005) or 15 (GB/T 30428)")
        where = f"{where} ({code})"
        if code in grids:
            raise GeoError(f"{where}: grid code listed twice")
        grids[code] = (_grid_name(props.get("name", ""), where),
                       _geometry(feature.get("geometry"), where))
    return grids


def _grid_name(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise GeoError(f"{where}: name must be text")
    name = value.strip()
    if len(name) > 100 or _CONTROL.search(name):
        raise GeoError(f"{where}: name must be at most 100 characters without control "
                       "characters")
    return name


def _geometry(geometry: Any, where: str) -> dict[str, Any]:
    if not isinstance(geometry, dict) or geometry.get("type") not in ("Polygon",
                                                                      "MultiPolygon"):
        kind = geometry.get("type") if isinstance(geometry, dict) else type(geometry).__name__
        raise GeoError(f"{where}: geometry must be a Polygon or MultiPolygon, "
                       f"got {str(kind)[:30]}")
    coordinates = geometry.get("coordinates")
    budget = [MAX_POSITIONS]
    if geometry["type"] == "Polygon":
        return {"type": "Polygon", "coordinates": _polygon(coordinates, where, budget)}
    if not isinstance(coordinates, list) or not coordinates:
        raise GeoError(f"{where}: a MultiPolygon needs a list of polygons")
    return {"type": "MultiPolygon",
            "coordinates": [_polygon(p, f"{where} polygon {n}", budget)
                            for n, p in enumerate(coordinates)]}


def _polygon(rings: Any, where: str, budget: list[int]) -> list[list[list[float]]]:
    if not isinstance(rings, list) or not rings:
        raise GeoError(f"{where}: a polygon needs a list of rings (the outline first)")
    return [_ring(r, f"{where} ring {n}", budget) for n, r in enumerate(rings)]


def _ring(ring: Any, where: str, budget: list[int]) -> list[list[float]]:
    if not isinstance(ring, list) or len(ring) < 4:
        raise GeoError(f"{where}: a ring needs at least 4 positions")
    budget[0] -= len(ring)
    if budget[0] < 0:
        raise GeoError(f"{where}: more than {MAX_POSITIONS} positions in one grid")
    points = []
    for n, position in enumerate(ring):
        if not isinstance(position, list) or len(position) not in (2, 3):
            raise GeoError(f"{where} position {n}: expected [longitude, latitude]")
        try:
            lat, lon = check_point(position[1], position[0])
        except GeoError as exc:
            raise GeoError(f"{where} position {n}: {exc}") from None
        points.append([lon, lat])
    if points[0] != points[-1]:
        raise GeoError(f"{where}: ring is not closed (the last position must repeat the "
                       "first)")
    area2 = sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in pairwise(points))
    if area2 == 0:
        raise GeoError(f"{where}: ring encloses no area")
    return points


def grid_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Grid)) or 0


def city_extent(session: Session) -> tuple[float, float, float, float] | None:
    """(min_lat, min_lon, max_lat, max_lon) around every loaded grid: the city as the
    centre knows it; None before any grid is loaded."""
    row = session.execute(select(func.min(Grid.min_lat), func.min(Grid.min_lon),
                                 func.max(Grid.max_lat), func.max(Grid.max_lon))).one()
    return None if row[0] is None else (row[0], row[1], row[2], row[3])


def in_city(session: Session, lat: float, lon: float) -> bool:
    """Whether a checked WGS84 point lies in China and within the city's grids' extent (any
    point in China while no grid is loaded)."""
    if out_of_china(lat, lon):
        return False
    extent = city_extent(session)
    return extent is None or (extent[0] <= lat <= extent[2] and extent[1] <= lon <= extent[3])


def grid_outlines(session: Session, limit: int = 5_000) -> list[tuple[str, str, dict[str, Any]]]:
    """(code, name, GeoJSON geometry in WGS84) of the loaded grids, by code: for drawing."""
    return [(g.code, g.name, g.geometry) for g in session.scalars(
        select(Grid).order_by(Grid.code).limit(limit))]
