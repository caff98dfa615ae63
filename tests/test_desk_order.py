"""The desk's order form (工单受理) bound to the live call, in Debian's Chromium against the
real centre: the category searched by code, name and pinyin initials; a pin resolving to
the grid and the department; a repeat of an open order nearby shown while typing; a live
kit call ringing the form's agent at a desk phone, whose screen pop binds the form, and the
order saved on it and linked to it; hostile input refused next to its field with nothing
stored; all of it on a map with no tiles (and pins from GCJ-02 tiles stored as WGS84).

Expectations are written by hand from tickets/catalogue.yaml and tickets/demo_grids.geojson.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect
from sqlalchemy import func, select

from accounts.service import OPERATOR, ROLES, add_user, create_account
from core.db import make_engine, session_factory, transaction, upgrade
from hotline.centre import Centre
from sipkit.kit import Call, Dtmf, Hangup, SipKit, Wait
from telephony import commands
from tests import api_world
from tests.browser import chromium, screenshot, sign_in
from tests.conftest import AGENT_PORT, WEB_PORT, agent_ip, api, ensure_ready, wait_until
from tickets import catalogue, geo
from tickets.models import WorkOrder, WorkOrderCall, WorkOrderEvent

NAME, PASSWORD = "受理坐席小周", "order-form-测试-密码-1"
DESK_AGENT, OTHER_AGENT = "8101", "8102"  # the form's agent answers at a kit desk phone
SITE = f"http://127.0.0.1:{WEB_PORT}"
# Demo grids (tickets/demo_grids.geojson): four 0.0013° x 0.0009° squares from 126.63, 45.75
GRID_01 = (45.7504, 126.6305)   # south-west: 23010300100101
GRID_04 = (45.7514, 126.6320)   # north-east: 23010300100104
OUTSIDE_CITY = (45.80, 126.70)  # Harbin, but far from every grid
OUTSIDE_CHINA = (51.5, -0.12)   # London


@pytest.fixture(scope="module")
def operator(centre: Centre) -> dict[str, str]:
    """An operator who signs in with a password, agent 8101 at a desk phone (so the
    centre's screen pop reaches this desk) who may see numbers, and the demo grids loaded."""
    with transaction(centre.sessions) as session:
        create_account(session, NAME, [OPERATOR], password=PASSWORD, agent=DESK_AGENT,
                       see_phone=True, actor="test", now=centre.clock.now())
        token = add_user(session, "受理接口", [OPERATOR], True, ROLES, now=centre.clock.now())
        geo.load_grids(session, geo.read_geojson(geo.DEMO_GRIDS))
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def desk(centre: Centre, operator: dict[str, str]) -> Iterator[tuple[Page, list[str]]]:
    """The signed-in desk, and every host the page asked something of."""
    with chromium() as browser:
        context = browser.new_context(locale="zh-CN", viewport={"width": 1366, "height": 900})
        page = context.new_page()
        hosts: list[str] = []
        page.on("request", lambda r: hosts.append(r.url.split("/")[2]))
        sign_in(page, SITE, NAME, PASSWORD)
        expect(page.locator("#order")).to_have_attribute("data-grids-shown", "4")
        try:
            yield page, hosts
        finally:
            context.close()


@pytest.fixture
def form(desk: tuple[Page, list[str]]) -> Page:
    page = desk[0]
    page.locator("#order-reset").click()
    page.locator("#order-result").evaluate("node => { node.textContent = '' }")
    page.evaluate("""() => { document.getElementById('order-call-id').value = '';
                             document.getElementById('order-call').dataset.callId = ''; }""")
    return page


def _counts(centre: Centre) -> tuple[int, int, int]:
    with centre.sessions() as session:
        return tuple(session.scalar(select(func.count()).select_from(table))  # type: ignore
                     for table in (WorkOrder, WorkOrderCall, WorkOrderEvent))


def _search(page: Page, text: str) -> list[str]:
    page.locator("#order-category-search").fill(text)
    # the debounced search has answered for this very text
    expect(page.locator("#order-category-list")).to_have_attribute("data-query", text)
    options = page.locator("#order-category-list li")
    expect(options.first).to_be_visible()
    return [o.get_attribute("data-code") or o.inner_text() for o in options.all()]


def _choose(page: Page, text: str, code: str) -> None:
    _search(page, text)
    page.locator(f"#order-category-list li[data-code='{code}']").first.click()
    expect(page.locator("#order-category-code")).to_have_value(code)


def _pin(page: Page, lat: float, lon: float) -> None:
    page.locator("#order-lat").fill(str(lat))
    page.locator("#order-lon").fill(str(lon))


def test_a_category_is_found_by_code_name_and_pinyin_initials(form: Page) -> None:
    # code 0102: event 暴露垃圾 first, then component 污水井盖
    assert _search(form, "0102") == ["0102", "0102"]
    options = form.locator("#order-category-list li")
    assert [options.nth(i).get_attribute("data-kind") for i in range(2)] == ["event",
                                                                           "component"]
    expect(options.nth(0)).to_contain_text("暴露垃圾")
    expect(options.nth(1)).to_contain_text("污水井盖")
    # names starting with 垃圾 (components 垃圾间, 垃圾箱) before names holding it (events
    # 暴露垃圾, 积存垃圾渣土)
    assert _search(form, "垃圾") == ["0302", "0303", "0102", "0103"]
    assert _search(form, "bllj") == ["0102"]          # 暴露垃圾: bao lu la ji
    # any case; initials from the start (垃圾箱 ljx) before initials inside (道路积雪结冰
    # dljxjb, the event 0407)
    assert _search(form, "LJX") == ["0303", "0407"]
    expect(form.locator("#order-category-list li").nth(1)).to_contain_text("道路积雪结冰")
    assert _search(form, "zsrm") == ["0602"]          # 噪声扰民: zao sheng rao min
    assert _search(form, "xqzz") == ["没有匹配的分类"]  # nothing: said so
    _choose(form, "jcljzt", "0103")
    expect(form.locator("#order-category-chosen")).to_have_text("0103 积存垃圾渣土")
    expect(form.locator("#order-category-kind")).to_have_value("event")


def test_the_pin_shows_its_grid_and_department_as_it_moves(form: Page) -> None:
    _choose(form, "0102", "0102")  # 暴露垃圾: 市容环卫局 everywhere
    _pin(form, *GRID_01)
    expect(form.locator("#order-grid")).to_have_attribute("data-code", "23010300100101")
    expect(form.locator("#order-grid")).to_contain_text("南岗区示范街道示范社区第01网格")
    expect(form.locator("#order-department")).to_have_attribute("data-code", "sanitation")
    expect(form.locator("#order-department")).to_contain_text("市容环卫局")
    # a click on the map inside grid 04 moves the pin there
    form.locator(".order-grid-23010300100104").click()
    expect(form.locator("#order-grid")).to_have_attribute("data-code", "23010300100104")
    lat = float(form.locator("#order-lat").input_value())
    lon = float(form.locator("#order-lon").input_value())
    assert 45.7509 < lat < 45.7518 and 126.6313 < lon < 126.6326
    # street order (05) in the demo street goes to the street's own team
    _choose(form, "wzjyys", "0501")  # 无照经营游商
    expect(form.locator("#order-department")).to_have_attribute("data-code", "demo-street")
    expect(form.locator("#order-department")).to_contain_text("示范街道综合执法队")
    _pin(form, 45.7495, 126.6305)  # 55 m south of the grids: outside the city's extent
    expect(form.locator(".order-error[data-field='location']")).to_contain_text(
        "outside the city")
    expect(form.locator("#order-grid")).to_have_attribute("data-code", "")


def test_a_repeat_nearby_is_shown_but_not_a_far_one_or_another_category(
        centre: Centre, operator: dict[str, str], form: Page) -> None:
    status, first = api("/api/v1/orders", {
        "appeal_type": "complaint", "description": "路边扔了旧沙发", "channel": "phone",
        "category_code": "0107", "latitude": GRID_04[0], "longitude": GRID_04[1],
        "address": "<img src=x onerror=\"document.title='pwned'\">示范街1号"}, operator)
    assert status == 201, first
    case = first["case_number"]
    _choose(form, "fqjjsb", "0107")  # 废弃家具设备
    _pin(form, round(GRID_04[0] + 0.0002, 6), round(GRID_04[1] + 0.0002, 6))  # about 27 m away
    warning = form.locator("#order-duplicate")
    expect(warning).to_be_visible()
    expect(warning).to_have_attribute("data-case", case)
    expect(warning).to_contain_text(case)
    # the earlier order's address is markup: shown as text, never run
    expect(warning).to_contain_text("<img src=x onerror=")
    assert form.locator("#order-duplicate img").count() == 0
    assert form.title() != "pwned"
    screenshot(form, "desk-order-duplicate-warning")
    _pin(form, *GRID_01)  # about 190 m away: beyond tickets.duplicate_distance_m (100)
    expect(warning).to_be_hidden()
    _pin(form, round(GRID_04[0] + 0.0002, 6), round(GRID_04[1] + 0.0002, 6))
    expect(warning).to_be_visible()
    _choose(form, "fqcl", "0108")  # 废弃车辆: another category at the same place
    expect(warning).to_be_hidden()


def _wait_event(centre: Centre, after: str, kind: str, timeout: float,
                **fields: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        for _id, event in centre.bus.read(after, count=10_000):
            if event.get("type") == kind and all(event.get(k) == v for k, v in fields.items()):
                return event
        assert time.monotonic() < deadline, f"no {kind} {fields}"
        time.sleep(0.1)


def test_an_order_saved_during_the_call_is_linked_to_it(centre: Centre, kit: SipKit,
                                                        form: Page) -> None:
    ensure_ready(centre)
    commands.send(centre.bus.client, "seat.pause", {"agent": OTHER_AGENT, "reason": "meal"})
    wait_until(lambda: centre.telephony.board.seat(OTHER_AGENT).state == "paused", 10,
               f"{OTHER_AGENT} is not paused")
    caller = "13600000082"
    after = centre.bus.last_id()
    try:
        with kit.agent_phone(DESK_AGENT, agent_ip(DESK_AGENT), port=AGENT_PORT,
                             answer_after=1.0):
            run = kit.start_calls(Call(caller_id=caller, script=(
                Wait(1.0), Dtmf("1"), Wait(16.0), Hangup())))
            started = _wait_event(centre, after, "call.started", 15, caller_number=caller)
            call_id = started["call_id"]
            # the centre's screen pop reaches this desk through the push server, and the
            # form takes the call from it: the number in full, this agent may see it
            expect(form.locator("#order-call")).to_have_attribute("data-call-id", call_id,
                                                                  timeout=15_000)
            expect(form.locator("#order-phone")).to_have_value(caller)
            _wait_event(centre, after, "call.agent_connected", 15, call_id=call_id)
            case = _fill_and_save(centre, form, call_id)
            [finished] = run.wait()
    finally:
        commands.send(centre.bus.client, "seat.resume", {"agent": OTHER_AGENT})
    assert finished.outcome == "answered"
    _check_saved(case, call_id, caller, centre)


def _fill_and_save(centre: Centre, form: Page, call_id: str) -> str:
    """Fill the form while the call is up and save it: the case number the page shows."""
    form.locator("#order-appeal-type").select_option("complaint")
    _choose(form, "dlbj", "0104")  # 道路不洁
    form.locator("#order-address").fill("示范街与人民路交口")
    _pin(form, *GRID_01)
    expect(form.locator("#order-grid")).to_have_attribute("data-code", "23010300100101")
    form.locator("#order-description").fill("路面油污一大片，行人滑倒")
    screenshot(form, "desk-order-half-filled-on-a-call")
    form.locator("#order-save").click()
    result = form.locator("#order-result")
    expect(result).to_contain_text("已保存")
    case = result.get_attribute("data-case") or ""
    assert len(case) == 12 and case.isdigit()
    expect(result).to_contain_text(case)
    assert centre.telephony.live_calls() == [call_id]  # saved while the call was up
    expect(form.locator("#order-call")).to_have_attribute("data-call-id", "")
    return case


def _check_saved(case: str, call_id: str, caller: str, centre: Centre) -> None:
    status, order = api(f"/api/v1/orders/{case}")
    assert status == 200
    assert (order["call_id"], order["channel"], order["category_code"], order["grid_code"],
            order["department_code"], order["citizen_phone"], order["address"]) == (
        call_id, "phone", "0104", "23010300100101", "sanitation", caller,
        "示范街与人民路交口")
    assert [(c["call_id"], c["how"]) for c in order["calls"]] == [(call_id, "intake")]
    with centre.sessions() as session:
        assert session.scalar(select(WorkOrderCall.order_id).join(
            WorkOrder, WorkOrder.id == WorkOrderCall.order_id).where(
            WorkOrderCall.call_id == call_id, WorkOrder.case_number == case)) is not None


def _announce(page: Page, kind: str, detail: dict[str, Any]) -> None:
    page.evaluate("([kind, detail]) => document.dispatchEvent(new CustomEvent(kind, "
                  "{detail: detail}))", [kind, detail])


def test_the_softphone_binds_the_call_and_its_end_keeps_it(form: Page) -> None:
    call = form.locator("#order-call")
    _announce(form, "desk:softphone", {"state": "ringing", "caller": "138****8000"})
    expect(call).to_have_attribute("data-call-id", "")  # no call id yet: nothing to bind
    _announce(form, "desk:softphone", {"state": "talking", "caller": "138****8000",
                                       "call_id": "1764400000.31"})
    expect(call).to_have_attribute("data-call-id", "1764400000.31")
    expect(call).to_contain_text("138****8000")
    expect(form.locator("#order-phone")).to_have_value("")  # a masked number is not typed in
    _announce(form, "desk:softphone", {"state": "idle", "caller": ""})
    _choose(form, "0102", "0102")
    form.locator("#order-reset").click()  # clearing the form keeps its call
    expect(form.locator("#order-category-chosen")).to_have_text("")  # the form is cleared
    expect(call).to_have_attribute("data-call-id", "1764400000.31")
    expect(form.locator("#order-call-id")).to_have_value("1764400000.31")
    _announce(form, "desk:pop", {"call_id": "1764400000.32", "caller_number": "138****8001"})
    expect(call).to_have_attribute("data-call-id", "1764400000.32")


def _post(page: Page, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """A save sent as the page sends it (the session's cookie and CSRF token), bypassing
    the page's own checks: what the server itself refuses."""
    reply = page.evaluate("""async (body) => {
        const csrf = JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRFToken'];
        const r = await fetch('/desk/orders', {method: 'POST', headers: {
            'Content-Type': 'application/json', 'X-CSRFToken': csrf}, body: body});
        return [r.status, await r.text()];
    }""", json.dumps(body))
    return reply[0], json.loads(reply[1])


def test_hostile_input_is_refused_next_to_its_field_and_stores_nothing(
        centre: Centre, form: Page) -> None:
    before, bus_mark = _counts(centre), centre.bus.last_id()
    def error(field: str) -> Locator:
        return form.locator(f".order-error[data-field='{field}']")

    # missing fields: said next to each, at once
    form.locator("#order-save").click()
    for field in ("appeal_type", "category_code", "description"):
        expect(error(field)).to_contain_text("必填")
    # and the server refuses them the same, naming the field
    assert _post(form, {"appeal_type": "complaint", "category_code": "0102",
                        "description": ""}) == (
        400, {"error": "Bad Request", "detail": "description: required"})
    status, reply = _post(form, {"appeal_type": "complaint", "description": "x"})
    assert status == 400 and reply["detail"].startswith("category_code: required")
    status, reply = _post(form, {"appeal_type": "complaint", "category_code": "0102",
                                 "description": "x", "latitude": 45.75})
    assert status == 400 and reply["detail"].startswith("location:")

    form.locator("#order-appeal-type").select_option("report")
    _choose(form, "0102", "0102")
    form.locator("#order-address").fill("<script>document.title='pwned'</script>")
    # a 1 MB description
    form.locator("#order-description").evaluate(
        "node => { node.value = '垃圾'.repeat(500000) }")
    form.locator("#order-save").click()
    expect(error("description")).to_contain_text("最多 4000 字")
    form.locator("#order-description").evaluate("node => { node.value = 'x'.repeat(4001) }")
    form.locator("#order-save").click()
    expect(error("description")).to_contain_text("at most 4000 characters")
    form.locator("#order-description").fill("有人倒垃圾")
    # a pin outside the city, then outside China
    _pin(form, *OUTSIDE_CITY)
    expect(error("location")).to_contain_text("outside the city")
    form.locator("#order-save").click()
    expect(error("location")).to_contain_text("outside the city's grids")
    _pin(form, *OUTSIDE_CHINA)
    form.locator("#order-save").click()
    expect(error("location")).to_contain_text("outside China")
    _pin(form, 45.75, "abc")  # type: ignore[arg-type]
    form.locator("#order-save").click()
    expect(error("location")).to_contain_text("数字")
    # a call id that is no call
    form.locator("#order-call-id").evaluate("node => { node.value = '<b>1.2</b>' }")
    _pin(form, *GRID_01)
    form.locator("#order-save").click()
    expect(error("call_id")).to_contain_text("a call's id")
    form.locator("#order-call-id").evaluate("node => { node.value = '1764400000.999' }")
    form.locator("#order-save").click()
    expect(error("call_id")).to_contain_text("no call '1764400000.999'")
    assert form.title() != "pwned"
    assert form.locator("#order-result").inner_text() == ""
    assert _counts(centre) == before  # no order, no link, no event
    assert [e["type"] for _id, e in centre.bus.read(bus_mark, count=10_000)
            if e.get("type", "").startswith("work_order.")] == []  # none published either


def test_the_desk_needs_no_tiles(desk: tuple[Page, list[str]], form: Page) -> None:
    hosts = desk[1]
    assert form.locator("#order").get_attribute("data-tiles") == ""
    assert form.locator(".order-grid").count() == 4  # the city's grids are the ground
    assert form.locator(".leaflet-tile").count() == 0
    # nothing asked of any other site (the desk's push server is this host's too)
    assert {host.rsplit(":", 1)[0] for host in hosts} == {"127.0.0.1"}
    assert f"127.0.0.1:{WEB_PORT}" in hosts


# GRID_01 as a Chinese web map (GCJ-02) draws it, by the public formulae that
# tests/test_catalogue.py checks: about 640 m east and 260 m north of the WGS84 point
GRID_01_GCJ02 = (45.75233572854471, 126.63644339292625)


def test_pins_from_gcj02_tiles_are_stored_as_wgs84(database_url: str, tmp_path: Path) -> None:
    world = api_world.build(database_url, tmp_path)
    try:
        operator = world.tokens["operator"]
        query = f"lat={GRID_01_GCJ02[0]}&lon={GRID_01_GCJ02[1]}&category_code=0102"
        # read as WGS84 the GCJ-02 point lies east of every grid
        reply = world.client.get(f"/desk/orders/place?{query}", headers=operator)
        assert reply.status_code == 400
        assert reply.json["detail"].startswith("location: ") and \
            "outside the city's grids" in reply.json["detail"]
        settings = world.app.extensions["hotline.settings"]
        world.app.extensions["hotline.settings"] = replace(settings, web=replace(
            settings.web, map_coordinates="gcj02",
            map_tile_url="https://tiles.example.cn/{z}/{x}/{y}.png"))
        reply = world.client.get(f"/desk/orders/place?{query}", headers=operator)
        assert reply.status_code == 200, reply.json
        assert (reply.json["grid_code"], reply.json["department_code"]) == (
            "23010300100101", "sanitation")
        assert reply.json["latitude"] == pytest.approx(45.7504, abs=1e-6)
        assert reply.json["longitude"] == pytest.approx(126.6305, abs=1e-6)
        # the grids come drawn in the tiles' datum: grid 01's south-west corner moves too
        grids = world.client.get("/desk/orders/grids", headers=operator).json
        corner = grids["features"][0]["geometry"]["coordinates"][0][0][0]
        assert corner == pytest.approx([126.63594239, 45.75193520], abs=1e-6)
        # the desk page lets the tiles' site show images, and only that one
        page = world.client.get("/desk", headers=operator)
        assert page.status_code == 200
        assert "img-src 'self' data: https://tiles.example.cn;" in \
            page.headers["Content-Security-Policy"]
        assert 'data-tiles="https://tiles.example.cn/{z}/{x}/{y}.png"' in page.text
        assert "img-src 'self' data:;" in world.client.get(
            "/login").headers["Content-Security-Policy"]
        # a supervisor's desk has no form: orders are taken in by operators
        page = world.client.get("/desk", headers=world.tokens["supervisor"])
        assert page.status_code == 200
        assert "工单由受理员受理。" in page.text and 'id="order-form"' not in page.text
        assert 'id="order-form"' in world.client.get("/desk", headers=operator).text
    finally:
        world.engine.dispose()


def test_pinyin_is_worked_out_once_per_catalogue_not_per_keystroke(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    worked: list[str] = []
    real = catalogue.lazy_pinyin
    monkeypatch.setattr(catalogue, "lazy_pinyin",
                        lambda name, **kw: worked.append(name) or real(name, **kw))
    monkeypatch.setattr(catalogue, "_index", ((), []))  # no index of an earlier catalogue
    try:
        with transaction(sessions) as session:
            catalogue.seed(session)
        with sessions() as session:
            for typed in ("l", "lj", "ljx"):
                catalogue.search_categories(session, typed)
        assert len(worked) == 83  # each active category's name once: 42 events, 41 parts
        assert "垃圾箱" in worked
        worked.clear()
        with transaction(sessions) as session:  # the catalogue changes: worked out again
            catalogue.set_category(session, "0303", "component", "果皮箱")
        with sessions() as session:
            assert [f.code for f in catalogue.search_categories(session, "gpx")] == ["0303"]
            assert catalogue.search_categories(session, "ljx")[0].name == "道路积雪结冰"
            catalogue.search_categories(session, "gpx")
        assert len(worked) == 83
    finally:
        engine.dispose()
