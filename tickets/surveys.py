"""The callback and satisfaction survey (回访 / 满意度评价) after an order closes.

A survey waits until the configured working day after closure, then the citizen is called
by the automated survey line at the survey hours and rates by keypad (1 非常满意, 2 满意,
3 基本满意, 4 不满意, 5 非常不满意); unanswered calls are retried, then an SMS asks for a
reply 1-5, then the survey goes on an agent's callback list.

    scheduled -> calling -> scheduled (retry) ... -> sms -> agent -> done

Every step is a conditional update on the survey's state (and, for a call, its attempt id),
so each attempt is dialled once and each answer counted once however often it is replayed.
A dissatisfied rating reopens the order for rework (不满意重办) up to the configured limit.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core import phones
from core.errors import HotlineError
from core.events import announce
from tickets import rollups, service, workflow
from tickets.events import Move, OrderEvent, SurveyFinished
from tickets.models import Survey, WorkOrder, WorkOrderEvent
from tickets.policy import Policy
from tickets.workcalendar import WorkCalendar, parse_hours

RATINGS = {1: "非常满意", 2: "满意", 3: "基本满意", 4: "不满意", 5: "非常不满意"}
SMS_TEXT = ("【12319城市管理热线】您反映的问题（案件编号{case}）已办结。请回复数字评价："
            "1非常满意 2满意 3基本满意 4不满意 5非常不满意。")
_FULL_WIDTH = str.maketrans("１２３４５", "12345")

SmsSender = Callable[[Session, str, str, str, datetime], object]
"""How a survey's SMS leaves: (session, phone, text, case number, now), inside the survey's
own transaction. The channels room, which stands above this one, wires it (channels.sms).
It returns False when the number takes no survey by SMS (it opted out: 退订)."""
_sms_sender: list[SmsSender] = []


def send_sms_with(sender: SmsSender) -> None:
    """Wire the channel that sends the survey's SMS; wiring again replaces it."""
    _sms_sender[:] = [sender]


class SurveyError(HotlineError):
    """A survey answer that cannot be taken; says why."""

    status = 409


class SurveyNotFound(SurveyError):
    status = 404


@dataclass(frozen=True)
class Attempt:
    """A survey call to place: dial `phone`, and report back under `attempt_id`."""

    survey_id: int
    attempt_id: str
    phone: str
    case_number: str


def next_slot(hours: str, calendar: WorkCalendar, moment: datetime) -> datetime:
    """The earliest moment at or after `moment` inside the survey hours (any day: citizens
    are called at the hours the operator allows, weekends included)."""
    spans = parse_hours(hours)
    local = moment.astimezone(calendar.timezone)
    for offset in range(8):
        day = local.date() + timedelta(days=offset)
        for start, end in spans:
            begin = datetime.combine(day, start, calendar.timezone)
            finish = datetime.combine(day, end, calendar.timezone)
            if local < finish:
                return max(local, begin).astimezone(UTC)
    raise SurveyError("tickets.survey_hours leaves no time to call")


def _workday_after(calendar: WorkCalendar, day: date, workdays: int) -> date:
    while workdays > 0:
        day += timedelta(days=1)
        if calendar.is_workday(day):
            workdays -= 1
    return day


def schedule(session: Session, order: WorkOrder, calendar: WorkCalendar, policy: Policy,
             now: datetime) -> Survey:
    """The survey for an order just closed: the working day after (by default), or done at
    once as `no_phone` for an anonymous citizen."""
    rounds = session.scalar(select(func.count(Survey.id)).where(Survey.order_id == order.id))
    closed_day = now.astimezone(calendar.timezone).date()
    first_day = _workday_after(calendar, closed_day, policy.survey_after_workdays)
    start = datetime.combine(first_day, time(0, 0), calendar.timezone)
    survey = Survey(order_id=order.id, round=(rounds or 0) + 1, phone=order.citizen_phone,
                    state="scheduled", next_attempt_at=next_slot(policy.survey_hours,
                                                                 calendar, start),
                    created_at=now, updated_at=now)
    if not order.citizen_phone:
        survey.state, survey.outcome = "done", "no_phone"
        announce(session, SurveyFinished(at=now.timestamp(), case_number=order.case_number,
                                         round=survey.round, outcome="no_phone"))
    session.add(survey)
    session.flush()
    return survey


def follow_move(event: OrderEvent, move: Move) -> None:
    """Subscriber of every move (tickets.follow_ups): closing an order (结案) schedules its
    survey; the full loop ends with a callback, first-call answers do not."""
    if move.action == "close":
        schedule(move.session, move.order, move.calendar, move.policy, move.now)


def due_calls(session: Session, now: datetime, limit: int = 20) -> list[int]:
    return list(session.scalars(select(Survey.id).where(
        Survey.state == "scheduled", Survey.next_attempt_at <= now)
        .order_by(Survey.next_attempt_at).limit(limit)))


