"""Input bounded once, at the edge: the types every HTTP schema builds on (pydantic v2).

Text carries no NUL (PostgreSQL refuses it), no bidi override or isolate controls (they
reorder what a reader sees: "Trojan Source"), is never only invisible characters, and is
length-bounded. Numbers are finite and in range; a whole number sent as a query string is
plain ASCII digits (no "²", no 5,000 digits); times are ISO 8601 with a zone in sane years.
JSON bodies are parsed by `parse_json` (pydantic-core's parser: nesting deeper than 200 is
refused before any Python recursion, NaN and Infinity are not JSON).
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Annotated, Any

import pydantic_core
from annotated_types import Interval
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.functional_serializers import PlainSerializer

MIN_YEAR, MAX_YEAR = 1970, 2200  # before: no hotline; after: a typo, not a plan
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Characters that render as nothing though Unicode does not class them as spaces or controls.
_BLANKS = frozenset("\u3164\uffa0\u115f\u1160\u2800\u180e")
_DIGITS = re.compile(r"[0-9]{1,12}")
_ISO_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}.*")


def _invisible(char: str) -> bool:
    return char.isspace() or char in _BLANKS or unicodedata.category(char) in (
        "Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me")


def clean_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("no NUL characters")
    if any(c in BIDI_CONTROLS for c in value):
        raise ValueError("no bidi override or isolate controls (U+202A-202E, U+2066-2069)")
    if value and all(_invisible(c) for c in value):
        raise ValueError("only invisible characters")
    return value


def Text(max_length: int, min_length: int = 0, pattern: str | None = None) -> Any:
    """A string of at most `max_length` characters, cleaned as above."""
    return Annotated[str, Strict(), StringConstraints(
        min_length=min_length, max_length=max_length, pattern=pattern),
        AfterValidator(clean_text)]


def _digits_only(value: Any) -> Any:
    if isinstance(value, str) and not _DIGITS.fullmatch(value):
        raise ValueError("a whole number in ASCII digits")
    return value


def QueryInt(low: int, high: int) -> Any:
    """A whole number given as text (a query or path parameter): ASCII digits, low..high."""
    # the bounds before the digits check: after a validator they would not reach the schema
    return Annotated[int, Interval(ge=low, le=high), BeforeValidator(_digits_only)]


def BodyInt(low: int, high: int) -> Any:
    """A whole number in a JSON body: a JSON integer (not "5", true or 5.0), low..high."""
    return Annotated[int, Strict(), Field(ge=low, le=high)]


def Number(low: float, high: float) -> Any:
    """A finite JSON number (an integer too, never a string or a boolean), low..high."""
    return Annotated[float, Strict(), Field(ge=low, le=high, allow_inf_nan=False)]


Latitude = Number(-90, 90)
Longitude = Number(-180, 180)


def _iso_only(value: Any) -> Any:
    if not isinstance(value, str) or not _ISO_TIME.fullmatch(value):
        raise ValueError("an ISO 8601 time with zone, e.g. 2026-11-24T08:00:00+08:00")
    return value


def _sane_year(value: datetime) -> datetime:
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"a year from {MIN_YEAR} to {MAX_YEAR}")
    return value


Time = Annotated[AwareDatetime, BeforeValidator(_iso_only), AfterValidator(_sane_year)]
"""A moment in ISO 8601 with its zone (Z or +08:00), years 1970-2200; no Unix seconds."""


Moment = Annotated[datetime, PlainSerializer(lambda moment: moment.isoformat(), return_type=str),
                   WithJsonSchema({"type": "string", "format": "date-time"})]
"""A moment in a response: ISO 8601 with its offset (2026-11-24T02:00:00+00:00)."""


class Query(BaseModel):
    """Query parameters: unknown ones are ignored (a cache-buster must not break a read)."""

    model_config = ConfigDict(extra="ignore")


class Body(BaseModel):
    """A JSON object body: every field declared, nothing else accepted."""

    model_config = ConfigDict(extra="forbid")


class Path(BaseModel):
    """Path parameters: a value that fails its schema names no resource, so it is a 404."""

    model_config = ConfigDict(extra="ignore")


class Out(BaseModel):
    """A response shape: what is declared is sent, nothing else."""

    model_config = ConfigDict(extra="ignore")


class ErrorBody(BaseModel):
    """Every error: what went wrong, and a detail that names the field or the reason."""

    error: str = Field(examples=["Bad Request"])
    detail: str = Field(examples=["limit: a whole number from 1 to 500"])


def parse_json(data: str | bytes) -> Any:
    """A JSON document, or ValueError for anything that is not one (nested too deep too)."""
    return pydantic_core.from_json(data, allow_inf_nan=False)
