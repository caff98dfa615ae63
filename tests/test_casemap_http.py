"""The case map's page and data (agent_desk.casemap) behind the app: declared and bounded
queries (hostile ones get a 400 naming the field), a department handler sees only their
department's orders, points drawn in the tiles' datum. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from accounts.service import Identity
from tests import api_world
from tests.api_world import World


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    built = api_world.build(database_url, tmp_path)
    yield built
    built.engine.dispose()


HOSTILE = [
    ("bbox=nan,45,127,46", "bbox"),
    ("bbox=126,45,127", "bbox"),
    ("bbox=126,45,127,46,1", "bbox"),
    ("bbox=1e2,45,127,46", "bbox"),
    ("bbox=127,45,126,46", "bbox"),  # west of its west
    ("bbox=126,-91,127,46", "bbox"),
    ("bbox=-181,45,127,46", "bbox"),
    ("bbox=" + "1" * 100, "bbox"),
    ("bbox=126,45,127,46%00", "bbox"),
    ("limit=0", "limit"),
    ("limit=2001", "limit"),
    ("limit=-1", "limit"),
    ("limit=1.5", "limit"),
    ("limit=" + "9" * 40, "limit"),
    ("category=0102';--", "category"),
    ("category=" + "1" * 17, "category"),
    ("category=%E5%9E%83", "category"),
    ("kind=event'", "kind"),
]


@pytest.mark.parametrize("path", ["/map/orders", "/map/hotspots"])
def test_hostile_query_parameters_get_a_400_naming_the_field(world, path) -> None:
    dispatcher = world.tokens["dispatcher"]
    for query, field in HOSTILE:
        reply = world.client.get(f"{path}?{query}", headers=dispatcher)
        assert reply.status_code == 400, (query, reply.status_code)
        assert reply.json["detail"].startswith(field), (query, reply.json)
    assert world.client.get(f"{path}?bbox=126.62,45.74,126.64,45.76&limit=2000&category=0102",
                            headers=dispatcher).status_code == 200


def test_the_dispatcher_sees_the_open_order_with_a_place_in_its_colour(world) -> None:
    reply = world.client.get("/map/orders", headers=world.tokens["dispatcher"])
    assert reply.status_code == 200
    assert reply.json["total"] == 1 and reply.json["limit"] == 500
    [order] = reply.json["items"]  # the other order has no place
    assert (order["case_number"], order["category_code"], order["category_name"],
            order["colour"], order["department_code"]) == (
        world.case, "0102", "暴露垃圾", "green", "sanitation")
    assert (order["latitude"], order["longitude"]) == (45.7504, 126.6306)
    assert "citizen_phone" not in order and api_world.PHONE not in reply.text
    # a box away from it, another category: nothing
    for query in ("bbox=126.0,45.0,126.1,45.1", "category=0104"):
        assert world.client.get(f"/map/orders?{query}",
                                headers=world.tokens["dispatcher"]).json["items"] == []
    spots = world.client.get("/map/hotspots", headers=world.tokens["supervisor"]).json
    assert spots == {"items": [], "radius_m": 100, "window_hours": 72, "min_count": 3}
    grids = world.client.get("/map/grids", headers=world.tokens["shift_chief"]).json
    assert [f["properties"]["code"] for f in grids["features"]] == [
        "23010300100101", "23010300100102", "23010300100103", "23010300100104"]


def test_a_department_sees_only_its_own_orders_on_the_map(world) -> None:
    sanitation = api_world.as_identity(
        world, Identity("环卫局小李", ("department",), False, department="sanitation"))
    parks = api_world.as_identity(
        world, Identity("园林局小赵", ("department",), False, department="parks"))
    mine = world.client.get("/map/orders", headers=sanitation).json
    assert [o["case_number"] for o in mine["items"]] == [world.case]
    for headers in (parks, world.tokens["department"]):  # another, and bound to none
        assert world.client.get("/map/orders", headers=headers).json == {
            "items": [], "total": 0, "limit": 500}
        page = world.client.get("/map", headers=headers)
        assert page.status_code == 200 and 'value="event:0102"' not in page.text
    page = world.client.get("/map", headers=sanitation)
    assert page.status_code == 200 and 'value="event:0102"' in page.text


def test_points_are_drawn_in_the_tiles_datum(world) -> None:
    settings = world.app.extensions["hotline.settings"]
    world.app.extensions["hotline.settings"] = replace(settings, web=replace(
        settings.web, map_coordinates="gcj02",
        map_tile_url="https://tiles.example.cn/{z}/{x}/{y}.png"))
    dispatcher = world.tokens["dispatcher"]
    [order] = world.client.get("/map/orders", headers=dispatcher).json["items"]
    # the public GCJ-02 formulae move Harbin about 260 m north and 640 m east (as
    # tests/test_desk_order.py has it for a point 0.0001° west of this one)
    assert (order["latitude"], order["longitude"]) == pytest.approx(
        (45.75233572854471, 126.63654339), abs=2e-6)
    # a box drawn on those tiles around the shifted point finds it; one around the stored
    # WGS84 point does not
    near = "126.6360,45.7518,126.6370,45.7528"
    assert len(world.client.get(f"/map/orders?bbox={near}", headers=dispatcher
                                ).json["items"]) == 1
    assert world.client.get("/map/orders?bbox=126.6301,45.7500,126.6311,45.7508",
                            headers=dispatcher).json["items"] == []
    page = world.client.get("/map", headers=dispatcher)
    assert "img-src 'self' data: https://tiles.example.cn;" in \
        page.headers["Content-Security-Policy"]