def claim_call(session: Session, survey_id: int, now: datetime) -> Attempt | None:
    """Take a due survey for one call attempt; None if someone else took it first."""
    attempt_id = f"sv-{uuid.uuid4().hex[:20]}"
    taken = session.execute(update(Survey).where(
        Survey.id == survey_id, Survey.state == "scheduled", Survey.next_attempt_at <= now)
        .values(state="calling", attempt_id=attempt_id, call_attempts=Survey.call_attempts + 1,
                updated_at=now).execution_options(synchronize_session=False))
    if taken.rowcount != 1:
        return None
    survey = session.get(Survey, survey_id)
    assert survey is not None
    session.refresh(survey)
    return Attempt(survey.id, attempt_id, survey.phone, _case_number(session, survey))


def call_failed(session: Session, attempt_id: str, reason: str, policy: Policy,
                calendar: WorkCalendar, now: datetime) -> str:
    """An attempt ended without a rating: retry later, or go on to the SMS. Returns the new
    state, or "" when the attempt was already settled (a replayed report)."""
    survey = session.scalar(select(Survey).where(Survey.attempt_id == attempt_id))
    if survey is None or survey.state != "calling":
        return ""
    if survey.call_attempts < policy.survey_call_attempts:
        values: dict[str, object] = {
            "state": "scheduled", "note": reason[:500],
            "next_attempt_at": next_slot(policy.survey_hours, calendar,
                                         now + timedelta(minutes=policy.survey_retry_minutes))}
    else:
        values = {"state": "sms", "sms_sent_at": now, "note": reason[:500]}
    moved = session.execute(update(Survey).where(
        Survey.id == survey.id, Survey.state == "calling", Survey.attempt_id == attempt_id)
        .values(updated_at=now, **values).execution_options(synchronize_session=False))
    if moved.rowcount != 1:
        return ""
    if values["state"] == "sms":
        if not _sms_sender:  # never a survey that says "sms" with no message sent
            raise SurveyError("no SMS channel is wired (import channels)")
        case = _case_number(session, survey)
        if _sms_sender[0](session, survey.phone, SMS_TEXT.format(case=case), case,
                          now) is False:  # opted out of SMS: no reply can come, an agent calls
            session.execute(update(Survey).where(Survey.id == survey.id).values(
                state="agent", note=f"{reason[:450]}; SMS opted out")
                .execution_options(synchronize_session=False))
            return "agent"
    return str(values["state"])


def rate_call(session: Session, attempt_id: str, rating: int, policy: Policy,
              now: datetime) -> str:
    """The citizen keyed a rating on the survey call; returns the outcome, or "" if the
    attempt was already settled."""
    survey = session.scalar(select(Survey).where(Survey.attempt_id == attempt_id))
    if survey is None:
        return ""
    return _finish(session, survey, ("calling",), rating, "phone", "survey-line", policy, now)


def sms_reply(session: Session, phone: str, text: str, policy: Policy, now: datetime) -> str:
    """A citizen's SMS: if it answers their open SMS survey with 1-5, the rating is taken.
    Returns the outcome, or "" when the message is not a survey answer."""
    survey = session.scalar(select(Survey).where(
        Survey.phone == phones.normalise_or_empty(phone), Survey.state == "sms")
        .order_by(Survey.id.desc()).limit(1))
    match = re.fullmatch(r"\s*([1-5])\s*", text.translate(_FULL_WIDTH))
    if survey is None or match is None:
        return ""
    return _finish(session, survey, ("sms",), int(match.group(1)), "sms", "survey-sms",
                   policy, now)


def expire_sms(session: Session, policy: Policy, now: datetime) -> int:
    """SMS surveys unanswered for too long go on the agents' callback list."""
    result = session.execute(update(Survey).where(
        Survey.state == "sms",
        Survey.sms_sent_at <= now - timedelta(hours=policy.survey_sms_wait_hours))
        .values(state="agent", updated_at=now).execution_options(synchronize_session=False))
    return result.rowcount or 0


def stale_calls(session: Session, now: datetime, older_than: timedelta) -> list[str]:
    """Attempts with no outcome for too long (the link to Asterisk went away meanwhile)."""
    return list(session.scalars(select(Survey.attempt_id).where(
        Survey.state == "calling", Survey.updated_at <= now - older_than)))


def agent_list(session: Session, limit: int = 200) -> list[tuple[Survey, str]]:
    """The agents' callback list (人工回访): surveys the line and SMS could not finish."""
    rows = session.execute(select(Survey, WorkOrder.case_number).join(
        WorkOrder, WorkOrder.id == Survey.order_id).where(Survey.state == "agent")
        .order_by(Survey.updated_at).limit(limit))
    return [(survey, case) for survey, case in rows]


def state_and_phone(session: Session, survey_id: int) -> tuple[str, str] | None:
    """A survey's state and the citizen's number to dial, or None when there is no such
    survey: what an agent's click-to-call checks before dialling."""
    survey = session.get(Survey, survey_id)
    return None if survey is None else (survey.state, survey.phone)


