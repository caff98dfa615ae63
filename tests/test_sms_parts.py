"""Cutting texts into SMS parts: the boundaries below are worked out by hand from the rules
(UCS-2: 70 code units alone, 67 per part; GSM 7-bit: 160 / 153; an emoji is 2 units and
never cut), not taken from the code."""

from __future__ import annotations

import pytest

from channels.outbound.parts import GSM7, UCS2, reassemble, split

E1, E2, E3 = "😀", "🚧", "👍"  # outside the BMP: a surrogate pair each


def _cjk(n: int, start: int = 0) -> str:
    base = "人民路口垃圾没人清理请尽快处理谢谢市政热线回复"
    return "".join(base[(start + i) % len(base)] for i in range(n))


def test_two_hundred_chinese_characters_with_emoji_at_the_boundaries() -> None:
    # 66 CJK + E1: E1 would take units 67-68 of part 1 -> part 1 is 66 units.
    # part 2: E1 + 64 CJK = 66 units; E2 would take units 67-68 -> moves to part 3.
    # part 3: E2 + 65 CJK = 67 units (full). part 4: 2 CJK + E3 = 4 units.
    a, b, c = _cjk(66), _cjk(64, 3), _cjk(67, 7)
    text = a + E1 + b + E2 + c + E3
    assert len(text) == 200
    result = split(text)
    assert result.data_coding == UCS2
    assert result.texts == (a, E1 + b, E2 + c[:65], c[65:] + E3)
    payloads = result.payloads(reference=0x2A)
    assert [p[:6] for p in payloads] == [bytes([5, 0, 3, 0x2A, 4, n]) for n in (1, 2, 3, 4)]
    assert [len(p) - 6 for p in payloads] == [132, 132, 134, 8]  # octets: 2 per unit
    assert result.esm_class == 0x40
    assert reassemble(list(reversed(payloads)), UCS2) == text


def test_seventy_units_is_one_message_without_a_header() -> None:
    text = _cjk(68) + E1  # 70 units
    result = split(text)
    assert result.texts == (text,)
    assert result.payloads(7) == [text.encode("utf-16-be")]
    assert result.esm_class == 0


def test_seventy_one_units_is_two_parts() -> None:
    text = _cjk(69) + E1  # 71 units: 67 | 2 CJK + emoji
    assert split(text).texts == (_cjk(67), _cjk(2, 67) + E1)
    assert split(_cjk(71)).texts == (_cjk(67), _cjk(4, 67))


def test_emoji_exactly_filling_a_part_stays() -> None:
    text = _cjk(65) + E1 + _cjk(10)  # 65 + 2 = 67 units: the emoji ends part 1
    assert split(text).texts == (_cjk(65) + E1, _cjk(10))


def test_gsm_text_counts_160_and_153() -> None:
    assert split("A" * 160).texts == ("A" * 160,)
    assert split("A" * 160).data_coding == GSM7
    long = "B" * 161
    assert split(long).texts == ("B" * 153, "B" * 8)
    assert reassemble(split(long).payloads(1), GSM7) == long


def test_ascii_outside_the_shared_codes_goes_as_ucs2() -> None:
    assert split("pay $5 @ desk_1").data_coding == UCS2  # $ @ _ differ in GSM 03.38


def test_a_cut_surrogate_pair_does_not_reassemble() -> None:
    # the test's own check: a part ending in half an emoji must fail to decode
    raw = (_cjk(66) + E1).encode("utf-16-be")
    bad = [bytes([5, 0, 3, 1, 2, 1]) + raw[:134], bytes([5, 0, 3, 1, 2, 2]) + raw[134:]]
    with pytest.raises(UnicodeDecodeError):
        reassemble(bad, UCS2)


def test_too_many_parts_is_refused() -> None:
    with pytest.raises(ValueError):
        split(_cjk(67 * 255 + 1))
