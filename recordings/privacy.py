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
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
    found = []
    for start, end in _runs(text):
        digits = _digits(text[start:end])
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
    return _replace(text, lambda f: f.masked)


def for_index(text: str) -> str:
    """`text` with every personal number left out (what the search index is made of)."""
    return _replace(text, lambda f: " ")


def _replace(text: str, by: object) -> str:
    out, last = [], 0
    for f in find(text):
        out.append(text[last:f.start])
        out.append(by(f))  # type: ignore[operator]
        last = f.end
    out.append(text[last:])
    return "".join(out)
