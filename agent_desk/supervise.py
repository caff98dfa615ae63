"""The supervisor's seats page (坐席监控): every seat's live state, and for an agent on a
call the buttons to listen, whisper or barge in (监听 / 耳语 / 强插) through the seats API
(POST /api/v1/seats/<agent>/spy, audited there). The supervisor's own phone rings: their
desk phone, or the desk page's softphone when they choose it."""

from __future__ import annotations

import json

from flask import Blueprint, current_app, render_template

from accounts.access import requires
from accounts.pages import guard_pages
from accounts.web import current_identity
from telephony.seats import SEATS_KEY

supervise = guard_pages(Blueprint("supervise", __name__, template_folder="templates"))


@supervise.get("/supervise/seats")
@requires("spy.use")
def seats() -> str:
    live = current_app.extensions["hotline.redis"].hgetall(SEATS_KEY)
    rows = sorted((json.loads(v) for v in live.values()), key=lambda s: s["agent"])
    return render_template("agent_desk/supervise_seats.html", who=current_identity(),
                           seats=rows,
                           reasons=dict(current_app.extensions["hotline.settings"]
                                        .seats.pause_reasons))
