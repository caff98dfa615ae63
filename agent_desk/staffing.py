"""The staffing page for supervisors (排班预测与突发事件模式): the Erlang C forecast of the
agents each half-hour of a day needs against the agents scheduled (telephony.forecast), and
the surge mode switch (telephony.surge): on with a recorded or typed announcement, off with
one click, each switch audited.

Forms post with the page's CSRF token; a refused switch shows the page again with the
reason and a 4xx status, and stores nothing (an uploaded recording of a refused switch is
removed again).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from accounts import audit
from accounts.access import requires
from accounts.pages import guard_pages
from accounts.web import client_address, current_identity
from core.db import transaction
from core.errors import HotlineError
from core.schemas import Body, Query, Text
from telephony import forecast as forecasting
from telephony import surge

staffing = guard_pages(Blueprint("staffing", __name__, template_folder="templates"))
MAX_UPLOAD_BYTES = 1 << 20  # the web app's request limit: about a minute of 8 kHz audio


class DayQuery(Query):
    day: Text(10, pattern=r"^(19[7-9]\d|2[01]\d\d)-\d{2}-\d{2}$") = ""


class SurgeForm(Body):
    csrf_token: Text(200) = ""
    title: Text(surge.MAX_TITLE, 1)
    text: Text(surge.MAX_TEXT) = ""
    reuse: Text(9, pattern=r"^[0-9]*$") = ""  # an earlier surge whose announcement to play


def _sessions() -> sessionmaker[Session]:
    return current_app.extensions["hotline.sessions"]  # type: ignore[no-any-return]


def _now() -> datetime:
    return current_app.extensions["hotline.clock"].now()  # type: ignore[no-any-return]


def _problem(error: ValidationError) -> str:
    first = error.errors(include_url=False, include_input=False)[0]
    names = ".".join(str(p) for p in first.get("loc", ()))
    return f"{names}: {str(first.get('msg', 'invalid')).removeprefix('Value error, ')}"


def _day(text: str, zone: ZoneInfo) -> date:
    if not text:
        return _now().astimezone(zone).date()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise HotlineError(f"day: not a date: {text}") from None


def _page(status: int = 200, error: str = "", day_text: str = "") -> tuple[str, int]:
    settings = current_app.extensions["hotline.settings"]
    zone = ZoneInfo(settings.calendar.timezone)
    now = _now()
    day = _day(day_text, zone)
    with _sessions()() as session:
        plan = forecasting.forecast(session, day, timezone=settings.calendar.timezone,
                                    weeks=settings.hotline.staffing_weeks,
                                    schedule=settings.hotline.staffing_schedule)
        on = surge.current(session)
        past = [(mode, surge.calls_of(session, mode, now)) for mode in surge.recent(session)]
    shown = [s for s in plan.slots if s.calls or s.scheduled or s.needed]
    chart = {"slots": [s.start for s in plan.slots],
             "needed": [s.needed for s in plan.slots],
             "scheduled": [s.scheduled for s in plan.slots],
             "calls": [s.calls for s in plan.slots]}
    return render_template(
        "agent_desk/staffing.html", plan=plan, shown=shown, on=on, past=past, error=error,
        zone=zone, day=day, chart=json.dumps(chart), who=current_identity(),
        counts={m.id: asdict(c) for m, c in past}), status


@staffing.get("/staffing")
@requires("staffing.read")
def page() -> Any:
    """The forecast of a day (?day=YYYY-MM-DD, today by default) and the surge switch."""
    try:
        query = DayQuery.model_validate(request.args.to_dict())
    except ValidationError as exc:
        return _page(400, _problem(exc))
    try:
        return _page(day_text=query.day)
    except HotlineError as exc:
        return _page(exc.status if exc.status < 500 else 400, str(exc))


@staffing.post("/staffing/surge")
@requires("surge.switch")
def surge_on() -> Any:
    """Switch surge mode on: a title and either a WAV recording or typed text."""
    try:
        form = SurgeForm.model_validate(request.form.to_dict())
    except ValidationError as exc:
        return _page(400, _problem(exc))
    upload = request.files.get("recording")
    data = upload.read(MAX_UPLOAD_BYTES + 1) if upload and upload.filename else b""
    settings = current_app.extensions["hotline.settings"]
    prompts_dir: Path = settings.storage.prompts_dir
    who, now = current_identity(), _now()
    sound = ""  # an announcement stored by this request (removed again if refused)
    try:
        if [bool(data), bool(form.text.strip()), bool(form.reuse)].count(True) != 1:
            raise HotlineError("announcement: upload a recording, type a text or choose an "
                               "earlier one, one of them")
        if len(data) > MAX_UPLOAD_BYTES:
            raise HotlineError("recording: at most 1 MiB")
        with _sessions()() as session:
            if (on := surge.current(session)) is not None:
                raise surge.SurgeConflict(f"surge mode is already on ({on.title}); "
                                          f"switch it off first")
            earlier = surge.announcement_of(session, prompts_dir, int(form.reuse)) \
                if form.reuse else None
        speak: Callable[[str, Path], Path] = current_app.extensions["hotline.speak"]
        if earlier is None:
            sound = (surge.store_recording(prompts_dir, data) if data
                     else surge.store_spoken(prompts_dir, form.text, speak))
        played, text = earlier or (sound, form.text.strip())
        with transaction(_sessions()) as session:
            mode = surge.start(session, title=form.title, text=text, sound=played,
                               actor=who.name, now=now)
            audit.record(session, audit.SURGE_ON, actor=who.name, now=now,
                         target=f"surge:{mode.id}", address=client_address(),
                         detail={"title": mode.title, "typed": bool(mode.text)})
    except HotlineError as exc:
        if sound:
            surge.discard(prompts_dir, sound)
        return _page(exc.status, str(exc))
    return redirect(url_for("staffing.page"), 303)


@staffing.post("/staffing/surge/off")
@requires("surge.switch")
def surge_off() -> Any:
    """Switch surge mode off (one click)."""
    try:
        SurgeForm.model_validate({"title": "-", **request.form.to_dict()})
    except ValidationError as exc:
        return _page(400, _problem(exc))
    who, now = current_identity(), _now()
    try:
        with transaction(_sessions()) as session:
            mode = surge.stop(session, actor=who.name, now=now)
            audit.record(session, audit.SURGE_OFF, actor=who.name, now=now,
                         target=f"surge:{mode.id}", address=client_address(),
                         detail={"title": mode.title})
    except HotlineError as exc:
        return _page(exc.status, str(exc))
    return redirect(url_for("staffing.page"), 303)
