"""A surge's calls counted apart on the whole centre (IVR, telephony service, call records):
with surge mode on, a kit caller hears the announcement, keys # and is hung up on politely;
the call's stored record carries the surge steps, and the surge counts it as heard and
left. (The IVR-only flow of surge mode is tests/test_surge_call.py.)"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from core.db import transaction
from hotline.centre import Centre
from sipkit.kit import Call, Dtmf, SipKit, Wait
from telephony import surge
from telephony.models import CallRecord
from tests.conftest import wait_until


def test_a_caller_who_leaves_at_the_announcement_is_counted_apart(
        centre: Centre, kit: SipKit, tmp_path: Path) -> None:
    tone = tmp_path / "tone.wav"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(tone),
                    "synth", "2", "sine", "1000"], check=True)
    sound = surge.store_recording(centre.settings.storage.prompts_dir, tone.read_bytes())
    with transaction(centre.sessions) as session:
        mode_id = surge.start(session, title="暴雨", sound=sound, actor="测试班长",
                              now=datetime.now(UTC)).id  # Asterisk's own times are real
    caller = "13800138079"  # its own: the session centre records every call on the PBX
    try:
        result = kit.call(Call(caller_id=caller, script=(Wait(1), Dtmf("#"), Wait(15)),
                               max_seconds=30))
        assert result.hangup_by == "far_end"

        def stored() -> bool:
            with centre.sessions() as session:
                return session.scalars(select(CallRecord).where(
                    CallRecord.caller_number == caller)).first() is not None

        wait_until(stored, 20, "the call's record stored")
    finally:
        with transaction(centre.sessions) as session:
            mode = surge.stop(session, actor="测试班长", now=datetime.now(UTC))
    with centre.sessions() as session:
        record = session.scalars(select(CallRecord).where(
            CallRecord.caller_number == caller)).one()
        steps = [s["value"] for s in record.details["ivr_path"] if s["node"] == "node"]
        assert steps == ["surge", "surge_leave"]
        assert record.outcome == "ivr" and record.queue is None
        mode = session.get(type(mode), mode_id)
        counted = surge.calls_of(session, mode, datetime.now(UTC))
    assert counted == surge.SurgeCalls(heard=1, repeated=0, left=1)
