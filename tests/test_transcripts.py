"""Transcripts stored, searched and shown: fixtures of stored Chinese transcripts (what a
Mandarin model would have written, word by word with spaces), on SQLite and PostgreSQL.

What must hold: a phrase finds its call, ranked, with the leg and the offset to jump to;
personal numbers (mobile, ID number with its check digit, bank card by Luhn) are masked in
every view and absent from the index; the unmasked view needs the privilege and is audited;
a keyword heard raises one alert, relayed to supervisors' desks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from accounts.access import PERMISSIONS
from accounts.audit import AuditEntry
from accounts.service import ROLES
from agent_desk import feed
from agent_desk.relay import DeskRelay
from core.db import transaction
from core.events import EventBus
from hotline.cli import cli
from recordings import privacy, transcripts
from recordings.speech import Utterance, Word
from tests import api_world
from tests.api_world import NOW, World
from tickets import service

ID_NUMBER = "11010519491231002X"  # GB 11643's own example: check digit X (worked by hand)
ID_SPOKEN = "幺 幺 零 幺 零 五 幺 九 四 九 幺 二 三 幺 零 零 二 X"
MOBILE = "13912345678"
CARD = "4111111111111111"  # passes Luhn


def _utterance(start: float, text: str) -> Utterance:
    words = text.split()
    step = 0.4
    return Utterance(start, start + step * len(words), text, tuple(
        Word(w, round(start + i * step, 2), round(start + (i + 1) * step, 2), 0.9)
        for i, w in enumerate(words)))


# call -> leg -> utterances (start seconds, text)
FIXTURES = {
    "1764460000.1": {
        "caller": [(1.0, "你好 我 要 报告 一下"),
                   (6.5, "我们 楼 里 煤气 泄漏 了 味道 很 大 煤气 泄漏 很 危险"),
                   (15.0, f"我 的 身份证 号 是 {ID_NUMBER} 电话 {MOBILE}")],
        "agent": [(3.0, "您好 请 讲"), (20.0, "请 您 马上 离开 房间 不要 开关 电器")]},
    "1764460000.2": {
        "caller": [(2.0, "小区 门口 有 一点 煤气 味道 不 知道 是不是 泄漏 隔壁 在 装修 吵 得 很"),
                   (9.0, f"我 的 身份证 是 {ID_SPOKEN}")],
        "agent": [(4.0, "好的 我们 派 人 去 看看")]},
    "1764460000.3": {
        "caller": [(1.5, "路灯 不亮 了 银行卡 号 " + CARD + " 被 人 捡到")],
        "agent": [(3.5, "请问 还有 什么 需要")]},
}


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    built = api_world.build(database_url, tmp_path)
    with transaction(built.sessions) as session:
        for n, (call_id, legs) in enumerate(FIXTURES.items()):
            for leg, said in legs.items():
                transcripts.store(session, sha256=f"{n}{leg[0]}".ljust(64, "0"),
                                  call_id=call_id, leg=leg, engine="vosk", model="fixture",
                                  utterances=[_utterance(s, t) for s, t in said],
                                  audio_seconds=30.0, now=NOW)
    yield built
    built.engine.dispose()


def test_personal_numbers_are_found_by_their_checks() -> None:
    assert privacy.mask(f"号码 {MOBILE} 好") == "号码 139****5678 好"
    assert privacy.mask(f"证 {ID_NUMBER}") == "证 1101**********002X"
    assert privacy.mask("证 440524188001010014") == "证 4405**********0014"
    assert privacy.mask(f"卡 {CARD}") == "卡 4111********1111"
    # spoken digits with spaces between them are one number
    assert privacy.mask(f"身份证 {ID_SPOKEN} 对") == "身份证 1101**********002X 对"
    assert privacy.mask("幺 三 九 幺 二 三 四 五 六 七 八") == "139****5678"
    # a number failing every check is still masked whole; short numbers stay
    assert privacy.mask("号 12345678901234") == "号 **************"
    assert privacy.mask("人民路 108 号 3 单元") == "人民路 108 号 3 单元"
    kinds = [f.kind for f in privacy.find(f"{MOBILE} {ID_NUMBER} {CARD} 440524188001010015")]
    assert kinds == ["mobile", "id_number", "bank_card", "number"]


def _said(*pieces: tuple[float, float, str]) -> list[Utterance]:
    return [Utterance(start, end, text) for start, end, text in pieces]


def test_a_number_read_in_groups_over_utterances_is_masked_as_one_number() -> None:
    # an ID number (GB 11643's example, check digit X) split by the engine's endpointing
    in_two = _said((10.0, 12.0, "我 的 身份证 号 是 1101 0519"), (13.0, 15.0, "4912 3100 2X 对"))
    assert privacy.mask_each(in_two) == ["我 的 身份证 号 是 1101****", "******002X 对"]
    assert privacy.for_index_each(in_two) == ["我 的 身份证 号 是  ", "  对"]
    assert [[f.kind for f in each] for each in privacy.find_each(in_two)] == [
        ["id_number"], ["id_number"]]
    # another, in three: 8, 6 and 4 digits
    in_three = _said((1.0, 3.0, "证件 号 4405 2418"), (4.5, 6.0, "8001 01"),
                     (7.0, 9.0, "0014 好 的"))
    assert privacy.mask_each(in_three) == ["证件 号 4405****", "******", "0014 好 的"]
    # a mobile read 3 + 4 + 4, given out of order: each comes back in its own place
    mobile = _said((0.0, 1.5, "电话 139"), (4.0, 5.0, "5678 谢谢"), (2.0, 3.2, "1234"))
    assert privacy.mask_each(mobile) == ["电话 139", "5678 谢谢", "****"]
    # spoken digits, 5 + 6 of them
    spoken = _said((3.0, 5.0, "手机 幺 三 九 幺 二"), (6.0, 8.0, "三 四 五 六 七 八 对"))
    assert privacy.mask_each(spoken) == ["手机 139**", "**5678 对"]


def test_numbers_apart_in_time_or_in_words_are_not_one_number() -> None:
    # two short numbers a minute apart (or past the joint's limit) are two numbers
    apart = _said((0.0, 2.0, "电话 139 1234"), (62.0, 63.0, "5678 谢谢"))
    assert privacy.mask_each(apart) == ["电话 139 1234", "5678 谢谢"]
    assert privacy.mask_each(_said((0.0, 2.0, "电话 139 1234"), (8.5, 9.5, "5678 谢谢"))) == [
        "电话 139 1234", "5678 谢谢"]
    assert privacy.mask_each(_said((0.0, 2.0, "电话 139 1234"), (6.5, 7.5, "5678 谢谢"))) == [
        "电话 139****", "5678 谢谢"]
    # a word between the groups: the joint is no gap of one number
    worded = _said((0.0, 2.0, "房间 139 1234 号"), (2.5, 3.5, "5678 谢谢"))
    assert privacy.mask_each(worded) == ["房间 139 1234 号", "5678 谢谢"]
    assert privacy.for_index_each(worded) == ["房间 139 1234 号", "5678 谢谢"]
    # a whole number in one utterance is as `mask` has it
    assert privacy.mask_each(_said((0.0, 3.0, f"号码 {MOBILE} 好"))) == ["号码 139****5678 好"]


def test_a_number_still_growing_at_the_end_of_a_text_is_not_shown() -> None:
    assert privacy.mask_each(_said((0.0, 2.0, "我的手机号是138123")), growing=True) == [
        "我的手机号是******"]
    assert privacy.mask_each(_said((0.0, 2.0, "我的手机号是 13812345678")), growing=True) == [
        "我的手机号是 ***********"]  # it may still be an ID number's start
    assert privacy.mask_each(_said((0.0, 2.0, "我的手机号是 138 1234 5678 对")),
                             growing=True) == ["我的手机号是 138****5678 对"]
    # the growing text continues the one before it
    assert privacy.mask_each(_said((0.0, 2.0, "证 1101 0519"), (2.2, 2.2, "4912 3100 2X 对")),
                             growing=True) == ["证 1101****", "******002X 对"]
    assert privacy.mask_each(_said((0.0, 2.0, "证 1101 0519"), (2.2, 2.2, "4912")),
                             growing=True) == ["证 ********", "****"]


def _search(world: World, q: str, role: str = "supervisor") -> dict:
    reply = world.client.get("/api/v1/transcripts/search", query_string={"q": q},
                             headers=world.tokens[role])
    assert reply.status_code == 200, reply.json
    return reply.json


def test_a_phrase_finds_its_call_ranked_with_the_moment_to_jump_to(world: World) -> None:
    page = _search(world, "煤气泄漏")
    found = [(i["recording"]["call_id"], i["recording"]["leg"], i["offset_seconds"])
             for i in page["items"]]
    # the call where the caller said it twice first, then the one that said both words once
    assert found == [("1764460000.1", "caller", 6.5), ("1764460000.2", "caller", 2.0)]
    assert page["items"][0]["score"] > page["items"][1]["score"]
    assert page["items"][0]["recording"]["sha256"] == "0c".ljust(64, "0")
    # the agent's words are on the agent's leg
    agent = _search(world, "离开房间")["items"]
    assert [(i["recording"]["call_id"], i["recording"]["leg"], i["offset_seconds"])
            for i in agent] == [("1764460000.1", "agent", 20.0)]
    assert _search(world, "垃圾分类")["items"] == []


def test_personal_numbers_are_never_in_a_result_or_in_the_index(world: World) -> None:
    for q in ("身份证", "银行卡", "电话"):
        for item in _search(world, q)["items"]:
            for secret in (ID_NUMBER, MOBILE, CARD, "19491231", "12345678"):
                assert secret not in item["text"], (q, item)
    texts = [i["text"] for i in _search(world, "身份证")["items"]]
    assert sorted(texts) == sorted([
        "我 的 身份证 号 是 1101**********002X 电话 139****5678",
        "我 的 身份证 是 1101**********002X"])
    with world.sessions() as session:
        rows = transcripts.index_rows(session)
    assert rows and not any(ch.isdigit() or ch in "幺" for row in rows for ch in row
                            if ch not in "X")
    everything = " ".join(rows)
    assert "身份证" in everything and "煤气" in everything
    for secret in (ID_NUMBER, MOBILE, CARD, "1101", "002X", "5678", "1111"):
        assert secret.lower() not in everything
    # searching by the number finds nothing
    assert _search(world, ID_NUMBER)["items"] == []
    assert _search(world, MOBILE)["words"] == []


def test_a_number_split_over_utterances_is_in_no_view_no_excerpt_and_not_in_the_index(
        world: World) -> None:
    call = "1764460000.4"
    with transaction(world.sessions) as session:
        stored = transcripts.store(
            session, sha256="4c".ljust(64, "0"), call_id=call, leg="caller", engine="vosk",
            model="fixture", audio_seconds=30.0, now=NOW, utterances=[
                _utterance(1.0, "我 的 身份证 号 是 1101 0519"),  # ends at 4.2
                _utterance(5.0, "4912 3100 2X 登记 过"),  # ends at 7.0
                _utterance(8.0, "电话 139 1234"),  # ends at 9.2
                _utterance(10.0, "5678 拜托 了")])
        alerts = transcripts.keyword_hits(stored, transcripts.segments_of(session, stored),
                                          ("登记", "拜托"), NOW.timestamp())
    assert [(a.keyword, a.excerpt) for a in alerts] == [
        ("登记", "******002X 登记 过"), ("拜托", "5678 拜托 了")]

    masked = world.client.get(f"/api/v1/transcripts/{call}", headers=world.tokens["operator"])
    assert masked.status_code == 200
    caller = masked.json["transcripts"][0]
    assert [s["text"] for s in caller["segments"]] == [
        "我 的 身份证 号 是 1101****", "******002X 登记 过", "电话 139****", "5678 拜托 了"]
    assert caller["text"] == ("我 的 身份证 号 是 1101****\n******002X 登记 过\n"
                              "电话 139****\n5678 拜托 了")
    assert [len(s["words"]) for s in caller["segments"]] == [0, 0, 0, 0]
    for secret in ("0519", "4912", "3100", "1234"):
        assert secret not in json.dumps(masked.json), secret

    texts = {i["text"] for q in ("身份证", "登记", "电话", "拜托")
             for i in _search(world, q)["items"] if i["recording"]["call_id"] == call}
    assert texts == {"我 的 身份证 号 是 1101****", "******002X 登记 过", "电话 139****",
                     "5678 拜托 了"}
    with world.sessions() as session:
        rows = transcripts.index_rows(session)
    assert not [row for row in rows if any(ch.isdigit() or ch in "幺" for ch in row)]
    assert "登记 过" in rows and "拜托 了" in rows and "电话" in rows  # the words are there
    for group in ("1101", "0519", "4912", "3100", "139", "1234", "5678"):
        assert _search(world, group)["items"] == [], group

    shown = world.client.get(f"/api/v1/transcripts/{call}?unmasked=true",
                             headers=world.tokens["sees_phone"])
    assert shown.status_code == 200
    assert [s["text"] for s in shown.json["transcripts"][0]["segments"]] == [
        "我 的 身份证 号 是 1101 0519", "4912 3100 2X 登记 过", "电话 139 1234",
        "5678 拜托 了"]


def test_the_unmasked_view_needs_the_privilege_and_is_audited(world: World) -> None:
    call = "1764460000.1"
    masked = world.client.get(f"/api/v1/transcripts/{call}", headers=world.tokens["operator"])
    assert masked.status_code == 200
    caller = next(t for t in masked.json["transcripts"] if t["leg"] == "caller")
    assert ID_NUMBER not in json.dumps(masked.json) and MOBILE not in json.dumps(masked.json)
    assert caller["segments"][2]["text"] == (
        "我 的 身份证 号 是 1101**********002X 电话 139****5678")
    assert caller["segments"][2]["words"] == []  # the words would give the digits away
    assert caller["segments"][1]["words"][3] == {"word": "煤气", "start": 7.7, "end": 8.1,
                                                 "confidence": 0.9}
    assert [s["speaker"] for s in caller["segments"]] == ["caller"] * 3

    refused = world.client.get(f"/api/v1/transcripts/{call}?unmasked=true",
                               headers=world.tokens["operator"])
    assert refused.status_code == 403
    shown = world.client.get(f"/api/v1/transcripts/{call}?unmasked=true",
                             headers=world.tokens["sees_phone"])
    assert shown.status_code == 200 and shown.json["unmasked"] is True
    assert ID_NUMBER in json.dumps(shown.json, ensure_ascii=False)
    with world.sessions() as session:
        audited = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "transcript_shown")).all()
    assert [(a.actor, a.target) for a in audited] == [("sees-phones", call)]
    assert world.client.get("/api/v1/transcripts/nope",
                            headers=world.tokens["operator"]).status_code == 404


def test_bad_queries_are_refused_plainly(world: World) -> None:
    for query in ({}, {"q": ""}, {"q": "煤" * 101}, {"q": "煤气", "limit": "0"},
                  {"q": "煤气\u202e"}):
        reply = world.client.get("/api/v1/transcripts/search", query_string=query,
                                 headers=world.tokens["operator"])
        assert reply.status_code == 400, (query, reply.json)
    # the query language of neither index leaks through: these are words, or nothing
    for odd in ("'", '"', "\\", "煤气 OR 1=1", "NEAR(煤气)", "*", "煤气:*", "!煤气 & 泄漏"):
        found = _search(world, odd)["items"]
        assert all(i["recording"]["call_id"] == "1764460000.1" for i in found) or found == [
            ] or odd.startswith(("煤气", "!", "NEAR")), (odd, found)


def test_a_keyword_heard_alerts_supervisors_once(world: World, tmp_path: Path) -> None:
    bus = EventBus(world.app.extensions["hotline.redis"], stream=f"test:{uuid.uuid4().hex}")
    relay = DeskRelay(bus)
    keywords = ("煤气泄漏", "坍塌", "跳楼", "火")
    with world.sessions() as session:
        for_call = transcripts.find_transcript(session, "0c".ljust(64, "0"))
        assert for_call is not None
        segments = transcripts.segments_of(session, for_call)
        events = transcripts.keyword_hits(for_call, segments, keywords, NOW.timestamp())
        again = transcripts.keyword_hits(for_call, segments, keywords, NOW.timestamp())
    assert [(e.keyword, e.offset_seconds, e.leg) for e in events] == [
        ("煤气泄漏", 6.5, "caller")]
    assert [bool(bus.publish(e)) for e in events + again] == [True, False]
    written = relay.relay(block_ms=100)
    entries = [e for i in written for e in bus.client.xrange(feed.DESK_STREAM, i, i)]
    notices = [(f[b"agent"].decode(), f[b"kind"].decode(), json.loads(f[b"data"]))
               for _id, f in entries]
    assert [(a, k, d["alert"]["keyword"], d["alert"]["call_id"])
            for a, k, d in notices] == [("supervisors", "notice", "煤气泄漏", "1764460000.1")]
    bus.client.delete(bus.stream)


def test_the_speech_commands_search_and_show_masked_and_audit_the_unmasked(
        world: World, database_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": database_url, "HOTLINE_STORAGE_DATA_DIR": str(tmp_path / "cli"),
           "REDIS_URL": api_world.REDIS_SERVER_URL, "USER": "管理员"}
    runner = CliRunner()
    found = runner.invoke(cli, ["speech", "search", "煤气泄漏", "--json"], env=env)
    assert found.exit_code == 0, found.output
    items = json.loads(found.output)["items"]
    assert [(i["call_id"], i["leg"], i["offset_seconds"]) for i in items] == [
        ("1764460000.1", "caller", 6.5), ("1764460000.2", "caller", 2.0)]
    shown = runner.invoke(cli, ["speech", "show", "1764460000.1"], env=env)
    assert shown.exit_code == 0 and ID_NUMBER not in shown.output
    assert "   15.0s caller  我 的 身份证 号 是 1101**********002X 电话 139****5678" in (
        shown.output)
    with world.sessions() as session:
        before = len(session.scalars(select(AuditEntry).where(
            AuditEntry.action == "transcript_shown")).all())
    unmasked = runner.invoke(cli, ["speech", "show", "1764460000.1", "--unmasked"], env=env)
    assert unmasked.exit_code == 0 and ID_NUMBER in unmasked.output
    with world.sessions() as session:
        after = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "transcript_shown")).all()
    assert len(after) == before + 1 and after[-1].target == "1764460000.1"
    missing = runner.invoke(cli, ["speech", "show", "nope"], env=env)
    assert missing.exit_code == 1 and "no transcript" in missing.output


def test_the_order_page_shows_its_calls_transcript_masked_with_moments_to_jump_to(
        world: World) -> None:
    with transaction(world.sessions) as session:
        service.link_call(session, world.case, world.call_id, actor="operator-account",
                          now=NOW)
        transcripts.store(session, sha256="f" * 64, call_id=world.call_id, leg="caller",
                          engine="vosk", model="fixture", audio_seconds=80.0, now=NOW,
                          utterances=[_utterance(65.0, f"身份证 {ID_NUMBER} 煤气 泄漏")])
        transcripts.store(session, sha256="e" * 64, call_id=world.call_id, leg="agent",
                          engine="vosk", model="fixture", audio_seconds=80.0, now=NOW,
                          utterances=[_utterance(3.0, "您好 请 讲")])
    page = world.client.get(f"/orders/{world.case}", headers=world.tokens["supervisor"])
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "通话转写" in html and "workspace/transcript.js" in html
    assert ID_NUMBER not in html and "身份证 1101**********002X 煤气 泄漏" in html
    # the agent's greeting first, then the caller at 1:05, each a button that seeks there
    agent_at, caller_at = html.index('data-seek="3.0">0:03'), html.index(
        'data-seek="65.0">1:05')
    assert agent_at < caller_at


# --- the search's hits name their call's work order; the search page ---------------------


def _link_first_call(world: World) -> None:
    """Call 1764460000.1 (煤气泄漏 said twice, the ID number and the mobile) belongs to the
    world's order; the others to none."""
    with transaction(world.sessions) as session:
        service.link_call(session, world.case, "1764460000.1", actor="operator-account",
                          now=NOW)


