"""The web shell (网页外壳): what every page stands on.

Static files (our stylesheet and scripts, and the front-end packages scripts/setup vendors
from npm into static/vendor), the language switch (Chinese by default, English by choice),
the Content-Security-Policy that lets a page load nothing from elsewhere, and the API's
interactive docs served from those same files. Pages extend templates/base.html.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    send_from_directory,
)
from flask_babel import Babel

from accounts.access import PUBLIC, requires

STATIC = Path(__file__).with_name("static")
TRANSLATIONS = Path(__file__).with_name("translations")
DEFAULT_LOCALE = "zh_Hans_CN"
# what a person chooses (the cookie's value, the page's lang) -> the catalogue's locale
LANGUAGES = {"zh-CN": "zh_Hans_CN", "en": "en"}
LANGUAGE_COOKIE = "hotline_lang"
LANGUAGE_COOKIE_SECONDS = 365 * 24 * 3600
# Scripts, styles and connections from this origin only: no CDN, no inline script, no eval
# (Alpine's CSP build and htmx with allowEval off need none). Images may be data: URLs
# (Swagger UI's icons).
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
    "img-src 'self' data:", "font-src 'self'", "object-src 'none'", "base-uri 'self'",
    "form-action 'self'", "frame-ancestors 'none'"))
OPENAPI_URL = "/api/v1/openapi.json"
# No page is ever framed (the wallboard is a page of its own on the wall's browser); the
# desk's softphone is the one user of the microphone; addresses (a display token, a case
# number) never leave the site in a Referer.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=(), payment=(), usb=(), "
                          "display-capture=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}

shell = Blueprint("shell", __name__)


def init_app(app: Flask) -> None:
    """Babel and the shell's routes on `app` (whose own static route is off: ours is here)."""
    Babel(app, locale_selector=chosen_locale, default_locale=DEFAULT_LOCALE,
          default_translation_directories=str(TRANSLATIONS))
    app.register_blueprint(shell)


def chosen_language() -> str:
    """The language the person chose with the switch; Chinese until they choose. The
    browser's Accept-Language is not asked: the centre's staff work in Chinese whatever
    their browser says."""
    choice = request.cookies.get(LANGUAGE_COOKIE, "")
    return choice if choice in LANGUAGES else "zh-CN"


def chosen_locale() -> str:
    return LANGUAGES[chosen_language()]


@shell.app_context_processor
def page_language() -> dict[str, Any]:
    return {"page_lang": chosen_language(), "languages": {"zh-CN": "中文", "en": "English"}}


@shell.after_app_request
def content_security_policy(response: Response) -> Response:
    """The policy; a page that must connect elsewhere (the desk's softphone to Asterisk's
    WSS) names those origins in `g.csp_connect_src`, one that shows images from elsewhere
    (the desk map's tiles) in `g.csp_img_src`, and only its own response allows them."""
    policy = CONTENT_SECURITY_POLICY
    extra = " ".join(g.get("csp_connect_src", ()))
    if extra:
        policy = policy.replace("connect-src 'self'", f"connect-src 'self' {extra}")
    images = " ".join(g.get("csp_img_src", ()))  # the desk map's tiles, when configured
    if images:
        policy = policy.replace("img-src 'self' data:", f"img-src 'self' data: {images}")
    response.headers.setdefault("Content-Security-Policy", policy)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    hsts = current_app.extensions["hotline.settings"].web.hsts_seconds
    if request.is_secure and hsts:  # only over TLS (RFC 6797: ignored over http)
        response.headers.setdefault("Strict-Transport-Security", f"max-age={hsts}")
    return response


@shell.get("/static/<path:filename>")
@requires(PUBLIC)
def static(filename: str) -> Response:
    return send_from_directory(STATIC, filename)


@shell.get("/lang/<choice>")
@requires(PUBLIC)
def language(choice: str) -> Response:
    """Remember the person's language in a cookie and go back to the page they were on
    (`next`, a path on this site only: never a redirect elsewhere)."""
    if choice not in LANGUAGES:
        abort(404, f"language: {choice!r} is none of {', '.join(LANGUAGES)}")
    back = request.args.get("next", "/")
    parts = urlsplit(back)
    if parts.scheme or parts.netloc or not back.startswith("/") or back.startswith("//") \
            or "\\" in back:
        back = "/"
    response = redirect(back, code=303)
    response.set_cookie(LANGUAGE_COOKIE, choice, max_age=LANGUAGE_COOKIE_SECONDS,
                        httponly=True, samesite="Lax", secure=request.is_secure)
    return response


@shell.get("/api/v1/docs")
@requires(PUBLIC)
def api_docs() -> str:
    """The API's interactive docs: Swagger UI from our static folder, reading the one
    OpenAPI document."""
    return render_template("api_docs.html", openapi_url=OPENAPI_URL)
