"""The classification catalogue, dispatch rules, unit grids and coordinates: loading and
reloading the seed, refusing bad entries without writing anything, which department
answers for an order, which grid holds a point; on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, session_factory, transaction, upgrade
from core.errors import ConfigError
from tickets import catalogue, geo
from tickets.catalogue import CatalogueError
from tickets.geo import GeoError
from tickets.models import Category, Department, DispatchRule, Grid, TimeLimit


@pytest.fixture
def sessions(database_url: str) -> sessionmaker[Session]:
    engine = make_engine(database_url)
    upgrade(engine)
    return session_factory(engine)


def _seed_data() -> dict[str, Any]:
    return yaml.safe_load(catalogue.PACKAGED.read_text(encoding="utf-8"))


def _snapshot(sessions: sessionmaker[Session]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the catalogue and grids own, to show an error changed nothing."""
    with sessions() as session:
        return {
            "categories": sorted((c.kind, c.code, c.name, c.active)
                                 for c in session.scalars(select(Category))),
            "departments": sorted((d.code, d.name, d.active)
                                  for d in session.scalars(select(Department))),
            "rules": sorted((r.grid_prefix, r.category_prefix, r.department_code)
                            for r in session.scalars(select(DispatchRule))),
            "limits": sorted((t.step, t.category_prefix, t.appeal_type, t.urgency, t.amount,
                              t.clock, t.unit) for t in session.scalars(select(TimeLimit))),
            "grids": sorted((g.code, g.name, json.dumps(g.geometry), g.min_lon, g.max_lon,
                             g.min_lat, g.max_lat) for g in session.scalars(select(Grid))),
        }


# --- the catalogue -----------------------------------------------------------------------