def test_a_hit_names_the_work_order_of_its_call(world: World, database_url: str,
                                                tmp_path: Path) -> None:
    _link_first_call(world)
    items = _search(world, "煤气泄漏")["items"]
    assert [(i["recording"]["call_id"], i["case_number"]) for i in items] == [
        ("1764460000.1", world.case), ("1764460000.2", None)]
    found = CliRunner().invoke(cli, ["speech", "search", "煤气泄漏", "--json"], env={
        "DATABASE_URL": database_url, "HOTLINE_STORAGE_DATA_DIR": str(tmp_path / "cli"),
        "REDIS_URL": api_world.REDIS_SERVER_URL, "USER": "管理员"})
    assert found.exit_code == 0, found.output
    assert [(i["call_id"], i["case_number"]) for i in json.loads(found.output)["items"]] == [
        ("1764460000.1", world.case), ("1764460000.2", None)]
    # a query of 10,000 characters, or of the index's syntax, is a 400 or words: never a 500
    for q in ("煤" * 10_000, "-", "煤气 -泄漏", "NEAR(煤气 泄漏, 2)", '"煤气" *', "煤气 OR"):
        reply = world.client.get("/api/v1/transcripts/search", query_string={"q": q},
                                 headers=world.tokens["operator"])
        assert reply.status_code == (400 if len(q) > 100 else 200), (q, reply.json)


