"""The SMS gateway's inbound webhook in the app (SQLite and PostgreSQL): the signature exactly
as Twilio computes it (its own published test vectors), behind a proxy too; a report becomes
one intake order answered once with its case number however often it is delivered; opt-out
words remembered and honoured by the outbox; a closed order's citizen told by SMS; hostile,
wrongly encoded, oversized or unsigned posts refused with nothing stored. The same through a
running centre and the real survey call: test_sms_live.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from channels import notices, sms_signature
from channels.models import SmsMessage, SmsOptOut
from core.clock import FixedClock
from core.db import make_engine, session_factory, transaction, upgrade
from core.errors import ConfigError
from core.live import connect_redis
from hotline.web import create_app
from tests.conftest import CASE_LOOP, REDIS_SERVER_URL, make_settings
from tickets import catalogue, service, surveys
from tickets.models import Survey, WorkOrder
from tickets.service import Policy

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # 10:00 in Beijing
TOKEN = "test-auth-token-0123456789"
URL = "http://localhost/api/v1/sms/inbound"  # what the test client requests
FORM = "application/x-www-form-urlencoded"
CITIZEN = "+8613812345678"


def twilio_signature(token: str, url: str, params: dict[str, str]) -> str:
    """Written from Twilio's description, independently of channels.sms_signature: the URL,
    then each name and value, names sorted; HMAC-SHA1; base64."""
    text = url + "".join(name + params[name] for name in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), text.encode(), hashlib.sha1).digest()
                            ).decode()


@dataclass
class Hub:
    client: FlaskClient
    app: Any
    sessions: sessionmaker[Session]

    def post(self, params: dict[str, str], *, url: str = URL, token: str = TOKEN,
             headers: dict[str, str] | None = None, signature: str | None = None) -> Any:
        sign = twilio_signature(token, url, params) if signature is None else signature
        return self.client.post("/api/v1/sms/inbound", data=urlencode(params).encode(),
                                content_type=FORM,
                                headers={"X-Twilio-Signature": sign, **(headers or {})})

    def count(self, model: Any, *where: Any) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.count()).select_from(model).where(*where)) or 0

    def messages(self, *where: Any) -> list[tuple[str, str, str, str, str]]:
        with self.sessions() as session:
            return [(m.direction, m.phone, m.purpose, m.state, m.text) for m in session.scalars(
                select(SmsMessage).where(*where).order_by(SmsMessage.id))]

    def settings(self, **sms: Any) -> None:
        settings = self.app.extensions["hotline.settings"]
        self.app.extensions["hotline.settings"] = replace(
            settings, sms=replace(settings.sms, **sms))


@pytest.fixture
def hub(database_url: str, tmp_path: Path) -> Iterator[Hub]:
    settings = make_settings(tmp_path, DATABASE_URL=database_url, REDIS_URL=REDIS_SERVER_URL,
                             HOTLINE_SMS_TWILIO_AUTH_TOKEN=TOKEN,
                             HOTLINE_SMS_INBOUND_PER_NUMBER="1000/minute")
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        catalogue.seed(session)
    app = create_app(settings, sessions, connect_redis(settings), FixedClock(NOW))
    yield Hub(app.test_client(), app, sessions)
    engine.dispose()


def _sms(sid: str, body: str, sender: str = "13812345678") -> dict[str, str]:
    # what a gateway posts: the four fields read, and others that are signed but not read
    return {"AccountSid": "AC0123", "ApiVersion": "2010-04-01", "From": sender,
            "To": "+8610612319", "Body": body, "MessageSid": sid, "NumMedia": "0"}


def test_the_signature_is_twilios_own_computation_on_its_published_vectors() -> None:
    # twilio-python's tests/unit/test_request_validator.py: token "12345", these values
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = [("CallSid", "CA1234567890ABCDE"), ("Digits", "1234"), ("From", "+14158675309"),
              ("To", "+18005551212"), ("Caller", "+14158675309")]
    assert sms_signature.compute("12345", url, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert twilio_signature("12345", url, dict(params)) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    repeated = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"),
                ("Digits", "1234")]
    assert sms_signature.compute("12345", url, repeated) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    # the port: removed on https and http, the default one added
    assert sms_signature.valid("12345", url.replace(".com", ".com:1234"), params,
                               "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert sms_signature.valid("12345", url.replace(".com", ".com:1234").replace(
        "https", "http"), params, "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=")
    assert sms_signature.valid("12345", url, params, "kvajT1Ptam85bY51eRf/AJRuM3w=")
    assert sms_signature.valid("12345", url.replace("https", "http"), params,
                               "0ZXoZLH/DfblKGATFgpif+LLRf4=")
    # anything else is not it
    assert not sms_signature.valid("12346", url, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert not sms_signature.valid("12345", url + "&x=1", params,
                                   "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert not sms_signature.valid("12345", url, params[:-1], "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert not sms_signature.valid("", url, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert not sms_signature.valid("12345", url, params, "")


def test_a_report_delivered_three_times_is_one_intake_order_and_one_reply(hub: Hub) -> None:
    post = _sms("SM0001", "人民路口垃圾没人清理")
    answers = [hub.post(post) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert all(a.mimetype == "text/xml" and a.get_data(as_text=True).endswith("<Response/>")
               for a in answers)
    with hub.sessions() as session:
        orders = list(session.scalars(select(WorkOrder)))
        assert [(o.channel, o.state, o.appeal_type, o.citizen_phone, o.description,
                 o.category_code) for o in orders] == [
            ("sms", "intake", "complaint", CITIZEN, "人民路口垃圾没人清理", "")]
        case = orders[0].case_number
        assert [(e.action, e.actor) for e in service.history(session, case)] == [
            ("create", "sms")]
    assert case == "202611240001"
    assert hub.messages() == [
        ("in", CITIZEN, "report", "received", "人民路口垃圾没人清理"),
        ("out", CITIZEN, "reply", "queued",
         "【12319城市管理热线】您反映的问题已受理，案件编号202611240001，我们将尽快处理。"
         "回复“退订”不再接收通知。")]


def test_a_wrong_or_missing_signature_is_403_and_stores_nothing(hub: Hub) -> None:
    post = _sms("SM0002", "井盖丢了")
    for answer in (hub.post(post, signature=""),  # none
                   hub.post(post, token="another-token"),  # another account's
                   hub.post(post, url="http://localhost/api/v1/sms/other"),  # another URL
                   hub.post({**post, "Body": "井盖丢了！"}, signature=twilio_signature(
                       TOKEN, URL, post))):  # a changed text
        assert answer.status_code == 403, answer.json
        assert "X-Twilio-Signature" in answer.json["detail"]
    hub.settings(twilio_auth_token="")
    unset = hub.post(post, token="")
    assert unset.status_code == 403 and "sms.twilio_auth_token" in unset.json["detail"]
    assert hub.count(SmsMessage) == 0 and hub.count(WorkOrder) == 0


def test_behind_a_proxy_the_public_url_is_signed(hub: Hub) -> None:
    public = "https://12319.example.cn/api/v1/sms/inbound"
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "12319.example.cn",
                 "X-Forwarded-Port": "443"}
    # signed for the public URL, received on the inner one through the proxy
    assert hub.post(_sms("SM0003", "路灯不亮"), url=public, headers=forwarded
                    ).status_code == 200
    # the inner URL is not what the gateway signed
    assert hub.post(_sms("SM0004", "路灯不亮"), headers=forwarded).status_code == 403
    # a proxy on another port, and a configured URL with its query
    assert hub.post(_sms("SM0005", "路灯不亮"), url="https://12319.example.cn:8443/api/v1/"
                    "sms/inbound", headers={**forwarded, "X-Forwarded-Port": "8443"}
                    ).status_code == 200
    hub.settings(webhook_url="https://sms.example.cn/hotline/sms?k=1")
    assert hub.post(_sms("SM0006", "路灯不亮"), url="https://sms.example.cn/hotline/sms?k=1"
                    ).status_code == 200
    assert hub.post(_sms("SM0007", "路灯不亮"), url=public, headers=forwarded
                    ).status_code == 403
    assert hub.count(WorkOrder) == 3


def test_hostile_wrongly_encoded_or_oversized_posts_are_4xx_and_store_nothing(hub: Hub
                                                                             ) -> None:
    def raw(body: bytes, content_type: str = FORM) -> Any:
        return hub.client.post("/api/v1/sms/inbound", data=body, content_type=content_type,
                               headers={"X-Twilio-Signature": "x"})

    assert raw(b"From=138&Body=%FF%FE&MessageSid=SM1").status_code == 400  # not UTF-8
    assert raw("From=138&Body=垃圾".encode("gbk")).status_code == 400
    assert raw(b"x=" + b"a" * 17_000).status_code == 413
    assert raw(b'{"From": "138"}', "application/json").status_code == 415
    assert raw(b"&".join(b"f%d=1" % i for i in range(101))).status_code == 400
    for params, field in (
            (_sms("SM0010", "垃圾\x00没人清"), "Body"),
            (_sms("SM0011", "垃圾\u202e没人清"), "Body"),
            (_sms("SM0012", "垃" * 501), "Body"),
            (_sms("SM0013", "垃圾", sender="ALPHA-ID"), "From"),
            ({k: v for k, v in _sms("SM0014", "垃圾").items() if k != "MessageSid"},
             "MessageSid"),
            (_sms("S" * 81, "垃圾"), "MessageSid")):
        answer = hub.post(params)
        assert answer.status_code == 400, (params, answer.json)
        assert answer.json["detail"].startswith(f"{field}:"), answer.json
    doubled = urlencode([("From", "13812345678"), ("From", "13900000000"), ("Body", "x"),
                         ("MessageSid", "SM0015")])
    signature = sms_signature.compute(TOKEN, URL, [tuple(p.split("=")) for p in  # type: ignore
                                                   doubled.split("&")])
    twice = hub.client.post("/api/v1/sms/inbound", data=doubled, content_type=FORM,
                            headers={"X-Twilio-Signature": signature})
    assert twice.status_code == 400 and twice.json["detail"] == "From: given twice"
    assert hub.count(SmsMessage) == 0 and hub.count(WorkOrder) == 0


def test_one_sender_is_limited_and_nothing_of_a_refused_message_is_kept(hub: Hub) -> None:
    hub.settings(inbound_per_number="2/minute")
    # counted in a Redis other runs share: numbers of this run's own
    sender, other = (f"139{random.randrange(10**8):08d}" for _ in range(2))
    statuses = [hub.post(_sms(f"SM002{i}", "垃圾没人清", sender=sender)).status_code
                for i in range(3)]
    assert statuses == [200, 200, 429]
    assert hub.count(SmsMessage, SmsMessage.direction == "in") == 2
    assert hub.post(_sms("SM0029", "垃圾没人清", sender=other)).status_code == 200


def _close(hub: Hub, case: str) -> None:
    with transaction(hub.sessions) as session:
        for action, role in CASE_LOOP:
            service.transition(session, case, action, actor=role, role=role, now=NOW)


def _open(hub: Hub, channel: str, phone: str) -> str:
    with transaction(hub.sessions) as session:
        return service.open_order(session, appeal_type="complaint", description="路灯不亮",
                                  channel=channel, actor="受理员", citizen_phone=phone,
                                  now=NOW).case_number


def test_a_closed_order_tells_its_citizen_unless_they_opted_out(hub: Hub) -> None:
    hub.post(_sms("SM0030", "人民路口垃圾没人清理"))
    with hub.sessions() as session:
        case = session.scalar(select(WorkOrder.case_number))
    _close(hub, case)
    notice = ("out", CITIZEN, "notice", "queued", "【12319城市管理热线】您反映的问题（案件编号"
              f"{case}）已办结，感谢您对城市管理工作的支持。")
    assert hub.messages(SmsMessage.purpose == "notice") == [notice]
    # opted out (full-width, with punctuation): the next order's notice is withheld
    assert hub.post(_sms("SM0031", " ＴＤ。")).status_code == 200
    assert hub.count(SmsOptOut, SmsOptOut.phone == CITIZEN) == 1
    assert hub.messages(SmsMessage.purpose == "opt_out", SmsMessage.direction == "out") == [
        ("out", CITIZEN, "opt_out", "queued",
         "【12319城市管理热线】您已退订办理进度和回访短信。回复“订阅”可恢复。")]
    second = _open(hub, "sms", CITIZEN)
    _close(hub, second)
    assert hub.messages(SmsMessage.purpose == "notice")[1:] == [
        (*notice[:3], "opted_out", notice[4].replace(case, second))]
    # a word inside a sentence is a report, not an opt-out
    hub.post(_sms("SM0032", "T字路口的井盖丢了"))
    # subscribed again: notices flow again
    assert hub.post(_sms("SM0033", "订阅")).status_code == 200
    assert hub.count(SmsOptOut) == 0
    third = _open(hub, "sms", CITIZEN)
    _close(hub, third)
    assert hub.messages(SmsMessage.purpose == "notice")[-1][3] == "queued"
    assert hub.count(WorkOrder, WorkOrder.description == "T字路口的井盖丢了") == 1


def test_only_citizens_channels_and_mobile_numbers_get_a_close_notice(hub: Hub) -> None:
    for channel, phone in (("phone", "13812345678"), ("web", "045188888888"),
                           ("open311", "13912345678")):
        _close(hub, _open(hub, channel, phone))
    assert [(m[1], m[2]) for m in hub.messages()] == [("+8613912345678", "notice")]
    assert not notices.is_mobile("+8645188888888") and notices.is_mobile("+8613912345678")


def test_a_text_without_words_makes_no_order_and_asks_for_one(hub: Hub) -> None:
    assert hub.post(_sms("SM0040", "5")).status_code == 200  # no survey waits for it
    assert hub.post(_sms("SM0041", "")).status_code == 200  # a picture only
    assert hub.count(WorkOrder) == 0
    assert [(m[0], m[2]) for m in hub.messages()] == [
        ("in", "unclear"), ("out", "reply"), ("in", "unclear"), ("out", "reply")]


def test_the_same_message_delivered_twice_at_once_is_taken_once(hub: Hub) -> None:
    post = _sms("SM0050", "中山路下水道堵了")
    start, statuses = threading.Barrier(2), []

    def deliver() -> None:
        start.wait()
        statuses.append(hub.post(post).status_code)

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert statuses == [200, 200]
    assert hub.count(WorkOrder) == 1
    assert [(m[0], m[2]) for m in hub.messages()] == [("in", "report"), ("out", "reply")]


def test_the_webhook_is_in_the_api_document_with_its_form_and_signature(hub: Hub) -> None:
    document = hub.client.get("/api/v1/openapi.json").json
    post = document["paths"]["/api/v1/sms/inbound"]["post"]
    assert post["requestBody"]["content"] == {"application/x-www-form-urlencoded": {
        "schema": {"$ref": "#/components/schemas/InboundSms"}}}
    assert [(p["in"], p["name"]) for p in post["parameters"]] == [
        ("header", "X-Twilio-Signature")]
    assert "security" not in post  # no account: the signature instead
    assert set(post["responses"]) == {"200", "400", "403", "413", "415", "429", "503"}
    assert list(post["responses"]["200"]["content"]) == ["text/xml"]
    form = document["components"]["schemas"]["InboundSms"]
    assert sorted(form["properties"]) == ["Body", "From", "MessageSid", "To"]
    assert sorted(form["required"]) == ["From", "MessageSid"]


@pytest.mark.parametrize(("env", "key"), [
    ({"HOTLINE_SMS_INBOUND_PER_NUMBER": "lots"}, "sms.inbound_per_number"),
    ({"HOTLINE_SMS_INBOUND_PER_ADDRESS": "0/minute"}, "sms.inbound_per_address"),
    ({"HOTLINE_SMS_WEBHOOK_URL": "ftp://x"}, "sms.webhook_url"),
    ({"HOTLINE_SMS_REPORT_APPEAL_TYPE": "gossip"}, "sms.report_appeal_type"),
    ({"HOTLINE_SMS_OPT_OUT_WORDS": "退订,,TD"}, "sms.opt_out_words"),
    ({"HOTLINE_SMS_RESUBSCRIBE_WORDS": "td"}, "sms")])  # the same word both ways
def test_a_wrong_sms_setting_names_its_key(tmp_path: Path, env: dict[str, str], key: str
                                           ) -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings(tmp_path, **env)
    assert str(caught.value).startswith(f"config: {key}")


def test_an_opted_out_citizens_survey_goes_to_an_agent_not_to_sms(hub: Hub) -> None:
    assert hub.post(_sms("SM0060", "STOP")).status_code == 200
    case = _open(hub, "phone", CITIZEN)
    _close(hub, case)
    policy = Policy(survey_call_attempts=1)
    with transaction(hub.sessions) as session:
        survey = session.scalar(select(Survey).join(WorkOrder).where(
            WorkOrder.case_number == case))
        assert survey is not None
        attempt = surveys.claim_call(session, survey.id, survey.next_attempt_at)
        assert attempt is not None
        assert surveys.call_failed(session, attempt.attempt_id, "busy", policy,
                                   policy.calendar(session), survey.next_attempt_at) == "agent"
    with hub.sessions() as session:
        assert [(s.state, s.note) for s in session.scalars(select(Survey))] == [
            ("agent", "busy; SMS opted out")]
        assert [case for _survey, case in surveys.agent_list(session)] == [case]
    assert hub.messages(SmsMessage.purpose == "survey")[0][3] == "opted_out"
