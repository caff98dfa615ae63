"""Status notices by SMS (办结通知): when an order is closed (结案), the citizen who reported it
on a citizens' channel (SMS, the portal, Open311: `sms.notice_channels`) is told so by text,
queued in the move's own transaction (a subscriber of tickets' order events, wired once when
this room is imported). Only a mobile number can read it; a number that opted out gets none
(channels.sms.queue keeps it withheld).
"""

from __future__ import annotations

import logging

import phonenumbers

from channels import sms
from core.config import Sms
from tickets.events import Move, OrderEvent, WorkOrderMoved, subscribe

CLOSED = "【12319城市管理热线】您反映的问题（案件编号{case}）已办结，感谢您对城市管理工作的支持。"
_MOBILE = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)
log = logging.getLogger(__name__)
# Which channels' citizens are told; the composition sets it from the settings (configure).
_channels: list[tuple[str, ...]] = [Sms().notice_channels]


def configure(settings: Sms) -> None:
    """Take the notice channels from the settings: the process's composition calls it."""
    _channels[:] = [settings.notice_channels]


def is_mobile(stored: str) -> bool:
    """Whether a stored (E.164) number can receive a text message."""
    try:
        number = phonenumbers.parse(stored, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.number_type(number) in _MOBILE


def follow_move(event: OrderEvent, move: Move) -> None:
    """Subscriber of every move: an order that has just closed tells its citizen."""
    if not isinstance(event, WorkOrderMoved) or event.to_state != "closed" \
            or event.from_state == "closed":
        return
    order = move.order
    if order.channel not in _channels[0] or not is_mobile(order.citizen_phone):
        return
    try:
        sms.queue(move.session, order.citizen_phone, CLOSED.format(case=order.case_number),
                  purpose="notice", reference=order.case_number, now=move.now)
    except sms.SmsError as exc:  # a notice never keeps an order from closing
        log.warning("no close notice for %s: %s", order.case_number, exc)


subscribe(follow_move, WorkOrderMoved)