def test_the_seed_loads_the_standard_catalogue(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        summary = catalogue.seed(session)
    assert summary.categories.added > 60 and summary.rules.added and summary.limits.added
    with sessions() as session:
        events = catalogue.categories(session, kind="event")
        components = catalogue.categories(session, kind="component")
        assert {c.code for c in events if len(c.code) == 2} == {"01", "02", "03", "04", "05",
                                                                 "06"}
        assert {c.code for c in components if len(c.code) == 2} == {"01", "02", "03", "04",
                                                                     "05", "06"}
        assert catalogue.category(session, "0102").name == "暴露垃圾"
        assert catalogue.category(session, "0101").name == "私搭乱建"
        assert catalogue.category(session, "0101", kind="component").name == "上水井盖"
        assert catalogue.category(session, "9999") is None
        assert all(catalogue.category(session, c.code[:-2], c.kind) for c in events + components
                   if len(c.code) > 2)
        assert catalogue.categories(session)[0].kind == "event"  # events first, parents first
        names = {d.code: d.name for d in catalogue.departments(session)}
        assert names["sanitation"] == "市容环卫局" and names["enforcement"] == "城管执法局"
        assert catalogue.department_for(session, "0102", "") == "sanitation"
        assert catalogue.department_for(session, "0101", "") == "enforcement"
        assert catalogue.department_for(session, "0101", "", kind="component") == "water"
        assert catalogue.department_for(session, "0501", "", kind="component") == ""
        assert catalogue.department_for(session, "0505", "23010300100101") == "demo-street"
        assert catalogue.department_for(session, "0505", "23010300200101") == "enforcement"
        limits = {(t.step, t.kind, t.category_prefix, t.appeal_type, t.urgency):
                  (t.amount, t.unit, t.clock) for t in catalogue.limits(session)}
    assert {step for step, *_ in limits} == set(catalogue.STEPS)
    assert limits[("handle", "event", "0102", "", "")] == (4, "hours", "working_hours")
    assert limits[("handle", "event", "0104", "", "")] == (2, "hours", "working_hours")
    # 0101 handled in 20 working days and components 04 in 5 for any appeal type outlasted
    # the 13 and 3 working days the appeals complete in: now only for the slow appeal types
    assert limits[("handle", "event", "0101", "complaint", "")] == (12, "days", "working_days")
    assert ("handle", "event", "0101", "", "") not in limits
    assert limits[("handle", "component", "04", "report", "")] == (5, "days", "working_days")
    assert limits[("complete", "", "", "complaint", "")] == (13, "days", "working_days")
    assert limits[("complete", "", "", "help", "")] == (3, "days", "working_days")
    # one urgent limit: the urgency beats the appeal types' limits of the same prefix
    assert limits[("complete", "", "", "", "urgent")] == (1, "days", "calendar_days")
    # the standards' minutes; the department signs on working time
    assert limits[("open", "", "", "", "urgent")] == (10, "minutes", "continuous")
    assert limits[("dispatch", "", "", "", "")] == (30, "minutes", "working_hours")
    assert limits[("check", "", "", "", "")] == (30, "minutes", "working_hours")
    assert limits[("sign", "", "", "", "")] == (1, "hours", "working_hours")


def test_reloading_changes_nothing_and_picks_up_a_renamed_entry(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        catalogue.seed(session)
    before = _snapshot(sessions)
    with transaction(sessions) as session:
        again = catalogue.seed(session)
    assert not again.changed and _snapshot(sessions) == before
    data = _seed_data()
    road = next(e for e in data["events"] if e["code"] == "0104")
    road["name"] = "  道路不洁净  "
    data["events"].append({"code": "0109", "name": "沿街晾挂"})
    next(d for d in data["departments"] if d["code"] == "water")["name"] = "水务集团"
    next(r for r in data["dispatch_rules"]
         if r.get("category_prefix") == "06")["department"] = "sanitation"
    next(t for t in data["time_limits"]
         if t.get("category_prefix") == "0104")["amount"] = 3
    with transaction(sessions) as session:
        summary = catalogue.load_catalogue(session, data)
    assert (summary.categories.added, summary.categories.updated) == (1, 1)
    assert (summary.departments.updated, summary.rules.updated, summary.limits.updated) \
        == (1, 1, 1)
    assert "categories: 1 added, 1 updated, 0 deactivated" in str(summary)
    with sessions() as session:
        assert catalogue.category(session, "0104").name == "道路不洁净"
        assert catalogue.category(session, "0109").name == "沿街晾挂"
        assert session.get(Department, "water").name == "水务集团"
        assert catalogue.department_for(session, "0601", "") == "sanitation"
        assert (3, "working_hours") in {(t.amount, t.clock) for t in catalogue.limits(session)
                                        if t.category_prefix == "0104"}


def test_a_category_missing_from_the_file_is_deactivated_not_deleted(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        catalogue.seed(session)
    data = _seed_data()
    data["events"] = [e for e in data["events"] if e["code"] != "0108"]
    data["departments"] = [d for d in data["departments"] if d["code"] != "demo-street"]
    data["dispatch_rules"] = [r for r in data["dispatch_rules"]
                              if r["department"] != "demo-street"]
    with transaction(sessions) as session:
        summary = catalogue.load_catalogue(session, data)
    assert (summary.categories.retired, summary.departments.retired, summary.rules.retired) \
        == (1, 1, 1)
    with sessions() as session:
        gone = catalogue.category(session, "0108")
        assert gone is not None and gone.name == "废弃车辆" and not gone.active
        assert "0108" not in {c.code for c in catalogue.categories(session, kind="event")}
        assert "0108" in {c.code for c in catalogue.categories(session, "event",
                                                               active_only=False)}
        assert "demo-street" not in {d.code for d in catalogue.departments(session)}
        assert session.get(Department, "demo-street") is not None
        assert catalogue.department_for(session, "0505", "23010300100101") == "enforcement"
    with transaction(sessions) as session:  # the full file again brings it all back
        back = catalogue.seed(session)
    assert (back.categories.updated, back.departments.updated, back.rules.added) == (1, 1, 1)
    with sessions() as session:
        assert catalogue.category(session, "0108").active


def _rename_first(data: dict[str, Any]) -> None:
    data["events"][0]["name"] = "改了名字"


BAD_CATALOGUES = [
    (lambda d: d["events"].append({"code": "1", "name": "x"}), r"events\[\d+\]: code '1'"),
    (lambda d: d["events"].append({"code": "01a1", "name": "x"}), "must be 2-16 digits"),
    (lambda d: d["events"].append({"code": "010", "name": "x"}), "two per level"),
    (lambda d: d["events"].append({"code": 65, "name": "x"}), "quoted string, got 65"),
    (lambda d: d["events"].append({"code": "0999", "name": "x"}),
     r"events\[\d+\] \(0999\): parent class 09 is not listed"),
    (lambda d: d["components"].append({"code": "010101", "name": "x", "active": "yes"}),
     r"components\[\d+\] \(010101\): active must be true or false"),
    (lambda d: d["events"][2].update(name="  "), r"events\[2\] \(0102\): name is empty"),
    (lambda d: d["events"][2].update(name="暴露\x07垃圾"), r"\(0102\): name contains control"),
    (lambda d: d["events"][2].update(name="长" * 101), "101 characters, at most 100"),
    (lambda d: d["events"][2].update(name=None), "name must be a quoted string"),
    (lambda d: d["events"].append({"code": "0102", "name": "again"}), r"\(0102\): listed twice"),
    (lambda d: d["events"].append({"code": "0109", "name": "x", "colour": "red"}),
     "unknown key 'colour'"),
    (lambda d: d["events"].append({"name": "x"}), "code is missing"),
    (lambda d: d["events"].append("0109 x"), r"events\[\d+\]: expected a mapping"),
    (lambda d: d["departments"].append({"code": "市容局", "name": "x"}), "department code"),
    (lambda d: d["departments"][0].update(active=False),
     r"dispatch_rules\[0\] \(grid '', event '01'\): department 'sanitation' is not an active"),
    (lambda d: d["dispatch_rules"][0].update(department="nope"), "department 'nope'"),
    (lambda d: d["dispatch_rules"][0].update(kind="thing"),
     r"dispatch_rules\[0\]: kind 'thing' is not one of event, component"),
    (lambda d: d["dispatch_rules"][0].update(category_prefix="0999"),
     "'0999' matches no event category"),
    (lambda d: d["dispatch_rules"][0].update(category_prefix="0" * 16, kind="component"),
     "must be 0-15 digits"),
    (lambda d: d["dispatch_rules"][0].update(grid_prefix="23010a"), "grid_prefix '23010a'"),
    (lambda d: d["dispatch_rules"].append({"category_prefix": "01", "department": "water"}),
     "listed twice"),
    (lambda d: d["time_limits"][17].update(clock="hours"),
     r"time_limits\[17\] \(handle event '0101'\): clock 'hours' is not one of continuous"),
    (lambda d: d["time_limits"][0].update(step="fix"), r"time_limits\[0\]: step 'fix'"),
    (lambda d: d["time_limits"][0].update(appeal_type="angry"), "appeal_type 'angry'"),
    (lambda d: d["time_limits"][0].update(urgency="high"), "urgency 'high'"),
    (lambda d: d["time_limits"][0].update(amount=0), "amount must be a whole number"),
    (lambda d: d["time_limits"][0].update(amount=-1), "got -1"),
    (lambda d: d["time_limits"][0].update(amount="3"), "got '3'"),
    (lambda d: d["time_limits"][0].update(amount=True), "got True"),
    (lambda d: d["time_limits"][0].update(amount=1.5), "got 1.5"),
    (lambda d: d["time_limits"][0].update(amount=10**9), "whole number 1-10000"),
    (lambda d: d["time_limits"][0].update(clock="working_days", unit="hours"),
     r"unit \(on the working_days clock\) 'hours' is not one of minutes, days"),
    (lambda d: d["time_limits"][0].update(clock="continuous", unit="seconds"),
     r"unit \(on the continuous clock\) 'seconds' is not one of minutes, hours"),
    (lambda d: d["time_limits"].append(dict(d["time_limits"][0])), "listed twice"),
    (lambda d: d.pop("time_limits"), "section 'time_limits' must be a list"),
    (lambda d: d.update(extras=[]), "unknown section 'extras'"),
]


def test_bad_entries_are_named_and_nothing_is_written(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        catalogue.seed(session)
    before = _snapshot(sessions)
    for mutate, message in BAD_CATALOGUES:
        data = _seed_data()
        _rename_first(data)  # a good change ahead of the bad one must not land either
        mutate(data)
        with pytest.raises(CatalogueError, match=message), transaction(sessions) as session:
            catalogue.load_catalogue(session, data)
    for junk in (None, [], "events: []"):
        with pytest.raises(CatalogueError, match="expected a mapping"), \
                transaction(sessions) as session:
            catalogue.load_catalogue(session, junk)
    # an error raised after earlier writes in the same transaction rolls them back
    with pytest.raises(CatalogueError, match="no active department 'nope'"), \
            transaction(sessions) as session:
        catalogue.set_category(session, "0109", "event", "沿街晾挂")
        catalogue.set_rule(session, "", "0109", "nope")
    assert _snapshot(sessions) == before


def test_a_file_is_named_in_its_errors(sessions, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    unquoted = tmp_path / "unquoted.yaml"
    unquoted.write_text(catalogue.PACKAGED.read_text(encoding="utf-8").replace(
        'code: "0102"', "code: 0102"), encoding="utf-8")
    broken = tmp_path / "broken.yaml"
    broken.write_text("events: [\n", encoding="utf-8")
    with transaction(sessions) as session:
        with pytest.raises(CatalogueError, match=re.escape(f"catalogue {unquoted}: ")
                           + r"events\[\d+\]: code must be a quoted string, got 66"):
            catalogue.load_file(session, unquoted)
        with pytest.raises(ConfigError, match=re.escape(f"catalogue {broken} is not valid")):
            catalogue.load_file(session, broken)
        with pytest.raises(ConfigError, match="does not exist"):
            catalogue.load_file(session, tmp_path / "missing.yaml")
    assert _snapshot(sessions)["categories"] == []


def test_single_edits_check_their_input(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        catalogue.seed(session)
        row = catalogue.set_category(session, "0109", "event", "沿街晾挂")
        assert (row.code, row.kind, row.active) == ("0109", "event", True)
        catalogue.set_category(session, "0109", "event", "沿街晾晒", active=False)
        assert not catalogue.category(session, "0109").active
        for args, message in ((("0999", "event", "x"), "parent class 09 does not exist"),
                              (("0109", "thing", "x"), "kind 'thing'"),
                              (("01 9", "event", "x"), "2-16 digits"),
                              (("0109", "event", "\x00"), "control characters")):
            with pytest.raises(CatalogueError, match=message):
                catalogue.set_category(session, *args)
        catalogue.set_department(session, "heating", "热力集团")
        with pytest.raises(CatalogueError, match="name is empty"):
            catalogue.set_department(session, "heating", "")
        catalogue.set_rule(session, "", "0405", "heating")
        assert catalogue.department_for(session, "0405", "") == "heating"
        catalogue.set_rule(session, "", "0405", "municipal")  # the same rule changes hands
        assert catalogue.department_for(session, "0405", "") == "municipal"
        catalogue.set_rule(session, "", "0109", "heating", kind="component")
        assert catalogue.department_for(session, "0109", "", kind="component") == "heating"
        assert catalogue.department_for(session, "0109", "") == "sanitation"
        with pytest.raises(CatalogueError, match="matches no component category"):
            catalogue.set_rule(session, "", "0999", "heating", kind="component")
        with pytest.raises(CatalogueError, match="category_prefix '0%'"):
            catalogue.set_rule(session, "", "0%", "heating")
        assert catalogue.remove_rule(session, "", "0109", kind="component")
        assert not catalogue.remove_rule(session, "", "0109", kind="component")
        assert catalogue.department_for(session, "0109", "", kind="component") == "municipal"
        limit = catalogue.set_limit(session, "handle", 8, "working_hours", "0405")
        assert (limit.category_prefix, limit.amount) == ("0405", 8)
        catalogue.set_limit(session, "handle", 6, "working_hours", "0405")
        catalogue.set_limit(session, "handle", 2, "working_days", "01", kind="component")
        mine = [t for t in catalogue.limits(session) if t.category_prefix in ("0405", "01")
                and t.step == "handle"]
        assert {(t.kind, t.category_prefix, t.amount) for t in mine} \
            == {("event", "0405", 6), ("component", "01", 2)}
        # minutes on any clock; the clock's own unit may be named and is stored as ""
        catalogue.set_limit(session, "check", 30, "working_days", unit="minutes")
        catalogue.set_limit(session, "close", 2, "working_hours", unit="hours")
        units = {(t.step, t.amount, t.clock, t.unit) for t in catalogue.limits(session)
                 if t.step in ("check", "close") and not t.category_prefix
                 and not t.appeal_type and not t.urgency}
        assert units == {("check", 30, "working_days", "minutes"),
                         ("close", 2, "working_hours", "hours")}
        assert session.scalar(select(TimeLimit.unit).where(
            TimeLimit.step == "close", TimeLimit.category_prefix == "",
            TimeLimit.appeal_type == "", TimeLimit.urgency == "")) == ""
        for kwargs, message in (({"clock": "weeks"}, "clock 'weeks'"),
                                ({"unit": "days"}, "unit .* 'days' is not one of minutes"),
                                ({"amount": 0}, "amount"),
                                ({"step": "wait"}, "step 'wait'"),
                                ({"urgency": "asap"}, "urgency 'asap'")):
            with pytest.raises(CatalogueError, match=message):
                catalogue.set_limit(session, **{"step": "handle", "amount": 1,
                                                "clock": "continuous", **kwargs})
        assert catalogue.remove_limit(session, "handle", "01", kind="component")
        assert not catalogue.remove_limit(session, "handle", "01", kind="component")


PRECEDENCE = {
    "events": [{"code": "01", "name": "市容环境"}, {"code": "0102", "name": "暴露垃圾"},
               {"code": "05", "name": "街面秩序"}, {"code": "0505", "name": "机动车乱停放"}],
    "components": [{"code": "01", "name": "公用设施"}, {"code": "0101", "name": "上水井盖"},
                   {"code": "0102", "name": "污水井盖"}],
    "departments": [{"code": c, "name": c} for c in ("general", "sanitation", "cleaning",
                                                    "facilities", "water", "district",
                                                    "street")],
    "dispatch_rules": [
        {"department": "general"},
        {"category_prefix": "01", "department": "sanitation"},
        {"category_prefix": "0102", "department": "cleaning"},
        {"kind": "component", "department": "facilities"},
        {"kind": "component", "category_prefix": "0101", "department": "water"},
        {"grid_prefix": "230103", "department": "district"},
        {"grid_prefix": "230103001", "category_prefix": "05", "department": "street"},
    ],
    "time_limits": [],
}


def test_the_department_comes_from_the_most_specific_rule(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        catalogue.load_catalogue(session, copy.deepcopy(PRECEDENCE))
    with transaction(sessions) as session:
        def answer(code: str, grid: str = "", kind: str = "event") -> str:
            return catalogue.department_for(session, code, grid, kind=kind)

        assert answer("0102") == "cleaning"  # the longest category prefix
        assert answer("0103") == "sanitation"
        assert answer("0505") == "general"  # "" catches the rest
        assert answer("") == "general"
        assert answer("0101", kind="component") == "water"
        assert answer("0102", kind="component") == "facilities"  # "C": any component
        assert answer("0102", "23010300100101") == "district"  # the place beats the category
        assert answer("0505", "23010300100101") == "street"  # the longest grid prefix
        assert answer("0505", "23010300200101") == "district"
        assert answer("0102", "23010400100101") == "cleaning"  # another district
        assert answer("0101", "23010300100101", kind="component") == "district"
        catalogue.set_department(session, "street", "street", active=False)
        assert answer("0505", "23010300100101") == "district"  # next best rule
        assert catalogue.remove_rule(session, "", "")
        assert answer("0505") == ""


# --- grids ---------------------------------------------------------------------------------


def _square(lon: float, lat: float, size: float) -> list[list[float]]:
    return [[lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size],
            [lon, lat]]


def _feature(code: str, geometry: Any, name: Any = "网格") -> dict[str, Any]:
    return {"type": "Feature", "properties": {"code": code, "name": name},
            "geometry": geometry}


def _collection(*features: Any) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features)}


HOLED = _feature("23010300200101", {"type": "Polygon", "coordinates": [
    _square(126.64, 45.76, 0.002), _square(126.6405, 45.7605, 0.001)]})
SPLIT = _feature(230103002001021, {"type": "MultiPolygon", "coordinates": [
    [_square(126.65, 45.76, 0.001)], [_square(126.66, 45.76, 0.001)]]}, name="飞地网格")


def test_a_point_finds_its_grid(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        assert geo.load_grids(session, geo.read_geojson(geo.DEMO_GRIDS)) == 4
        assert geo.load_grids(session, _collection(HOLED, SPLIT)) == 2
    with sessions() as session:
        def at(lat: float, lon: float) -> str | None:
            grid = geo.grid_at(session, lat, lon)
            return grid.code if grid else None

        assert at(45.7504, 126.6305) == "23010300100101"
        assert at(45.7514, 126.6320) == "23010300100104"
        assert at(45.7509, 126.6313) == "23010300100104"  # the shared corner: one grid only
        assert at(45.7504, 126.6313) == "23010300100102"  # the shared edge: one grid only
        assert at(45.7400, 126.6305) is None
        assert at(45.7602, 126.6402) == "23010300200101"  # in the ring around the hole
        assert at(45.7610, 126.6410) is None  # in the hole
        assert at(45.7605, 126.6505) == "230103002001021"  # the first part
        assert at(45.7605, 126.6605) == "230103002001021"  # the second part
        assert at(45.7605, 126.6555) is None  # between the parts, inside the box
        split = session.get(Grid, "230103002001021")
        assert (split.min_lon, split.max_lon, split.min_lat, split.max_lat) \
            == pytest.approx((126.65, 126.661, 45.76, 45.761))
        assert split.name == "飞地网格"
    moved = copy.deepcopy(SPLIT)
    moved["properties"]["name"] = "合并网格"
    moved["geometry"] = {"type": "Polygon", "coordinates": [_square(126.65, 45.76, 0.011)]}
    with transaction(sessions) as session:
        assert geo.load_grids(session, _collection(moved)) == 1
    with sessions() as session:
        assert geo.grid_at(session, 45.7605, 126.6555).name == "合并网格"
        assert session.get(Grid, "23010300100101") is not None  # grids not named are kept


def _with(feature: dict[str, Any], **changes: Any) -> dict[str, Any]:
    changed = copy.deepcopy(feature)
    for key, value in changes.items():
        if key in ("code", "name"):
            changed["properties"][key] = value
        else:
            changed[key] = value
    return changed


def _poly(*ring: Any) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [list(ring)]}


NAN, INF = float("nan"), float("inf")
GOOD = _feature("23010300300101", _poly(*_square(126.6, 45.7, 0.001)))
BAD_GEOJSON = [
    (None, "expected a GeoJSON FeatureCollection"),
    ([], "expected a GeoJSON FeatureCollection"),
    ({"type": "Feature"}, "expected a GeoJSON FeatureCollection"),
    ({"type": "FeatureCollection"}, "'features' must be a list"),
    ({"type": "FeatureCollection", "features": {}}, "'features' must be a list"),
    (_collection(GOOD, 7), r"feature 1: expected a GeoJSON Feature"),
    (_collection(GOOD, {**GOOD, "properties": None}), "feature 1: properties"),
    (_collection(_with(GOOD, code="2301030030")), "code '2301030030' must be 14 digits"),
    (_collection(_with(GOOD, code="2301030030010a")), "must be 14 digits"),
    (_collection(_with(GOOD, code=True)), "code 'True'"),
    (_collection(_with(GOOD, code=2.301e13)), "must be 14 digits"),
    (_collection(_with(GOOD, code="２３０１０３００３００１０１")), "must be 14 digits"),
    (_collection(GOOD, GOOD), r"feature 1 \(23010300300101\): grid code listed twice"),
    (_collection(_with(GOOD, name="网" * 101)), "at most 100 characters"),
    (_collection(_with(GOOD, name="网格\x1b[31m")), "control characters"),
    (_collection(_with(GOOD, name=["网格"])), "name must be text"),
    (_collection(_with(GOOD, geometry=None)), "must be a Polygon or MultiPolygon, got None"),
    (_collection(_with(GOOD, geometry={"type": "Point", "coordinates": [126.6, 45.7]})),
     "got Point"),
    (_collection(_with(GOOD, geometry={"type": "Polygon", "coordinates": []})),
     "needs a list of rings"),
    (_collection(_with(GOOD, geometry={"type": "Polygon", "coordinates": "[]"})),
     "needs a list of rings"),
    (_collection(_with(GOOD, geometry={"type": "MultiPolygon", "coordinates": []})),
     "needs a list of polygons"),
    (_collection(_with(GOOD, geometry=_poly([126.6, 45.7], [126.7, 45.7], [126.6, 45.7]))),
     "ring 0: a ring needs at least 4 positions"),
    (_collection(_with(GOOD, geometry=_poly(*_square(126.6, 45.7, 0.001)[:4],
                                            [126.6, 45.7001]))), "ring 0: ring is not closed"),
    (_collection(_with(GOOD, geometry=_poly([126.6, 45.7], [126.7, 45.7], [126.8, 45.7],
                                            [126.6, 45.7]))), "ring encloses no area"),
    (_collection(_with(GOOD, geometry=_poly([NAN, 45.7], [126.7, 45.7], [126.7, 45.8],
                                            [NAN, 45.7]))),
     r"\(23010300300101\) ring 0 position 0: longitude must be a finite number"),
    (_collection(_with(GOOD, geometry=_poly([126.6, INF], [126.7, 45.7], [126.7, 45.8],
                                            [126.6, INF]))), "latitude must be a finite"),
    (_collection(_with(GOOD, geometry=_poly(["126.6", 45.7], [126.7, 45.7], [126.7, 45.8],
                                            ["126.6", 45.7]))), "must be a number, got '126.6'"),
    (_collection(_with(GOOD, geometry=_poly([126.6, None], [126.7, 45.7], [126.7, 45.8],
                                            [126.6, None]))), "must be a number, got 'None'"),
    (_collection(_with(GOOD, geometry=_poly([True, 45.7], [126.7, 45.7], [126.7, 45.8],
                                            [True, 45.7]))), "must be a number"),
    (_collection(_with(GOOD, geometry=_poly([126.6, 91], [126.7, 45.7], [126.7, 45.8],
                                            [126.6, 91]))), "latitude 91.0 is outside"),
    (_collection(_with(GOOD, geometry=_poly([181, 45.7], [126.7, 45.7], [126.7, 45.8],
                                            [181, 45.7]))), "longitude 181.0 is outside"),
    (_collection(_with(GOOD, geometry=_poly([10**400, 45.7], [126.7, 45.7], [126.7, 45.8],
                                            [10**400, 45.7]))), "out of range"),
    (_collection(_with(GOOD, geometry=_poly([126.6], [126.7, 45.7], [126.7, 45.8],
                                            [126.6]))), r"position 0: expected \[longitude"),
    (_collection(_with(GOOD, geometry=_poly([[126.6, 45.7], 45.7], [126.7, 45.7],
                                            [126.7, 45.8], [[126.6, 45.7], 45.7]))),
     "longitude must be a number"),
    (_collection(_with(GOOD, geometry={"type": "MultiPolygon", "coordinates": [
        [_square(126.6, 45.7, 0.001)], [_square(126.6, 45.7, 0.001)[:3]]]})),
     "polygon 1 ring 0: a ring needs at least 4 positions"),
    (_collection(_with(GOOD, geometry=_poly(*(
        [[126.6 + 0.001 * math.cos(a / 10_000 * math.tau),
          45.7 + 0.001 * math.sin(a / 10_000 * math.tau)] for a in range(10_000)]
        + [[126.6 + 0.001 * math.cos(a / 10_000 * math.tau),
            45.7 + 0.001 * math.sin(a / 10_000 * math.tau)] for a in range(10_001)]
        + [[126.601, 45.7]])))), "more than 20000 positions"),
]


def test_hostile_geojson_is_refused_and_nothing_is_written(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        geo.load_grids(session, geo.read_geojson(geo.DEMO_GRIDS))
    before = _snapshot(sessions)
    for collection, message in BAD_GEOJSON:
        if isinstance(collection, dict) and collection.get("features"):
            # a good new grid first, so a half-written load would show
            collection = {**collection, "features": [
                _feature("23010300900101", _poly(*_square(126.7, 45.8, 0.001))),
                *collection["features"]]}
            message = message.replace("feature 1", "feature 2")
        with pytest.raises(GeoError, match=message), transaction(sessions) as session:
            geo.load_grids(session, collection)
    assert _snapshot(sessions) == before


def test_a_grid_file_is_named_in_its_errors(tmp_path: Path) -> None:
    broken = tmp_path / "grids.geojson"
    broken.write_text('{"type": "FeatureCollection", "features": [', encoding="utf-8")
    with pytest.raises(GeoError, match=re.escape(f"grids {broken} is not valid JSON")):
        geo.read_geojson(broken)
    with pytest.raises(GeoError, match="does not exist"):
        geo.read_geojson(tmp_path / "missing.geojson")


DEMO = [f["geometry"] for f in json.loads(geo.DEMO_GRIDS.read_text(encoding="utf-8"))["features"]]
EDGES_LON = (126.63, 126.6313, 126.6326)
EDGES_LAT = (45.75, 45.7509, 45.7518)


@given(st.one_of(st.floats(126.63, 126.6326), st.sampled_from(EDGES_LON)),
       st.one_of(st.floats(45.75, 45.7518), st.sampled_from(EDGES_LAT)))
def test_adjacent_grids_never_both_claim_a_point(lon: float, lat: float) -> None:
    claims = sum(geo.contains(g, lat, lon) for g in DEMO)
    # inside the city's outline by more than the rule's hair (geo.contains: a point on an
    # inner edge goes to the grid a hair east and north of it, which within a hair of the
    # outline is outside the city: lon 126.6313, lat 45.75179999999999 was claimed by none)
    hair = 1e-8
    inner = (EDGES_LON[0] + hair < lon < EDGES_LON[-1] - hair
             and EDGES_LAT[0] + hair < lat < EDGES_LAT[-1] - hair)
    assert claims <= 1 and (claims == 1 or not inner)


# --- coordinates ---------------------------------------------------------------------------


@pytest.mark.parametrize(("lat", "lon", "message"), [
    (NAN, 126.6, "latitude must be a finite number"),
    (45.7, INF, "longitude must be a finite number"),
    (-INF, 126.6, "latitude must be a finite number"),
    ("45.7", 126.6, "latitude must be a number"),
    (None, 126.6, "latitude must be a number"),
    (True, 126.6, "latitude must be a number"),
    (45.7, [126.6], "longitude must be a number"),
    (90.0001, 126.6, "outside -90..90"),
    (45.7, -180.5, "outside -180..180"),
    (10**400, 126.6, "out of range"),
])
def test_a_bad_point_is_refused(lat: Any, lon: Any, message: str) -> None:
    with pytest.raises(GeoError, match=message):
        geo.check_point(lat, lon)
    with pytest.raises(GeoError):
        geo.gcj02_to_wgs84(lat, lon)


def test_check_point_gives_floats() -> None:
    assert geo.check_point(45, -180) == (45.0, -180.0)
    assert all(isinstance(v, float) for v in geo.check_point(45, 126))


def test_haversine_matches_known_distances() -> None:
    # one degree along a meridian on the mean sphere
    assert geo.distance_m(0, 0, 1, 0) == pytest.approx(6_371_008.8 * math.pi / 180, abs=1e-6)
    # Nashville BNA to Los Angeles LAX: 2887.2599506 km on a 6372.8 km sphere
    expected = 2_887_259.9506 * geo.EARTH_RADIUS_M / 6_372_800
    assert geo.distance_m(36.12, -86.67, 33.94, -118.40) == pytest.approx(expected, abs=0.5)
    # Beijing Tiananmen to Shanghai People's Square: about 1067 km
    assert geo.distance_m(39.9087, 116.3975, 31.2304, 121.4737) == pytest.approx(1_067_000,
                                                                                 rel=0.005)
    assert geo.distance_m(45.75, 126.63, 45.75, 126.63) == 0
    assert geo.distance_m(0, 0, 0, 180) == pytest.approx(math.pi * 6_371_008.8)


KNOWN_GCJ = [  # WGS84 -> GCJ-02, as the public implementations compute them
    ((31.1774276, 121.5272106), (31.17530398364597, 121.531541859215)),  # Shanghai
    ((22.543847, 113.912316), (22.540796131694766, 113.9171764808363)),  # Shenzhen
    ((39.911954, 116.377817), (39.91334545536069, 116.38404722455657)),  # Beijing
]


def test_gcj02_matches_the_public_formulae() -> None:
    for wgs, gcj in KNOWN_GCJ:
        assert geo.distance_m(*geo.wgs84_to_gcj02(*wgs), *gcj) < 0.01
        assert geo.distance_m(*geo.gcj02_to_wgs84(*gcj), *wgs) < 0.01
    shift = geo.distance_m(45.75, 126.63, *geo.wgs84_to_gcj02(45.75, 126.63))
    assert 100 < shift < 1000  # Harbin: the map offset is hundreds of metres
    assert geo.wgs84_to_gcj02(51.5, -0.12) == (51.5, -0.12)  # outside China: unchanged
    assert geo.gcj02_to_wgs84(51.5, -0.12) == (51.5, -0.12)


@given(st.floats(18.2, 53.5), st.floats(73.7, 134.7))
def test_gcj02_round_trips_within_a_metre(lat: float, lon: float) -> None:
    gcj = geo.wgs84_to_gcj02(lat, lon)
    assert geo.distance_m(lat, lon, *geo.gcj02_to_wgs84(*gcj)) < 1
    wgs = geo.gcj02_to_wgs84(lat, lon)
    assert geo.distance_m(lat, lon, *geo.wgs84_to_gcj02(*wgs)) < 1
