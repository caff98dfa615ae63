"""Personal data in transcripts (个人信息脱敏): mobile numbers, ID numbers, bank card numbers.

A recogniser writes numbers as digits or as spoken Chinese digits (幺三八 …), often with spaces
between them, so a number is found as a run of digit characters with spaces allowed inside,
read as digits, and judged whole:
- an 11-digit mainland mobile number (1[3-9] …), shown as 138****8000 like every number of
  the centre;
- an 18-digit resident ID number (居民身份证号码) whose last character is its ISO 7064 MOD 11-2
  check digit (0-9 or X), shown as its first and last four;
- a bank card number (银行卡号) of 13-19 digits that passes the Luhn check, shown the same way;
- any other run of 11 digits or more is masked whole: a number misheard by one digit is still
  somebody's.
The search index gets none of it: `for_index` leaves a masked number out altogether.

A caller reading a number in groups is often cut into utterances by the engine's endpointing
at the pauses ("身份证 2301 0219" | "8001 0112 34"): each piece alone is too short to be a
number. `find_each` (`mask_each`, `for_index_each`) takes one speaker's utterances and judges
a number running on from one into the next as one number, masked across the joint, each
utterance keeping its own text (see JOINT_SECONDS for when utterances run on). A text still
growing (a live partial) shows no digit run at its end at all (`growing`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

# spoken digits as vosk's Mandarin models write them; 两 and 洞 as callers say them
_SPOKEN = {"零": "0", "〇": "0", "洞": "0", "一": "1", "幺": "1", "二": "2", "两": "2",
           "三": "3", "四": "4", "五": "5", "六": "6", "七": "7", "八": "8", "九": "9"}
_DIGIT = "0-9０-９" + "".join(_SPOKEN)
# a token of digits (an ID number may end in X), and what may stand between two of one number
_TOKEN = re.compile(rf"[{_DIGIT}]+(?:[xX](?![A-Za-z]))?|(?<=[{_DIGIT}\s])[xX](?![A-Za-z])")
_GAP = re.compile(r"[\s\-]{1,3}")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
MIN_MASKED = 11  # digits: shorter runs (a house number, an amount) stay as they are
# The longest pause, in seconds, between one utterance's last word and the next one's first
# over which a number runs on. Endpointing ends an utterance after 0.5-2 s of silence (Kaldi's
# rules), so a caller reading groups is cut at the pauses between them; a caller looking at
# the card between groups may pause longer still. Two numbers said further apart are two
# numbers (a house number, then an amount a minute later), and joined they would be masked
# only if 11 digits or more: masking a little too much costs less than showing a number.
JOINT_SECONDS = 5.0

MOBILE, ID_NUMBER, BANK_CARD, NUMBER = "mobile", "id_number", "bank_card", "number"


@dataclass(frozen=True)
class Found:
    kind: str
    start: int  # in the text given
    end: int
    masked: str


def _digits(run: str) -> str:
    out = []
    for ch in run:
        if ch in _SPOKEN:
            out.append(_SPOKEN[ch])
        elif "０" <= ch <= "９":
            out.append(chr(ord(ch) - 0xFEE0))
        elif ch.isdigit() or ch in "xX":
            out.append(ch.upper())
    return "".join(out)


def id_check_digit(first17: str) -> str:
    return _ID_CHECK[sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True)) % 11]


def is_id_number(digits: str) -> bool:
    return (len(digits) == 18 and digits[:17].isdigit()
            and id_check_digit(digits[:17]) == digits[17])


def luhn_ok(digits: str) -> bool:
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _kind(digits: str) -> str:
    if len(digits) == 11 and re.fullmatch(r"1[3-9][0-9]{9}", digits):
        return MOBILE
    if is_id_number(digits):
        return ID_NUMBER
    if 13 <= len(digits) <= 19 and luhn_ok(digits):
        return BANK_CARD
    return NUMBER


def _masked(kind: str, digits: str) -> str:
    if kind == MOBILE:
        return f"{digits[:3]}****{digits[-4:]}"
    if kind in (ID_NUMBER, BANK_CARD):
        return f"{digits[:4]}{'*' * (len(digits) - 8)}{digits[-4:]}"
    return "*" * len(digits)


def _runs(text: str) -> list[tuple[int, int]]:
    """Where numbers are: each unbroken token of 11 digits or more alone; shorter tokens
    with only spaces or dashes between them (幺 三 九 …, 139 1234 5678) joined into one."""
    runs: list[tuple[int, int]] = []
    group: tuple[int, int] | None = None
    for token in _TOKEN.finditer(text):
        long = len(_digits(token.group())) >= MIN_MASKED
        if long:
            if group:
                runs.append(group)
            runs.append(token.span())
            group = None
        elif group and _GAP.fullmatch(text[group[1]:token.start()]):
            group = (group[0], token.end())
        else:
            if group:
                runs.append(group)
            group = token.span()
    if group:
        runs.append(group)
    return runs


def find(text: str) -> list[Found]:
    """The personal numbers in `text`, in order."""
    return _found(text, growing=False)


def _found(text: str, *, growing: bool) -> list[Found]:
    """The personal numbers in `text`; when `growing`, also a run of digits at its end of
    any length, all stars: more digits may follow and make it a number, or another one."""
    found = []
    last = len(text.rstrip())
    for start, end in _runs(text):
        digits = _digits(text[start:end])
        if growing and end == last:
            found.append(Found(NUMBER, start, end, "*" * len(digits)))
            continue
        if len(digits) < MIN_MASKED:
            continue
        if digits.endswith("X") and not is_id_number(digits):
            digits = digits[:-1]  # an X after a number that is no ID number is a letter
            end = start + text[start:end].upper().rindex("X")
            if len(digits) < MIN_MASKED:
                continue
            while end > start and not text[end - 1].strip("-"):
                end -= 1
        kind = _kind(digits)
        found.append(Found(kind, start, end, _masked(kind, digits)))
    return found


def mask(text: str) -> str:
    """`text` with every personal number masked (what every view shows by default)."""
    return _replace(text, find(text), _shown)


def for_index(text: str) -> str:
    """`text` with every personal number left out (what the search index is made of)."""
    return _replace(text, find(text), _left_out)


class Said(Protocol):
    """An utterance: a stored segment, the engine's utterance, a live text."""

    @property
    def text(self) -> str: ...

    @property
    def start(self) -> float: ...

    @property
    def end(self) -> float: ...


