"""The wallboard's pages (监控大屏): /board for supervisors, shift chiefs and admins, and
/board/wall for the command hall's display wall, opened with a display token (no login form),
and /board/displays where an admin lists, issues and revokes those tokens (agent_desk.displays).

Each page comes with the board as it is now (agent_desk.wallboard.compose) and a push
ticket for the push server's stream of board entries (agent=board), renewed through its
push-ticket route; the page's script (board/board.js) draws each board it hears.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from pydantic import ValidationError

from accounts.access import PUBLIC, requires
from accounts.pages import guard_pages
from accounts.web import client_address, current_identity
from agent_desk import displays, push_ticket
from agent_desk.displays import MAX_NAME, Display, DisplayTokenError
from agent_desk.displays import check as check_display
from agent_desk.feed import BOARD
from agent_desk.push import DISPLAY_PREFIX
from agent_desk.wallboard import compose, latest_board
from core.db import transaction
from core.errors import HotlineError
from core.schemas import Body, Text

board_pages = guard_pages(Blueprint("board", __name__, template_folder="templates"))
MAX_TOKEN = 500


def push_url() -> str:
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


def supervisor_ticket(stream: str = BOARD) -> str:
    who = current_identity()
    if who.account_id is None:
        return ""
    session_user = "" if who.token_id or not current_user.is_authenticated \
        else str(current_user.get_id())
    return _ticket(who.account_id, session_user, stream)


def _refuse_display(why: str, status: int = 401) -> None:
    """A refusal that says why, as it is: a wall has nobody to sign in, so no login page."""
    abort(Response(f"{status}: {why}\n", status, mimetype="text/plain"))


def _display() -> Display:
    """The display that ?token= opens the wall for (asked of its stored row each time: a
    revoked token stops here), or a 401 saying why."""
    settings = current_app.extensions["hotline.settings"]
    token = request.args.get("token", "")
    if not token or len(token) > MAX_TOKEN:
        _refuse_display("a display token is needed: /board/wall?token=...", 400)
    try:
        with current_app.extensions["hotline.sessions"]() as session:
            return check_display(session, settings.accounts.session_secret, token,
                                 current_app.extensions["hotline.clock"].now())
    except DisplayTokenError as exc:
        _refuse_display(str(exc))
        raise  # unreachable: abort raised


def _board_now() -> dict[str, Any]:
    """The board the loop published last if it is fresh (a Redis read), else composed here
    from the records (the loop is not running)."""
    settings = current_app.extensions["hotline.settings"]
    client, now = current_app.extensions["hotline.redis"], \
        current_app.extensions["hotline.clock"].now()
    latest = latest_board(client, now)
    if latest is not None:
        return latest
    with current_app.extensions["hotline.sessions"]() as session:
        return compose(session, client, settings, now)


def _page(*, wall: bool, ticket: str, renew: str, who: str) -> str:
    url = push_url()
    g.csp_connect_src = ("{0.scheme}://{0.netloc}".format(urlsplit(url)),)
    return render_template("agent_desk/wallboard.html", wall=wall, who=who,
                           board=_board_now(),
                           config_reasons=current_app.extensions["hotline.settings"]
                           .seats.pause_reasons,
                           push_url=url, push_ticket=ticket, renew=renew,
                           push_ticket_seconds=push_ticket.TICKET_SECONDS,
                           settings_board=current_app.extensions["hotline.settings"].board)


def _renewed(ticket: str) -> Response:
    response = jsonify({"ticket": ticket, "url": push_url(),
                        "expires_in": push_ticket.TICKET_SECONDS})
    response.headers["Cache-Control"] = "no-store"  # a credential: never kept by a cache
    return response


@board_pages.get("/board")
@requires("board.read")
def page() -> str:
    return _page(wall=False, ticket=supervisor_ticket(),
                 renew="/board/push-ticket", who=current_identity().name)


@board_pages.get("/board/push-ticket")
@requires("board.read")
def renew_push_ticket() -> Response:
    ticket = supervisor_ticket()
    if not ticket:
        abort(404, "no account: this caller has no board to push to")
    return _renewed(ticket)


@board_pages.get("/board/wall")
@requires(PUBLIC)  # the display token is its own check (read-only: the board only)
def wall() -> Response:
    display = _display()
    token = request.args.get("token", "")
    response = Response(_page(wall=True, ticket=_ticket(0, f"{DISPLAY_PREFIX}{display.id}"),
                              renew=f"/board/wall/push-ticket?token={token}",
                              who=display.name))
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"  # the token is in the address
    return response


@board_pages.get("/board/wall/push-ticket")
@requires(PUBLIC)
def renew_wall_ticket() -> Response:
    return _renewed(_ticket(0, f"{DISPLAY_PREFIX}{_display().id}"))


# ------------------------------------------------------------- display tokens (大屏令牌)

class DisplayForm(Body):
    csrf_token: Text(200) = ""
    name: Text(MAX_NAME, 1)


class RevokeForm(Body):
    csrf_token: Text(200) = ""
    display_id: Text(9, 1, pattern=r"^[0-9]+$")


def _displays_page(status: int = 200, error: str = "", issued: str = "",
                   issued_name: str = "") -> tuple[str, int]:
    now = current_app.extensions["hotline.clock"].now()
    with current_app.extensions["hotline.sessions"]() as session:
        rows = [(row, displays.state(row, now)) for row in displays.listing(session)]
    wall = f"{request.host_url.rstrip('/')}/board/wall?token={issued}" if issued else ""
    response = render_template(
        "agent_desk/displays.html", rows=rows, error=error, issued=issued, wall=wall,
        issued_name=issued_name, who=current_identity(),
        zone=ZoneInfo(current_app.extensions["hotline.settings"].calendar.timezone),
        days=current_app.extensions["hotline.settings"].board.display_token_days)
    return response, status


def _form_problem(error: ValidationError) -> str:
    first = error.errors(include_url=False, include_input=False)[0]
    names = ".".join(str(p) for p in first.get("loc", ()))
    return f"{names}: {str(first.get('msg', 'invalid')).removeprefix('Value error, ')}"


@board_pages.get("/board/displays")
@requires("board.display")
def display_tokens() -> Any:
    """Every display token issued (active, revoked, expired), to issue and revoke them."""
    return _no_store(*_displays_page())


@board_pages.post("/board/displays")
@requires("board.display")
def issue_display() -> Any:
    """Issue a display token for a wall: shown once on the answer, never again."""
    try:
        form = DisplayForm.model_validate(request.form.to_dict())
    except ValidationError as exc:
        return _no_store(*_displays_page(400, _form_problem(exc)))
    settings = current_app.extensions["hotline.settings"]
    who = current_identity()
    try:
        with transaction(current_app.extensions["hotline.sessions"]) as session:
            row, token = displays.issue(
                session, settings.accounts.session_secret, form.name,
                days=settings.board.display_token_days, actor=who.name,
                now=current_app.extensions["hotline.clock"].now(), address=client_address())
            name = row.name
    except HotlineError as exc:
        return _no_store(*_displays_page(exc.status, str(exc)))
    return _no_store(*_displays_page(201, issued=token, issued_name=name))


@board_pages.post("/board/displays/revoke")
@requires("board.display")
def revoke_display() -> Any:
    """Revoke one display token: its wall is refused from its next load or push stream."""
    try:
        form = RevokeForm.model_validate(request.form.to_dict())
    except ValidationError as exc:
        return _no_store(*_displays_page(400, _form_problem(exc)))
    try:
        with transaction(current_app.extensions["hotline.sessions"]) as session:
            displays.revoke(session, int(form.display_id), actor=current_identity().name,
                            now=current_app.extensions["hotline.clock"].now(),
                            address=client_address())
    except HotlineError as exc:
        return _no_store(*_displays_page(exc.status, str(exc)))
    displays.announce_revoked(current_app.extensions["hotline.redis"], int(form.display_id))
    return redirect(url_for("board.display_tokens"), 303)


def _no_store(body: str, status: int) -> Response:
    response = Response(body, status)
    response.headers["Cache-Control"] = "no-store"  # a token issued is shown once
    return response


# The case map's page (agent_desk.casemap) hears the same push server, read-only like a
# board (push_url above): a ticket for the signed-in viewer to a stream, and its renewal.
viewer_ticket, renewed_ticket = supervisor_ticket, _renewed
