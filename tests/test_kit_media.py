"""The kit's RTP stream: what SIPp will replay must be a well-formed, monotonic RTP stream."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from sipkit.kit import Dtmf, Hangup, KitError, Say, Wait, plan_script
from sipkit.media import PT_ALAW, PT_EVENT


def _read_pcap(path: Path) -> list[tuple[float, dict[str, object]]]:
    data = path.read_bytes()
    magic, _vmaj, _vmin, _tz, _sig, _snap, link = struct.unpack("<IHHiIII", data[:24])
    assert (magic, link) == (0xA1B2C3D4, 1)
    packets, offset = [], 24
    while offset < len(data):
        sec, usec, incl, orig = struct.unpack("<IIII", data[offset:offset + 16])
        frame = data[offset + 16:offset + 16 + incl]
        assert incl == orig and frame[12:14] == b"\x08\x00"
        ip, udp = frame[14:34], frame[34:42]
        assert struct.unpack("!H", ip[2:4])[0] == len(frame) - 14
        assert struct.unpack("!H", udp[4:6])[0] == len(frame) - 34
        rtp = frame[42:]
        b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", rtp[:12])
        packets.append((sec + usec / 1e6, {"version": b0 >> 6, "marker": bool(b1 & 0x80),
                                           "pt": b1 & 0x7F, "seq": seq, "ts": ts,
                                           "ssrc": ssrc, "payload": rtp[12:]}))
        offset += 16 + incl
    return packets


def test_digits_and_voice_share_one_monotonic_stream(tmp_path: Path) -> None:
    voice = tmp_path / "voice.wav"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(voice),
                    "synth", "0.5", "sine", "440"], check=True)
    plan = plan_script((Wait(0.5), Dtmf("1#"), Say(voice), Dtmf("1"), Wait(0.2), Hangup()),
                       tmp_path, max_seconds=60)
    assert plan.pcap is not None and plan.hangup_ms is not None
    packets = _read_pcap(plan.pcap)
    times = [t for t, _ in packets]
    assert times == sorted(times)
    rtp = [p for _, p in packets]
    assert {p["version"] for p in rtp} == {2} and len({p["ssrc"] for p in rtp}) == 1
    seqs = [p["seq"] for p in rtp]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap, no repeat

    events = [p for p in rtp if p["pt"] == PT_EVENT]
    by_ts: dict[int, list[dict[str, object]]] = {}
    for p in events:
        by_ts.setdefault(p["ts"], []).append(p)  # type: ignore[arg-type]
    digits = [group[0]["payload"][0] for group in by_ts.values()]  # type: ignore[index]
    assert digits == [1, 11, 1]  # the repeated '1' is a new event, not a replay
    for group in by_ts.values():
        assert group[0]["marker"] and not any(p["marker"] for p in group[1:])
        ends = [p for p in group if p["payload"][1] & 0x80]  # type: ignore[index]
        assert len(ends) == 3 and group[-3:] == ends
        durations = [struct.unpack("!H", p["payload"][2:4])[0] for p in group]  # type: ignore[index]
        assert durations == sorted(durations)

    voice_packets = [p for p in rtp if p["pt"] == PT_ALAW and p["payload"] != b"\xd5" * 160]
    assert 24 <= len(voice_packets) <= 26  # 0.5 s of tone in 20 ms frames
    assert all(len(p["payload"]) == 160 for p in rtp if p["pt"] == PT_ALAW)
    assert plan.hangup_ms == round(plan.length * 1000)


def test_waiting_for_the_far_end_sends_silence_until_max(tmp_path: Path) -> None:
    plan = plan_script((Wait(1), Dtmf("5")), tmp_path, max_seconds=3)
    assert plan.hangup_ms is None
    packets = _read_pcap(plan.pcap)  # type: ignore[arg-type]
    assert packets[-1][0] == pytest.approx(3.0, abs=0.03)


@pytest.mark.parametrize(
    ("script", "message"),
    [((Dtmf("1x"),), "not a DTMF digit"), ((Hangup(), Wait(1)), "nothing can follow"),
     ((Wait(-1),), "non-negative"), ((Say(Path("/nonexistent.wav")),), "cannot read audio")],
)
def test_bad_scripts_are_refused(tmp_path: Path, script: tuple[object, ...],
                                 message: str) -> None:
    with pytest.raises(KitError, match=message):
        plan_script(script, tmp_path, max_seconds=10)  # type: ignore[arg-type]
