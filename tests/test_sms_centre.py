"""The centre starts the SMS outbox worker when sms.provider names a gateway: a message
queued anywhere reaches the (fake) gateway with nobody ticking by hand."""

from __future__ import annotations

from dataclasses import replace

from asterisk_conf.sandbox import Sandbox
from channels import sms
from core.config import Settings
from core.db import transaction
from hotline.centre import Centre
from tests.conftest import wait_until
from tests.fake_sms_gateway import FakeSmsGateway


def test_the_centre_sends_the_outbox_through_the_configured_gateway(
        pbx: Sandbox, pbx_settings: Settings) -> None:
    gateway = FakeSmsGateway("AC0000centre", "centre-token", deliver=None).start()
    settings = replace(pbx_settings, sms=replace(
        pbx_settings.sms, provider="twilio", twilio_base_url=gateway.base_url,
        twilio_account_sid="AC0000centre", twilio_auth_token="centre-token"))
    centre = Centre(settings, web=False).start()
    try:
        assert centre.sms_out is not None
        with transaction(centre.sessions) as session:
            sms.queue(session, "13800138077", "您的工单已受理，编号 20261130-0042。",
                      now=centre.clock.now())
        wait_until(lambda: gateway.texts_to("+8613800138077") == [
            "您的工单已受理，编号 20261130-0042。"], 15, "the centre's worker sent it")
    finally:
        centre.stop()
        gateway.stop()
    assert centre.sms_out is None  # stopped with the centre
