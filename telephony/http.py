"""HTTP adapter of the telephony room: call records (/api/v1/calls) and agent seats
(/api/v1/seats). Seat changes go to the telephony service as commands; this adapter never
talks to Asterisk itself. Inputs and outputs are the declared schemas below (core.schemas)."""

from __future__ import annotations

import json
from typing import Any, Literal

from flask import abort, current_app, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import Field, model_validator

from accounts.access import SEAT_COMMANDERS, requires
from accounts.web import (
    client_address,
    current_identity,
    phones_shown,
    reading_personal_data,
)
from core import phones
from core.db import transaction
from core.errors import NotFound
from core.events import EventBus
from core.schemas import Body, ErrorBody, Moment, Out, Path, Query, QueryInt, Text, Time
from telephony import commands, records, spy
from telephony.seats import DEVICES, SEATS_KEY, STATES

_SECURED = [{"bearer": []}]
_ERRORS: dict[int, Any] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody}
calls_api = APIBlueprint("calls", __name__, url_prefix="/api/v1/calls",
                         abp_tags=[Tag(name="calls")], abp_security=_SECURED,
                         abp_responses=_ERRORS)
seats_api = APIBlueprint("seats", __name__, url_prefix="/api/v1/seats",
                         abp_tags=[Tag(name="seats")], abp_security=_SECURED,
                         abp_responses=_ERRORS)
BLUEPRINTS = (calls_api, seats_api)
SEAT_ACTIONS = ("login", "logout", "pause", "resume", "extend_wrap_up")
# How long a request waits for the telephony service: a waitress thread is held meanwhile,
# and the web server has few of them.
WEB_COMMAND_SECONDS = 3.0
AGENT_PATTERN = r"^[0-9+*#]{1,40}$"


def _sessions():  # type: ignore[no-untyped-def]
    return current_app.extensions["hotline.sessions"]


class CallsQuery(Query):
    since: Time | None = Field(None, description="calls started at or after this moment")
    until: Time | None = Field(None, description="calls started before this moment")
    caller_number: Text(40) | None = Field(None, description="any form of the number")
    agent: Text(40, pattern=AGENT_PATTERN) | None = None
    direction: Literal[records.DIRECTIONS] | None = None  # type: ignore[valid-type]
    outcome: Literal[records.OUTCOMES] | None = None  # type: ignore[valid-type]
    limit: QueryInt(1, 500) = 50
    offset: QueryInt(0, 10_000_000) = 0


class Recording(Out):
    """The recording's fingerprint; where it lies on disk is never shown."""

    sha256: str | None = None
    bytes: int | None = None


class Call(Out):
    call_id: str = Field(description="Asterisk Linkedid of the call")
    direction: Literal[records.DIRECTIONS]  # type: ignore[valid-type]
    purpose: str = Field(description="of an outbound call: survey, callback, desk "
                                     "(an agent's click-to-call), consult (an agent's "
                                     "consultation), agent (an agent's own outside call)")
    caller_number: str = Field(description="as Asterisk presented it; masked without the "
                                           "privilege to see phones")
    citizen_number: str = Field(description="national form, \"\" when withheld; masked "
                                            "without the privilege")
    caller_name: str
    entry_number: str = Field(examples=["12319"])
    started_at: Moment
    ended_at: Moment | None
    duration_seconds: float | None
    outcome: Literal[records.OUTCOMES]  # type: ignore[valid-type]
    queue: str | None
    queue_position: int | None
    wait_seconds: float | None
    short_abandon: bool
    agent: str | None
    connected_at: Moment | None
    talk_seconds: float | None
    hold_seconds: float
    hangup_by: str = Field(description="citizen, agent, transfer or system")
    hangup_cause: int | None
    hangup_cause_text: str
    recording: Recording | None
    incomplete: bool = Field(description="part of the call happened while the AMI link "
                                         "was down")
    case_number: str | None = Field(description="案件编号 of the work order the call belongs "
                                                "to; null while it belongs to none")
    disposition: str | None = Field(None, description="话后小结: what the agent said the call "
                                                      "was, a code of settings "
                                                      "seats.dispositions; null until chosen")
    ivr_path: list[dict[str, Any]]
    agent_attempts: list[dict[str, Any]]
    transfers: list[dict[str, Any]]
    legs: list[dict[str, Any]]


class CallPage(Out):
    total: int
    limit: int
    offset: int
    items: list[Call]


class CallPath(Path):
    call_id: Text(64, min_length=1)


