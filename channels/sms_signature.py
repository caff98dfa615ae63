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
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit


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
