"""A Twilio-compatible REST gateway (Twilio 接口兼容的短信网关): POST
/2010-04-01/Accounts/{sid}/Messages.json with basic auth sid:token; the gateway splits long
texts itself and names the message by one sid. Its delivery receipts come back as status
callbacks (POST MessageSid, MessageStatus) to `sms.status_callback_url`, signed as Twilio
signs its webhooks (X-Twilio-Signature).

What its answers say about sending at most once: a connection never made, 429 and 503 are
"not taken" (tried again later); another 4xx is "refused for good"; a request that left and
got no answer (timeout, cut connection) or another 5xx may have been taken: held. 401/403
refuse our account, not the message: tried again (someone fixes the settings).
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from channels.outbound.gateway import (
    OnPart,
    Outgoing,
    PermanentError,
    TemporaryError,
    UncertainError,
)

FINAL_STATUSES = {"delivered": True, "undelivered": False, "failed": False}


def status_of(params: Mapping[str, str]) -> tuple[str, bool | None]:
    """(message sid, delivered) of a status callback; None while not final (sent, queued)."""
    return params.get("MessageSid", ""), FINAL_STATUSES.get(params.get("MessageStatus", ""))


class TwilioProvider:
    name = "twilio"

    def __init__(self, base_url: str, account_sid: str, auth_token: str, sender: str, *,
                 status_callback_url: str = "", timeout_seconds: float = 15) -> None:
        self.url = (f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}"
                    "/Messages.json")
        self.sender, self.status_callback_url = sender, status_callback_url
        self.client = httpx.Client(auth=(account_sid, auth_token), timeout=timeout_seconds)

    def send(self, message: Outgoing, on_part: OnPart) -> int:
        form = {"To": message.phone, "From": self.sender, "Body": message.text}
        if self.status_callback_url:
            form["StatusCallback"] = self.status_callback_url
        try:
            answer = self.client.post(self.url, data=form)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TemporaryError(f"gateway not reached: {exc}") from None
        except httpx.TransportError as exc:
            raise UncertainError(f"request sent, no answer: {exc!r}") from None
        if answer.status_code in (429, 503):
            raise TemporaryError(f"gateway busy: HTTP {answer.status_code}")
        if answer.status_code in (401, 403):  # our account, not the message: fixable
            raise TemporaryError(f"gateway account refused: HTTP {answer.status_code}")
        if answer.status_code >= 500:
            raise UncertainError(f"gateway error HTTP {answer.status_code}: may have taken it")
        if answer.status_code >= 400:
            raise PermanentError(f"refused: HTTP {answer.status_code} {_reason(answer)}")
        try:
            sid = str(answer.json()["sid"])
        except (ValueError, KeyError, TypeError):
            raise UncertainError("taken, but the answer names no sid") from None
        on_part(1, sid)
        return 1

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        self.client.close()


def _reason(answer: httpx.Response) -> str:
    try:
        body = answer.json()
        return f"{body.get('code', '')} {body.get('message', '')}".strip()[:150]
    except ValueError:
        return answer.text[:150]
