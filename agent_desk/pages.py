"""The agent's desk page (坐席工作台) and its softphone (网页软电话).

The page registers the signed-in agent's own WebRTC endpoint (<number>-webrtc, rendered by
asterisk_conf from the telephony directory) with Asterisk over WSS. Its SIP credentials
come from `/desk/softphone`, for the signed-in person's own agent number only.

The page hears the server's pushes from the push server (agent_desk.push), on a port of its
own: the page carries a short-lived push ticket (agent_desk.push_ticket), renewed through
`/desk/push-ticket`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, current_app, g, jsonify, render_template, request
from flask_login import current_user

from accounts.access import PERMISSIONS, requires
from accounts.pages import guard_pages
from accounts.service import Identity
from accounts.web import current_identity
from agent_desk import push_ticket
from agent_desk.wallboard import current_alerts
from telephony import directory
from telephony.directory import BROWSER_SUFFIX

desk = guard_pages(Blueprint("desk", __name__, template_folder="templates"))


def _websocket_url() -> str:
    """Asterisk's built-in HTTPS server, where SIP over WebSocket lives (path /ws)."""
    pbx = current_app.extensions["hotline.settings"].pbx
    return f"wss://{pbx.bind_address}:{pbx.webrtc_port}/ws"


def _push_url() -> str:
    """Where the page opens its push stream: web.push_url, else this page's host at
    web.push_port."""
    web = current_app.extensions["hotline.settings"].web
    if web.push_url:
        return f"{web.push_url.rstrip('/')}/desk/push"
    host = urlsplit(f"//{request.host}").hostname or web.host
    if ":" in host:
        host = f"[{host}]"
    return f"{request.scheme}://{host}:{web.push_port}/desk/push"


def _push_ticket(who: Identity) -> str:
    """A push ticket for this caller's desk; "" for a caller with no account."""
    if who.account_id is None:
        return ""
    session_user = "" if who.token_id or not current_user.is_authenticated \
        else str(current_user.get_id())
    settings = current_app.extensions["hotline.settings"]
    return push_ticket.issue(
        settings.accounts.session_secret, current_app.extensions["hotline.clock"],
        account_id=who.account_id, session_user=session_user, agent=who.agent or "",
        see_phone=who.see_phone, origin=request.host_url.rstrip("/"))


@desk.get("/desk")
@requires("desk.use")
def page() -> str:
    who = current_identity()
    push_url = _push_url()
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(push_url))
    # the softphone's connection to Asterisk, and the push stream's
    g.csp_connect_src = (_websocket_url(), origin)
    return render_template("agent_desk/desk.html", who=who, push_url=push_url,
                           push_ticket=_push_ticket(who),
                           push_ticket_seconds=push_ticket.TICKET_SECONDS,
                           # the seat panel's lists: pause reasons, dispositions, the extension
                           config_seats=current_app.extensions["hotline.settings"].seats,
                           # the notices panel, for those who may read the board: the alerts
                           # standing now (the push server sends them the rest)
                           notices=current_alerts(current_app.extensions["hotline.redis"])
                           if PERMISSIONS["board.read"] & set(who.roles) else None)


@desk.get("/desk/push-ticket")
@requires("desk.use")
def renew_push_ticket() -> Response:
    """A fresh push ticket for the open desk page, before its own expires."""
    ticket = _push_ticket(current_identity())
    if not ticket:
        abort(404, "no account: this caller has no desk to push to")
    response = jsonify({"ticket": ticket, "url": _push_url(),
                        "expires_in": push_ticket.TICKET_SECONDS})
    response.headers["Cache-Control"] = "no-store"  # a credential: never kept by a cache
    return response


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
