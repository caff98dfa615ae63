"""The knowledge base (知识库, issue 10 item 5) on SQLite and PostgreSQL: callers' own words
find the hand-picked article first, a title hit outranks a body hit, hostile queries are
refused or find nothing; answering a consultation with an article on the call takes in a
consultation order (咨询) bound to the call and closes it at once (直接办结), and when that
fails nothing of it stays."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from core.db import transaction
from tests import api_world
from tests.api_world import World
from tickets import knowledge, service
from tickets.models import (
    CaseCounter,
    KnowledgeArticle,
    KnowledgeTerm,
    WorkOrder,
    WorkOrderCall,
    WorkOrderEvent,
)

NOW = api_world.NOW

# What callers ask, in their words -> the demo article that must come first (by hand).
QUESTIONS = {
    "晚上几点可以倒垃圾": "垃圾分类投放时间",
    "门口有人摆摊卖水果": "占道经营的管理规定",
    "邻居在楼顶加盖了一间房": "违章搭建如何举报",
    "养狗要办证吗": "养犬登记和犬证办理",
    "遛狗不牵绳怎么办": "文明养犬和遛狗规定",
    "店门口挂广告牌要审批吗": "户外广告设置审批",
    "半夜渣土车很吵": "渣土车运输时间和管理",
    "旧沙发怎么扔": "大件垃圾和装修垃圾怎么处理",
    "废电池属于什么垃圾": "生活垃圾分为哪四类",
}


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    built = api_world.build(database_url, tmp_path)
    with transaction(built.sessions) as session:
        knowledge.load_file(session, knowledge.DEMO_ARTICLES, actor="知识管理员", now=NOW)
    yield built
    built.engine.dispose()


def _titles(world: World, query: str, **params: str) -> list[str]:
    reply = world.client.get("/api/v1/knowledge", query_string={"q": query, **params},
                             headers=world.tokens["operator"])
    assert reply.status_code == 200, reply.json
    return [item["title"] for item in reply.json["items"]]


def test_callers_words_find_the_right_article_first(world: World) -> None:
    for question, title in QUESTIONS.items():
        found = _titles(world, question)
        assert found[:1] == [title], (question, found)
    page = world.client.get("/api/v1/knowledge?q=晚上几点可以倒垃圾",
                            headers=world.tokens["operator"]).json
    assert page["words"] == ["晚上", "垃圾", "倒垃圾"]  # 几点, 可以: stop words
    assert page["items"][0]["matched"] == ["晚上", "垃圾", "倒垃圾"]
    assert page["total"] == 4  # the three other articles that say 垃圾 come after
    assert "垃圾分类" in page["categories"] and "犬只管理" in page["categories"]


def test_a_title_hit_ranks_above_a_body_hit_and_the_category_narrows(world: World) -> None:
    with transaction(world.sessions) as session:
        knowledge.save_article(session, title="窨井冒水", category="市政设施",
                               body="雨后窨井冒水，请说明位置，排水公司将到场疏通。",
                               actor="知识管理员", now=NOW)
        knowledge.save_article(session, title="雨天积水", category="市政设施",
                               body="道路积水时，窨井可能冒水，请绕行。",
                               actor="知识管理员", now=NOW)
    assert _titles(world, "窨井") == ["窨井冒水", "井盖缺失或破损的处理", "雨天积水"]
    narrowed = _titles(world, "垃圾", category="渣土运输")
    assert narrowed == ["渣土车运输时间和管理"]
    everything = world.client.get("/api/v1/knowledge?limit=2&offset=1",
                                  headers=world.tokens["auditor"]).json
    assert everything["total"] == 14 and len(everything["items"]) == 2
    # paging: the second page of a search follows the first
    first = _titles(world, "垃圾", limit="2")
    second = _titles(world, "垃圾", limit="2", offset="2")
    assert len(first) == 2 and len(second) == 2 and not set(first) & set(second)


def test_changed_and_withdrawn_articles_are_searched_as_they_are_now(world: World) -> None:
    with transaction(world.sessions) as session:
        article = session.scalar(select(KnowledgeArticle).where(
            KnowledgeArticle.title == "共享单车乱停放"))
        assert article is not None
        later = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
        knowledge.save_article(session, article_id=article.id, title="共享单车乱停放",
                               body="单车堆积请拨打运营企业电话。", category="市容秩序",
                               keywords="电动自行车", actor="老李", now=later)
        article_id = article.id
    assert _titles(world, "电动自行车") == ["共享单车乱停放"]
    assert _titles(world, "堵塞") == []  # the old body's words are gone
    shown = world.client.get(f"/api/v1/knowledge/{article_id}",
                             headers=world.tokens["operator"]).json
    assert (shown["version"], shown["updated_by"], shown["updated_at"]) == (
        2, "老李", "2026-11-25T01:00:00+00:00")
    with transaction(world.sessions) as session:
        knowledge.save_article(session, article_id=article_id, title="共享单车乱停放",
                               body="单车堆积请拨打运营企业电话。", category="市容秩序",
                               keywords="电动自行车", active=False, actor="老李", now=NOW)
    assert _titles(world, "电动自行车") == []


def test_hostile_and_empty_queries(world: World) -> None:
    headers = world.tokens["operator"]
    long = world.client.get("/api/v1/knowledge", query_string={"q": "垃" * 10_000},
                            headers=headers)
    assert long.status_code == 400 and long.json["detail"].startswith("q:")
    for markup in ("<script>alert(1)</script>", "'; DROP TABLE knowledge_terms; --",
                   "%_%", "？？？！！", "的了吗"):
        reply = world.client.get("/api/v1/knowledge", query_string={"q": markup},
                                 headers=headers)
        assert reply.status_code == 200, (markup, reply.json)
        assert reply.json["items"] == [] and reply.json["total"] == 0, markup
    bidi = world.client.get("/api/v1/knowledge", query_string={"q": "垃圾\u202e"},
                            headers=headers)
    assert bidi.status_code == 400
    empty = world.client.get("/api/v1/knowledge?q=", headers=headers).json
    assert empty["total"] == 12 and empty["words"] == []
    assert empty["items"][0]["category"] <= empty["items"][-1]["category"]
    assert world.client.get("/api/v1/knowledge/999999", headers=headers).status_code == 404
    assert world.client.get("/api/v1/knowledge/abc", headers=headers).status_code == 404
    assert world.client.get("/api/v1/knowledge?limit=0", headers=headers).status_code == 400
    with world.sessions() as session:
        assert session.scalar(select(func.count(KnowledgeTerm.id))) > 100  # untouched


def test_articles_refuse_bad_input_and_imports_are_all_or_nothing(world: World) -> None:
    with transaction(world.sessions) as session:
        before = session.scalar(select(func.count(KnowledgeArticle.id)))
    for fields, problem in (({"title": ""}, "title: required"),
                            ({"title": "长" * 201}, "title: at most 200"),
                            ({"category": ""}, "category: required"),
                            ({"body": 5}, "body: text expected")):
        item = {"title": "新文章", "body": "内容", "category": "其他", **fields}
        with pytest.raises(knowledge.KnowledgeError) as refused, \
                transaction(world.sessions) as session:
            knowledge.import_articles(session, [{"title": "先来的", "body": "内容",
                                                 "category": "其他"}, item],
                                      actor="老李", now=NOW)
        assert f"articles[2]: {problem}" in str(refused.value)
    with world.sessions() as session:
        assert session.scalar(select(func.count(KnowledgeArticle.id))) == before


def test_the_kb_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hotline.cli import cli

    monkeypatch.setenv("HOTLINE_STORAGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    runner = CliRunner()
    done = runner.invoke(cli, ["kb", "import", str(knowledge.DEMO_ARTICLES), "--actor", "老李"])
    assert done.exit_code == 0, done.output
    assert done.output.strip() == "12 articles added, 0 changed"
    again = runner.invoke(cli, ["kb", "import", str(knowledge.DEMO_ARTICLES), "--actor", "老李"])
    assert again.output.strip() == "0 articles added, 12 changed"
    added = runner.invoke(cli, ["kb", "add", "--title", "噪音扰民", "--category", "市容秩序",
                                "--body", "夜间施工噪音请拨打 12319。", "--keywords",
                                "吵 施工", "--actor", "老李"])
    assert added.exit_code == 0 and added.output.strip() == "13  噪音扰民  added"
    found = runner.invoke(cli, ["kb", "search", "晚上几点可以倒垃圾", "--json"])
    assert found.exit_code == 0, found.output
    assert '"title": "垃圾分类投放时间"' in found.output.split('"items"')[1].split("}")[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("articles: [{title: 只有标题}]", encoding="utf-8")
    refused = runner.invoke(cli, ["kb", "import", str(bad), "--actor", "老李"])
    assert refused.exit_code != 0
    assert "articles[1]: body: text expected" in str(refused.exception)


# --- the answer on the call (首呼解决) ------------------------------------------------------------


def _store_call(world: World, call_id: str) -> None:
    from telephony import records

    epoch = NOW.timestamp() - 600
    with transaction(world.sessions) as session:
        records.store_call(session, {
            "call_id": call_id, "caller_number": "13700001111", "caller_name": "",
            "entry_number": "12319", "started_at": epoch, "ended_at": epoch + 90,
            "duration_seconds": 90, "outcome": "answered", "queue": "intake",
            "queue_position": 1, "wait_seconds": 2, "short_abandon": False, "agent": "8001",
            "connected_at": epoch + 2, "talk_seconds": 88, "hold_seconds": 0,
            "hangup_cause": 16, "hangup_cause_text": "", "ivr_path": [],
            "agent_attempts": [], "transfers": [],
            "legs": [{"uniqueid": call_id, "channel": "PJSIP/trunk-00000009",
                      "role": "caller", "number": "13700001111", "name": "",
                      "created_at": epoch}],
            "recording": None, "incomplete": False})


def _article_id(world: World, title: str) -> int:
    with world.sessions() as session:
        found = session.scalar(select(KnowledgeArticle.id).where(
            KnowledgeArticle.title == title))
    assert found is not None
    return found


def _orders(world: World) -> tuple[int, int, int, int]:
    with world.sessions() as session:
        return (session.scalar(select(func.count(WorkOrder.id))) or 0,
                session.scalar(select(func.count(WorkOrderCall.id))) or 0,
                session.scalar(select(func.count(WorkOrderEvent.id))) or 0,
                sum(session.scalars(select(CaseCounter.last_number))))


def test_answered_with_an_article_closes_a_consultation_bound_to_the_call(
        world: World) -> None:
    call_id = "1764400000.77"
    _store_call(world, call_id)
    article = _article_id(world, "垃圾分类投放时间")
    reply = world.client.post(f"/api/v1/knowledge/{article}/answers", json={"call_id": call_id},
                              headers=world.tokens["operator"])
    assert reply.status_code == 201, reply.json
    case = reply.json["case_number"]
    assert reply.json == {"case_number": case, "state": "closed", "appeal_type": "enquiry",
                          "first_call_resolved": True, "call_id": call_id,
                          "article_id": article}
    order = world.client.get(f"/api/v1/orders/{case}", headers=world.tokens["shift_chief"]).json
    assert (order["appeal_type"], order["state"], order["channel"], order["description"]) == (
        "enquiry", "closed", "phone", "咨询：垃圾分类投放时间")
    assert order["closed_at"] == "2026-11-24T02:00:00+00:00"
    assert [(h["action"], h["from"], h["to"], h["actor"]) for h in order["history"]] == [
        ("create", "", "intake", "operator-account"),
        ("resolve_on_call", "intake", "closed", "operator-account")]
    assert order["history"][1]["note"] == f"知识库答复 #{article}《垃圾分类投放时间》"
    assert [(c["call_id"], c["how"], c["pending"]) for c in order["calls"]] == [
        (call_id, "intake", False)]
    call = world.client.get(f"/api/v1/calls/{call_id}", headers=world.tokens["operator"]).json
    assert call["case_number"] == case


def test_an_answer_that_fails_leaves_nothing(world: World, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    article = _article_id(world, "养犬登记和犬证办理")
    headers = world.tokens["operator"]
    # the call belongs to another order already (api_world's order took it in)
    with transaction(world.sessions) as session:
        service.link_call(session, world.case, world.call_id, actor="operator-account",
                          now=NOW)
    before = _orders(world)
    taken = world.client.post(f"/api/v1/knowledge/{article}/answers",
                              json={"call_id": world.call_id}, headers=headers)
    assert taken.status_code == 409 and world.case in taken.json["detail"]
    assert _orders(world) == before
    # no such call, finished or under way
    unknown = world.client.post(f"/api/v1/knowledge/{article}/answers",
                                json={"call_id": "1764499999.1"}, headers=headers)
    assert unknown.status_code == 400 and unknown.json["detail"].startswith("call_id:")
    assert _orders(world) == before
    # the close itself fails after the order was taken in: the order goes too
    call_id = "1764400000.88"
    _store_call(world, call_id)

    def refuse(*args: object, **kwargs: object) -> None:
        raise service.ConcurrentChange("someone else moved it")

    monkeypatch.setattr(service, "transition", refuse)
    failed = world.client.post(f"/api/v1/knowledge/{article}/answers",
                               json={"call_id": call_id}, headers=headers)
    assert failed.status_code == 409
    assert _orders(world) == before
    monkeypatch.undo()
    # withdrawn article, no article, not an operator, no call id
    with transaction(world.sessions) as session:
        knowledge.save_article(session, article_id=article, title="养犬登记和犬证办理",
                               body="已停用", category="犬只管理", active=False,
                               actor="老李", now=NOW)
    for path, body, who, status in (
            (f"/api/v1/knowledge/{article}/answers", {"call_id": call_id}, "operator", 400),
            ("/api/v1/knowledge/424242/answers", {"call_id": call_id}, "operator", 404),
            (f"/api/v1/knowledge/{article}/answers", {}, "operator", 400),
            (f"/api/v1/knowledge/{article}/answers", {"call_id": call_id}, "shift_chief", 403)):
        reply = world.client.post(path, json=body, headers=world.tokens[who])
        assert reply.status_code == status, (path, body, who, reply.json)
    assert _orders(world) == before


def test_answered_while_the_call_is_still_up_the_record_joins_when_it_ends(
        world: World) -> None:
    """The telephony service announced the call (call.started) and no record exists yet:
    the consultation is closed on it at once, the link pending; when the call ends and its
    record is stored, the record shows the case number."""
    from core.events import EventBus
    from telephony.events import CallStarted

    call_id = f"1764400{uuid.uuid4().int % 1000:03d}.{uuid.uuid4().int % 10_000}"
    EventBus(world.app.extensions["hotline.redis"]).publish(
        CallStarted(at=NOW.timestamp(), call_id=call_id, caller_number="13700001111"))
    article = _article_id(world, "渣土车运输时间和管理")
    reply = world.client.post(f"/api/v1/knowledge/{article}/answers", json={"call_id": call_id},
                              headers=world.tokens["operator"])
    assert reply.status_code == 201, reply.json
    case = reply.json["case_number"]
    order = world.client.get(f"/api/v1/orders/{case}", headers=world.tokens["operator"]).json
    assert (order["state"], order["first_call_resolved"], order["call_id"]) == (
        "closed", True, call_id)
    assert [(c["call_id"], c["how"], c["pending"]) for c in order["calls"]] == [
        (call_id, "intake", True)]
    _store_call(world, call_id)
    with transaction(world.sessions) as session:
        service.call_ended(session, {"call_id": call_id}, now=NOW)
    order = world.client.get(f"/api/v1/orders/{case}", headers=world.tokens["operator"]).json
    assert [(c["call_id"], c["pending"], c["outcome"]) for c in order["calls"]] == [
        (call_id, False, "answered")]
    call = world.client.get(f"/api/v1/calls/{call_id}", headers=world.tokens["operator"]).json
    assert call["case_number"] == case


def test_the_demo_loads_the_articles_once(tmp_path: Path) -> None:
    from core.db import make_engine, session_factory
    from hotline.demo import prepare
    from tests.conftest import make_settings

    settings = make_settings(tmp_path)
    prepare(settings, demo_agents=True)
    prepare(settings, demo_agents=True)  # a second `hotline up` adds nothing
    engine = make_engine(settings.storage.database_url)
    with session_factory(engine)() as session:
        titles = list(session.scalars(select(KnowledgeArticle.title)))
        editors = set(session.scalars(select(KnowledgeArticle.updated_by)))
    engine.dispose()
    assert len(titles) == 12 and "占道经营的管理规定" in titles and editors == {"demo"}


def test_an_administrator_writes_articles_over_http(world: World) -> None:
    admin = world.tokens["admin"]
    new = {"title": "噪音扰民", "body": "夜间施工噪音请拨打 12319 反映。", "category": "市容秩序",
           "keywords": "吵 施工 半夜"}
    added = world.client.post("/api/v1/knowledge", json=new, headers=admin)
    assert added.status_code == 201, added.json
    assert (added.json["title"], added.json["version"], added.json["updated_by"],
            added.json["updated_at"]) == ("噪音扰民", 1, "admin-account",
                                          "2026-11-24T02:00:00+00:00")
    assert _titles(world, "半夜施工太吵")[:1] == ["噪音扰民"]
    changed = world.client.post("/api/v1/knowledge", json={**new, "active": False},
                                headers=admin)
    assert changed.status_code == 200 and changed.json["version"] == 2
    assert changed.json["id"] == added.json["id"]
    assert _titles(world, "半夜施工太吵")[:1] != ["噪音扰民"]
    for wrong in ({**new, "title": ""}, {**new, "body": "长" * 20_001},
                  {**new, "category": None}, {**new, "author": "x"}):
        refused = world.client.post("/api/v1/knowledge", json=wrong, headers=admin)
        assert refused.status_code == 400, (wrong, refused.json)
    operator = world.client.post("/api/v1/knowledge", json=new,
                                 headers=world.tokens["operator"])
    assert operator.status_code == 403
