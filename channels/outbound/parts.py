"""Cutting a text message into the parts a phone network carries (长短信拆分).

One SMS carries 140 octets. Text in the GSM 7-bit alphabet fits 160 characters, 153 per part
once a User Data Header (UDH) takes 6 octets; anything else (Chinese) goes as UCS-2, counted
in UTF-16 code units: 70 in one message, 67 per part. A character outside the Basic
Multilingual Plane (an emoji) is two code units, a surrogate pair, and is never cut: one that
would straddle a boundary moves whole to the next part (that part then holds 66 units).

The UDH of each part is `05 00 03 ref total seq` (concatenated SMS, 8-bit reference), sent
with esm_class 0x40 (UDHI); data_coding 8 is UCS-2, 0 the SMSC's default (GSM 7-bit).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

UCS2, GSM7 = 8, 0  # data_coding
UDHI = 0x40  # esm_class: short_message starts with a UDH
MAX_PARTS = 255

# The characters whose GSM 03.38 default-alphabet code is their ASCII code: sent as plain
# octets with data_coding 0. Anything else ('@', '$', '_', brackets, accents, Chinese) goes as
# UCS-2: cheaper than a full GSM translation table, and never wrong on the phone.
_GSM_AS_ASCII = frozenset(string.ascii_letters + string.digits + " \n\r!\"#%&'()*+,-./:;<=>?")


@dataclass(frozen=True)
class Split:
    data_coding: int  # UCS2 or GSM7
    texts: tuple[str, ...]  # the parts, in order; joined they are the whole text

    def payloads(self, reference: int) -> list[bytes]:
        """Each part's short_message: the encoded text, behind a UDH when there are several
        (`reference` tells this message's parts from another's on the phone, 0-255)."""
        encoded = [t.encode("utf-16-be") if self.data_coding == UCS2 else t.encode("ascii")
                   for t in self.texts]
        if len(encoded) == 1:
            return encoded
        total = len(encoded)
        return [bytes([5, 0, 3, reference % 256, total, seq]) + body
                for seq, body in enumerate(encoded, start=1)]

    @property
    def esm_class(self) -> int:
        return UDHI if len(self.texts) > 1 else 0


def split(text: str) -> Split:
    """The parts of `text`, GSM 7-bit when every character allows it, else UCS-2."""
    if all(c in _GSM_AS_ASCII for c in text):
        return Split(GSM7, _cut_gsm(text))
    return Split(UCS2, _cut_ucs2(text))


def _cut_gsm(text: str) -> tuple[str, ...]:
    if len(text) <= 160:
        return (text,)
    return _checked(tuple(text[i:i + 153] for i in range(0, len(text), 153)))


def _cut_ucs2(text: str) -> tuple[str, ...]:
    units = sum(2 if ord(c) > 0xFFFF else 1 for c in text)
    if units <= 70:
        return (text,)
    parts: list[str] = []
    current: list[str] = []
    used = 0
    for char in text:  # a str holds code points: a pair is one char, so never cut
        size = 2 if ord(char) > 0xFFFF else 1
        if used + size > 67:
            parts.append("".join(current))
            current, used = [], 0
        current.append(char)
        used += size
    parts.append("".join(current))
    return _checked(tuple(parts))


def _checked(parts: tuple[str, ...]) -> tuple[str, ...]:
    if len(parts) > MAX_PARTS:
        raise ValueError(f"a text of more than {MAX_PARTS} parts cannot be sent")
    return parts


def reassemble(payloads: list[bytes], data_coding: int) -> str:
    """What a phone shows from `payloads` (in any order): the test of `split`'s output, and
    of what an SMSC received."""
    def seq(p: bytes) -> int:
        return p[5] if len(payloads) > 1 else 1

    bodies = [p[6:] if len(payloads) > 1 else p for p in sorted(payloads, key=seq)]
    # each part decoded on its own, as a phone must: half a surrogate pair fails here
    return "".join(b.decode("utf-16-be") if data_coding == UCS2 else b.decode("ascii")
                   for b in bodies)
