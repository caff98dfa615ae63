"""The case workspaces (案件工作台) and an order's page (工单详情).

- /work: the queues of the signed-in person's workflow roles on one page: the shift chief's
  (立案, 作废, 并单, 延期/挂账 requests, 结案), the dispatcher's (派遣, 转核查, the departments'
  延期/挂账 requests granted or refused in the row; soonest due first, yellow and red from the
  order's running clock), the department handler's (签收, 反馈,
  申请延期/挂账; their own department's orders only) and the supervisor's (核实, 核查).
- /orders/<case number>: the order, its timeline (every move: who, when, what, the note), its
  clocks, calls with their recordings playable in the page (each play audited; the WAV is
  served with HTTP Range), its messages, surveys and photos, and the actions the workflow
  allows the viewer's roles in the order's state. A refused action (a forged form, an
  order that moved meanwhile) shows the workflow's own reason. `?call=<call id>&t=<second>`
  (a transcript search's link, agent_desk.transcript_search) plays that call's recording
  from that second, its utterance marked in the open transcript.

Thin: every decision is the tickets room's (tickets.workflow, tickets.service,
tickets.queues); a department handler sees only their own department's orders, as the API
(tickets.http) enforces.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_babel import gettext as _
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.exceptions import NotFound, RequestEntityTooLarge

from accounts import audit as audit_log
from accounts.access import requires
from accounts.pages import guard_pages, titles
from accounts.service import DEPARTMENT, Identity
from accounts.web import audit, current_identity, phones_shown, reading_personal_data
from channels import sms
from core import phones
from core.db import transaction
from core.errors import HotlineError
from recordings import transcripts
from tickets import catalogue, deadlines, queues, service, surveys, workflow
from tickets.policy import Policy

workspace = guard_pages(Blueprint("workspace", __name__, template_folder="templates"))
MAX_FORM_BYTES = service.MAX_PHOTO_BYTES + (64 << 10)  # a photo and the form around it
CASE_NUMBER = re.compile(r"[0-9]{12,20}")
CALL_ID = re.compile(r"[0-9A-Za-z_-][0-9A-Za-z._-]{0,63}")
SHA256 = re.compile(r"[0-9a-f]{64}")
SECOND = re.compile(r"[0-9]{1,5}(\.[0-9]{1,3})?")  # a moment in a recording, e.g. 6.5
PEOPLES_ROLES = tuple(r for r in workflow.ROLES if r != workflow.SYSTEM)
QUEUE_ROLES = (workflow.SHIFT_CHIEF, workflow.DISPATCHER, workflow.DEPARTMENT,
               workflow.SUPERVISOR)
# Actions that ask for more than a note on the page
NEEDS = {"grant_extension": "amount", "merge": "into", "dispatch": "department",
         "feedback": "photo", "return": "note", "rework": "note", "void": "note",
         "refuse_extension": "note", "refuse_park": "note"}


def _sessions() -> sessionmaker[Session]:
    return current_app.extensions["hotline.sessions"]  # type: ignore[no-any-return]


def _now() -> datetime:
    return current_app.extensions["hotline.clock"].now()  # type: ignore[no-any-return]


def _policy() -> Policy:
    return Policy.of_app(current_app.extensions)


def _zone() -> ZoneInfo:
    return ZoneInfo(current_app.extensions["hotline.settings"].calendar.timezone)


def _department_scope(who: Identity) -> str | None:
    """A department handler (and nobody else) sees only their own department's orders; one
    bound to no department sees none (tickets.http decides the same)."""
    if DEPARTMENT not in who.roles or not set(who.roles) <= {DEPARTMENT}:
        return None
    if not who.department:
        abort(403, "department: this account is bound to no department")
    return who.department


def _visible(session: Session, who: Identity, case_number: str) -> Any:
    """The order, if this viewer may see it: 404 for no such order, 403 for another
    department's."""
    if not CASE_NUMBER.fullmatch(case_number):
        abort(404, f"no work order {case_number[:20]}")
    try:
        order = service.get_order(session, case_number)
    except service.OrderNotFound:
        abort(404, f"no work order {case_number}")
    scope = _department_scope(who)
    if scope is not None and order.department_code != scope:
        abort(403, f"{case_number} is not an order of your department")
    return order


def _text(text: str, who: Identity) -> str:
    return text if who.see_phone else phones.mask_in_text(text)


