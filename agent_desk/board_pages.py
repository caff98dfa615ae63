"""The wallboard's pages (监控大屏): /board for supervisors, shift chiefs and admins, and
/board/wall for the command hall's display wall, opened with a display token (no login form).

Each page comes with the board as it is now (agent_desk.wallboard.compose) and a push
ticket for the push server's stream of board entries (agent=board), renewed through its
push-ticket route; the page's script (board/board.js) draws each board it hears.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, current_app, g, jsonify, render_template, request
from flask_login import current_user

from accounts.access import PUBLIC, requires
from accounts.pages import guard_pages
from accounts.web import current_identity
from agent_desk import push_ticket
from agent_desk.feed import BOARD
from agent_desk.push import DISPLAY_PREFIX
from agent_desk.wallboard import DisplayTokenError, compose, verify_display_token

board_pages = guard_pages(Blueprint("board", __name__, template_folder="templates"))
MAX_TOKEN = 500


def _push_url() -> str:
    """As the desk's (agent_desk.pages): web.push_url, else this host at web.push_port."""
    web = current_app.extensions["hotline.settings"].web
    if web.push_url:
        return f"{web.push_url.rstrip('/')}/desk/push"
    host = urlsplit(f"//{request.host}").hostname or web.host
    if ":" in host:
        host = f"[{host}]"
    return f"{request.scheme}://{host}:{web.push_port}/desk/push"


def _ticket(account_id: int, session_user: str, stream: str = BOARD) -> str:
    settings = current_app.extensions["hotline.settings"]
    return push_ticket.issue(
        settings.accounts.session_secret, current_app.extensions["hotline.clock"],
        account_id=account_id, session_user=session_user, agent=stream, see_phone=False,
        origin=request.host_url.rstrip("/"))


def _supervisor_ticket(stream: str = BOARD) -> str:
    who = current_identity()
    if who.account_id is None:
        return ""
    session_user = "" if who.token_id or not current_user.is_authenticated \
        else str(current_user.get_id())
    return _ticket(who.account_id, session_user, stream)


def _refuse_display(why: str, status: int = 401) -> None:
    """A refusal that says why, as it is: a wall has nobody to sign in, so no login page."""
    abort(Response(f"{status}: {why}\n", status, mimetype="text/plain"))


def _display() -> str:
    """The display's name from ?token=, or a 401 saying why."""
    settings = current_app.extensions["hotline.settings"]
    token = request.args.get("token", "")
    if not token or len(token) > MAX_TOKEN:
        _refuse_display("a display token is needed: /board/wall?token=...", 400)
    try:
        display = verify_display_token(settings.accounts.session_secret,
                                       current_app.extensions["hotline.clock"], token,
                                       settings.board.display_token_days)
    except DisplayTokenError as exc:
        _refuse_display(str(exc))
    return display.name


def _board_now() -> dict[str, Any]:
    settings = current_app.extensions["hotline.settings"]
    with current_app.extensions["hotline.sessions"]() as session:
        return compose(session, current_app.extensions["hotline.redis"], settings,
                       current_app.extensions["hotline.clock"].now())


def _page(*, wall: bool, ticket: str, renew: str, who: str) -> str:
    push_url = _push_url()
    g.csp_connect_src = ("{0.scheme}://{0.netloc}".format(urlsplit(push_url)),)
    return render_template("agent_desk/wallboard.html", wall=wall, who=who,
                           board=_board_now(),
                           config_reasons=current_app.extensions["hotline.settings"]
                           .seats.pause_reasons,
                           push_url=push_url, push_ticket=ticket, renew=renew,
                           push_ticket_seconds=push_ticket.TICKET_SECONDS,
                           settings_board=current_app.extensions["hotline.settings"].board)


def _renewed(ticket: str) -> Response:
    response = jsonify({"ticket": ticket, "url": _push_url(),
                        "expires_in": push_ticket.TICKET_SECONDS})
    response.headers["Cache-Control"] = "no-store"  # a credential: never kept by a cache
    return response


@board_pages.get("/board")
@requires("board.read")
def page() -> str:
    return _page(wall=False, ticket=_supervisor_ticket(),
                 renew="/board/push-ticket", who=current_identity().name)


@board_pages.get("/board/push-ticket")
@requires("board.read")
def renew_push_ticket() -> Response:
    ticket = _supervisor_ticket()
    if not ticket:
        abort(404, "no account: this caller has no board to push to")
    return _renewed(ticket)


@board_pages.get("/board/wall")
@requires(PUBLIC)  # the display token is its own check (read-only: the board only)
def wall() -> Response:
    name = _display()
    token = request.args.get("token", "")
    response = Response(_page(wall=True, ticket=_ticket(0, f"{DISPLAY_PREFIX}{name}"),
                              renew=f"/board/wall/push-ticket?token={token}", who=name))
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"  # the token is in the address
    return response


@board_pages.get("/board/wall/push-ticket")
@requires(PUBLIC)
def renew_wall_ticket() -> Response:
    return _renewed(_ticket(0, f"{DISPLAY_PREFIX}{_display()}"))


# The case map's page (agent_desk.casemap) hears the same push server, read-only like a
# board: where the stream is, a ticket for the signed-in viewer to a stream, a renewal.
push_url, viewer_ticket, renewed_ticket = _push_url, _supervisor_ticket, _renewed
