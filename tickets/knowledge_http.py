"""HTTP adapter of the knowledge base (知识库): search and read articles
(/api/v1/knowledge), and answer a consultation on the live call with one (首呼解决): the
consultation order is taken in on the call and closed at once. Articles are written from the
shell (`hotline kb`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import abort, current_app
from flask_openapi3 import APIBlueprint, Tag
from pydantic import Field
from sqlalchemy.orm import Session, sessionmaker

from accounts.access import requires
from accounts.service import OPERATOR
from accounts.web import current_identity
from core.db import transaction
from core.events import EventBus
from core.schemas import Body, ErrorBody, Moment, Out, Path, Query, QueryInt, Text
from tickets import knowledge, service
from tickets.policy import Policy

_ERRORS: dict[int, Any] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody,
                           409: ErrorBody, 503: ErrorBody}
knowledge_api = APIBlueprint("knowledge", __name__, url_prefix="/api/v1/knowledge",
                             abp_tags=[Tag(name="knowledge")], abp_security=[{"bearer": []}],
                             abp_responses=_ERRORS)
BLUEPRINTS = (knowledge_api,)
MAX_ROW_ID = 2**31 - 1


def _sessions() -> sessionmaker[Session]:
    return current_app.extensions["hotline.sessions"]  # type: ignore[no-any-return]


def _now() -> datetime:
    return current_app.extensions["hotline.clock"].now()  # type: ignore[no-any-return]


class ArticleHit(Out):
    id: int
    title: str
    category: str
    excerpt: str = Field(description="the start of the answer")
    score: float = Field(description="higher is better; 0 when no query was given")
    matched: list[str] = Field(description="the query's words (分词) the article has")
    updated_at: Moment


class ArticlePage(Out):
    total: int
    limit: int
    offset: int
    words: list[str] = Field(description="the query as the segmenter cut it, stop words out")
    categories: list[str] = Field(description="every article category, to narrow a search")
    items: list[ArticleHit]


class Article(Out):
    id: int
    title: str
    body: str
    category: str
    keywords: str
    active: bool
    version: int
    updated_at: Moment
    updated_by: str = Field(description="who edited it last")


class KnowledgeQuery(Query):
    q: Text(knowledge.MAX_QUERY) = Field(
        "", description="what the caller asks, in their words (e.g. 晚上几点可以倒垃圾); "
                        "empty: every article by category and title")
    category: Text(knowledge.MAX_CATEGORY) = ""
    limit: QueryInt(1, 100) = 20
    offset: QueryInt(0, 100_000) = 0


@knowledge_api.get("", summary="Search the knowledge base (知识库), best match first",
                   responses={200: ArticlePage})
@requires("knowledge.read")
def search(query: KnowledgeQuery) -> Any:
    with _sessions()() as session:
        total, hits = knowledge.search(session, query.q, category=query.category,
                                       limit=query.limit, offset=query.offset)
        page = {"total": total, "limit": query.limit, "offset": query.offset,
                "words": knowledge.words(query.q) if query.q.strip() else [],
                "categories": knowledge.categories(session),
                "items": [{"id": h.article.id, "title": h.article.title,
                           "category": h.article.category,
                           "excerpt": knowledge.excerpt(h.article.body), "score": h.score,
                           "matched": list(h.matched), "updated_at": h.article.updated_at}
                          for h in hits]}
        return ArticlePage.model_validate(page).model_dump(mode="json")


class ArticlePath(Path):
    article_id: QueryInt(1, MAX_ROW_ID)


@knowledge_api.get("/<article_id>", summary="One article of the knowledge base",
                   responses={200: Article})
@requires("knowledge.read")
def read_article(path: ArticlePath) -> Any:
    with _sessions()() as session:
        article = knowledge.get_article(session, path.article_id)
        return Article.model_validate(knowledge.article_view(article)).model_dump(mode="json")


class ArticleBody(Body):
    title: Text(knowledge.MAX_TITLE, min_length=1) = Field(
        description="an article with this title is changed, else one is added")
    body: Text(knowledge.MAX_BODY, min_length=1) = Field(description="the answer")
    category: Text(knowledge.MAX_CATEGORY, min_length=1) = Field(
        description="the article category, e.g. 垃圾分类")
    keywords: Text(knowledge.MAX_KEYWORDS) = Field(
        "", description="words callers use, space-separated (倒垃圾 扔垃圾)")
    active: bool = Field(True, description="false: kept, but not shown to agents")


@knowledge_api.post("", summary="Add an article, or change the one with this title",
                    responses={201: Article, 200: Article})
@requires("knowledge.write")
def save_article(body: ArticleBody) -> Any:
    """201 when added, 200 when the article with this title was changed."""
    who = current_identity()
    with transaction(_sessions()) as session:
        article, created = knowledge.save_article(
            session, title=body.title, body=body.body, category=body.category,
            keywords=body.keywords, active=body.active, actor=who.name, now=_now())
        view = Article.model_validate(knowledge.article_view(article)).model_dump(mode="json")
    return view, 201 if created else 200


class AnswerBody(Body):
    call_id: Text(64, min_length=1) = Field(
        description="the live call (Asterisk Linkedid) the consultation was answered on")


class Answered(Out):
    case_number: str = Field(description="the consultation order, closed (直接办结)")
    state: str
    appeal_type: str
    first_call_resolved: bool
    call_id: str
    article_id: int


@knowledge_api.post("/<article_id>/answers",
                    summary="Answered with this article on the call: a consultation order "
                            "(咨询) taken in on the call and closed at once (首呼解决)",
                    responses={201: Answered})
@requires("orders.open")
def answer_on_call(path: ArticlePath, body: AnswerBody) -> Any:
    """One transaction: the closed order linked to the call, or nothing (409 if the call
    belongs to another order, 400 if no such call is known)."""
    who = current_identity()
    if OPERATOR not in who.roles:  # the intake operator's step (workflow.resolve_on_call)
        abort(403, f"role: {who.name} does not act as 'operator'")
    settings = current_app.extensions["hotline.settings"]
    bus = EventBus(current_app.extensions["hotline.redis"])  # is the call live?
    with transaction(_sessions()) as session:
        order = knowledge.answer_on_call(session, path.article_id, body.call_id,
                                         actor=who.name, bus=bus,
                                         policy=Policy.of_app(current_app.extensions), now=_now())
        # a call that has ended already: its recording filed under the case now
        service.link_call(session, order.case_number, body.call_id, actor=who.name,
                          how="intake", bus=bus,
                          recordings_dir=settings.storage.recordings_dir, now=_now())
        answer = {"case_number": order.case_number, "state": order.state,
                  "appeal_type": order.appeal_type,
                  "first_call_resolved": order.first_call_resolved, "call_id": body.call_id,
                  "article_id": path.article_id}
    return Answered.model_validate(answer).model_dump(mode="json"), 201