def _offered(state: str, who: Identity, pending: str = "") -> list[dict[str, str]]:
    """The actions the workflow allows the viewer's roles now, each with the role it is
    taken in and what it needs besides a note; an answer to a department's request only
    while one is pending, where the role may give it only then."""
    return [{"name": name, "role": role, "title": workflow.ACTIONS[name].title,
             "needs": NEEDS.get(name, "")}
            for role in who.roles if role in PEOPLES_ROLES
            for name in workflow.allowed(state, role)
            if _answerable(name, role, pending)]


def _answerable(action: str, role: str, pending: str) -> bool:
    """Whether `role` may take `action` with the request `pending` ("" none) on the order:
    an answer that needs a request needs that very one (tickets.service decides the same)."""
    return role not in workflow.NEEDS_REQUEST.get(action, ()) \
        or workflow.ANSWERS[action] == pending


def _order_page(session: Session, who: Identity, order: Any, *, refusal: str = "",
                done: str = "", seek: tuple[str, float] | None = None) -> str:
    case = order.case_number
    calls = service.calls_of_order(session, case)
    if seek is not None and seek[0] not in {c["call_id"] for c in calls}:
        seek = None  # a call of another order: nothing to play here
    due_at, colour = queues.running_clock(session, case, _now())
    kept = service.attachments(session, case)
    photos = [a for a in kept if a.kind == "photo"]
    pending = queues.pending_request(session, order.id)
    return render_template(
        "agent_desk/order_page.html", who=who, order=order, titles=titles(),
        zone=_zone(), refusal=refusal, done=done,
        seek={"call": seek[0], "at": seek[1]} if seek else None,
        phone=service.show_phone(order.citizen_phone, who.see_phone)
        if order.citizen_phone else "",
        description=_text(order.description, who),
        history=[{"at": e.at, "actor": e.actor, "role": e.role, "action": e.action,
                  "title": _entry_title(e.action),
                  "role_title": _("citizen") if e.role == service.CITIZEN
                  else titles().get(e.role, e.role),
                  "from": e.from_state, "to": e.to_state,
                  "note": _text(e.note, who),
                  "photos": _citizens_photos(e, photos)}
                 for e in service.history(session, case)],
        clocks=deadlines.deadlines(session, case), due_at=due_at, colour=colour,
        calls=calls, photos=photos, voice=[a for a in kept if a.kind == "audio"],
        # each call's transcript (通话转写), masked: utterances of both legs in time order
        transcripts={c["call_id"]: sorted(
            (seg for t in transcripts.call_transcripts(session, c["call_id"])
             for seg in t["segments"]), key=lambda seg: seg["start"]) for c in calls},
        messages=[{"at": m.created_at, "direction": m.direction, "text": _text(m.text, who),
                   "state": m.state, "purpose": m.purpose} for m in sms.about(session, case)],
        surveys=surveys.surveys_of(session, order.id),
        actions=_offered(order.state, who, pending),
        departments=catalogue.departments(session),
        department_names=_department_names(session),
        category=catalogue.category(session, order.category_code, order.category_kind or
                                    "event") if order.category_code else None,
        request_pending=pending)


def _entry_title(action: str) -> str:
    if action in workflow.ACTIONS:
        return workflow.ACTIONS[action].title
    if action == "create":
        return _("taken in")
    if action == service.CITIZEN_INFO:
        return _("Citizen's additional information")
    return action


def _citizens_photos(entry: Any, photos: list[Any]) -> list[Any]:
    """The photos a citizen sent with their entry (市民补充材料): a channel files them in the
    entry's own transaction, at the entry's instant (channels.portal.add_info); none for
    any other entry."""
    if entry.action != service.CITIZEN_INFO:
        return []
    return [p for p in photos if p.created_at == entry.at]


def _department_names(session: Session) -> dict[str, str]:
    return {d.code: d.name for d in catalogue.departments(session, active_only=False)}


