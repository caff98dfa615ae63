"""The satisfaction survey call through the real Asterisk: the centre dials the citizen once
over the trunk when the survey is due, the kit phone keys the rating, and the order follows
the rating. An unanswered or abandoned survey call is retried later, never lost."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from asterisk_conf.sandbox import Sandbox
from core.config import Settings
from core.db import transaction
from hotline.centre import Centre
from sipkit.kit import Dtmf, SipKit, Wait
from telephony import records
from telephony.ami import EventTap
from tests.conftest import CASE_LOOP, WEB_PORT, wait_until
from tickets import service
from tickets.models import Survey, WorkOrder


@pytest.fixture(scope="module")
def survey_centre(pbx: Sandbox, pbx_settings: Settings) -> Iterator[Centre]:
    """A centre whose surveys fall due as soon as an order closes, at any hour."""
    settings = replace(
        pbx_settings, web=replace(pbx_settings.web, port=WEB_PORT),
        tickets=replace(pbx_settings.tickets, survey_after_workdays=0,
                        survey_hours="00:00-24:00", survey_retry_minutes=30))
    with Centre(settings) as running:
        yield running


def _close_order(centre: Centre, phone: str) -> str:
    policy = service.Policy.from_settings(centre.settings)
    with transaction(centre.sessions) as session:
        order = service.open_order(session, appeal_type="complaint", channel="phone",
                                   description="路灯不亮已经一周", actor="受理员",
                                   citizen_phone=phone, policy=policy, now=centre.clock.now())
        for action, role in CASE_LOOP:
            service.transition(session, order.case_number, action, actor=role, role=role,
                               policy=policy, now=centre.clock.now())
        return order.case_number


def _survey_of(centre: Centre, case: str) -> tuple[Survey, str]:
    with centre.sessions() as session:
        survey, state = session.execute(
            select(Survey, WorkOrder.state).join(WorkOrder).where(
                WorkOrder.case_number == case).order_by(Survey.round.desc())).first()
        session.expunge(survey)
        return survey, state



def test_the_citizen_presses_4_the_rating_is_dissatisfied_and_the_order_reopens(
        survey_centre: Centre, kit: SipKit, ami: EventTap, pbx_settings: Settings) -> None:
    phone = "13912340004"
    with kit.agent_phone("citizen", pbx_settings.pbx.trunk_host,
                         port=pbx_settings.pbx.trunk_port, answer_after=0.5, talk_seconds=40,
                         script=(Wait(2.5), Dtmf("4"))) as citizen:
        case = _close_order(survey_centre, phone)
        wait_until(lambda: _survey_of(survey_centre, case)[0].state == "done", 60,
              "the survey was not answered")
        wait_until(lambda: any(r.ended_at for r in citizen.results()), 30,
              "the survey call did not end")
    survey, state = _survey_of(survey_centre, case)
    assert (survey.rating, survey.channel, survey.outcome) == (4, "phone", "reopened")
    assert survey.call_attempts == 1
    assert state == "handling"  # back to the department for rework (不满意重办)
    calls = citizen.results()
    assert [(c.to_user, c.outcome) for c in calls] == [(phone, "answered")]  # dialled once
    assert calls[0].hangup_by == "far_end"  # thanked, then the line hung up
    with survey_centre.sessions() as session:
        last = service.history(session, case)[-1]
    assert (last.action, last.role, last.actor) == ("reopen", "system", "survey-line")
    assert "4 不满意" in last.note
    # the survey call is recorded as one the hotline placed, never as a citizen calling in
    record = _call_record(survey_centre, phone)
    assert (record["direction"], record["purpose"], record["outcome"]) == (
        "outbound", "survey", "answered")
    assert record["hangup_by"] == "system" and record["queue"] is None


def test_a_busy_citizen_is_called_again_later_not_now(
        survey_centre: Centre, kit: SipKit, ami: EventTap, pbx_settings: Settings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    phone = "13912340005"
    rounds: list[tuple[float, list[str]]] = []  # (started, attempts placed) per round
    dial_surveys = survey_centre.tickets.dial_surveys

    def watched(now: datetime | None = None) -> list[str]:
        started = time.monotonic()
        placed = dial_surveys(now)
        rounds.append((started, placed))
        return placed

    monkeypatch.setattr(survey_centre.tickets, "dial_surveys", watched)
    with kit.agent_phone("citizen", pbx_settings.pbx.trunk_host,
                         port=pbx_settings.pbx.trunk_port, behaviour="refuse",
                         refuse_code=486) as citizen:
        before = datetime.now(UTC)
        case = _close_order(survey_centre, phone)
        wait_until(lambda: (s := _survey_of(survey_centre, case)[0]).state == "scheduled"
              and s.call_attempts == 1, 30, "the busy call was not reported back")
        rescheduled = time.monotonic()
        # the dialler looks again after the busy report, and dials nothing
        wait_until(lambda: any(start > rescheduled for start, _ in rounds[:]), 10,
                   "the dialler did not run again")
    assert all(placed == [] for start, placed in rounds if start > rescheduled)
    assert sum(len(placed) for _start, placed in rounds) == 1  # the busy call only
    survey, state = _survey_of(survey_centre, case)
    assert [c.outcome for c in citizen.results()] == ["refused"]
    assert survey.note == "busy" and state == "closed"
    waited = (survey.next_attempt_at - before).total_seconds()
    assert 30 * 60 <= waited <= 31 * 60  # survey_retry_minutes


def test_a_hang_up_before_rating_is_retried_later_and_the_order_stays_closed(
        survey_centre: Centre, kit: SipKit, ami: EventTap, pbx_settings: Settings) -> None:
    phone = "13912340006"
    with kit.agent_phone("citizen", pbx_settings.pbx.trunk_host,
                         port=pbx_settings.pbx.trunk_port, answer_after=0.5,
                         talk_seconds=2) as citizen:
        case = _close_order(survey_centre, phone)
        wait_until(lambda: (s := _survey_of(survey_centre, case)[0]).state == "scheduled"
              and s.call_attempts == 1, 40, "the abandoned survey was not settled")
    survey, state = _survey_of(survey_centre, case)
    assert [(c.outcome, c.hangup_by) for c in citizen.results()] == [("answered", "agent")]
    assert survey.note == "answered without a rating" and survey.rating is None
    assert state == "closed"
    record = _call_record(survey_centre, phone)
    assert (record["direction"], record["hangup_by"]) == ("outbound", "citizen")


def _call_record(centre: Centre, phone: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def stored() -> bool:
        with centre.sessions() as session:
            found[:] = records.find_calls(session, records.CallQuery(caller_number=phone))[1]
        return bool(found)

    wait_until(stored, 15, f"the call to {phone} was not recorded")
    [record] = found
    assert record["citizen_number"] == phone  # shown in the national form
    return record