def agent_result(session: Session, survey_id: int, rating: int | None, *, actor: str,
                 note: str, policy: Policy, now: datetime) -> str:
    """An agent called the citizen: a rating, or None when they could not be reached."""
    survey = session.get(Survey, survey_id)
    if survey is None:
        raise SurveyNotFound(f"no survey {survey_id}")
    if rating is None:
        moved = session.execute(update(Survey).where(
            Survey.id == survey_id, Survey.state == "agent").values(
            state="done", channel="agent", outcome="unreachable", note=note[:500],
            updated_at=now).execution_options(synchronize_session=False))
        if moved.rowcount != 1:
            raise SurveyError(f"survey {survey_id} is {survey.state}, not on the agents' list")
        announce(session, SurveyFinished(at=now.timestamp(), channel="agent",
                                         case_number=_case_number(session, survey),
                                         round=survey.round, outcome="unreachable"))
        return "unreachable"
    outcome = _finish(session, survey, ("agent",), rating, "agent", actor, policy, now, note)
    if not outcome:
        raise SurveyError(f"survey {survey_id} is {survey.state}, not on the agents' list")
    return outcome


def _finish(session: Session, survey: Survey, states: tuple[str, ...], rating: int,
            channel: str, actor: str, policy: Policy, now: datetime, note: str = "") -> str:
    if rating not in RATINGS:
        raise SurveyError("rating: 1 (very satisfied) to 5 (very dissatisfied)")
    order = session.get(WorkOrder, survey.order_id)
    assert order is not None
    dissatisfied = rating in policy.reopen_ratings
    reopened = session.scalar(select(func.count(WorkOrderEvent.id)).where(
        WorkOrderEvent.order_id == order.id, WorkOrderEvent.action == "reopen")) or 0
    if not dissatisfied:
        outcome = "satisfied"
    elif reopened < policy.reopen_limit:
        outcome = "reopened"
    else:
        outcome = "dissatisfied_final"  # the shift chief reviews it; no endless rework
    moved = session.execute(update(Survey).where(
        Survey.id == survey.id, Survey.state.in_(states), Survey.attempt_id == survey.attempt_id)
        .values(state="done", rating=rating, channel=channel, outcome=outcome,
                answered_at=now, updated_at=now, note=note[:500])
        .execution_options(synchronize_session=False))
    if moved.rowcount != 1:
        return ""
    text = f"回访评价：{rating} {RATINGS[rating]}" + (f"；{note}" if note else "")
    if order.state == "closed":  # the rule decides, whoever took the answer
        service.transition(session, order.case_number,
                           "reopen" if outcome == "reopened" else "evaluate", actor=actor,
                           role=workflow.SYSTEM, note=text, policy=policy, now=now)
    rollups.mark_changed(session, order.id)  # the rating counts whether or not the order moved
    announce(session, SurveyFinished(at=now.timestamp(), case_number=order.case_number,
                                     round=survey.round, rating=rating, channel=channel,
                                     outcome=outcome))
    return outcome


def _case_number(session: Session, survey: Survey) -> str:
    return session.scalar(select(WorkOrder.case_number).where(
        WorkOrder.id == survey.order_id)) or ""


def surveys_of(session: Session, order_id: int) -> list[Survey]:
    return list(session.scalars(select(Survey).where(Survey.order_id == order_id)
                                .order_by(Survey.round)))


def call_now(session: Session, survey_id: int, now: datetime) -> bool:
    """"Call this citizen now" (a supervisor's choice, and the demo's): a scheduled survey
    falls due at once; False if it is not waiting."""
    moved = session.execute(update(Survey).where(
        Survey.id == survey_id, Survey.state == "scheduled").values(
        next_attempt_at=now, updated_at=now).execution_options(synchronize_session=False))
    return bool(moved.rowcount)


def rate_online(session: Session, case_number: str, rating: int, *, channel: str, actor: str,
                policy: Policy, now: datetime) -> str:
    """The citizen rates their closed order themselves on a channel (the portal): the
    same survey as by phone, answered while it waits (scheduled, by SMS or on the agents'
    list); a dissatisfied rating reopens the order as the policy says. Returns the outcome;
    SurveyError when no survey of the order waits for an answer (none yet, a survey call
    under way, or answered already)."""
    order_id = session.scalar(select(WorkOrder.id).where(WorkOrder.case_number == case_number))
    if order_id is None:
        raise SurveyNotFound(f"no work order {case_number[:20]!r}")
    survey = session.scalar(select(Survey).where(Survey.order_id == order_id)
                            .order_by(Survey.round.desc()).limit(1))
    waiting = ("scheduled", "sms", "agent")
    if survey is None or survey.state not in waiting:
        raise SurveyError(f"rating: no survey of {case_number} waits for an answer")
    outcome = _finish(session, survey, waiting, rating, channel, actor, policy, now)
    if not outcome:
        raise SurveyError(f"rating: the survey of {case_number} was answered meanwhile")
    return outcome