def _page(world: World, role: str = "supervisor", **args: str) -> tuple[int, str]:
    reply = world.client.get("/transcripts", query_string=args, headers=world.tokens[role])
    return reply.status_code, reply.get_data(as_text=True)


def test_the_search_page_ranks_masks_and_links_each_hit_to_its_moment(world: World) -> None:
    _link_first_call(world)
    status, html = _page(world, q="煤气泄漏")
    assert status == 200
    # ranked as the search ranks them: the call that said it twice first, with its order
    first, second = html.index('data-call="1764460000.1"'), html.index(
        'data-call="1764460000.2"')
    assert first < second
    assert f'data-case="{world.case}"' in html[first:second]
    assert f'href="/orders/{world.case}?call=1764460000.1&amp;t=6.5"' in html[first:second]
    # the other call belongs to no order: its moment, no link
    assert "无工单" in html[second:] and "result-play" not in html[second:]
    assert "<mark>煤气</mark>" in html and "<mark>泄漏</mark>" in html
    assert "市民" in html[first:second]
    # masked, whoever asks: even one who may see personal data
    for role in ("supervisor", "sees_phone", "operator", "admin", "auditor"):
        status, html = _page(world, role, q="身份证")
        assert status == 200, role
        assert "1101**********002X" in html and "139****5678" in html
        for secret in (ID_NUMBER, MOBILE, CARD, "19491231"):
            assert secret not in html, (role, secret)
    # the agent's words on the agent's leg
    status, html = _page(world, q="离开房间")
    assert 'data-speaker="agent"' in html and "坐席" in html


