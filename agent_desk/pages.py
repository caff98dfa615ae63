"""The agent's desk page (坐席工作台) and its softphone (网页软电话).

The page registers the signed-in agent's own WebRTC endpoint (<number>-webrtc, rendered by
asterisk_conf from the telephony directory) with Asterisk over WSS. Its SIP credentials
come from `/desk/softphone`, for the signed-in person's own agent number only.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, current_app, g, jsonify, render_template

from accounts.access import requires
from accounts.pages import guard_pages
from accounts.web import current_identity
from telephony import directory
from telephony.directory import BROWSER_SUFFIX

desk = guard_pages(Blueprint("desk", __name__, template_folder="templates"))


def _websocket_url() -> str:
    """Asterisk's built-in HTTPS server, where SIP over WebSocket lives (path /ws)."""
    pbx = current_app.extensions["hotline.settings"].pbx
    return f"wss://{pbx.bind_address}:{pbx.webrtc_port}/ws"


@desk.get("/desk")
@requires("desk.use")
def page() -> str:
    who = current_identity()
    g.csp_connect_src = (_websocket_url(),)  # the softphone's only connection elsewhere
    # the seat panel's lists: pause reasons, dispositions, the wrap-up extension
    return render_template("agent_desk/desk.html", who=who,
                           config_seats=current_app.extensions["hotline.settings"].seats)


@desk.get("/desk/softphone")
@requires("desk.use")
def softphone() -> Response:
    """The signed-in agent's own softphone account; a person with no agent number has none."""
    who = current_identity()
    if not who.agent:
        abort(404, "no agent number: this account has no softphone")
    sessions = current_app.extensions["hotline.sessions"]
    with sessions() as session:
        phone = next((a for a in directory.snapshot(session).agents if a.number == who.agent),
                     None)
    if phone is None:
        abort(404, f"agent {who.agent} is not in the telephony directory")
    pbx = current_app.extensions["hotline.settings"].pbx
    user = f"{phone.number}{BROWSER_SUFFIX}"
    body: dict[str, Any] = {
        "agent": phone.number, "display_name": phone.name,
        "uri": f"sip:{user}@{pbx.bind_address}", "authorization_user": user,
        "password": phone.sip_password, "websocket": _websocket_url(),
    }
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"  # a password: never kept by a cache
    return response
