"""HTTP adapter of transcripts (通话转写): search them (/api/v1/transcripts/search), read a
call's (/api/v1/transcripts/{call_id}), and the transcription queue's progress
(/api/v1/speech/status). Personal data is masked unless the caller may see it and asks
(`unmasked=true`); each unmasked showing is audited.

A hit names the work order its call belongs to: this room knows calls, not orders (it lies
below tickets), so the composition hands it the tickets room's door for that,
`tickets.call_facts.case_numbers`, as the app's `CASE_NUMBERS` extension."""

from __future__ import annotations

from typing import Any

from flask import abort, current_app
from flask_openapi3 import APIBlueprint, Tag
from pydantic import Field
from sqlalchemy.orm import Session, sessionmaker

from accounts import audit as audit_log
from accounts.access import requires
from accounts.web import audit, current_identity
from core.db import transaction
from core.schemas import Body, ErrorBody, Moment, Out, Path, Query, QueryInt, Text
from recordings import keywords, transcribe_worker, transcripts
from recordings.catalogue import files_of_call

CASE_NUMBERS = "hotline.case_numbers"  # (session, call ids) -> {call id: case number}
_ERRORS: dict[int, Any] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody}
transcripts_api = APIBlueprint("transcripts", __name__, url_prefix="/api/v1",
                               abp_tags=[Tag(name="transcripts")],
                               abp_security=[{"bearer": []}], abp_responses=_ERRORS)
BLUEPRINTS = (transcripts_api,)


def _sessions() -> sessionmaker[Session]:
    return current_app.extensions["hotline.sessions"]  # type: ignore[no-any-return]


class SearchQuery(Query):
    q: Text(transcripts.MAX_QUERY, min_length=1) = Field(
        description="words said in the call, e.g. 煤气泄漏 (cut into words by jieba)")
    limit: QueryInt(1, 100) = 20
    offset: QueryInt(0, 10_000) = 0


class RecordingRef(Out):
    call_id: str
    leg: str = Field(description="whose voice: caller (市民) or agent (话务员)")
    sha256: str = Field(description="the leg's recording")


class SearchHit(Out):
    recording: RecordingRef
    case_number: str | None = Field(description="the work order (工单) the call belongs "
                                                "to; null: none")
    offset_seconds: float = Field(description="where the utterance starts: jump here")
    end_seconds: float
    text: str = Field(description="the utterance, personal data masked")
    score: float = Field(description="higher is better")


class SearchPage(Out):
    words: list[str] = Field(description="the query as the segmenter cut it")
    limit: int
    offset: int
    items: list[SearchHit]


@transcripts_api.get("/transcripts/search", summary="Search call transcripts, best first",
                     responses={200: SearchPage})
@requires("transcripts.read")
def search(query: SearchQuery) -> Any:
    with _sessions()() as session:
        words, hits = transcripts.search(session, query.q, limit=query.limit,
                                         offset=query.offset)
        cases = case_numbers(session, [h.call_id for h in hits])
        page = {"words": words, "limit": query.limit, "offset": query.offset,
                "items": [{"recording": {"call_id": h.call_id, "leg": h.leg,
                                         "sha256": h.sha256},
                           "case_number": cases.get(h.call_id),
                           "offset_seconds": h.offset_seconds, "end_seconds": h.end_seconds,
                           "text": h.text, "score": h.score} for h in hits]}
    return SearchPage.model_validate(page).model_dump(mode="json")


def case_numbers(session: Session, call_ids: list[str]) -> dict[str, str]:
    """The case number of each call's work order, by the door the composition handed in
    (none handed in: no call is known to have one)."""
    door = current_app.extensions.get(CASE_NUMBERS)
    return door(session, call_ids) if door is not None and call_ids else {}


class CallPath(Path):
    call_id: Text(64, min_length=1)


class TranscriptQuery(Query):
    unmasked: bool = Field(False, description="personal data in full: only with the "
                                              "privilege to see it, and audited")


class WordOut(Out):
    word: str
    start: float
    end: float
    confidence: float


class SegmentOut(Out):
    speaker: str = Field(description="caller or agent: the leg it was heard on")
    start: float
    end: float
    text: str
    confidence: float
    words: list[WordOut] = Field(description="empty in a masked view of an utterance "
                                             "holding personal data")


class TranscriptOut(Out):
    leg: str
    sha256: str
    engine: str
    model: str
    audio_seconds: float
    created_at: Moment
    text: str
    segments: list[SegmentOut]


class FileOut(Out):
    leg: str = Field(description="mixed, caller or agent")
    sha256: str
    bytes: int
    seconds: float


class LegJob(Out):
    leg: str
    state: str = Field(description="queued, running, done, failed or gone (its recording "
                                   "deleted by retention)")
    attempts: int


class CallTranscripts(Out):
    call_id: str
    unmasked: bool
    files: list[FileOut] = Field(description="the call's recordings (where they lie is "
                                             "never shown)")
    jobs: list[LegJob] = Field(description="each leg's transcription")
    transcripts: list[TranscriptOut]


@transcripts_api.get("/transcripts/<call_id>", summary="A call's transcripts, per leg",
                     responses={200: CallTranscripts})
