"""The caller's RTP stream, written as a pcap that SIPp replays after the call is answered.

One stream per call, one SSRC, sequence numbers and timestamps that only go forward: voice
(G.711 A-law, payload 8) and RFC 4733 telephone events (payload 101) on one timeline. Building
the whole stream up front avoids SIPp's habit of replaying a digit pcap with the same sequence
numbers twice, which Asterisk then drops as a duplicate.
"""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
PT_ALAW = 8
PT_EVENT = 101
EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14,
          "D": 15}


class MediaError(ValueError):
    """Audio the kit cannot send (unreadable file, unknown digit)."""


def alaw_from_audio(path: Path) -> bytes:
    """Any audio file sox reads, as 8 kHz mono A-law bytes."""
    if shutil.which("sox") is None:
        raise MediaError("sox is not installed (apt-get install sox)")
    proc = subprocess.run(
        ["sox", str(path), "-t", "al", "-r", str(SAMPLE_RATE), "-c", "1", "-"],
        capture_output=True,
    )
    if proc.returncode != 0:
        raise MediaError(f"cannot read audio {path}: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


@dataclass
class RtpTimeline:
    """Packets at offsets (seconds from answer); serialised in time order."""

    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    base_timestamp: int = field(default_factory=lambda: random.getrandbits(31))
    packets: list[tuple[float, int, bool, int, bytes]] = field(default_factory=list)
    # (offset, payload type, marker, rtp timestamp, payload)

    def add_voice(self, alaw: bytes, at: float) -> float:
        """Queue A-law audio starting at `at`; returns its length in seconds."""
        frames = [alaw[i:i + FRAME_SAMPLES] for i in range(0, len(alaw), FRAME_SAMPLES)]
        for n, frame in enumerate(frames):
            frame = frame.ljust(FRAME_SAMPLES, b"\xd5")  # A-law silence
            offset = at + n * FRAME_MS / 1000
            self.packets.append((offset, PT_ALAW, n == 0, self._ts(offset), frame))
        return len(frames) * FRAME_MS / 1000

    def add_digit(self, digit: str, at: float, duration: float = 0.16) -> None:
        """One RFC 4733 event: updates every 20 ms, then the end packet sent three times."""
        if digit.upper() not in EVENTS:
            raise MediaError(f"not a DTMF digit: {digit!r}")
        event = EVENTS[digit.upper()]
        ts = self._ts(at)
        steps = max(1, round(duration * 1000 / FRAME_MS))
        for n in range(steps):
            length = (n + 1) * FRAME_SAMPLES
            self.packets.append((at + n * FRAME_MS / 1000, PT_EVENT, n == 0, ts,
                                 struct.pack("!BBH", event, 10, length)))
        end = struct.pack("!BBH", event, 0x80 | 10, steps * FRAME_SAMPLES)
        for n in range(3):
            self.packets.append((at + (steps + n) * FRAME_MS / 1000, PT_EVENT, False, ts, end))

    def _ts(self, offset: float) -> int:
        return (self.base_timestamp + round(offset * SAMPLE_RATE)) & 0xFFFFFFFF

    def fill_silence(self, until: float) -> None:
        """Silence in every 20 ms slot nothing else uses, as a real phone sends."""
        taken = {round(p[0] * 1000 / FRAME_MS) for p in self.packets}
        for slot in range(round(until * 1000 / FRAME_MS) + 1):
            if slot not in taken:
                offset = slot * FRAME_MS / 1000
                self.packets.append((offset, PT_ALAW, slot == 0, self._ts(offset),
                                     b"\xd5" * FRAME_SAMPLES))

    def write_pcap(self, path: Path, src_port: int = 6000, dst_port: int = 6000) -> None:
        ordered = sorted(self.packets, key=lambda p: (p[0], p[1] == PT_ALAW))
        out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
        for seq, (offset, pt, marker, ts, payload) in enumerate(ordered):
            rtp = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts,
                              self.ssrc) + payload
            udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(rtp), 0) + rtp
            ip = _ipv4_header(len(udp)) + udp
            frame = b"\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x01\x08\x00" + ip
            seconds = int(offset)
            out.append(struct.pack("<IIII", seconds, round((offset - seconds) * 1e6),
                                   len(frame), len(frame)))
            out.append(frame)
        path.write_bytes(b"".join(out))


def _ipv4_header(payload_length: int) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload_length, 0, 0, 64, 17, 0,
                         bytes([127, 0, 0, 2]), bytes([127, 0, 0, 1]))
    total = sum(struct.unpack("!10H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return header[:10] + struct.pack("!H", ~total & 0xFFFF) + header[12:]
