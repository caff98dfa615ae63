"""An extended wrap-up survives a restart of the telephony service, with the real Asterisk:
the member is still paused with the wrap-up reason when the service comes back, the seat is
taken up as wrap_up (not paused) with its extended end, and at that end the service unpauses
the member and the seat is ready, once."""

from __future__ import annotations

import time
from dataclasses import replace

from asterisk_conf.sandbox import Sandbox
from core.config import Settings
from hotline.centre import Centre
from sipkit.kit import Call, Dtmf, SipKit, Wait
from telephony import commands
from tests.conftest import AGENT_PORT, agent_ip, ensure_ready, wait_until

AGENT, EXTRA = "8101", 5


def _member_line(pbx: Sandbox) -> str:
    return next((line for line in pbx.cli("queue show aftercall").splitlines()
                 if f"PJSIP/{AGENT})" in line or f"({AGENT})" in line
                 or line.strip().startswith(f"{AGENT} ")), "")


def test_an_extended_wrap_up_outlives_a_restart_of_the_service(
        pbx: Sandbox, pbx_settings: Settings, kit: SipKit) -> None:
    settings = replace(pbx_settings, seats=replace(pbx_settings.seats,
                                                   wrap_up_extend_seconds=EXTRA))
    first = Centre(settings, web=False).start()
    second: Centre | None = None
    try:
        ensure_ready(first)
        with kit.agent_phone("8101", agent_ip("8101"), port=AGENT_PORT, talk_seconds=1), \
                kit.agent_phone("8102", agent_ip("8102"), port=AGENT_PORT, talk_seconds=1):
            run = kit.start_calls(Call(caller_id="13700000095", max_seconds=30,
                                       script=(Wait(0.5), Dtmf("2"), Wait(20))))
            deadline = time.monotonic() + 30
            while first.telephony.board.seat(AGENT).state != "wrap_up":
                assert time.monotonic() < deadline, "the agent never wrapped up"
                time.sleep(0.02)
            done = commands.send(first.bus.client, "seat.extend_wrap_up", {"agent": AGENT})
            until = float(done["wrap_up_until"])
            wait_until(lambda: "paused:wrap-up" in _member_line(pbx), 5,
                       f"not paused in Asterisk: {_member_line(pbx)!r}")
            first.stop()  # the service goes away during the extension ...
            second = Centre(settings, web=False).start()  # ... and comes back
            seat = second.telephony.board.seat(AGENT)
            assert (seat.state, seat.wrap_up_until) == ("wrap_up", until)
            after = second.bus.last_id()
            deadline = time.monotonic() + EXTRA + 10
            while seat.state != "ready":
                assert time.monotonic() < deadline, f"{AGENT} is {seat.state}"
                assert seat.state == "wrap_up", seat.state  # never paused meanwhile
                time.sleep(0.05)
            assert seat.since >= until - 0.05, (seat.since, until)
            assert "paused" not in _member_line(pbx), _member_line(pbx)
            run.wait()
        changes = [e for _id, e in second.bus.read(after) if e["type"] == "seat.changed"
                   and e["agent"] == AGENT]
        assert [(e["previous_state"], e["state"]) for e in changes] == [("wrap_up", "ready")]
    finally:
        first.stop()
        if second is not None:
            second.stop()
