"""The map every page with a Leaflet map shares (no tiles needed): the desk's order form, the
case map and the citizens' portal. The tile settings a page hands its script, and stored
WGS84 points as the map draws them (GCJ-02 when the tiles are Chinese web-map tiles,
`web.map_coordinates`)."""

from __future__ import annotations

from typing import Any

from flask import current_app, g
from sqlalchemy.orm import Session

from tickets import geo


def uses_gcj02() -> bool:
    return bool(current_app.extensions["hotline.settings"].web.map_coordinates == "gcj02")


def page_settings() -> dict[str, Any]:
    """The tile URL template ("" = no tiles) and its datum; a page showing tiles from
    another site lets its own response load images from there."""
    web = current_app.extensions["hotline.settings"].web
    tiles = web.map_tile_url
    if tiles.startswith(("http://", "https://")):
        origin = "/".join(tiles.split("/", 3)[:3])
        g.csp_img_src = (*g.get("csp_img_src", ()), origin)
    return {"tiles": tiles, "coordinates": web.map_coordinates}


def shown(lat: float, lon: float) -> tuple[float, float]:
    """A stored WGS84 point as the map draws it."""
    return geo.wgs84_to_gcj02(lat, lon) if uses_gcj02() else (lat, lon)


def grids(session: Session) -> dict[str, Any]:
    """The city's grids as GeoJSON in the map's datum: the map's ground with no tiles."""
    features = []
    for code, name, geometry in geo.grid_outlines(session):
        polygons = (geometry["coordinates"] if geometry["type"] == "MultiPolygon"
                    else [geometry["coordinates"]])
        drawn = [[[list(reversed(shown(lat, lon))) for lon, lat in ring] for ring in rings]
                 for rings in polygons]
        features.append({"type": "Feature", "properties": {"code": code, "name": name},
                         "geometry": {"type": "MultiPolygon", "coordinates": drawn}})
    return {"type": "FeatureCollection", "features": features}


def stored_point(session: Session, lat: float, lon: float) -> tuple[float, float]:
    """A pin from the map (in the map's datum) as the WGS84 point to store; GeoError naming
    the location when it is no point, lies outside China or outside the city's grids."""
    lat, lon = geo.check_point(lat, lon)
    if uses_gcj02():
        lat, lon = geo.gcj02_to_wgs84(lat, lon)
    if geo.out_of_china(lat, lon):
        raise geo.GeoError(f"{lat:.5f}, {lon:.5f} is outside China")
    if not geo.in_city(session, lat, lon):
        raise geo.GeoError(f"{lat:.5f}, {lon:.5f} is outside the city's grids")
    return lat, lon
