"""The gateway's request signature (X-Twilio-Signature), computed and checked exactly as the
widely used Twilio-compatible gateways do.

The signed text is the full URL the gateway requested (scheme, host, path and query, as
configured at the gateway), followed by every POST parameter's name and value, names sorted,
with no separators; a name given several values adds each distinct value, sorted. The
signature is the base64 of its HMAC-SHA1 keyed by the account's auth token. Like Twilio's
own validator, a URL is accepted with and without its port (the default port added when
none is given), since proxies and gateways disagree on writing :443.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

from flask import request

_DEFAULT_PORTS = {"https": "443", "http": "80"}


def compute(auth_token: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    """The signature of a form POST of `params` (name, value pairs, in any order) to `url`."""
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    signed = url + "".join(name + value for name in sorted(values)
                           for value in sorted(values[name]))
    digest = hmac.new(auth_token.encode("utf-8"), signed.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _with_and_without_port(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    bare = (userinfo + "@" if userinfo else "") + host
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return (urlunsplit(parts._replace(netloc=bare)),
            urlunsplit(parts._replace(netloc=f"{bare}:{port}")))


def valid(auth_token: str, url: str, params: Sequence[tuple[str, str]], signature: str) -> bool:
    """Whether `signature` signs this POST, compared in constant time; never with no token."""
    if not auth_token or not signature:
        return False
    try:
        candidates = _with_and_without_port(url)
    except ValueError:  # a port that is no number
        return False
    given = signature.strip().encode("utf-8")
    matches = [hmac.compare_digest(compute(auth_token, candidate, params).encode("ascii"), given)
               for candidate in candidates]  # both compared, whichever matches
    return any(matches)


def _first(name: str) -> str:
    return request.headers.get(name, "").split(",")[0].strip()


def public_url(configured: str) -> str:
    """The URL the gateway requested for this request, as it signed it: `configured` (the
    URL exactly as set at the gateway) when given, else rebuilt from the request and a
    reverse proxy's X-Forwarded-Proto/-Host/-Port."""
    query = request.query_string.decode("latin-1")
    if configured:
        return configured if "?" in configured else configured + (f"?{query}" if query else "")
    scheme = _first("X-Forwarded-Proto").lower() or request.scheme
    host = _first("X-Forwarded-Host") or request.host
    port = _first("X-Forwarded-Port")
    if port and not re.search(r":[0-9]+$", host) and port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    return f"{scheme}://{host}{request.script_root}{request.path}" + (f"?{query}" if query
                                                                      else "")