def test_the_search_page_pages_its_results(world: World, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    from agent_desk import transcript_search

    monkeypatch.setattr(transcript_search, "PAGE_SIZE", 1)
    status, html = _page(world, q="煤气")
    assert status == 200 and 'data-rank="1"' in html and 'id="next-page"' in html
    assert 'id="previous-page"' not in html and "第 1 页" in html
    status, html = _page(world, q="煤气", page="2")
    assert status == 200 and 'data-rank="2"' in html and 'id="previous-page"' in html
    assert 'id="next-page"' not in html
    status, html = _page(world, q="煤气", page="3")
    assert status == 200 and "没有更多结果" in html and 'id="results"' not in html


def test_the_search_page_says_what_is_wrong_with_bad_input_and_never_fails(
        world: World) -> None:
    status, html = _page(world)
    assert status == 200 and 'id="transcript-q"' in html and "search-message" not in html
    refused = {"": "请输入要检索的词语", "   ": "请输入要检索的词语",
               "\u200b": "请输入要检索的词语", "煤" * 10_000: "最多 100 个字符",
               "煤" * 101: "最多 100 个字符", "煤气\u202e泄漏": "无法检索的字符",
               "煤气\x00": "无法检索的字符"}
    for q, says in refused.items():
        status, html = _page(world, q=q)
        assert status == 400 and says in html, (q[:20], status)
        assert 'id="results"' not in html and "\u202e" not in html and "\x00" not in html
    # punctuation, symbols and numbers only: no word to search
    for q in ("！？。，", "...", "-", "*", '"', "()", ID_NUMBER, "#@!"):
        status, html = _page(world, q=q)
        assert status == 200 and "没有可检索的词语" in html, q
    # the index's syntax is words like any other: found or not, never an error
    for q in ("NEAR(煤气 泄漏)", "煤气 -泄漏", '"煤气" OR *', "煤气*", "煤气 AND 泄漏",
              "煤气 NOT 泄漏", "煤气:*", "^煤气", "{煤气}"):
        status, html = _page(world, q=q)
        assert status == 200, q
    status, html = _page(world, q="垃圾分类")
    assert status == 200 and "没有同时包含这些词语的通话语句" in html
    for page in ("0", "abc", "501", "-1", "1.5", "1" * 5000, "²"):
        status, html = _page(world, q="煤气", page=page)
        assert status == 400 and "页码须为 1 到 500 之间的整数" in html, page


def test_the_search_page_is_for_those_who_may_search_transcripts(world: World) -> None:
    may = PERMISSIONS["transcripts.read"]
    for role in ROLES:
        status, html = _page(world, role, q="煤气")
        assert status == (200 if role in may else 403), role
        if role not in may:
            assert "无权访问" in html and "煤气" not in html.split("</header>")[1]
        home = world.client.get(f"/home/{role}", headers=world.tokens[role])
        assert ('id="transcripts-link"' in home.get_data(as_text=True)) == (role in may), role
    anonymous = world.client.get("/transcripts?q=煤气")
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]