def _call_view(call: dict[str, Any], see_phone: bool) -> dict[str, Any]:
    view = dict(call)
    for moment in ("started_at", "ended_at", "connected_at"):
        if view.get(moment) is not None:
            view[moment] = records.as_time(view[moment])
    if not see_phone:  # every number of the call: its legs' and a transfer's target too
        view["caller_number"] = phones.mask(view["caller_number"])
        view["citizen_number"] = phones.mask(view["citizen_number"])
        view["legs"] = [{**leg, "number": phones.mask_in_text(str(leg.get("number") or ""))}
                        for leg in view["legs"]]
        view["transfers"] = [{**t, "to": phones.mask_in_text(str(t.get("to") or ""))}
                             for t in view["transfers"]]
    return Call.model_validate(view).model_dump(mode="json")


@calls_api.get("", summary="Finished calls, newest first (通话记录)",
               responses={200: CallPage})
@requires("calls.read")
def list_calls(query: CallsQuery) -> Any:
    who = current_identity()
    if query.caller_number is not None and not phones.normalise_or_empty(query.caller_number):
        abort(400, "caller_number: a phone number, e.g. 13800138000 or 0451-88888888")
    search = records.CallQuery(
        since=query.since.timestamp() if query.since else None,
        until=query.until.timestamp() if query.until else None,
        caller_number=query.caller_number, outcome=query.outcome, agent=query.agent,
        direction=query.direction, limit=query.limit, offset=query.offset)
    with reading_personal_data(_sessions()) as session:
        total, items = records.find_calls(session, search)
        phones_shown(session, [c["call_id"] for c in items], what="call")
    return {"total": total, "limit": search.limit, "offset": search.offset,
            "items": [_call_view(c, who.see_phone) for c in items]}


@calls_api.get("/<call_id>", summary="One finished call", responses={200: Call, 404: ErrorBody})
@requires("calls.read")
def get_call(path: CallPath) -> Any:
    with reading_personal_data(_sessions()) as session:
        call = records.get_call(session, path.call_id)
        if call is None:
            raise NotFound("no such call")
        phones_shown(session, [call["call_id"]], what="call")
    return _call_view(call, current_identity().see_phone)


class Seat(Out):
    agent: str
    state: Literal[STATES]  # type: ignore[valid-type]
    reason: str = Field("", description="pause reason code while paused")
    since: Moment = Field(description="when the seat entered its state")
    wrap_up_until: Moment | None = Field(
        None, description="while wrapping up: when the wrap-up ends (extended or not)")
    wrap_up_extended: bool = Field(False, description="this wrap-up was extended (once only)")
    queues: list[str]
    unanswered_in_a_row: int
    seconds_in_state: dict[str, float]


class SeatList(Out):
    items: list[Seat]


@seats_api.get("", summary="Every agent seat's live state (坐席状态)",
               responses={200: SeatList})
@requires("seats.read")
def list_seats() -> Any:
    live = current_app.extensions["hotline.redis"].hgetall(SEATS_KEY)
    seats = sorted((json.loads(v) for v in live.values()), key=lambda s: s["agent"])
    for seat in seats:
        seat["since"] = records.as_time(seat.get("since") or 0)
        if seat.get("wrap_up_until") is not None and seat.get("state") == "wrap_up":
            seat["wrap_up_until"] = records.as_time(seat["wrap_up_until"])
        else:
            seat["wrap_up_until"] = None
    return SeatList.model_validate({"items": seats}).model_dump(mode="json")


class SeatPath(Path):
    agent: Text(40, pattern=AGENT_PATTERN)
    action: Literal[SEAT_ACTIONS] = Field(  # type: ignore[valid-type]
        description="no seat action but these")


class SeatCommand(Body):
    reason: Text(40, min_length=1) | None = Field(
        None, description="required to pause: a pause reason code, e.g. break")
    device: Literal[DEVICES] | None = Field(  # type: ignore[valid-type]
        None, description="to log in: the desk phone (phone, the default) or the desk page's "
                          "softphone (browser)")

    @model_validator(mode="before")
    @classmethod
    def _no_body_is_empty(cls, data: Any) -> Any:
        """No body at all is an empty command; a body that is not JSON stays an error."""
        return {} if data is None and not request.get_data(cache=True) else data


class SeatDone(Out):
    agent: str
    done: Literal[SEAT_ACTIONS]  # type: ignore[valid-type]
    wrap_up_until: Moment | None = Field(
        None, description="extend_wrap_up: when the extended wrap-up ends")


@seats_api.post("/<agent>/<action>",
                summary="Log a seat in or out (on the phone or the browser), pause it with "
                        "a reason, resume it, or extend its wrap-up once (延长话后整理): an "
                        "agent their own seat, a supervisor, shift chief or admin any seat",
                responses={202: SeatDone, 404: ErrorBody, 409: ErrorBody, 503: ErrorBody})