def find_each(said: Sequence[Said], *, growing: bool = False) -> list[list[Found]]:
    """The personal numbers in each of one speaker's utterances (in any order; each list in
    the place of its utterance, positions in its own text). An utterance beginning with a
    digit group runs on from the one before it in time when that one ends with a digit group
    and the pause between them is at most JOINT_SECONDS: the groups on both sides of the
    joint are one number, judged whole, and each utterance gets the part of its mask that
    stands for its own digits (an ID number split 8 + 10: 1101**** and ******002X).
    `growing`: the last utterance in time may still grow (a live partial), so a run of
    digits at its end is all stars whatever its length (`_found`)."""
    order = sorted(range(len(said)), key=lambda i: (said[i].start, i))
    found: list[list[Found]] = [[] for _ in said]
    run_on: list[int] = []  # utterances each no further than JOINT_SECONDS from the last
    for n, i in enumerate(order):
        if run_on and said[i].start - said[run_on[-1]].end > JOINT_SECONDS:
            _split(said, run_on, found, growing=False)
            run_on = []
        run_on.append(i)
        if n == len(order) - 1:
            _split(said, run_on, found, growing=growing)
    return found


def _split(said: Sequence[Said], run_on: list[int], found: list[list[Found]], *,
           growing: bool) -> None:
    """Find the numbers of utterances said one after another as if one text, the joints
    a space (a gap within a number when digits stand on both sides), and give each
    utterance its share of each number: its span, and the mask's characters of its digits
    (every mask has one character per digit)."""
    offsets, at = [], 0
    for i in run_on:
        offsets.append(at)
        at += len(said[i].text) + 1
    joined = " ".join(said[i].text for i in run_on)
    for number in _found(joined, growing=growing):
        for i, offset in zip(run_on, offsets, strict=True):
            start = max(number.start, offset)
            end = min(number.end, offset + len(said[i].text))
            if start >= end:
                continue
            before = len(_digits(joined[number.start:start]))
            mine = len(_digits(joined[start:end]))
            found[i].append(Found(number.kind, start - offset, end - offset,
                                  number.masked[before:before + mine]))


def mask_each(said: Sequence[Said], *, growing: bool = False) -> list[str]:
    """Each utterance's text masked, numbers split between utterances too (`find_each`)."""
    return [mask_found(s.text, f) for s, f in zip(said, find_each(said, growing=growing),
                                                  strict=True)]


def for_index_each(said: Sequence[Said]) -> list[str]:
    """Each utterance's text with its personal numbers left out, parts of one split between
    utterances too (`find_each`): what the search index is made of."""
    return [_replace(s.text, f, _left_out) for s, f in zip(said, find_each(said), strict=True)]


def mask_found(text: str, found: list[Found]) -> str:
    """`text` with the numbers found in it (by `find_each`) masked."""
    return _replace(text, found, _shown)


def _shown(found: Found) -> str:
    return found.masked


def _left_out(found: Found) -> str:
    return " "


def _replace(text: str, found: list[Found], by: Callable[[Found], str]) -> str:
    out, last = [], 0
    for f in found:
        out.append(text[last:f.start])
        out.append(by(f))
        last = f.end
    out.append(text[last:])
    return "".join(out)
