"""The supervisor's seats page (坐席监控): every seat's live state, and for an agent on a
call the buttons to listen, whisper or barge in (监听 / 耳语 / 强插) through the seats API
(POST /api/v1/seats/<agent>/spy, audited there). The supervisor's own phone rings: their
desk phone, or the desk page's softphone when they choose it.

The rows are live: the page opens the push server's board stream (agent=board, as the
wallboard does, with a board push ticket renewed through /board/push-ticket) and redraws a
row from each board's agents (supervise/seats.js), so a seat going ready, paused or into a
call changes its row, and its buttons, without a reload."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from flask import Blueprint, current_app, g, render_template

from accounts.access import requires
from accounts.pages import guard_pages
from accounts.web import current_identity
from agent_desk import push_ticket
from agent_desk.board_pages import push_url, supervisor_ticket
from telephony.seats import SEATS_KEY

supervise = guard_pages(Blueprint("supervise", __name__, template_folder="templates"))


@supervise.get("/supervise/seats")
@requires("spy.use")
def seats() -> str:
    live = current_app.extensions["hotline.redis"].hgetall(SEATS_KEY)
    rows = sorted((json.loads(v) for v in live.values()), key=lambda s: s["agent"])
    url = push_url()
    g.csp_connect_src = ("{0.scheme}://{0.netloc}".format(urlsplit(url)),)
    return render_template("agent_desk/supervise_seats.html", who=current_identity(),
                           seats=rows, push_url=url, push_ticket=supervisor_ticket(),
                           push_ticket_seconds=push_ticket.TICKET_SECONDS,
                           reasons=dict(current_app.extensions["hotline.settings"]
                                        .seats.pause_reasons))