@requires("seats.command")
def seat_action(path: SeatPath, body: SeatCommand) -> Any:
    who = current_identity()
    if who.agent != path.agent and not SEAT_COMMANDERS & set(who.roles):
        abort(403, f"agent: {who.name} may command only their own seat")
    args: dict[str, Any] = {"agent": path.agent}
    if path.action == "pause":
        if body.reason is None:
            abort(400, "reason: required to pause, e.g. break")
        args["reason"] = body.reason
    if body.device is not None:
        if path.action != "login":
            abort(400, "device: only to log in")
        args["device"] = body.device
    try:
        result = commands.send(current_app.extensions["hotline.redis"],
                               f"seat.{path.action}", args, timeout=WEB_COMMAND_SECONDS)
    except commands.Unavailable as exc:
        abort(503, str(exc).removeprefix("telephony: "))
    except commands.CommandError as exc:
        abort(409, str(exc).removeprefix("telephony: "))
    done: dict[str, Any] = {"agent": path.agent, "done": path.action}
    if result.get("wrap_up_until") is not None:
        done["wrap_up_until"] = records.as_time(float(result["wrap_up_until"]))
    return SeatDone.model_validate(done).model_dump(mode="json"), 202


class SpyPath(Path):
    agent: Text(40, pattern=AGENT_PATTERN)


class SpyBody(Body):
    mode: Literal[spy.MODES] = Field(  # type: ignore[valid-type]
        description="listen (监听: hear both sides, unheard), whisper (耳语: the agent hears "
                    "you, the citizen does not), barge (强插: both hear you)")
    device: Literal[DEVICES] | None = Field(  # type: ignore[valid-type]
        None, description="which of your phones is called: your desk phone (phone, the "
                          "default) or the desk page's softphone (browser)")


class SpyStarted(Out):
    agent: str
    mode: Literal[spy.MODES]  # type: ignore[valid-type]
    call_id: str = Field(description="the agent's call (Asterisk Linkedid)")
    supervisor: str = Field(description="the agent number whose phone is being called")
    device: Literal[DEVICES]  # type: ignore[valid-type]


@seats_api.post("/<agent>/spy",
                summary="Listen, whisper or barge in (监听 / 耳语 / 强插) on the agent's live "
                        "call: your own phone rings and joins it; audited",
                responses={202: SpyStarted, 404: ErrorBody, 409: ErrorBody, 503: ErrorBody})
@requires("spy.use")
def spy_on_seat(path: SpyPath, body: SpyBody) -> Any:
    who = current_identity()
    device = body.device or DEVICES[0]
    try:
        result = spy.start(
            current_app.extensions["hotline.redis"], _sessions(), agent=path.agent,
            mode=body.mode, supervisor=who.agent, device=device, actor=who.name,
            now=current_app.extensions["hotline.clock"].now(), address=client_address(),
            detail={"token": who.token_id} if who.token_id else None,
            timeout=WEB_COMMAND_SECONDS)
    except commands.Unavailable as exc:
        abort(503, str(exc).removeprefix("telephony: "))
    except commands.CommandError as exc:
        abort(409, str(exc).removeprefix("telephony: "))
    return SpyStarted.model_validate({
        "agent": path.agent, "mode": body.mode, "call_id": result.get("call_id", ""),
        "supervisor": who.agent, "device": device}).model_dump(mode="json"), 202


class DispositionBody(Body):
    code: Text(40, min_length=1) = Field(description="a code of settings seats.dispositions")


class DispositionDone(Out):
    call_id: str
    disposition: str
    pending: bool = Field(description="true: the call's record is not stored yet; the "
                                      "disposition is applied when it is")


@calls_api.post("/<call_id>/disposition",
                summary="Say what the call was (话后小结): the agent who took it, or a "
                        "supervisor, shift chief or admin",
                responses={200: DispositionDone, 404: ErrorBody})
@requires("seats.command")
def choose_disposition(path: CallPath, body: DispositionBody) -> Any:
    who = current_identity()
    allowed = dict(current_app.extensions["hotline.settings"].seats.dispositions)
    if body.code not in allowed:
        abort(400, f"code: not one of {', '.join(allowed)}")
    started = records.call_started(EventBus(current_app.extensions["hotline.redis"]),
                                   path.call_id)
    sessions = _sessions()
    with transaction(sessions) as session:
        stored = records.choose_disposition(
            session, path.call_id, body.code, agent=who.agent or "", chosen_by=who.name,
            supervisor=bool(SEAT_COMMANDERS & set(who.roles)), started=started,
            now=current_app.extensions["hotline.clock"].now())
    if not stored:  # the record may have been stored meanwhile: whoever is second applies
        with transaction(sessions) as session:
            stored = records.apply_pending_disposition(session, path.call_id)
    return {"call_id": path.call_id, "disposition": body.code, "pending": not stored}
