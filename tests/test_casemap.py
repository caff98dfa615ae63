"""The case map's doors (tickets.casemap), with hand-placed points and expectations worked
out by hand: hotspots where orders of one category cluster, deadline colours, and the bounds
(box, category, department, limit). On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, session_factory, transaction, upgrade
from tickets import casemap, catalogue, geo, service
from tickets.casemap import Box, Point

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # 10:00 in Beijing, a Tuesday
DEMO_GRIDS = Path(__file__).parents[1] / "tickets" / "demo_grids.geojson"
# One metre at latitude 45.75: 1/111195 degree north; east, that over cos(45.75°) = 0.6980.
NORTH_M = 1 / 111_195
EAST_M = NORTH_M / 0.6980
BASE = (45.7504, 126.6306)  # in demo grid 01 (南岗区示范街道示范社区第01网格)


def at(north_m: float, east_m: float) -> tuple[float, float]:
    return BASE[0] + north_m * NORTH_M, BASE[1] + east_m * EAST_M


def point(number: str, north_m: float, east_m: float, code: str = "0102",
          kind: str = "event") -> Point:
    lat, lon = at(north_m, east_m)
    return Point(number, code, kind, lat, lon)


# Four reports of rubbish (0102) placed by hand, pairwise within 80 m: the base, 30 m north,
# 40 m east, and 50 m north 20 m east (54 m from the base). A fifth 500 m north.
CLUSTER = [point("202611240001", 0, 0), point("202611240002", 30, 0),
           point("202611240003", 0, 40), point("202611240004", 50, 20)]
FAR = point("202611240005", 500, 0)


def test_four_orders_within_80_m_are_one_hotspot_and_one_500_m_away_is_not() -> None:
    found = casemap.find_hotspots([*CLUSTER, FAR], radius_m=100, min_count=3)
    assert len(found) == 1
    spot = found[0]
    assert (spot.category_code, spot.category_kind, spot.count) == ("0102", "event", 4)
    assert spot.case_numbers == ("202611240001", "202611240002", "202611240003",
                                 "202611240004")
    # their mean lies 20 m north and 15 m east of the base; the farthest member from it is
    # the one 40 m east: sqrt(20² + 25²) = 32.0 m
    assert (spot.latitude, spot.longitude) == pytest.approx(at(20, 15), abs=1e-7)
    assert spot.radius_m == pytest.approx(32.0, abs=0.3)


def test_a_hotspot_needs_its_minimum_count_and_a_radius_that_reaches() -> None:
    assert casemap.find_hotspots([*CLUSTER, FAR], radius_m=100, min_count=5) == []
    # 35 m: the base reaches 30 m north only, the one 30 m north reaches the base and the
    # north-east one (sqrt(20² + 20²) = 28 m); so 3 orders around the one 30 m north
    found = casemap.find_hotspots(CLUSTER, radius_m=35, min_count=3)
    assert [(s.count, s.case_numbers) for s in found] == [
        (3, ("202611240001", "202611240002", "202611240004"))]
    assert casemap.find_hotspots(CLUSTER, radius_m=25, min_count=2) == []


def test_orders_of_another_category_at_the_same_place_are_not_counted_with_them() -> None:
    others = [point("202611240011", 0, 5, code="0104"), point("202611240012", 5, 0, code="0104"),
              point("202611240013", 0, 5, code="0102", kind="component")]
    found = casemap.find_hotspots([*CLUSTER[:2], *others], radius_m=100, min_count=3)
    assert found == []
    found = casemap.find_hotspots([*CLUSTER, *others], radius_m=100, min_count=2)
    assert [(s.category_code, s.category_kind, s.count) for s in found] == [
        ("0102", "event", 4), ("0104", "event", 2)]


def test_two_clusters_of_one_category_are_two_hotspots_biggest_first() -> None:
    second = [point("202611240021", 300, 300), point("202611240022", 310, 300),
              point("202611240023", 300, 320)]
    found = casemap.find_hotspots([*second, *CLUSTER, FAR], radius_m=100, min_count=3)
    assert [(s.count, s.case_numbers[0]) for s in found] == [(4, "202611240001"),
                                                             (3, "202611240021")]


def test_a_point_out_of_range_is_refused() -> None:
    with pytest.raises(geo.GeoError):
        casemap.find_hotspots([Point("1", "0102", "event", 91.0, 0.0)], 100, 3)
    with pytest.raises(ValueError):
        casemap.find_hotspots(CLUSTER, radius_m=0, min_count=3)


def test_a_clock_colour_is_what_is_due_or_already_raised() -> None:
    yellow_at, due_at = NOW + timedelta(minutes=8), NOW + timedelta(minutes=10)
    assert casemap.deadline_colour(yellow_at, due_at, "", NOW) == "green"
    assert casemap.deadline_colour(yellow_at, due_at, "", NOW + timedelta(minutes=8)) == "yellow"
    assert casemap.deadline_colour(yellow_at, due_at, "", NOW + timedelta(minutes=10)) == "yellow"
    assert casemap.deadline_colour(yellow_at, due_at, "",
                                   NOW + timedelta(minutes=10, microseconds=1)) == "red"
    assert casemap.deadline_colour(yellow_at, due_at, "red", NOW) == "red"  # raised, extended
    assert casemap.deadline_colour(yellow_at, due_at, "yellow", NOW) == "yellow"


# --- on the database -------------------------------------------------------------------------


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    upgrade(engine)
    made = session_factory(engine)
    with transaction(made) as session:
        catalogue.seed(session)
        geo.load_grids(session, geo.read_geojson(DEMO_GRIDS))
    yield made
    engine.dispose()


def _open(session: Session, minutes_ago: float, north_m: float, east_m: float,
          code: str = "0102", urgency: str = "urgent") -> str:
    lat, lon = at(north_m, east_m)
    return service.open_order(
        session, appeal_type="complaint", description="垃圾堆在路边", channel="phone",
        actor="话务员", category_code=code, urgency=urgency, latitude=lat, longitude=lon,
        now=NOW - timedelta(minutes=minutes_ago)).case_number


def test_open_orders_are_coloured_by_their_running_clocks(sessions) -> None:
    # An urgent order's first clock (立案, urgent) is 10 natural minutes, yellow at 80 %: 8.
    with transaction(sessions) as session:
        green = _open(session, 5, 0, 0)
        yellow = _open(session, 9, 30, 0)
        red = _open(session, 15, 0, 40)
        normal = _open(session, 0, 50, 20, urgency="normal")  # 30 working minutes: green
        placeless = service.open_order(session, appeal_type="enquiry", description="路灯",
                                       channel="web", actor="话务员", now=NOW).case_number
        voided = _open(session, 20, 10, 10)
        service.act(session, voided, "void", actor="值班长", role="shift_chief", now=NOW)
    with sessions() as session:
        shown = casemap.open_orders(session, NOW)
    colours = {o.case_number: o.colour for o in shown.items}
    assert colours == {green: "green", yellow: "yellow", red: "red", normal: "green"}
    assert placeless not in colours and voided not in colours
    assert shown.total == 4
    assert [o.case_number for o in shown.items] == [normal, green, yellow, red]  # newest first
    first = shown.items[1]
    assert first.due_at == NOW + timedelta(minutes=5)
    assert (first.category_name, first.department_code) == ("暴露垃圾", "sanitation")
    # five minutes on, the green one is yellow (8 of its 10 minutes) ...
    with sessions() as session:
        later = casemap.open_orders(session, NOW + timedelta(minutes=3))
    assert {o.case_number: o.colour for o in later.items}[green] == "yellow"
    # ... and the bounds: a limit, a box, a category, a department
    with sessions() as session:
        one = casemap.open_orders(session, NOW, limit=1)
        assert ([o.case_number for o in one.items], one.total) == ([normal], 4)
        south = casemap.open_orders(session, NOW, box=Box(*at(-10, -10), *at(35, 10)))
        assert sorted(o.case_number for o in south.items) == sorted([green, yellow])
        assert casemap.open_orders(session, NOW, category=("event", "0104")).items == []
        assert casemap.open_orders(session, NOW, category=("event", "0102")).total == 4
        assert casemap.open_orders(session, NOW, department="parks").total == 0
        assert casemap.open_orders(session, NOW, department="sanitation").total == 4
        assert casemap.categories_on_map(session) == [("event", "0102", "暴露垃圾", 4)]


def test_hotspots_count_the_open_orders_of_the_window(sessions) -> None:
    with transaction(sessions) as session:
        inside = [_open(session, 60, 0, 0), _open(session, 50, 30, 0),
                  _open(session, 40, 0, 40), _open(session, 30, 50, 20)]
        _open(session, 20, 500, 0)  # 500 m away: outside the grids, still an open order
        old = _open(session, 73 * 60, 10, 10)  # before the 72-hour window
        _open(session, 10, 5, 5, code="0104")
    with sessions() as session:
        found = casemap.hotspots(session, NOW, radius_m=100, window_hours=72, min_count=3)
        assert [(s.category_code, s.count, s.case_numbers) for s in found] == [
            ("0102", 4, tuple(inside))]
        assert old not in found[0].case_numbers
        # a longer window takes the old one in
        wider = casemap.hotspots(session, NOW, radius_m=100, window_hours=80, min_count=3)
        assert [s.count for s in wider] == [5]
        assert casemap.hotspots(session, NOW, radius_m=100, window_hours=72, min_count=3,
                                department="parks") == []
        assert casemap.hotspots(session, NOW, radius_m=100, window_hours=72, min_count=3,
                                category=("event", "0104")) == []


def test_near_the_radius_the_great_circle_decides() -> None:
    # 99.5 m north of the base is within a 100 m radius of it; 100.8 m is not
    base, inside, outside = (point("202611240031", 0, 0), point("202611240032", 99.5, 0),
                             point("202611240033", 100.8, 0))
    found = casemap.find_hotspots([base, inside], radius_m=100, min_count=2)
    assert [s.case_numbers for s in found] == [("202611240031", "202611240032")]
    assert casemap.find_hotspots([base, outside], radius_m=100, min_count=2) == []


def test_hotspots_are_found_over_the_whole_city_and_a_box_only_picks_them(sessions) -> None:
    """The cluster of test_four_orders... on the database: its mean 20 m north and 15 m east
    of the base, its reach 32.0 m, so its circle spans 52 m north of the base. A view whose
    box holds one of its four orders still shows the whole hotspot of four; a box whose
    south edge lies 45 m north of the base is reached by the circle, one from 55 m is not,
    nor a box 300 m away."""
    with transaction(sessions) as session:
        four = [_open(session, 60, 0, 0), _open(session, 50, 30, 0), _open(session, 40, 0, 40),
                _open(session, 30, 50, 20)]

    def seen(box: Box | None) -> list[tuple[int, tuple[str, ...]]]:
        with sessions() as session:
            return [(s.count, s.case_numbers) for s in casemap.hotspots(
                session, NOW, radius_m=100, window_hours=72, min_count=3, box=box)]

    whole = [(4, tuple(four))]
    assert seen(None) == whole
    assert seen(Box(*at(-100, -100), *at(10, 10))) == whole  # holds the base only
    assert seen(Box(*at(45, -100), *at(200, 100))) == whole
    assert seen(Box(*at(55, -100), *at(200, 100))) == []
    assert seen(Box(*at(300, 300), *at(400, 400))) == []