@workspace.app_template_filter("local_time")
def local_time(moment: datetime | None, zone: ZoneInfo | None = None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(zone or _zone()).strftime("%Y-%m-%d %H:%M")


@workspace.get("/orders/<case_number>")
@requires("orders.read")
def order_page(case_number: str) -> Any:
    """The order; with `call` (one of its calls) and `t` (a second of its recording, as a
    transcript search's hit gives them) the page plays that call's recording from there."""
    who = current_identity()
    with reading_personal_data(_sessions()) as session:
        order = _visible(session, who, case_number)
        phones_shown(session, [order.case_number], what="order")
        done = request.args.get("done", "")
        return _order_page(session, who, order,
                           done=workflow.ACTIONS[done].title if done in workflow.ACTIONS
                           else "", seek=_seek(request.args.get("call", ""),
                                               request.args.get("t", "")))


MAX_SEEK_SECONDS = 24 * 3600  # no recording is longer than a day


def _seek(call_id: str, second: str) -> tuple[str, float] | None:
    """(call, second) to play from, if both are well formed; else None (the page as ever:
    a link's parameters are never an error)."""
    if not CALL_ID.fullmatch(call_id) or not SECOND.fullmatch(second):
        return None
    at = float(second)
    return (call_id, at) if at <= MAX_SEEK_SECONDS else None


@workspace.post("/orders/<case_number>/act")
@requires("orders.act")
def act(case_number: str) -> Any:
    """One workflow action from the page's form: in the role the form names (which the
    viewer must hold), decided by the workflow; a refusal is the page again with its reason
    and the refusal's own status."""
    who = current_identity()
    form = request.form
    action, role = form.get("action", ""), form.get("role", "")
    note = form.get("note", "")
    photo = request.files.get("photo")
    content = photo.read(service.MAX_PHOTO_BYTES + 1) if photo and photo.filename else b""
    try:
        with transaction(_sessions()) as session:
            _visible(session, who, case_number)
            if action not in workflow.ACTIONS:
                raise workflow.WorkflowError(f"workflow: no action {action[:40]!r}")
            if role not in who.roles or role not in PEOPLES_ROLES:
                raise workflow.RoleError(
                    f"role: {who.name} does not act as {role[:40]!r}")
            version = _whole(form.get("expected_version", ""), "expected_version")
            if content:  # the department's proof of handling, kept with the move
                service.store_photo(session, case_number, content,
                                    _settings().storage.data_dir / "attachments",
                                    roles=(role,), now=_now())
            if action == "dispatch":
                queues.dispatch_to(session, case_number, form.get("department", ""),
                                   actor=who.name, role=role, note=note,
                                   expected_version=version, policy=_policy(), now=_now())
            else:
                amount = _whole(form.get("amount", ""), "amount") \
                    if action == "grant_extension" else None
                service.act(session, case_number, action, actor=who.name, role=role,
                            note=note, expected_version=version,
                            into=form.get("into", "").strip(), amount=amount,
                            policy=_policy(), now=_now())
    except HotlineError as refused:
        with reading_personal_data(_sessions()) as session:
            order = _visible(session, who, case_number)
            page = _order_page(session, who, order, refusal=str(refused))
        return page, refused.status
    back = form.get("next", "")
    if back == "work":
        return redirect(url_for("workspace.work"))
    return redirect(url_for("workspace.order_page", case_number=case_number,
                            done=action))


def _whole(text: str, field: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= 2_000_000_000:
        raise service.OrderError(f"{field}: a whole number above zero")
    return int(text)


def _settings() -> Any:
    return current_app.extensions["hotline.settings"]


@workspace.get("/orders/<case_number>/calls/<call_id>/recording")
@requires("orders.read")
def recording(case_number: str, call_id: str) -> Any:
    """The call's recording as WAV for the page's <audio>, with HTTP Range (206 for a part);
    each play is audited (recording_played): the request that starts at the beginning, not
    the browser's later fetches of parts of the same play."""
    who = current_identity()
    if not CALL_ID.fullmatch(call_id):
        abort(404, "no such call")
    with transaction(_sessions()) as session:
        _visible(session, who, case_number)
        path = queues.call_recording(session, _settings().storage.recordings_dir,
                                     case_number, call_id)
        if path is None:
            abort(404, f"no recording of call {call_id} on work order {case_number}")
        if _from_the_start():
            audit(session, audit_log.RECORDING_PLAYED, target=call_id,
                  detail={"case_number": case_number})
    response = send_file(path, mimetype="audio/wav", conditional=True,
                         download_name=f"{call_id}.wav", max_age=0)
    response.headers["Cache-Control"] = "private, no-store"
    return response


@workspace.get("/orders/<case_number>/attachments/<sha256>")
@requires("orders.read")
def attachment(case_number: str, sha256: str) -> Any:
    """A photo of the order, or its voice message (语音留言, audio: played in the page with
    HTTP Range, each play from the start audited like a call's recording)."""
    who = current_identity()
    with transaction(_sessions()) as session:
        _visible(session, who, case_number)
        if not SHA256.fullmatch(sha256):
            abort(404, "no such attachment")
        kept = next((a for a in service.attachments(session, case_number)
                     if a.sha256 == sha256), None)
        if kept is None:
            abort(404, "no such attachment on this order")
        if kept.kind == "audio" and _from_the_start():
            audit(session, audit_log.RECORDING_PLAYED, target=f"{case_number}/{sha256[:16]}",
                  detail={"case_number": case_number, "attachment": sha256})
        path, kind = kept.path, kept.kind
    response = send_file(path, conditional=True, max_age=0,
                         mimetype="audio/wav" if kind == "audio" else None,
                         as_attachment=kind == "document")
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _from_the_start() -> bool:
    """A request for the file from its first byte: a play, not a later part of one."""
    ranged = request.range
    return not (ranged and ranged.ranges and ranged.ranges[0][0] != 0)


@workspace.get("/work")
@requires("work.use")
def work() -> Any:
    """The queues of the viewer's workflow roles, one section each."""
    who = current_identity()
    now = _now()
    sections = []
    with _sessions()() as session:
        for role in QUEUE_ROLES:
            if role not in who.roles:
                continue
            if role == workflow.DEPARTMENT and not who.department:
                sections.append({"role": role, "items": [], "unbound": True})
                continue
            items = queues.queue(session, role, now=now, department_code=who.department)
            sections.append({"role": role, "unbound": False, "items": [
                {"item": item, "actions": [
                    {"name": a, "title": workflow.ACTIONS[a].title, "needs": NEEDS.get(a, ""),
                     "answer": a in workflow.ANSWERS}
                    for a in workflow.allowed(item.state, role)
                    if (a != "supervise" or item.colour == "red")
                    and _answerable(a, role, item.pending_request)
                    # a request waiting: the row offers its answers (and 督办 if late)
                    and (not item.pending_request or a == "supervise"
                         or workflow.ANSWERS.get(a) == item.pending_request)]}
                for item in items]})
        names = _department_names(session)
    return render_template("agent_desk/work.html", who=who, titles=titles(),
                           sections=sections, zone=_zone(), department_names=names,
                           states=_state_names(),
                           unit_names={"minutes": _("minutes"), "hours": _("hours"),
                                       "days": _("days")})


def _state_names() -> dict[str, str]:
    return {"intake": _("intake"), "verifying": _("verifying"), "opened": _("opened"),
            "dispatched": _("dispatched"), "handling": _("handling"),
            "reported": _("reported"), "checking": _("checking"), "checked": _("checked"),
            "closed": _("closed"), "evaluated": _("evaluated"), "parked": _("parked"),
            "deferred": _("deferred"), "voided": _("voided"), "merged": _("merged")}


@workspace.context_processor
def names() -> dict[str, Any]:
    return {"state_names": _state_names}


def _not_found(error: NotFound) -> Any:
    return render_template("accounts/message.html", title=_("Not found"),
                           text=error.description, home=url_for("pages.index")), 404


def _too_large(_error: RequestEntityTooLarge) -> Any:
    return render_template("accounts/message.html", title=_("Request refused"),
                           text=_("The photo is too large."), home=url_for("pages.index")), 413


def _photo_limit() -> None:
    """An action's form may carry a photo of up to 8 MiB, above the app's 1 MiB for other
    requests: set before the CSRF check reads the form (the first of the app's hooks)."""
    if request.endpoint == "workspace.act":
        request.max_content_length = MAX_FORM_BYTES


workspace.record_once(
    lambda state: state.app.before_request_funcs.setdefault(None, []).insert(0, _photo_limit))
workspace.register_error_handler(NotFound, _not_found)
workspace.register_error_handler(RequestEntityTooLarge, _too_large)


# --- the audited Range player, for the other pages that play a call's recording -------------

def played_from_the_start() -> bool:
    """Whether this request starts a play (audit it) rather than fetching a later part."""
    return _from_the_start()


def send_recording(path: Any, call_id: str) -> Any:
    """The recording as WAV for an <audio>, with HTTP Range (206 for a part), never cached."""
    response = send_file(path, mimetype="audio/wav", conditional=True,
                         download_name=f"{call_id}.wav", max_age=0)
    response.headers["Cache-Control"] = "private, no-store"
    return response
