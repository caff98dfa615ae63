"""A citizen's text message taken in (短信受理): kept once by its gateway id, then routed.

    opt-out word (退订, TD ...)  -> the number opted out, confirmed
    resubscribe word (订阅 ...)  -> the opt-out forgotten, confirmed
    1-5 to an open SMS survey   -> the survey's rating (tickets.surveys.sms_reply; a
                                   dissatisfied one reopens the order per policy), thanked
    a text with no letters      -> kept for people to read, the citizen asked for words
    anything else               -> a new order in intake (受理, channel sms) with the sender
                                   as the citizen, for an agent to classify, answered with
                                   its case number

All of it happens in the caller's one transaction with the kept message: a repeat of a
gateway id finds the message and does nothing more, and nothing is half-stored. Replies go
through the outbox (channels.sms.queue), where they are retried and recorded; the webhook
itself answers with an empty TwiML document.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from channels import optout, sms
from core.schemas import BIDI_CONTROLS
from tickets import service, surveys
from tickets.policy import Policy

ACTOR = "sms"  # who took the order in: the SMS channel, not a person
SIGN = "【12319城市管理热线】"
REPLIES = {
    "report": SIGN + "您反映的问题已受理，案件编号{case}，我们将尽快处理。回复“退订”不再接收通知。",
    "opt_out": SIGN + "您已退订办理进度和回访短信。回复“订阅”可恢复。",
    "resubscribe": SIGN + "您已恢复接收办理进度和回访短信。",
    "survey": SIGN + "感谢您的评价。",
    "reopened": SIGN + "感谢您的评价，您反映的问题将重新办理。",
    "unclear": SIGN + "请用文字描述您要反映的问题和地点，我们将为您受理。",
}


class InboundError(sms.SmsError):
    """A message that cannot be taken as sent; nothing of it was stored."""


@dataclass(frozen=True)
class Rules:
    """What the routing follows, from the settings' sms section."""

    opt_out_words: tuple[str, ...]
    resubscribe_words: tuple[str, ...]
    appeal_type: str = "complaint"


@dataclass(frozen=True)
class Inbound:
    """What became of a message: its outcome (report, opt_out, resubscribe, survey,
    unclear), the order it made or rated, and whether it was new (False: a repeat)."""

    message_id: int
    outcome: str
    case_number: str
    new: bool


def check_text(text: str) -> str:
    """The text as it can be stored, or InboundError naming what is wrong with it."""
    if "\x00" in text:
        raise InboundError("Body: no NUL characters")
    if any(c in BIDI_CONTROLS for c in text):
        raise InboundError("Body: no bidi override or isolate controls (U+202A-202E, "
                           "U+2066-2069)")
    if len(text) > sms.MAX_TEXT:
        raise InboundError(f"Body: at most {sms.MAX_TEXT} characters (got {len(text)})")
    return text


def take_in(session: Session, *, phone: str, text: str, gateway_id: str, rules: Rules,
            policy: Policy, now: datetime) -> Inbound:
    """Keep the message from `phone` once by `gateway_id` and route it (see the module)."""
    check_text(text)
    message, new = sms.receive(session, phone, text, gateway_id, now=now)
    if not new:
        return Inbound(message.id, message.purpose, message.reference, False)
    number, body = message.phone, message.text
    case = ""
    if optout.is_word(body, rules.opt_out_words):
        optout.opt_out(session, number, body, gateway_id, now)
        outcome, reply = "opt_out", REPLIES["opt_out"]
    elif optout.is_word(body, rules.resubscribe_words):
        optout.resubscribe(session, number)
        outcome, reply = "resubscribe", REPLIES["resubscribe"]
    elif rated := surveys.sms_reply(session, number, body, policy, now):
        outcome, reply = "survey", REPLIES["reopened" if rated == "reopened" else "survey"]
    elif not any(c.isalpha() for c in body):
        outcome, reply = "unclear", REPLIES["unclear"]
    else:
        order = service.open_order(session, appeal_type=rules.appeal_type, description=body,
                                   channel="sms", actor=ACTOR, citizen_phone=number,
                                   policy=policy, now=now)
        case = order.case_number
        outcome, reply = "report", REPLIES["report"].format(case=case)
    message.purpose, message.reference = outcome, case
    sms.queue(session, number, reply, purpose=outcome if outcome in (
        "opt_out", "resubscribe") else "reply", reference=case, now=now)
    session.flush()
    return Inbound(message.id, outcome, case, True)
