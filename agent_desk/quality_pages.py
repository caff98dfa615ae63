"""The quality review pages (质检): the reviewer's queue (/quality) and scoring page with the
call's recording playable (the workspace's audited Range player), the administrator's
scoring forms (/quality/forms), the agent's own scores (/quality/mine) and the report per
agent, queue and the whole centre (/quality/report). Thin: every decision is quality.service's."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask_babel import gettext as _

from accounts import audit as audit_log
from accounts.access import requires
from accounts.pages import guard_pages, titles
from accounts.web import audit, current_identity
from agent_desk.workspace import played_from_the_start, send_recording
from core.db import transaction
from core.errors import HotlineError, NotFound
from quality import service

quality_pages = guard_pages(Blueprint("quality", __name__, template_folder="templates"))


@quality_pages.errorhandler(404)
def _not_found(error: Any) -> Any:
    return render_template("accounts/message.html", title=_("Not found"),
                           text=error.description, home=url_for("pages.index")), 404
FORM_ROWS = 8  # criteria rows the form page offers


def _sessions() -> Any:
    return current_app.extensions["hotline.sessions"]


def _now() -> datetime:
    return current_app.extensions["hotline.clock"].now()  # type: ignore[no-any-return]


def _settings() -> Any:
    return current_app.extensions["hotline.settings"]


def _zone() -> ZoneInfo:
    return ZoneInfo(_settings().calendar.timezone)


def _day(text: str | None) -> date:
    if not text:
        return _now().astimezone(_zone()).date()
    try:
        return date.fromisoformat(text)
    except ValueError:
        abort(400, "day: a date, e.g. 2026-11-24")


def _whole(text: str, field: str, low: int, high: int) -> int:
    text = (text or "").strip()
    if not text.isdigit() or not low <= int(text) <= high:
        raise service.QualityError(f"{field}: a whole number from {low} to {high}")
    return int(text)


def _page(template: str, status: int = 200, **context: Any) -> Any:
    return render_template(f"agent_desk/{template}", who=current_identity(), titles=titles(),
                           zone=_zone(), **context), status


def _reasons(reasons: list[str]) -> str:
    """Why a call was sampled, in the page's language: 随机抽样, 投诉 <case>, 差评 <rating>,
    标记 <reason>."""
    names = {service.RANDOM: _("random"), service.COMPLAINT: _("complaint"),
             service.LOW_RATING: _("low rating"), service.FLAG: _("flagged")}
    out = []
    for reason in reasons:
        kind, _sep, rest = reason.partition(":")
        out.append(f"{names.get(kind, kind)} {rest}".strip())
    return ", ".join(out)


@quality_pages.context_processor
def _helpers() -> dict[str, Any]:
    return {"reasons": _reasons}


@quality_pages.get("/quality")
@requires("quality.review")
def queue(message: str = "") -> Any:
    with _sessions()() as session:
        samples = [service.sample_view(s) for s in service.pending(session)]
    return _page("quality_queue.html", samples=samples, message=message,
                 today=_now().astimezone(_zone()).date().isoformat())


@quality_pages.post("/quality/draw")
@requires("quality.review")
def draw() -> Any:
    day = _day(request.form.get("day"))
    with transaction(_sessions()) as session:
        new = service.draw(session, day, now=_now(), zone=_settings().calendar.timezone,
                           settings=_settings().quality)
    return queue(message=_("%(count)s calls sampled", count=len(new)))


def _sample(session: Any, sample_id: int) -> Any:
    try:
        return service.get_sample(session, sample_id)
    except NotFound as missing:
        abort(404, str(missing))


def _review_page(session: Any, sample_id: int, refusal: str = "", status: int = 200) -> Any:
    sample = _sample(session, sample_id)
    active = service.forms(session, active_only=True)
    return _page("quality_review.html", status, sample=service.sample_view(sample),
                 forms=[service.form_view(session, f) for f in active], refusal=refusal,
                 has_recording=service.recording_of(
                     session, sample_id, _settings().storage.recordings_dir) is not None)


@quality_pages.get("/quality/samples/<int:sample_id>")
@requires("quality.review")
def review(sample_id: int) -> Any:
    with _sessions()() as session:
        return _review_page(session, sample_id)


@quality_pages.post("/quality/samples/<int:sample_id>")
@requires("quality.review")
def score(sample_id: int) -> Any:
    who = current_identity()
    form = request.form
    try:
        with transaction(_sessions()) as session:
            form_id = _whole(form.get("form_id", ""), "form_id", 1, 2_000_000_000)
            criteria = service.criteria_of(session, form_id)
            points = {c.id: _whole(form.get(f"points-{c.id}", ""), c.title, 0, c.max_points)
                      for c in criteria}
            notes = {c.id: form.get(f"note-{c.id}", "") for c in criteria}
            service.score(session, sample_id, form_id=form_id, points=points, notes=notes,
                          comment=form.get("comment", ""), reviewer=who.name,
                          reviewer_agent=who.agent, now=_now())
    except HotlineError as refused:
        with _sessions()() as session:
            return _review_page(session, sample_id, refusal=str(refused),
                                status=refused.status)
    return redirect(url_for("quality.queue"))


@quality_pages.get("/quality/samples/<int:sample_id>/recording")
@requires("quality.review")
def recording(sample_id: int) -> Any:
    """The sampled call's recording, each play from the start audited (recording_played)."""
    with transaction(_sessions()) as session:
        sample = _sample(session, sample_id)
        path = service.recording_of(session, sample_id, _settings().storage.recordings_dir)
        if path is None:
            abort(404, f"no recording of call {sample.call_id}")
        if played_from_the_start():
            audit(session, audit_log.RECORDING_PLAYED, target=sample.call_id,
                  detail={"quality_sample": sample_id})
        call_id = sample.call_id
    return send_recording(path, call_id)


