"""The knowledge base (知识库) agents answer consultations (咨询) from, and the answer on the
call that closes a consultation at once (首呼解决 / 直接办结).

Articles are searched in Chinese by word: jieba cuts an article's title, keywords and body
into words once, when it is saved (`knowledge_terms`), and a query into words when it is
asked; an article matching more of the query's rarer words ranks higher, a word in the title
counting more than one in the keywords, more than one in the body. The ranking is computed
here from plain rows, so SQLite and PostgreSQL give the same answers.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jieba
import yaml
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from core.errors import HotlineError
from core.events import EventBus
from tickets import service, workflow
from tickets.models import KnowledgeArticle, KnowledgeTerm, WorkOrder
from tickets.policy import DEFAULT_POLICY, Policy

DEMO_ARTICLES = Path(__file__).with_name("knowledge.yaml")
DOMAIN_WORDS = Path(__file__).with_name("knowledge_words.txt")  # jieba's user dictionary
MAX_TITLE, MAX_BODY, MAX_CATEGORY, MAX_KEYWORDS = 200, 20_000, 40, 300
MAX_QUERY = 200  # characters; the API refuses longer queries
MAX_QUERY_WORDS = 32
MAX_TERM = 40
# Where a word was found, and what a match there is worth.
FIELD_WEIGHTS = {"title": 10.0, "keywords": 6.0, "body": 2.0}
# Words that say nothing of what a caller asks about.
_STOP_WORDS = (
    "的 了 吗 呢 吧 啊 呀 嘛 么 是 在 有 和 与 或 及 就 都 也 还 很 被 把 让 给 对 从 到 去 来 "
    "我 你 他 她 它 我们 你们 他们 这 那 这个 那个 哪 哪里 哪儿 什么 怎么 怎么办 怎样 如何 "
    "为什么 可以 能 能不能 可不可以 要 需要 想 请问 请 问 一下 几点 多少 是否 吗 会 应该 "
    "个 家 里 上 下 有人 没有 不 没")
STOP_WORDS = frozenset(_STOP_WORDS.split())
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class KnowledgeError(HotlineError):
    """Input an article or a search cannot take; the message names the field."""


class ArticleNotFound(KnowledgeError):
    status = 404


class TitleTaken(KnowledgeError):
    status = 409


# --- segmentation (分词) ----------------------------------------------------------------------

_tokenizer: jieba.Tokenizer | None = None
_tokenizer_lock = threading.Lock()


def _segmenter() -> jieba.Tokenizer:
    """jieba's tokenizer, initialised once per process, quietly (its dictionary cache in the
    temporary directory), with the domain's words (占道经营, 渣土车 ...) added."""
    global _tokenizer
    if _tokenizer is not None:
        return _tokenizer
    with _tokenizer_lock:
        if _tokenizer is None:
            jieba.setLogLevel(logging.WARNING)  # no "Building prefix dict" on stderr
            tokenizer = jieba.Tokenizer()
            tokenizer.initialize()
            tokenizer.load_userdict(str(DOMAIN_WORDS))
            _tokenizer = tokenizer
        return _tokenizer


def _useful(word: str) -> bool:
    return (word not in STOP_WORDS and len(word) <= MAX_TERM
            and any(unicodedata.category(c)[0] in "LN" for c in word))


def words(text: str) -> list[str]:
    """The words of `text` a search matches on, in order, each once: jieba's search mode
    (a long word and the shorter words inside it), lower-cased, without punctuation and
    stop words."""
    text = unicodedata.normalize("NFKC", _CONTROL.sub(" ", text)).lower()
    seen: dict[str, None] = {}
    for word in _segmenter().cut_for_search(text, HMM=False):
        word = word.strip()
        if word and _useful(word):
            seen.setdefault(word, None)
    return list(seen)


def _counts(text: str) -> Counter[str]:
    text = unicodedata.normalize("NFKC", _CONTROL.sub(" ", text)).lower()
    return Counter(w for w in (w.strip() for w in _segmenter().cut_for_search(text, HMM=False))
                   if w and _useful(w))


# --- articles ---------------------------------------------------------------------------------


def _clean(value: object, field: str, limit: int, required: bool = True) -> str:
    if not isinstance(value, str):
        raise KnowledgeError(f"{field}: text expected")
    cleaned = _CONTROL.sub("", value).strip()
    if required and not cleaned:
        raise KnowledgeError(f"{field}: required")
    if len(cleaned) > limit:
        raise KnowledgeError(f"{field}: at most {limit} characters (got {len(cleaned)})")
    return cleaned


