"""The agent's own lists on the desk (issue 10, item 6): the surveys waiting for an agent's
call, with a click-to-call that dials the citizen once however often it is clicked (a real
call through Asterisk: the kit citizen answers, then the agent's desk phone rings); the
orders this operator took in that came back for more information (退回补充); and today's
figures for this agent in the centre's time zone, with the clock pinned and every figure
worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from playwright.sync_api import BrowserContext, Page, expect
from sqlalchemy import select, update

from accounts.service import OPERATOR, Identity, create_account
from asterisk_conf.sandbox import Sandbox
from core.config import Settings
from core.db import transaction
from hotline.centre import Centre
from sipkit.kit import SipKit
from telephony import callbacks
from telephony.ami import EventTap
from telephony.models import SeatInterval
from telephony.records import store_call
from tests import api_world
from tests.browser import MEDIA_FLAGS, chromium, screenshot, sign_in
from tests.conftest import AGENT_PORT, CASE_LOOP, WEB_PORT, agent_ip, api, wait_until
from tickets import service
from tickets.models import Survey, WorkOrder

AGENT, NAME = "8301", "坐席8301"
ME = Identity(NAME, ("operator",), False, agent=AGENT)
CALLING_AGENT, CALLING_PASSWORD = "回访坐席8101", "lists-test-密码-1"


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _call(call_id: str, agent: str, connected: str, talk: float, *,
          direction: str = "inbound", outcome: str = "answered") -> dict[str, Any]:
    start = _at(connected).timestamp() - 5
    return {"call_id": call_id, "direction": direction, "purpose": "",
            "caller_number": "13700000001", "caller_name": "", "entry_number": "12319",
            "started_at": start, "ended_at": start + 5 + talk, "duration_seconds": 5 + talk,
            "outcome": outcome, "queue": "intake", "queue_position": 1, "wait_seconds": 5,
            "short_abandon": False, "agent": agent, "connected_at": start + 5,
            "talk_seconds": talk, "hold_seconds": 0, "hangup_cause": 16,
            "hangup_cause_text": "", "ivr_path": [], "agent_attempts": [], "transfers": [],
            "legs": [], "recording": None, "incomplete": False}


def _pause(agent: str, state: str, began: str, ended: str) -> SeatInterval:
    start, end = _at(began), _at(ended)
    return SeatInterval(agent_number=agent, state=state, reason="meal", started_at=start,
                        ended_at=end, seconds=(end - start).total_seconds())


def test_the_agents_own_lists_and_todays_figures(database_url: str, tmp_path: Path) -> None:
    # the world's clock: 2026-11-24 02:00 UTC = 10:00 in Beijing; "today" there began at
    # 2026-11-23 16:00 UTC
    world = api_world.build(database_url, tmp_path)
    policy = service.Policy.from_settings(world.app.extensions["hotline.settings"])
    try:
        with transaction(world.sessions) as session:
            for call in (_call("c-yesterday", AGENT, "2026-11-23T15:50:00", 100),  # 23:50
                         _call("c-midnight", AGENT, "2026-11-23T16:10:00", 120),  # 00:10
                         _call("c-morning", AGENT, "2026-11-24T01:30:00", 90),  # 09:30
                         _call("c-placed", AGENT, "2026-11-24T01:40:00", 300,
                               direction="outbound"),  # a call the hotline placed
                         _call("c-abandoned", AGENT, "2026-11-24T01:45:00", 0,
                               outcome="abandoned"),
                         _call("c-colleague", "8302", "2026-11-24T01:00:00", 500)):
                assert store_call(session, call)
            session.add_all([
                # 20 min of it today, from midnight in Beijing
                _pause(AGENT, "paused", "2026-11-23T15:40:00", "2026-11-23T16:20:00"),
                _pause(AGENT, "paused", "2026-11-24T01:00:00", "2026-11-24T01:15:00"),  # 15 min
                _pause(AGENT, "ready", "2026-11-24T00:00:00", "2026-11-24T01:00:00"),
                _pause("8302", "paused", "2026-11-24T00:00:00", "2026-11-24T01:00:00")])

            def take_in(description: str, at: str, actor: str = NAME) -> str:
                return service.open_order(
                    session, appeal_type="complaint", channel="phone", actor=actor,
                    description=description, citizen_phone="13912340009",
                    policy=policy, now=_at(at)).case_number

            take_in("昨天受理的", "2026-11-23T15:00:00")  # yesterday in Beijing
            returned = take_in("小区门口垃圾堆放，来电 13911112222", "2026-11-23T16:30:00")
            take_in("今天受理的，未退回", "2026-11-24T01:00:00")
            opened_again = take_in("退回后已补充立案", "2026-11-24T01:05:00")
            colleagues = take_in("同事受理的", "2026-11-24T01:10:00", actor="别的受理员")
            for case in (returned, opened_again, colleagues):
                service.transition(session, case, "request_verification", actor=NAME,
                                   role="operator", policy=policy, now=_at("2026-11-24T01:20:00"))
                service.transition(session, case, "verified", actor="监督员老王",
                                   role="supervisor", note="请补充门牌号",
                                   policy=policy, now=_at("2026-11-24T01:40:00"))
            service.transition(session, returned, "supervise", actor="值班长", role="shift_chief",
                               policy=policy, now=_at("2026-11-24T01:45:00"))  # stays in intake
            service.transition(session, opened_again, "open", actor="值班长",
                               role="shift_chief", policy=policy, now=_at("2026-11-24T01:50:00"))
            closed = take_in("已办结待回访", "2026-11-20T02:00:00", actor="别的受理员")
            for action, role in CASE_LOOP:
                service.transition(session, closed, action, actor=role, role=role,
                                   policy=policy, now=_at("2026-11-21T02:00:00"))
            order_id = session.scalar(select(WorkOrder.id).where(
                WorkOrder.case_number == closed))
            # the survey line and the SMS could not finish it: it is on the agents' list
            session.execute(update(Survey).where(Survey.order_id == order_id).values(
                state="agent", phone="+8613912345670", call_attempts=3,
                updated_at=_at("2026-11-23T03:00:00")))
            survey_id = session.scalar(select(Survey.id).where(Survey.order_id == order_id))
            # callers who pressed 1 to be called back: one the centre failed to reach, one
            # it reached, one still holding its place
            asked = {}
            for number, state in (("13811110001", "failed"), ("13811110002", "connected"),
                                  ("13811110003", "holding")):
                request = callbacks.create(session, number, "intake", 3, 0, f"call-{number}",
                                           now=_at("2026-11-24T00:30:00"))
                assert request is not None
                asked[state] = request.id
                if state != "holding":
                    callbacks.advance(session, request.id, "requested", state,
                                      "no answer" if state == "failed" else "",
                                      now=_at("2026-11-24T00:40:00"))
        me = api_world.as_identity(world, ME)

        reply = world.client.get("/desk/lists/today", headers=me)
        assert reply.status_code == 200, reply.json
        assert reply.json == {"day": "2026-11-24", "calls_answered": 2, "talk_seconds": 210.0,
                              "average_talk_seconds": 105.0, "orders_taken_in": 3,
                              "pause_seconds": 2100.0}

        reply = world.client.get("/desk/lists/returned", headers=me)
        assert reply.status_code == 200, reply.json
        assert reply.json == {"items": [{
            "case_number": returned, "appeal_type": "complaint",
            "description": "小区门口垃圾堆放，来电 139****2222",
            "citizen_phone": "139****0009", "returned_at": "2026-11-24T01:40:00Z",
            "returned_by": "监督员老王", "action": "verified", "note": "请补充门牌号"}]}

        reply = world.client.get("/desk/lists/surveys", headers=me)
        assert reply.status_code == 200, reply.json
        assert reply.json == {"items": [{
            "survey_id": survey_id, "case_number": closed, "round": 1,
            "phone": "139****5670", "call_attempts": 3,
            "waiting_since": "2026-11-23T03:00:00Z"}]}

        reply = world.client.get("/desk/lists/callbacks", headers=me)
        assert reply.status_code == 200, reply.json
        assert reply.json == {"items": [{
            "request_id": asked["failed"], "phone": "138****0001", "queue": "intake",
            "requested_at": "2026-11-24T00:30:00Z", "detail": "no answer"}]}
        done = f"/desk/lists/callbacks/{asked['failed']}/done"
        reply = world.client.post(done, headers=me)
        assert reply.status_code == 200, reply.json
        assert reply.json == {"request_id": asked["failed"], "state": "agent"}
        assert world.client.get("/desk/lists/callbacks", headers=me).json == {"items": []}
        assert world.client.post(done, headers=me).status_code == 409  # done already
        for state in ("connected", "holding"):  # not the agents' to call back
            assert world.client.post(f"/desk/lists/callbacks/{asked[state]}/call",
                                     headers=me).status_code == 409
        with world.sessions() as session:
            request = callbacks.get(session, asked["failed"])
            assert request is not None
            assert (request.state, request.detail) == ("agent", f"called back by agent {AGENT}")
        assert world.client.post("/desk/lists/callbacks/cb-ffff/done",
                                 headers=me).status_code == 404
        assert world.client.post("/desk/lists/callbacks/nonsense!/call",
                                 headers=me).status_code == 404

        # a person with no seat has no figures and places no calls
        nobody = api_world.as_identity(world, Identity("无坐席", ("operator",), False))
        assert world.client.get("/desk/lists/today", headers=nobody).status_code == 404
        assert world.client.post(f"/desk/lists/surveys/{survey_id}/call",
                                 headers=nobody).status_code == 404
        # no such survey, or one not on the list: refused before anything is dialled
        assert world.client.post("/desk/lists/surveys/999999/call",
                                 headers=me).status_code == 404
        assert world.client.post("/desk/lists/surveys/0/call", headers=me).status_code == 404
    finally:
        world.engine.dispose()


def _desk(context: BrowserContext) -> Page:
    site = f"http://127.0.0.1:{WEB_PORT}"
    page = context.new_page()
    sign_in(page, site, CALLING_AGENT, CALLING_PASSWORD)
    return page


def test_click_to_call_dials_the_citizen_once_then_rings_the_agent(
        centre: Centre, pbx: Sandbox, pbx_settings: Settings, kit: SipKit,
        ami: EventTap) -> None:
    phone = "13912340077"
    policy = service.Policy.from_settings(centre.settings)
    with transaction(centre.sessions) as session:
        create_account(session, CALLING_AGENT, [OPERATOR], password=CALLING_PASSWORD,
                       agent="8101", actor="test", now=centre.clock.now())
        order = service.open_order(session, appeal_type="complaint", channel="phone",
                                   description="路灯不亮", actor="受理员", citizen_phone=phone,
                                   policy=policy, now=centre.clock.now())
        for action, role in CASE_LOOP:
            service.transition(session, order.case_number, action, actor=role, role=role,
                               policy=policy, now=centre.clock.now())
        session.execute(update(Survey).where(Survey.order_id == order.id).values(
            state="agent"))  # the line and the SMS gave up: an agent calls
        survey_id = session.scalar(select(Survey.id).where(Survey.order_id == order.id))
        case = order.case_number

    posts: list[str] = []
    with chromium(*MEDIA_FLAGS) as browser:
        context = browser.new_context(ignore_https_errors=True, locale="zh-CN",
                                      viewport={"width": 1366, "height": 900})
        context.on("request", lambda r: posts.append(r.url) if r.method == "POST"
                   and r.url.endswith(f"/desk/lists/surveys/{survey_id}/call") else None)
        first = _desk(context)
        second = context.new_page()  # a second tab of the same signed-in agent
        second.goto(f"http://127.0.0.1:{WEB_PORT}/desk")
        row = f"#surveys li[data-survey='{survey_id}']"
        for tab in (first, second):
            expect(tab.locator(row)).to_contain_text(case)
            expect(tab.locator(row)).to_contain_text("139****0077")  # masked: no privilege
        screenshot(first, "desk-lists")
        with kit.agent_phone("citizen", pbx_settings.pbx.trunk_host,
                             port=pbx_settings.pbx.trunk_port, answer_after=1.0,
                             talk_seconds=12) as citizen, \
                kit.agent_phone("8101", agent_ip("8101"), port=AGENT_PORT,
                                answer_after=1.0) as desk_phone:
            dial = first.locator(f"{row} button.lists-call")
            dial.dblclick()
            expect(dial).to_have_text("正在拨打…")
            expect(dial).to_be_disabled()
            wait_until(lambda: any(r.answered_at for r in desk_phone.results()
                                   if r.from_user == "12319"), 20,
                       "the agent's phone never rang")
            second.locator(f"{row} button.lists-call").click()  # the other tab, while they talk
            expect(second.locator("#lists-error")).to_contain_text("未拨打")
            expect(second.locator("#lists-error")).to_contain_text("still up")
            wait_until(lambda: any(r.ended_at for r in citizen.results()), 30,
                       "the call did not end")
        # the citizen rated the service on the call: the agent saves it from the list
        first.locator(f"{row} select").select_option("2")
        first.locator(f"{row} button", has_text="保存回访结果").click()
        expect(first.locator(row)).to_have_count(0)
        context.close()
    assert len(posts) == 2  # the double click sent one request, the other tab one
    with centre.sessions() as session:
        survey = session.get(Survey, survey_id)
        assert survey is not None
        assert (survey.state, survey.rating, survey.channel, survey.outcome) == (
            "done", 2, "agent", "satisfied")
        assert service.get_order(session, case).state == "evaluated"
    calls = citizen.results()
    assert [(c.to_user, c.outcome) for c in calls] == [(phone, "answered")], calls  # once
    rang = [r for r in desk_phone.results() if r.from_user == "12319"]
    assert [r.outcome for r in rang] == ["answered"]
    placed = [e for e in ami.snapshot() if e.get("Event") == "OriginateResponse"
              and e.get("ActionID") == f"desk-survey-{survey_id}"]
    assert [e["Response"] for e in placed] == ["Success"]

    def record() -> dict[str, Any] | None:
        status, page = api("/api/v1/calls?direction=outbound&limit=50")
        assert status == 200
        return next((c for c in page["items"] if c["purpose"] == "desk"
                     and c["citizen_number"].endswith(phone)), None)

    wait_until(lambda: record() is not None, 15, "no record of the desk's call")
    stored = record()
    assert stored is not None and stored["outcome"] == "answered"
