"""The callback survey's life on the database (SQLite and PostgreSQL): scheduled for the
working day after closure, each attempt claimed once, unanswered calls retried then an SMS,
then the agents' list; a dissatisfied rating reopens the order, up to the limit. The real
survey call through Asterisk is in test_survey_call.py."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from channels import sms
from channels.models import SmsMessage
from core.db import make_engine, session_factory, transaction, upgrade
from tests.conftest import CASE_LOOP
from tickets import service, surveys
from tickets.models import Survey, WorkOrder
from tickets.service import Policy

BEIJING = ZoneInfo("Asia/Shanghai")
POLICY = Policy(survey_call_attempts=2, survey_retry_minutes=60, survey_sms_wait_hours=24,
                reopen_limit=1)
# Wednesday 30 September 2026, 15:00 in Beijing: the last working day before National Day
CLOSED_AT = datetime(2026, 9, 30, 15, 0, tzinfo=BEIJING)


@pytest.fixture
def sessions(database_url: str) -> sessionmaker[Session]:
    engine = make_engine(database_url)
    upgrade(engine)
    return session_factory(engine)


def _closed(sessions: sessionmaker[Session], phone: str = "13800138000",
            at: datetime = CLOSED_AT) -> str:
    with transaction(sessions) as session:
        order = service.open_order(session, appeal_type="complaint", channel="phone",
                                   description="小区门口垃圾桶满溢", actor="受理员",
                                   citizen_phone=phone, policy=POLICY, now=at)
        for action, role in CASE_LOOP:
            service.transition(session, order.case_number, action, actor=role, role=role,
                               policy=POLICY, now=at)
        return order.case_number


def _survey(sessions: sessionmaker[Session], case: str) -> Survey:
    with sessions() as session:
        survey = session.scalar(select(Survey).join(WorkOrder).where(
            WorkOrder.case_number == case).order_by(Survey.round.desc()).limit(1))
        assert survey is not None
        session.expunge(survey)
        return survey


def _state(sessions: sessionmaker[Session], case: str) -> str:
    with sessions() as session:
        return session.scalar(select(WorkOrder.state).where(WorkOrder.case_number == case))


def test_closing_schedules_the_survey_for_the_working_day_after_the_holiday(sessions) -> None:
    case = _closed(sessions)
    survey = _survey(sessions, case)
    assert survey.state == "scheduled" and survey.phone == "+8613800138000"  # E.164
    # 1-7 October are the National Day holiday: the next working day is Thursday 8 October,
    # and the first survey hour that day is 09:00
    assert survey.next_attempt_at.astimezone(BEIJING) == datetime(2026, 10, 8, 9, 0,
                                                                  tzinfo=BEIJING)
    with sessions() as session:
        assert surveys.due_calls(session, datetime(2026, 10, 8, 0, 59, tzinfo=UTC)) == []
        assert surveys.due_calls(session, datetime(2026, 10, 8, 1, 0, tzinfo=UTC)) == [
            survey.id]


def test_an_anonymous_citizen_gets_no_survey_call_but_the_outcome_is_kept(sessions) -> None:
    case = _closed(sessions, phone="")
    survey = _survey(sessions, case)
    assert (survey.state, survey.outcome) == ("done", "no_phone")


def test_an_attempt_is_claimed_once_even_by_two_diallers_at_once(sessions) -> None:
    survey = _survey(sessions, _closed(sessions))
    due = survey.next_attempt_at + timedelta(minutes=1)
    claims: list[object] = []
    barrier = threading.Barrier(2)

    def dial() -> None:
        try:
            barrier.wait(5)
            with transaction(sessions) as session:
                claims.append(surveys.claim_call(session, survey.id, due))
        except BaseException as exc:  # reported below, not lost in the thread
            claims.append(exc)

    threads = [threading.Thread(target=dial) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # Write transactions queue for the lock on both databases: the loser waits, then finds
    # the attempt taken (None); an exception of any kind is a failure, shown here.
    attempts = [c for c in claims if isinstance(c, surveys.Attempt)]
    assert len(claims) == 2 and None in claims and len(attempts) == 1, claims
    assert attempts[0].phone == "+8613800138000"
    assert _survey(sessions, attempts[0].case_number).call_attempts == 1


def test_unanswered_calls_are_retried_then_an_sms_then_the_agents_list(sessions) -> None:
    case = _closed(sessions)
    first_due = _survey(sessions, case).next_attempt_at
    with transaction(sessions) as session:
        calendar = POLICY.calendar(session)
        attempt = surveys.claim_call(session, _survey(sessions, case).id, first_due)
        assert attempt is not None
        assert surveys.call_failed(session, attempt.attempt_id, "busy", POLICY, calendar,
                                   first_due) == "scheduled"
        # a replayed failure report changes nothing
        assert surveys.call_failed(session, attempt.attempt_id, "busy", POLICY, calendar,
                                   first_due) == ""
    retry = _survey(sessions, case)
    assert retry.next_attempt_at == first_due + timedelta(minutes=60)
    with transaction(sessions) as session:
        second = surveys.claim_call(session, retry.id, retry.next_attempt_at)
        assert second is not None
        assert surveys.call_failed(session, second.attempt_id, "no answer", POLICY,
                                   POLICY.calendar(session), retry.next_attempt_at) == "sms"
    with sessions() as session:
        [message] = sms.outbox(session)
        assert message.phone == "+8613800138000" and case in message.text
        assert message.purpose == "survey"
    sent = _survey(sessions, case).sms_sent_at
    assert sent is not None
    with transaction(sessions) as session:
        assert surveys.expire_sms(session, POLICY, sent + timedelta(hours=23)) == 0
        assert surveys.expire_sms(session, POLICY, sent + timedelta(hours=24)) == 1
        [(listed, listed_case)] = surveys.agent_list(session)
        assert listed_case == case
        assert surveys.agent_result(session, listed.id, None, actor="坐席8101",
                                    note="三次未接通", policy=POLICY,
                                    now=sent + timedelta(hours=25)) == "unreachable"
    survey = _survey(sessions, case)
    assert (survey.state, survey.channel, survey.outcome) == ("done", "agent", "unreachable")
    assert _state(sessions, case) == "closed"


def _to_sms(sessions: sessionmaker[Session], case: str) -> datetime:
    policy = Policy(survey_call_attempts=1)
    survey = _survey(sessions, case)
    with transaction(sessions) as session:
        attempt = surveys.claim_call(session, survey.id, survey.next_attempt_at)
        assert attempt is not None
        surveys.call_failed(session, attempt.attempt_id, "busy", policy,
                            policy.calendar(session), survey.next_attempt_at)
    return survey.next_attempt_at


def test_an_sms_reply_of_4_reopens_the_order_and_a_repeated_webhook_counts_once(sessions
                                                                              ) -> None:
    case = _closed(sessions)
    at = _to_sms(sessions, case) + timedelta(hours=2)
    with transaction(sessions) as session:
        for _ in range(2):  # the gateway repeats its webhook
            message, new = sms.receive(session, "13800138000", " ４ ", "gw-1", now=at)
            if new:
                assert surveys.sms_reply(session, message.phone, message.text, POLICY,
                                         at) == "reopened"
        assert surveys.sms_reply(session, "13800138000", "4", POLICY, at) == ""
        received = session.scalars(select(SmsMessage).where(SmsMessage.direction == "in"))
        assert len(list(received)) == 1
    survey = _survey(sessions, case)
    assert (survey.rating, survey.channel, survey.outcome) == (4, "sms", "reopened")
    assert _state(sessions, case) == "handling"
    with sessions() as session:
        history = [(e.action, e.role) for e in service.history(session, case)]
    assert history[-1] == ("reopen", "system")


def test_a_text_that_is_not_a_rating_is_left_for_people_to_read(sessions) -> None:
    case = _closed(sessions)
    at = _to_sms(sessions, case)
    with transaction(sessions) as session:
        assert surveys.sms_reply(session, "13800138000", "垃圾又满了，4天没人管", POLICY,
                                 at) == ""
        assert surveys.sms_reply(session, "13800138000", "9", POLICY, at) == ""
    assert _survey(sessions, case).state == "sms"


def test_a_reply_from_the_number_in_another_form_answers_its_survey(sessions) -> None:
    case = _closed(sessions)  # the survey went to 13800138000
    at = _to_sms(sessions, case)
    with transaction(sessions) as session:  # a gateway that writes numbers the E.164 way
        assert surveys.sms_reply(session, "+86 138-0013-8000", "２", POLICY, at) == "satisfied"
    assert _survey(sessions, case).rating == 2


def test_satisfied_ratings_evaluate_and_the_reopen_limit_ends_endless_rework(sessions
                                                                            ) -> None:
    satisfied = _closed(sessions, phone="13900000001")
    unhappy = _closed(sessions, phone="13900000002")
    for case, rating in ((satisfied, 2), (unhappy, 5)):
        survey = _survey(sessions, case)
        with transaction(sessions) as session:
            attempt = surveys.claim_call(session, survey.id, survey.next_attempt_at)
            assert attempt is not None
            surveys.rate_call(session, attempt.attempt_id, rating, POLICY,
                              survey.next_attempt_at)
    assert _state(sessions, satisfied) == "evaluated"
    assert _survey(sessions, satisfied).outcome == "satisfied"
    assert _state(sessions, unhappy) == "handling"  # first dissatisfaction: rework
    # the department handles it again and it closes again; the second survey is also a 5
    later = CLOSED_AT + timedelta(days=10)
    with transaction(sessions) as session:
        for action, role in CASE_LOOP[3:]:
            service.transition(session, unhappy, action, actor=role, role=role,
                               policy=POLICY, now=later)
    second = _survey(sessions, unhappy)
    assert second.round == 2
    with transaction(sessions) as session:
        attempt = surveys.claim_call(session, second.id, second.next_attempt_at)
        assert attempt is not None
        assert surveys.rate_call(session, attempt.attempt_id, 5, POLICY,
                                 second.next_attempt_at) == "dissatisfied_final"
        with pytest.raises(surveys.SurveyError):
            surveys.rate_call(session, attempt.attempt_id, 7, POLICY, later)
    assert _state(sessions, unhappy) == "evaluated"  # reopen_limit = 1: the chief reviews