def _keywords(value: object) -> str:
    if isinstance(value, list | tuple):
        value = " ".join(str(v) for v in value)
    return " ".join(_clean(value or "", "keywords", MAX_KEYWORDS, required=False).split())


def save_article(session: Session, *, title: str, body: str, category: str,
                 keywords: object = "", active: bool = True, actor: str,
                 article_id: int | None = None, now: datetime) -> tuple[KnowledgeArticle, bool]:
    """Add an article, or change one: the one with `article_id`, else the one with this
    title. Its words are cut anew. Returns the article and whether it is new."""
    title = _clean(title, "title", MAX_TITLE)
    body = _clean(body, "body", MAX_BODY)
    category = _clean(category, "category", MAX_CATEGORY)
    keywords = _keywords(keywords)
    actor = _clean(actor, "actor", 50)
    if not isinstance(active, bool):
        raise KnowledgeError("active: true or false")
    same_title = session.scalar(select(KnowledgeArticle).where(KnowledgeArticle.title == title))
    if article_id is not None:
        article = get_article(session, article_id)
        if same_title is not None and same_title.id != article.id:
            raise TitleTaken(f"title: article {same_title.id} has the title {title!r}")
    else:
        article = same_title
    created = article is None
    if article is None:
        article = KnowledgeArticle(title=title, body=body, category=category,
                                   keywords=keywords, active=active, version=1,
                                   created_at=now, updated_at=now, updated_by=actor)
        session.add(article)
        session.flush()
    else:
        article.title, article.body, article.category = title, body, category
        article.keywords, article.active = keywords, active
        article.version += 1
        article.updated_at, article.updated_by = now, actor
        session.execute(delete(KnowledgeTerm).where(KnowledgeTerm.article_id == article.id))
    for field, text in (("title", title), ("keywords", keywords), ("body", body)):
        session.add_all(KnowledgeTerm(article_id=article.id, field=field, term=term, hits=hits)
                        for term, hits in sorted(_counts(text).items()))
    session.flush()
    return article, created


def get_article(session: Session, article_id: int) -> KnowledgeArticle:
    article = session.get(KnowledgeArticle, article_id) \
        if isinstance(article_id, int) and 0 < article_id < 2**31 else None
    if article is None:
        raise ArticleNotFound(f"no knowledge article {article_id!r}")
    return article


@dataclass(frozen=True)
class Imported:
    added: int
    changed: int

    def __str__(self) -> str:
        return f"{self.added} articles added, {self.changed} changed"


def import_articles(session: Session, data: object, *, actor: str, now: datetime) -> Imported:
    """Articles from a YAML document ({"articles": [...]} or the list itself), each with
    title, body, category and optionally keywords (text or a list) and active; an article
    whose title exists already is changed. All or nothing: the caller's transaction."""
    items = data.get("articles") if isinstance(data, Mapping) else data
    if not isinstance(items, list) or not items:
        raise KnowledgeError("articles: a list of articles with title, body and category")
    added = changed = 0
    for index, item in enumerate(items, 1):
        if not isinstance(item, Mapping):
            raise KnowledgeError(f"articles[{index}]: a mapping with title, body, category")
        unknown = set(item) - {"title", "body", "category", "keywords", "active"}
        if unknown:
            raise KnowledgeError(f"articles[{index}]: unknown field {sorted(unknown)[0]!r}")
        try:
            _, created = save_article(
                session, title=item.get("title"), body=item.get("body"),  # type: ignore[arg-type]
                category=item.get("category"), keywords=item.get("keywords", ""),  # type: ignore[arg-type]
                active=item.get("active", True), actor=actor, now=now)
        except KnowledgeError as exc:
            raise KnowledgeError(f"articles[{index}]: {exc}") from None
        added, changed = added + created, changed + (not created)
    return Imported(added, changed)


def load_file(session: Session, path: str | Path, *, actor: str, now: datetime) -> Imported:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise KnowledgeError(f"knowledge file {path}: not readable YAML: {first}") from None
    return import_articles(session, data, actor=actor, now=now)


def ensure_demo(session: Session, *, now: datetime) -> Imported | None:
    """The demo articles, on a knowledge base that has none yet."""
    if session.scalar(select(func.count(KnowledgeArticle.id))):
        return None
    return load_file(session, DEMO_ARTICLES, actor="demo", now=now)


def categories(session: Session) -> list[str]:
    """The article categories agents can narrow a search to (of active articles)."""
    return list(session.scalars(select(KnowledgeArticle.category).where(
        KnowledgeArticle.active.is_(True)).distinct().order_by(KnowledgeArticle.category)))


