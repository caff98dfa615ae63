"""A fake SMS gateway (模拟短信网关) speaking the Twilio REST form, on loopback, for the
tests: it keeps every message it is sent and can be asked for them (the portal's test reads
its confirmation codes here), and reports delivery to each message's StatusCallback, signed
with X-Twilio-Signature as Twilio signs it.

    gateway = FakeSmsGateway("AC123", "token").start()
    settings: sms.twilio_base_url = gateway.base_url, twilio_account_sid / _auth_token
    gateway.texts_to("+8613800138000")   # what that phone got, oldest first
    gateway.answer_next(429)              # the next POST is refused so (429, 503, 400, 500)

Run alone for a demo: `python -m tests.fake_sms_gateway [port]` (sid AC00000000, token
"demo-token"), then point the centre at it with sms.provider = "twilio".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import httpx


def _sign(token: str, url: str, params: dict[str, str]) -> str:
    # written from Twilio's description, not imported from the code under test
    data = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()
                            ).decode()


@dataclass
class Received:
    sid: str
    to: str
    sender: str
    body: str
    status_callback: str
    callbacks: list[tuple[str, int]] = field(default_factory=list)  # (status, HTTP answer)


class FakeSmsGateway:
    def __init__(self, account_sid: str = "AC00000000", auth_token: str = "demo-token", *,
                 port: int = 0, deliver: str | None = "delivered",
                 callback_delay: float = 0.2) -> None:
        self.account_sid, self.auth_token = account_sid, auth_token
        self.deliver, self.callback_delay = deliver, callback_delay
        self.messages: list[Received] = []
        self.refused = 0
        self.callback_errors: list[str] = []
        self._answers: list[int] = []
        self._lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                gateway._post(self)

            def do_GET(self) -> None:
                gateway._get(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="fake-sms-gateway")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeSmsGateway:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer_next(self, status: int) -> None:
        with self._lock:
            self._answers.append(status)

    def texts_to(self, phone: str) -> list[str]:
        with self._lock:
            return [m.body for m in self.messages if m.to == phone]

    def last_text_to(self, phone: str) -> str | None:
        texts = self.texts_to(phone)
        return texts[-1] if texts else None

    def report(self, sid: str, status: str) -> int:
        """Send `sid`'s status callback now (signed); the hotline's HTTP answer."""
        with self._lock:
            message = next(m for m in self.messages if m.sid == sid)
        params = {"AccountSid": self.account_sid, "MessageSid": sid, "MessageStatus": status,
                  "To": message.to, "From": message.sender, "ApiVersion": "2010-04-01"}
        answer = httpx.post(message.status_callback, data=params, timeout=10, headers={
            "X-Twilio-Signature": _sign(self.auth_token, message.status_callback, params)})
        message.callbacks.append((status, answer.status_code))
        if answer.status_code >= 400:
            self.callback_errors.append(answer.text[:300])
        return answer.status_code

    # ------------------------------------------------------------------------ requests

    def _authorised(self, handler: BaseHTTPRequestHandler) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return handler.headers.get("Authorization", "") == f"Basic {expected}"

    def _reply(self, handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _post(self, handler: BaseHTTPRequestHandler) -> None:
        path = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        length = int(handler.headers.get("Content-Length", "0"))
        form = {k: v[0] for k, v in parse_qs(handler.rfile.read(length).decode()).items()}
        if handler.path != path:
            self._reply(handler, 404, {"code": 20404, "message": "not found"})
            return
        if not self._authorised(handler):
            self._reply(handler, 401, {"code": 20003, "message": "Authenticate"})
            return
        with self._lock:
            forced = self._answers.pop(0) if self._answers else None
        if forced is not None:
            self.refused += 1
            self._reply(handler, forced, {"code": 21211 if forced == 400 else 20500,
                                          "message": f"forced {forced}"})
            return
        if not form.get("To") or not form.get("Body"):
            self._reply(handler, 400, {"code": 21604, "message": "'To' and 'Body' needed"})
            return
        message = Received("SM" + uuid.uuid4().hex, form["To"], form.get("From", ""),
                           form["Body"], form.get("StatusCallback", ""))
        with self._lock:
            self.messages.append(message)
        self._reply(handler, 201, {"sid": message.sid, "status": "queued",
                                   "to": message.to, "from": message.sender,
                                   "body": message.body})
        if message.status_callback and self.deliver:
            threading.Thread(target=self._later, args=(message.sid,), daemon=True).start()

    def _later(self, sid: str) -> None:
        time.sleep(self.callback_delay)  # a network's delivery takes a moment
        for status in ("sent", self.deliver):
            try:
                self.report(sid, str(status))
            except httpx.HTTPError as exc:
                self.callback_errors.append(repr(exc))
                return

    def _get(self, handler: BaseHTTPRequestHandler) -> None:
        """GET /messages: every message kept, for a person watching a demo."""
        with self._lock:
            body = [{"sid": m.sid, "to": m.to, "from": m.sender, "body": m.body}
                    for m in self.messages]
        self._reply(handler, 200, {"messages": body})


if __name__ == "__main__":
    import sys

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8330
    gateway = FakeSmsGateway(port=port).start()
    print(f"fake SMS gateway on {gateway.base_url} (sid AC00000000, token demo-token)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        gateway.stop()
