"""Citizens' phone numbers, one way everywhere: stored in E.164, shown and dialled in the
national form, on Google's libphonenumber data (the `phonenumbers` package), region China.

    normalise("+86 451 8888 8888") == normalise("0451-88888888") == "+8645188888888"
    normalise("138 0013 8000") == "+8613800138000";  national("+8613800138000") == "13800138000"

Short numbers (110, 12319, 95598) and extensions (8001) have no E.164 form: they are kept
as their digits, as are digit strings the numbering plan does not know (a local number
given without its area code), so each still matches itself. Anything else (letters, a lone
digit, a caller ID such as "anonymous") is a PhoneError.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat

from core.errors import HotlineError

REGION = "CN"
MAX_SHORT_DIGITS = 6  # 110, 12319, 95598, an extension 8001
_KEPT_LENGTH = 40  # longer text is no phone number worth remembering
_SEPARATORS = re.compile(r"[\s\-().\u00a0/]")
_DIGITS = re.compile(r"\+?[0-9]{3,20}")
# digits typed on a Chinese keyboard come full-width
_FULL_WIDTH = str.maketrans("０１２３４５６７８９＋－（）", "0123456789+-()")


class PhoneError(HotlineError):
    """Text that is not a phone number; the message quotes (a bounded part of) it."""


def normalise(text: str) -> str:
    """The stored form of a phone number: E.164, or the digits of a short number."""
    if not isinstance(text, str):
        raise PhoneError("phone: text expected")
    return _normalised(text)


def _kept(answer: Callable[[str], str]) -> Callable[[str], str]:
    """`answer`, its answers kept per process for texts as short as a number: a call's
    number is normalised by the IVR, the screen pop, the record and the wallboard, and
    libphonenumber's parse costs ~0.1 ms each. Errors are not kept, nor long (hostile)
    text."""
    cached = functools.lru_cache(maxsize=8192)(answer)

    @functools.wraps(answer)
    def kept(text: str) -> str:
        return cached(text) if len(text) <= _KEPT_LENGTH else answer(text)

    return kept


@_kept
def _normalised(text: str) -> str:
    compact = _SEPARATORS.sub("", text.translate(_FULL_WIDTH))
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if not _DIGITS.fullmatch(compact):
        raise PhoneError(f"phone: {text[:30]!r} is not a phone number")
    if not compact.startswith("+") and len(compact) <= MAX_SHORT_DIGITS:
        return compact
    try:
        number = phonenumbers.parse(compact, REGION)
    except NumberParseException:
        number = None
    if number is not None and phonenumbers.is_valid_number(number):
        return phonenumbers.format_number(number, PhoneNumberFormat.E164)
    if compact.startswith("+"):
        raise PhoneError(f"phone: {text[:30]!r} is not a valid international number")
    return compact


def normalise_or_empty(text: str | None) -> str:
    """The stored form, or "" for no number or something that is not one (a withheld or
    garbled caller ID)."""
    try:
        return normalise(text or "")
    except PhoneError:
        return ""


def national(stored: str) -> str:
    """The digits a person reads and the trunk dials from China: 13800138000, 045188888888,
    110; a foreign number with the international prefix, 0016502530000."""
    if not stored.startswith("+"):
        return stored
    return _national(stored)


@_kept
def _national(stored: str) -> str:
    number = phonenumbers.parse(stored)
    if number.country_code == phonenumbers.country_code_for_region(REGION):
        formatted = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    else:
        formatted = phonenumbers.format_out_of_country_calling_number(number, REGION)
    return re.sub(r"[^0-9]", "", formatted)


def mask(stored: str) -> str:
    """138****8000: enough for a citizen to recognise, not enough to call; a short number
    keeps only its last two digits (***19)."""
    digits = national(stored) if stored else ""
    if len(digits) <= 4:
        return "*" * len(digits)
    front, back = (3, 4) if len(digits) >= 11 else (1, 4) if len(digits) >= 8 else (0, 2)
    return digits[:front] + "*" * (len(digits) - front - back) + digits[-back:]


# A run of digits a person may have typed as a number: 5 or more digits, maybe split by
# spaces, dashes or dots, maybe with a leading + (full-width digits too).
_TYPED_NUMBER = re.compile(r"\+?[0-9０-９](?:[\s\-.]?[0-9０-９]){4,}")
# A case number (案件编号 YYYYMMDDNNNN) names an order, not a person: it stays readable.
_CASE_NUMBER = re.compile(r"20[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{4,8}")


def mask_in_text(text: str) -> str:
    """Free text (a description, a note) with every number typed into it masked like a
    stored one: "请回电 13800138000" -> "请回电 138****8000"; short numbers (5-6 digits)
    keep only their last two."""

    def hide(match: re.Match[str]) -> str:
        digits = re.sub(r"[^0-9]", "", match.group().translate(_FULL_WIDTH))
        if _CASE_NUMBER.fullmatch(digits):
            return match.group()
        return mask(normalise_or_empty(digits) or digits)

    return _TYPED_NUMBER.sub(hide, text)