@quality_pages.get("/quality/forms")
@requires("quality.forms")
def forms(refusal: str = "", status: int = 200) -> Any:
    with _sessions()() as session:
        views = [service.form_view(session, f) for f in service.forms(session)]
    return _page("quality_forms.html", status, forms=views, rows=range(1, FORM_ROWS + 1),
                 refusal=refusal)


@quality_pages.post("/quality/forms")
@requires("quality.forms")
def define() -> Any:
    form = request.form
    try:
        criteria = []
        for row in range(1, FORM_ROWS + 1):
            title = form.get(f"title-{row}", "").strip()
            if not title:
                continue
            criteria.append(service.CriterionIn(
                title, _whole(form.get(f"weight-{row}", ""), f"weight {row}", 1, 100),
                _whole(form.get(f"max-{row}", ""), f"top points {row}", 1, 100)))
        with transaction(_sessions()) as session:
            service.define_form(session, form.get("name", ""), criteria,
                                actor=current_identity().name, now=_now())
    except HotlineError as refused:
        return forms(refusal=str(refused), status=refused.status)
    return redirect(url_for("quality.forms"))


@quality_pages.get("/quality/mine")
@requires("quality.own")
def mine() -> Any:
    who = current_identity()
    with _sessions()() as session:
        reviews = [service.review_view(session, r)
                   for r in service.reviews_of_agent(session, who.agent or "")]
    return _page("quality_mine.html", reviews=reviews)


@quality_pages.get("/quality/report")
@requires("quality.report")
def report() -> Any:
    day = _day(request.args.get("day"))
    weeks = request.args.get("weeks", "4")
    count = int(weeks) if weeks.isdigit() and 1 <= int(weeks) <= 52 else 4
    _name, _start, end = service.week(day, _zone())
    start = end - timedelta(days=7 * count)
    with _sessions()() as session:
        found = service.report(session, start, end)
    titles_seen = sorted({t for line in [*found["agents"], *found["queues"], found["team"]]
                          for t in line["criteria"]})
    return _page("quality_report.html", report=found, criteria=titles_seen,
                 day=day.isoformat(), weeks=count)