@requires("transcripts.read")
def call_transcripts(path: CallPath, query: TranscriptQuery) -> Any:
    if query.unmasked and not current_identity().see_phone:
        abort(403, "unmasked: only for accounts that may see personal data")
    with transaction(_sessions()) as session:
        found = transcripts.call_transcripts(session, path.call_id, unmasked=query.unmasked)
        files = [{"leg": f.leg, "sha256": f.sha256, "bytes": f.bytes, "seconds": f.seconds}
                 for f in files_of_call(session, path.call_id)]
        jobs = [{"leg": j.leg, "state": j.state, "attempts": j.attempts}
                for j in transcribe_worker.jobs_of_call(session, path.call_id)]
        if not found and not files:
            abort(404, f"no recording or transcript of call {path.call_id}")
        if query.unmasked and found:
            audit(session, audit_log.TRANSCRIPT_SHOWN, target=path.call_id,
                  detail={"legs": [t["leg"] for t in found]})
    body = {"call_id": path.call_id, "unmasked": query.unmasked, "files": files,
            "jobs": jobs, "transcripts": found}
    return CallTranscripts.model_validate(body).model_dump(mode="json")


class JobOut(Out):
    sha256: str
    call_id: str
    leg: str
    state: str
    attempts: int
    error: str
    queued_at: Moment
    started_at: Moment | None
    finished_at: Moment | None
    audio_seconds: float | None
    work_seconds: float | None


class SpeechStatus(Out):
    enabled: bool = Field(description="whether a speech model is configured")
    counts: dict[str, int]
    queue: dict[str, int] = Field(description="RQ: waiting, started, failed, workers")
    jobs: list[JobOut]


class StatusQuery(Query):
    limit: QueryInt(1, 200) = 20


@transcripts_api.get("/speech/status", summary="The transcription queue's progress",
                     responses={200: SpeechStatus})
@requires("speech.status")
def speech_status(query: StatusQuery) -> Any:
    settings = current_app.extensions["hotline.settings"]
    client = current_app.extensions.get("hotline.redis")
    with _sessions()() as session:
        body = transcribe_worker.status(session, client, limit=query.limit)
    body = {"enabled": settings.speech.model_path is not None, "queue": {}, **body}
    return SpeechStatus.model_validate(body).model_dump(mode="json")


# --- the alert keywords (告警关键词): the list the operator edits ---------------------------


class KeywordOut(Out):
    word: str
    active: bool = Field(description="false: removed (kept, with who removed it and when)")
    changed_at: Moment
    changed_by: str = Field(description="who added or removed it; empty: seeded from "
                                        "speech.alert_keywords")


class KeywordList(Out):
    keywords: list[str] = Field(description="what alerts supervisors when a caller says "
                                            "it, live or in a stored transcript")
    items: list[KeywordOut]


class KeywordBody(Body):
    word: Text(keywords.MAX_WORD, min_length=1) = Field(description="e.g. 煤气泄漏")


class KeywordPath(Path):
    word: Text(keywords.MAX_WORD, min_length=1)


def _keyword_list() -> dict[str, Any]:
    settings = current_app.extensions["hotline.settings"]
    now = current_app.extensions["hotline.clock"].now()
    words = keywords.seeded(_sessions(), settings.speech.alert_keywords, now)
    with _sessions()() as session:
        rows = keywords.listing(session)
        return KeywordList.model_validate({"keywords": list(words), "items": [
            KeywordOut.model_validate(r, from_attributes=True) for r in rows]}
        ).model_dump(mode="json")


def _change(word: str, adding: bool) -> bool:
    settings = current_app.extensions["hotline.settings"]
    now = current_app.extensions["hotline.clock"].now()
    keywords.seeded(_sessions(), settings.speech.alert_keywords, now)
    with transaction(_sessions()) as session:
        change = keywords.add if adding else keywords.remove
        moved = change(session, word, actor=current_identity().name, now=now)
        if moved:
            audit(session, audit_log.KEYWORDS_CHANGED, target=keywords.clean(word),
                  detail={"change": "added" if adding else "removed"})
    if moved:
        keywords.changed(current_app.extensions["hotline.redis"])
    return moved


@transcripts_api.get("/speech/keywords", summary="The alert keywords (告警关键词)",
                     responses={200: KeywordList})
@requires("speech.keywords")
def keyword_list() -> Any:
    return _keyword_list()


@transcripts_api.post("/speech/keywords", summary="Add an alert keyword (or restore a removed "
                      "one); audited", responses={200: KeywordList, 201: KeywordList})
@requires("speech.keywords.edit")
def keyword_add(body: KeywordBody) -> Any:
    moved = _change(body.word, True)
    return _keyword_list(), 201 if moved else 200


@transcripts_api.delete("/speech/keywords/<word>", summary="Remove an alert keyword; "
                        "audited", responses={200: KeywordList})
@requires("speech.keywords.edit")
def keyword_remove(path: KeywordPath) -> Any:
    with _sessions()() as session:
        if keywords.clean(path.word) not in keywords.current(session):
            abort(404, f"{path.word} is not an alert keyword")
    _change(path.word, False)
    return _keyword_list()