def test_the_order_page_plays_a_call_from_the_moment_a_link_names(world: World) -> None:
    with transaction(world.sessions) as session:
        service.link_call(session, world.case, world.call_id, actor="operator-account",
                          now=NOW)
        transcripts.store(session, sha256="f" * 64, call_id=world.call_id, leg="caller",
                          engine="vosk", model="fixture", audio_seconds=80.0, now=NOW,
                          utterances=[_utterance(3.0, "你好"),
                                      _utterance(65.0, f"身份证 {ID_NUMBER} 煤气 泄漏")])
    order = f"/orders/{world.case}"
    html = world.client.get(f"{order}?call={world.call_id}&t=65",
                            headers=world.tokens["supervisor"]).get_data(as_text=True)
    assert f'data-call="{world.call_id}" data-play-from="65.0"' in html
    assert '<details class="call-transcript" open>' in html
    current = html[html.index('class="transcript-current"'):]
    assert current.index('data-seek="65.0"') < current.index("</li>")
    assert html.count("transcript-current") == 1 and ID_NUMBER not in html
    # a link naming another call, or a moment that is none, plays nothing: the page as ever
    for args in ("call=1764460000.2&t=6.5", f"call={world.call_id}&t=abc",
                 f"call={world.call_id}&t=1e9", f"call={world.call_id}&t=-1",
                 f"call={world.call_id}&t=99999999", "call=<script>&t=1", "t=65"):
        reply = world.client.get(f"{order}?{args}", headers=world.tokens["supervisor"])
        assert reply.status_code == 200, args
        page = reply.get_data(as_text=True)
        assert "data-play-from" not in page and "transcript-current" not in page, args
        assert "<script>&" not in page