# --- search -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    article: KnowledgeArticle
    score: float
    matched: tuple[str, ...]  # the query's words the article has


def search(session: Session, query: str = "", *, category: str = "", limit: int = 20,
           offset: int = 0) -> tuple[int, list[Hit]]:
    """Active articles for `query`, best first, with the total: each of the query's words
    an article has adds its field's weight (title above keywords above body) times how rare
    the word is among the articles (idf), so a title hit outranks a body hit of the same
    word. No query: every active article (of `category`), by category and title."""
    if not isinstance(query, str) or len(query) > MAX_QUERY:
        raise KnowledgeError(f"q: at most {MAX_QUERY} characters")
    where = [KnowledgeArticle.active.is_(True)]
    if category:
        where.append(KnowledgeArticle.category == category)
    if not query.strip():
        total = session.scalar(select(func.count(KnowledgeArticle.id)).where(*where)) or 0
        rows = session.scalars(select(KnowledgeArticle).where(*where).order_by(
            KnowledgeArticle.category, KnowledgeArticle.title).limit(limit).offset(offset))
        return total, [Hit(a, 0.0, ()) for a in rows]
    asked = words(query)[:MAX_QUERY_WORDS]
    if not asked:
        return 0, []
    matches = session.execute(
        select(KnowledgeTerm.article_id, KnowledgeTerm.field, KnowledgeTerm.term,
               KnowledgeTerm.hits)
        .join(KnowledgeArticle, KnowledgeArticle.id == KnowledgeTerm.article_id)
        .where(KnowledgeTerm.term.in_(asked), *where)).all()
    articles = session.scalar(select(func.count(KnowledgeArticle.id)).where(
        KnowledgeArticle.active.is_(True))) or 1
    having: dict[str, set[int]] = {}
    for article_id, _field, term, _hits in matches:
        having.setdefault(term, set()).add(article_id)
    idf = {term: math.log(1 + articles / len(ids)) for term, ids in having.items()}
    scores: dict[int, float] = {}
    found: dict[int, set[str]] = {}
    for article_id, field, term, hits in matches:
        boost = 1 + 0.1 * min(hits - 1, 4)  # said again in the body: a little more
        scores[article_id] = scores.get(article_id, 0.0) + FIELD_WEIGHTS[field] * idf[term] \
            * boost
        found.setdefault(article_id, set()).add(term)
    ranked = sorted(scores, key=lambda a: (-round(scores[a], 9), a))
    page = ranked[offset:offset + limit]
    rows = {a.id: a for a in session.scalars(select(KnowledgeArticle).where(
        KnowledgeArticle.id.in_(page)))} if page else {}
    return len(ranked), [Hit(rows[a], round(scores[a], 3),
                             tuple(w for w in asked if w in found[a])) for a in page]


def excerpt(body: str, length: int = 80) -> str:
    flat = " ".join(body.split())
    return flat if len(flat) <= length else flat[:length] + "…"


def article_view(article: KnowledgeArticle) -> dict[str, Any]:
    return {"id": article.id, "title": article.title, "body": article.body,
            "category": article.category, "keywords": article.keywords,
            "active": article.active, "version": article.version,
            "updated_at": article.updated_at, "updated_by": article.updated_by}


# --- the answer on the call (首呼解决) ------------------------------------------------------------


def answer_on_call(session: Session, article_id: int, call_id: str, *, actor: str,
                   bus: EventBus | None = None, policy: Policy = DEFAULT_POLICY,
                   now: datetime) -> WorkOrder:
    """An agent answered the caller's consultation with `article_id` on call `call_id`:
    a consultation order (咨询) is taken in on that call and closed at once as a first-call
    resolution (`resolve_on_call`, 直接办结), its history naming the article. In the
    caller's transaction: if any step fails (the call belongs to another order, no such
    call, the article withdrawn) nothing of it stays once the transaction rolls back."""
    article = get_article(session, article_id)
    if not article.active:
        raise KnowledgeError(f"article: {article.id} 《{article.title}》 is withdrawn")
    if not isinstance(call_id, str) or not call_id.strip():
        raise KnowledgeError("call_id: the live call the consultation was answered on")
    order = service.open_order(
        session, appeal_type="enquiry", description=f"咨询：{article.title}", channel="phone",
        actor=actor, call_id=call_id, bus=bus, policy=policy, now=now)
    return service.transition(
        session, order.case_number, "resolve_on_call", actor=actor, role=workflow.OPERATOR,
        note=f"知识库答复 #{article.id}《{article.title}》", policy=policy, now=now)

