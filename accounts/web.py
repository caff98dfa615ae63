"""Who is asking over HTTP, for every room's adapter: `current_identity()`.

A bearer token (machine clients, scripts) or, with the web shell, a signed-in person's
session. Adapters ask here and never read accounts' tables themselves.
"""

from __future__ import annotations

from flask import abort, current_app, g, request

from accounts.service import Identity, identify


def current_identity() -> Identity:
    """The caller of this request (ANONYMOUS when nobody says who they are); an unknown
    token is a 401 before anything else of the request is read."""
    if "hotline_identity" not in g:
        with current_app.extensions["hotline.sessions"]() as session:
            found = identify(session, request.headers.get("Authorization"))
        if found is None:
            abort(401, "Authorization: unknown token")
        g.hotline_identity = found
    return g.hotline_identity  # type: ignore[no-any-return]
