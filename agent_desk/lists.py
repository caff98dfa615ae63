"""The agent's own lists on the desk (我的待办): thin endpoints behind _lists.html /
desk/lists.js, each calling a room's door.

- surveys: the agents' callback list (人工回访), surveys the survey line and SMS could not
  finish, each with a click-to-call (坐席外呼) through the telephony service's command
  stream. The survey's id is the call's key: while its call is being dialled or is up, a
  second click (a double click, another tab, a colleague) is refused with 409, so the
  citizen is dialled once. The citizen's phone rings first; when they answer, the agent's
  own phones ring. The result is saved through the surveys API.
- callbacks: callers who pressed 1 to be called back (预约回电) and whom the centre failed
  to reach, with the same click-to-call (keyed by the request) and a "done" that takes the
  request off the list once an agent has called them back.
- returned: the orders this person took in that came back to intake for more information
  (退回补充, tickets.intake).
- today: this agent's figures for today in the centre's time zone (calls answered, average
  talk, orders taken in, time paused), "now" from the injected clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import abort, current_app
from flask_openapi3 import APIBlueprint
from sqlalchemy.orm import Session, sessionmaker

from accounts.access import requires
from accounts.pages import guard_pages
from accounts.web import current_identity, phones_shown, reading_personal_data
from core import phones
from core.db import transaction
from core.schemas import Out, Path, QueryInt, Text
from telephony import callbacks, commands, measures
from tickets import intake, service, surveys

desk_lists = guard_pages(APIBlueprint("desk_lists", __name__, url_prefix="/desk/lists",
                                      doc_ui=False))
MAX_ROW_ID = 2**31 - 1
COMMAND_SECONDS = 5.0  # a click waits at most this long for the telephony service


def _sessions() -> sessionmaker[Session]:
    return current_app.extensions["hotline.sessions"]  # type: ignore[no-any-return]


def _now() -> datetime:
    return current_app.extensions["hotline.clock"].now()  # type: ignore[no-any-return]


def _agent() -> str:
    who = current_identity()
    if not who.agent:
        abort(404, "no agent number: this account has no seat")
    return who.agent


def today(now: datetime, timezone: str) -> tuple[datetime, datetime]:
    """Today in the centre's time zone, as [midnight, next midnight) in UTC."""
    zone = ZoneInfo(timezone)
    day = now.astimezone(zone).date()
    start = datetime.combine(day, time(0), zone)
    end = datetime.combine(day + timedelta(days=1), time(0), zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def _text(text: str, see_phone: bool) -> str:
    """Free text as this viewer may read it: numbers typed into it masked."""
    return text if see_phone else phones.mask_in_text(text)


class SurveyItem(Out):
    survey_id: int
    case_number: str
    round: int
    phone: str
    call_attempts: int
    waiting_since: datetime


class SurveyList(Out):
    items: list[SurveyItem]


@desk_lists.get("/surveys", responses={200: SurveyList})
@requires("desk.use")
def survey_list() -> Any:
    """Surveys waiting for an agent's call, the longest waiting first."""
    who = current_identity()
    with reading_personal_data(_sessions()) as session:
        items = [{"survey_id": s.id, "case_number": case, "round": s.round,
                  "phone": service.show_phone(s.phone, who.see_phone),
                  "call_attempts": s.call_attempts, "waiting_since": s.updated_at}
                 for s, case in surveys.agent_list(session)]
        phones_shown(session, [i["case_number"] for i in items], what="survey")
    return SurveyList.model_validate({"items": items}).model_dump(mode="json")


class SurveyPath(Path):
    survey_id: QueryInt(1, MAX_ROW_ID)


class Dialling(Out):
    survey_id: int
    reference: str
    state: str


class CallbackDialling(Out):
    request_id: str
    reference: str
    state: str


def _dial(reference: str, number: str, agent: str) -> str:
    """Ask the telephony service to dial `number`, then ring `agent`; the reference is the
    call's key: refused (409) while a call under it is being dialled or is up."""
    try:
        commands.send(current_app.extensions["hotline.redis"], "call.outbound", {
            "purpose": "desk", "reference": reference, "number": number, "agent": agent},
            timeout=COMMAND_SECONDS)
    except commands.Unavailable as exc:
        abort(503, str(exc).removeprefix("telephony: "))
    except commands.CommandError as exc:
        abort(409, str(exc).removeprefix("telephony: "))
    return reference


@desk_lists.post("/surveys/<survey_id>/call", responses={202: Dialling})
@requires("desk.use")
def call_survey(path: SurveyPath) -> Any:
    """Dial the survey's citizen, then ring this agent; once per survey while it is up."""
    agent = _agent()
    with _sessions()() as session:
        found = surveys.state_and_phone(session, path.survey_id)
    if found is None:
        abort(404, f"no survey {path.survey_id}")
    state, number = found
    if state != "agent":
        abort(409, f"survey {path.survey_id} is {state}, not on the agents' list")
    reference = _dial(f"desk-survey-{path.survey_id}", number, agent)
    body = {"survey_id": path.survey_id, "reference": reference, "state": "dialling"}
    return Dialling.model_validate(body).model_dump(mode="json"), 202


class CallbackItem(Out):
    request_id: str
    phone: str
    queue: str
    requested_at: datetime
    detail: str


class CallbackList(Out):
    items: list[CallbackItem]


class CallbackPath(Path):
    request_id: Text(40, 4, r"^cb-[0-9a-f]{1,37}$")


@desk_lists.get("/callbacks", responses={200: CallbackList})
@requires("desk.use")
def callback_list() -> Any:
    """Callers who asked to be called back (预约回电) and whom the centre failed to reach."""
    who = current_identity()
    with reading_personal_data(_sessions()) as session:
        items = [{"request_id": r.id, "queue": r.queue, "requested_at": r.requested_at,
                  "phone": service.show_phone(r.caller_number, who.see_phone),
                  "detail": r.detail} for r in callbacks.unreached(session)]
        phones_shown(session, [i["request_id"] for i in items], what="callback")
    return CallbackList.model_validate({"items": items}).model_dump(mode="json")


@desk_lists.post("/callbacks/<request_id>/call", responses={202: Dialling})
@requires("desk.use")
def call_callback(path: CallbackPath) -> Any:
    """Dial the caller back, then ring this agent; once per request while it is up."""
    agent = _agent()
    with _sessions()() as session:
        request = callbacks.get(session, path.request_id)
        if request is None:
            abort(404, f"no callback request {path.request_id}")
        if request.state != "failed":
            abort(409, f"callback {path.request_id} is {request.state}, not waiting for an "
                       "agent")
        number = request.caller_number
    reference = _dial(f"desk-{path.request_id}", number, agent)
    body = {"request_id": path.request_id, "reference": reference, "state": "dialling"}
    return CallbackDialling.model_validate(body).model_dump(mode="json"), 202


class CallbackDone(Out):
    request_id: str
    state: str


@desk_lists.post("/callbacks/<request_id>/done", responses={200: CallbackDone})
@requires("desk.use")
def callback_done(path: CallbackPath) -> Any:
    """This agent called the caller back: the request leaves the list."""
    agent = _agent()
    with transaction(_sessions()) as session:
        if callbacks.get(session, path.request_id) is None:
            abort(404, f"no callback request {path.request_id}")
        if not callbacks.called_by_agent(session, path.request_id, agent, now=_now()):
            abort(409, f"callback {path.request_id} is not waiting for an agent")
    return CallbackDone(request_id=path.request_id, state="agent").model_dump(mode="json")


class ReturnedItem(Out):
    case_number: str
    appeal_type: str
    description: str
    citizen_phone: str
    returned_at: datetime
    returned_by: str
    action: str
    note: str


class ReturnedList(Out):
    items: list[ReturnedItem]


@desk_lists.get("/returned", responses={200: ReturnedList})
@requires("desk.use")
def returned_list() -> Any:
    """Orders this person took in that are back with them for more information."""
    who = current_identity()
    with reading_personal_data(_sessions()) as session:
        items = [{"case_number": order.case_number, "appeal_type": order.appeal_type,
                  "description": _text(order.description, who.see_phone),
                  "citizen_phone": service.show_phone(order.citizen_phone, who.see_phone),
                  "returned_at": event.at, "returned_by": event.actor,
                  "action": event.action, "note": _text(event.note, who.see_phone)}
                 for order, event in intake.returned_to(session, who.name)]
        phones_shown(session, [i["case_number"] for i in items], what="order")
    return ReturnedList.model_validate({"items": items}).model_dump(mode="json")


class Today(Out):
    day: str
    calls_answered: int
    talk_seconds: float
    average_talk_seconds: float | None
    orders_taken_in: int
    pause_seconds: float


@desk_lists.get("/today", responses={200: Today})
@requires("desk.use")
def today_figures() -> Any:
    """This agent's day so far, in the centre's time zone."""
    agent, who = _agent(), current_identity()
    timezone = current_app.extensions["hotline.settings"].calendar.timezone
    now = _now()
    start, end = today(now, timezone)
    with _sessions()() as session:
        calls = measures.agent_day(session, agent, start, min(end, now))
        taken = intake.taken_in(session, who.name, start, end)
    body = {"day": now.astimezone(ZoneInfo(timezone)).date().isoformat(),
            "calls_answered": calls.answered, "talk_seconds": calls.talk_seconds,
            "average_talk_seconds": calls.average_talk_seconds, "orders_taken_in": taken,
            "pause_seconds": calls.pause_seconds}
    return Today.model_validate(body).model_dump(mode="json")
