"""HTTP adapter of quality review (质检, /api/v1/quality): scoring forms (administrators),
the reviewers' queue, the weekly sample and scoring (supervisors, shift chiefs), an agent's
own reviews, and the report per agent, per queue and for the whole centre."""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import abort, current_app
from flask_openapi3 import APIBlueprint, Tag
from pydantic import Field, model_validator

from accounts.access import requires
from accounts.web import current_identity
from core.db import transaction
from core.schemas import Body, BodyInt, ErrorBody, Moment, Out, Path, Query, QueryInt, Text, Time
from quality import service

quality_api = APIBlueprint("quality_api", __name__, url_prefix="/api/v1/quality",
                           abp_tags=[Tag(name="quality")], abp_security=[{"bearer": []}],
                           abp_responses={400: ErrorBody, 401: ErrorBody, 403: ErrorBody})
BLUEPRINTS = (quality_api,)
MAX_REPORT_DAYS = 3660


def _sessions() -> Any:
    return current_app.extensions["hotline.sessions"]


def _now() -> Any:
    return current_app.extensions["hotline.clock"].now()


class CriterionBody(Body):
    title: Text(100, min_length=1)
    weight: BodyInt(1, 100)
    max_points: BodyInt(1, 100)


class FormBody(Body):
    name: Text(100, min_length=1)
    criteria: list[CriterionBody] = Field(min_length=1, max_length=service.MAX_CRITERIA)


class Criterion(Out):
    id: int
    title: str
    weight: int
    max_points: int


class Form(Out):
    id: int
    name: str
    version: int
    active: bool
    created_by: str
    created_at: Moment
    criteria: list[Criterion]


class Forms(Out):
    items: list[Form]


class Sample(Out):
    id: int
    call_id: str
    agent: str
    call_started_at: Moment
    period: str = Field(description="the ISO week the call was in, e.g. 2026-W48")
    reasons: list[str] = Field(description="random, complaint:<case>, low_rating:<1-5>, "
                                           "flag:<reason>")
    state: str


class Samples(Out):
    items: list[Sample]


class DrawBody(Body):
    day: date = Field(description="a day of the ISO week to sample (centre's time zone)")


class ReviewBody(Body):
    form_id: BodyInt(1, 2_000_000_000)
    points: dict[Text(12, min_length=1), BodyInt(0, 100)] = Field(
        description="criterion id -> points, every criterion of the form")
    notes: dict[Text(12, min_length=1), Text(500)] = Field(default_factory=dict)
    comment: Text(2000) = ""


class SamplePath(Path):
    sample_id: QueryInt(1, 2_000_000_000)


class Scored(Out):
    title: str
    weight: int
    max_points: int
    points: int
    comment: str


class Review(Out):
    id: int
    call_id: str
    agent: str
    reviewer: str
    score: float = Field(description="weighted, 0-100")
    comment: str
    reviewed_at: Moment
    call_started_at: Moment | None
    form: dict[str, Any] | None
    criteria: list[Scored]


class Reviews(Out):
    items: list[Review]


class ReportQuery(Query):
    start: Time = Field(alias="from", description="calls started from (with zone)")
    end: Time = Field(alias="to", description="... until (excluded)")

    @model_validator(mode="after")
    def _a_window(self) -> ReportQuery:
        if self.end <= self.start:
            raise ValueError("from, to: from before to")
        if (self.end - self.start).days > MAX_REPORT_DAYS:
            raise ValueError("from, to: at most ten years")
        return self


class Averages(Out):
    reviews: int
    average: float | None
    criteria: dict[str, float] = Field(description="criterion title -> average % of top")


class ReportLine(Averages):
    agent: str | None = Field(description="null: the whole centre")


class QueueLine(Averages):
    queue: str = Field(description="the call queue (its team) the reviewed calls came through")
    title: str = Field(description="the queue's title, e.g. 综合受理")


class Report(Out):
    since: Moment
    until: Moment
    agents: list[ReportLine]
    queues: list[QueueLine] = Field(description="per call queue: the calls answered from it")
    team: ReportLine = Field(description="the whole centre")


def _ids(values: dict[str, Any], field: str) -> dict[int, Any]:
    out = {}
    for key, value in values.items():
        if not key.isdigit():
            abort(400, f"{field}: keys are criterion ids")
        out[int(key)] = value
    return out


@quality_api.get("/forms", summary="Scoring forms, every version (质检评分表)",
                 responses={200: Forms})
@requires("quality.report")
def list_forms() -> Any:
    with _sessions()() as session:
        return Forms(items=[Form.model_validate(service.form_view(session, f))
                            for f in service.forms(session)]).model_dump(mode="json")


@quality_api.post("/forms", summary="Define a form (a new version of its name)",
                  responses={201: Form})
@requires("quality.forms")
def define_form(body: FormBody) -> Any:
    with transaction(_sessions()) as session:
        form = service.define_form(session, body.name, [
            service.CriterionIn(c.title, c.weight, c.max_points) for c in body.criteria],
            actor=current_identity().name, now=_now())
        view = Form.model_validate(service.form_view(session, form)).model_dump(mode="json")
    return view, 201


@quality_api.get("/samples", summary="The reviewers' queue: sampled calls not yet scored",
                 responses={200: Samples})
@requires("quality.review")
def queue() -> Any:
    with _sessions()() as session:
        return Samples(items=[Sample.model_validate(service.sample_view(s))
                              for s in service.pending(session)]).model_dump(mode="json")


@quality_api.post("/samples", summary="Draw the sample of a week (again: only what is new)",
                  responses={200: Samples})
@requires("quality.review")
def draw(body: DrawBody) -> Any:
    settings = current_app.extensions["hotline.settings"]
    with transaction(_sessions()) as session:
        new = service.draw(session, body.day, now=_now(), zone=settings.calendar.timezone,
                           settings=settings.quality)
        return Samples(items=[Sample.model_validate(service.sample_view(s))
                              for s in new]).model_dump(mode="json")


@quality_api.post("/samples/<sample_id>/review", summary="Score a sampled call",
                  responses={201: Review, 404: ErrorBody, 409: ErrorBody})
@requires("quality.review")
def review(path: SamplePath, body: ReviewBody) -> Any:
    who = current_identity()
    with transaction(_sessions()) as session:
        done = service.score(session, path.sample_id, form_id=body.form_id,
                             points=_ids(body.points, "points"),
                             notes=_ids(body.notes, "notes"), comment=body.comment,
                             reviewer=who.name, reviewer_agent=who.agent, now=_now())
        view = Review.model_validate(service.review_view(session, done)).model_dump(
            mode="json")
    return view, 201


@quality_api.get("/mine", summary="My own reviews (the signed-in agent's calls only)",
                 responses={200: Reviews})
@requires("quality.own")
def mine() -> Any:
    who = current_identity()
    with _sessions()() as session:
        return Reviews(items=[Review.model_validate(service.review_view(session, r))
                              for r in service.reviews_of_agent(session, who.agent or "")]
                       ).model_dump(mode="json")


@quality_api.get("/report", summary="Average scores per agent, per queue and for the centre, "
                 "and per criterion", responses={200: Report})
@requires("quality.report")
def report(query: ReportQuery) -> Any:
    with _sessions()() as session:
        return Report.model_validate(service.report(session, query.start, query.end)
                                     ).model_dump(mode="json")
