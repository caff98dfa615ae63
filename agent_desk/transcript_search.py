"""Transcript search (通话转写检索): /transcripts, where the people who may search transcripts
through the API (`transcripts.read`, the same check) search them by a Chinese phrase.

The results are ranked as recordings.transcripts.search ranks them, PAGE_SIZE a page. Each
shows the case number of the work order its call belongs to (the tickets room's door), when
the call began in the centre's time zone (the telephony room's door), whose voice it is
(市民 or 坐席), the utterance masked (never unmasked here, whoever asks) with the query's words
marked, and a link to the order's page that plays the call's recording from that utterance
(`?call=<call id>&t=<second>`, which the order page reads). A call of no order has no page
that plays its recording by the call: it shows its time and moment, and no link.

Bad input is a message on the page, never an error page: an empty phrase, one longer than
the API takes, one holding NUL or text-direction controls (core.schemas' rules, the API's)
and a page number out of range are refused with 400; a phrase with no word to search
(punctuation only, or a personal number, which the index never holds) says so. The query
language of the index never leaks through: recordings.transcripts quotes every word.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, current_app, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy.orm import Session, sessionmaker

from accounts.access import PERMISSIONS, requires
from accounts.pages import guard_pages, titles
from accounts.service import Identity
from accounts.web import current_identity
from core.schemas import BIDI_CONTROLS, clean_text
from recordings import transcripts
from telephony import records
from tickets import call_facts

PERMISSION = "transcripts.read"  # the API's search (recordings.http) checks the same
PAGE_SIZE = 20
MAX_PAGE = 500  # the API's largest offset (10,000) in pages
transcript_search = guard_pages(Blueprint("transcript_search", __name__,
                                          template_folder="templates"))


class SearchRefused(Exception):
    """What is wrong with the input, in the page's language."""


@dataclass(frozen=True)
class Result:
    rank: int
    call_id: str
    case_number: str | None
    started_at: datetime | None
    speaker: str  # caller | agent
    offset_seconds: float
    parts: list[tuple[str, bool]]  # the masked utterance, each piece marked or not
    link: str  # the order page playing the call from this utterance; "" without an order


def _sessions() -> sessionmaker[Session]:
    return current_app.extensions["hotline.sessions"]  # type: ignore[no-any-return]


def _zone() -> ZoneInfo:
    return ZoneInfo(current_app.extensions["hotline.settings"].calendar.timezone)


def may_search(who: Identity) -> bool:
    """Whether `who` may open this page (for the links to it in other pages' bars)."""
    return bool(PERMISSIONS[PERMISSION] & set(who.roles))


@transcript_search.app_context_processor
def _links() -> dict[str, Any]:
    return {"may_search_transcripts": may_search}


def phrase_of(raw: str) -> str:
    """The phrase to search, or SearchRefused saying what is wrong with `raw`."""
    if len(raw) > transcripts.MAX_QUERY:
        raise SearchRefused(_("The phrase is too long: at most %(count)s characters.",
                              count=transcripts.MAX_QUERY))
    if "\x00" in raw or any(c in BIDI_CONTROLS for c in raw):
        raise SearchRefused(_("The phrase holds characters that cannot be searched (NUL or "
                              "text-direction controls)."))
    phrase = raw.strip()
    try:
        clean_text(phrase)
    except ValueError:  # only invisible characters
        phrase = ""
    if not phrase:
        raise SearchRefused(_("Type a phrase to search for, e.g. 煤气泄漏."))
    return phrase


def _echo(raw: str) -> str:
    """What the box shows again of a refused phrase: cut to the longest taken, without the
    characters that are refused."""
    return "".join(c for c in raw[:transcripts.MAX_QUERY]
                   if c != "\x00" and c not in BIDI_CONTROLS)


def page_number(raw: str) -> int:
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4 and 1 <= int(raw) <= MAX_PAGE):
        raise SearchRefused(_("The page number is a whole number from 1 to %(count)s.",
                              count=MAX_PAGE))
    return int(raw)


def marked(text: str, words: list[str]) -> list[tuple[str, bool]]:
    """`text` in pieces, those that are one of the query's `words` marked (the longest word
    first where two start at one place)."""
    lowered = text.lower()
    ordered = sorted({w for w in words if w}, key=len, reverse=True)
    if not ordered or len(lowered) != len(text):
        return [(text, False)]
    out: list[tuple[str, bool]] = []
    start = at = 0
    while at < len(text):
        word = next((w for w in ordered if lowered.startswith(w, at)), None)
        if word is None:
            at += 1
            continue
        if start < at:
            out.append((text[start:at], False))
        out.append((text[at:at + len(word)], True))
        at += len(word)
        start = at
    if start < len(text):
        out.append((text[start:], False))
    return out


def _results(session: Session, words: list[str], hits: list[transcripts.Hit],
             first_rank: int) -> list[Result]:
    call_ids = [h.call_id for h in hits]
    cases = call_facts.case_numbers(session, call_ids)
    started = records.started_at_of(session, call_ids)
    out = []
    for n, hit in enumerate(hits):
        case = cases.get(hit.call_id)
        link = url_for("workspace.order_page", case_number=case, call=hit.call_id,
                       t=f"{hit.offset_seconds:.2f}".rstrip("0").rstrip(".")) if case else ""
        out.append(Result(rank=first_rank + n, call_id=hit.call_id, case_number=case,
                          started_at=started.get(hit.call_id), speaker=hit.leg,
                          offset_seconds=hit.offset_seconds, parts=marked(hit.text, words),
                          link=link))
    return out


@transcript_search.get("/transcripts")
@requires(PERMISSION)
def page() -> Any:
    """The search box; with `q`, a page of results (`page`, from 1)."""
    who = current_identity()
    raw = request.args.get("q")
    context: dict[str, Any] = {"who": who, "titles": titles(), "zone": _zone(),
                               "query": _echo(raw or ""), "words": [],
                               "results": [], "number": 1, "more": False, "message": "",
                               "searched": False}
    if raw is None:
        return render_template("agent_desk/transcript_search.html", **context)
    try:
        phrase = phrase_of(raw)
        number = page_number(request.args.get("page", "1"))
        with _sessions()() as session:
            words, hits = transcripts.search(session, phrase, limit=PAGE_SIZE + 1,
                                             offset=(number - 1) * PAGE_SIZE)
            results = _results(session, words, hits[:PAGE_SIZE],
                               (number - 1) * PAGE_SIZE + 1)
    except (SearchRefused, transcripts.TranscriptError) as refused:
        context["message"] = str(refused)
        return render_template("agent_desk/transcript_search.html", **context), 400
    context.update(query=phrase, words=words, results=results, number=number,
                   more=len(hits) > PAGE_SIZE, searched=True)
    if not words:
        context["message"] = _("The phrase has no word to search for: punctuation, symbols "
                               "and personal numbers (never kept in the index) are not "
                               "searched.")
    elif not results:
        context["message"] = _("No utterance has every word of this phrase.") \
            if number == 1 else _("No more results.")
    return render_template("agent_desk/transcript_search.html", **context)
