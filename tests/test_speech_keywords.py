"""The alert keywords (告警关键词) as the operator edits them: seeded once from the settings,
changed over HTTP (supervisors, administrators; audited) and from the shell, read by the
live receiver through a cache that sees each change; a keyword alerted live is not alerted
again by the stored transcript's pass; the live text reaches the desk of the agent on the
call; without a model live transcription is off, said once. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from accounts.audit import AuditEntry
from agent_desk.relay import DeskRelay
from core.db import transaction
from core.events import EventBus
from core.live import connect_redis
from hotline.cli import cli
from recordings import keywords, live, transcripts
from recordings.speech import Utterance, Word
from telephony.wallboard import LiveCall, drop_live_call, put_live_call
from tests import api_world
from tests.api_world import NOW, World
from tests.conftest import make_settings

DEFAULTS = ["煤气泄漏", "燃气泄漏", "坍塌", "跳楼", "轻生", "火", "爆炸", "触电"]


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    built = api_world.build(database_url, tmp_path)
    yield built
    built.engine.dispose()


def _list(world: World, role: str = "supervisor") -> dict:
    reply = world.client.get("/api/v1/speech/keywords", headers=world.tokens[role])
    assert reply.status_code == 200, reply.json
    return reply.json


def test_the_keywords_are_seeded_once_then_edited_over_http_and_audited(world: World) -> None:
    assert _list(world, "shift_chief")["keywords"] == DEFAULTS
    added = world.client.post("/api/v1/speech/keywords", json={"word": " 라디오 "},
                              headers=world.tokens["supervisor"])
    assert added.status_code == 201 and added.json["keywords"] == [*DEFAULTS, "라디오"]
    again = world.client.post("/api/v1/speech/keywords", json={"word": "라디오"},
                              headers=world.tokens["admin"])
    assert again.status_code == 200 and again.json["keywords"] == [*DEFAULTS, "라디오"]
    gone = world.client.delete("/api/v1/speech/keywords/%E7%81%AB",  # 火
                               headers=world.tokens["admin"])
    assert gone.status_code == 200, gone.json
    assert gone.json["keywords"] == ["煤气泄漏", "燃气泄漏", "坍塌", "跳楼", "轻生", "爆炸",
                                     "触电", "라디오"]
    fire = [i for i in gone.json["items"] if i["word"] == "火"]
    assert [(i["active"], i["changed_by"]) for i in fire] == [(False, "admin-account")]
    assert world.client.delete("/api/v1/speech/keywords/%E7%81%AB",
                               headers=world.tokens["admin"]).status_code == 404
    for bad in ({"word": "煤气 泄漏"}, {"word": "\u0007火"}, {"word": "!!"}, {"word": ""},
                {"word": "火" * 41}, {"word": 7}, {"word": "火", "more": 1}, {}):
        refused = world.client.post("/api/v1/speech/keywords", json=bad,
                                    headers=world.tokens["supervisor"])
        assert refused.status_code in (400, 422), (bad, refused.status_code)
    # every operator's list is the one list: removing all of it is not undone by a seeding
    for word in _list(world)["keywords"]:
        assert world.client.delete(f"/api/v1/speech/keywords/{word}",
                                   headers=world.tokens["admin"]).status_code == 200
    assert _list(world)["keywords"] == []
    with world.sessions() as session:
        changes = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "speech_keywords_changed").order_by(AuditEntry.id)).all()
    assert [(c.actor, c.target) for c in changes][:2] == [
        ("supervisor-account", "라디오"), ("admin-account", "火")]
    assert len(changes) == 2 + 8  # 라디오 added, 火 removed, then the eight left


def test_the_live_cache_sees_a_change_and_the_shell_edits_the_same_list(
        world: World, database_url: str, tmp_path: Path) -> None:
    client = world.app.extensions["hotline.redis"]
    cache = keywords.KeywordCache(world.sessions, client, ("火", "坍塌"), lambda: NOW)
    assert cache() == ("火", "坍塌")  # an empty table seeded from the defaults given
    env = {"DATABASE_URL": database_url, "HOTLINE_STORAGE_DATA_DIR": str(tmp_path / "cli"),
           "REDIS_URL": api_world.REDIS_SERVER_URL, "USER": "管理员"}
    done = CliRunner().invoke(cli, ["speech", "keywords", "--add", "라디오", "--remove", "火",
                                    "--json"], env=env)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == {"keywords": ["坍塌", "라디오"]}
    refused = CliRunner().invoke(cli, ["speech", "keywords", "--add", "a b"], env=env)
    assert refused.exit_code == 1 and "word:" in refused.output
    time.sleep(keywords.CHECK_SECONDS + 0.1)
    assert cache() == ("坍塌", "라디오")


def test_a_keyword_alerted_live_is_not_alerted_again_by_the_stored_pass(world: World) -> None:
    bus = EventBus(world.app.extensions["hotline.redis"], stream=f"test:{uuid.uuid4().hex}")
    heard_live = transcripts.KeywordHeard(at=NOW.timestamp(), call_id="1764470000.5",
                                          leg="caller", keyword="煤气泄漏",
                                          offset_seconds=7.2, excerpt="煤气 泄漏", live=True)
    assert bus.publish(heard_live)
    with transaction(world.sessions) as session:
        stored = transcripts.store(
            session, sha256="5c".ljust(64, "0"), call_id="1764470000.5", leg="caller",
            engine="vosk", model="fixture", utterances=[Utterance(6.9, 8.1, "煤气 泄漏 了", (
                Word("煤气", 6.9, 7.3, 0.9), Word("泄漏", 7.3, 7.8, 0.9), Word("了", 7.8, 8.1,
                                                                               0.9)))],
            audio_seconds=12.0, now=NOW)
        later = transcripts.keyword_hits(stored, transcripts.segments_of(session, stored),
                                         ("煤气泄漏", "坍塌"), NOW.timestamp())
    assert [(e.keyword, e.live, e.id) for e in later] == [
        ("煤气泄漏", False, "speech.keyword:1764470000.5:煤气泄漏")]
    assert heard_live.id == later[0].id and bus.publish(later[0]) is None
    assert [f[b"type"] for _i, f in bus.client.xrange(bus.stream)] == [b"speech.keyword"]
    bus.client.delete(bus.stream)


def test_without_a_model_live_transcription_is_off_and_notes_so_once(tmp_path: Path,
                                                                    caplog) -> None:
    """Noted at debug: the centre's one line says what speech is off (test_transcribe_worker)."""
    settings = make_settings(tmp_path / "off")
    assert settings.speech.model_path is None and settings.speech.live
    live._said_off = False
    with caplog.at_level("DEBUG", logger="recordings.live"):
        assert live.LiveSpeech.wanted(settings) is False
        assert live.LiveSpeech.wanted(settings) is False
    said = [r.message for r in caplog.records if "live transcription is off" in r.message]
    assert said == ["speech: live transcription is off (speech.model_path is not set)"]


def test_the_live_text_goes_to_the_desk_of_the_agent_on_the_call(world: World) -> None:
    client = world.app.extensions["hotline.redis"]
    bus = EventBus(client, stream=f"test:{uuid.uuid4().hex}")
    relay = DeskRelay(bus)
    waiting, talking = "1764470000.7", "1764470000.8"
    put_live_call(client, LiveCall(waiting, "default", "13800138000", NOW.timestamp()))
    put_live_call(client, LiveCall(talking, "default", "13800138001", NOW.timestamp(),
                                   "8001", NOW.timestamp() + 5))
    try:
        said = [live.LiveTranscript(at=NOW.timestamp(), call_id=call, utterance=0,
                                    text="煤气 泄漏", start=0.0, end=1.5)
                for call in (waiting, talking)]
        assert relay.entry_for(said[0].as_dict()) is None  # nobody has answered it yet
        assert relay.entry_for(said[1].as_dict()) == ("8001", "live", {
            "call_id": talking, "utterance": 0, "final": False, "text": "煤气 泄漏",
            "at": NOW.timestamp()})
        alert = transcripts.KeywordHeard(at=NOW.timestamp(), call_id=talking, leg="caller",
                                         keyword="煤气泄漏", offset_seconds=1.5,
                                         excerpt="煤气 泄漏", live=True)
        agent, kind, data = relay.entry_for(alert.as_dict())  # type: ignore[misc]
        assert (agent, kind, data["alert"]["live"], data["alert"]["keyword"]) == (
            "supervisors", "notice", True, "煤气泄漏")
    finally:
        drop_live_call(client, waiting)
        drop_live_call(client, talking)


class ReadingOutRecogniser:
    """A caller reading an ID number and a mobile number in groups, as vosk would hear it:
    each utterance's partials growing, then its final (endpointing split the numbers)."""

    SCRIPT = (  # (utterance, final, text, start, end)
        (0, False, "我的身份证号是 1", 0.0, 1.2), (0, False, "我的身份证号是 1101", 0.0, 1.8),
        (0, False, "我的身份证号是 1101 05", 0.0, 2.4),
        (0, False, "我的身份证号是 1101 0519", 0.0, 3.0),
        (0, True, "我的身份证号是 1101 0519", 0.4, 3.0),
        (1, False, "4912", 3.6, 4.6), (1, False, "4912 3100", 3.6, 5.4),
        (1, False, "4912 3100 2X", 3.6, 6.0), (1, False, "4912 3100 2X 着火", 3.6, 6.6),
        (1, True, "4912 3100 2X 着火了", 4.1, 6.8),
        (2, False, "电话是 138", 7.4, 8.4), (2, False, "电话是 138 123", 7.4, 9.0),
        (2, True, "电话是 138 1234", 7.9, 9.4),
        (3, False, "5678", 10.0, 11.0), (3, True, "5678", 10.2, 10.9),
        (4, False, "好的", 11.5, 12.0), (4, True, "好的", 11.6, 12.0),
    )

    def __init__(self) -> None:
        self.fed = False

    def feed(self, pcm: bytes) -> list[live.Heard]:
        if self.fed:
            return []
        self.fed = True
        return [live.Heard(u, final, text, start, end, ()) for u, final, text, start, end
                in self.SCRIPT]

    def finish(self) -> list[live.Heard]:
        return []


def test_a_number_read_out_live_is_never_on_the_bus_while_it_grows_or_split(
        tmp_path: Path) -> None:
    bus = EventBus(connect_redis(make_settings(tmp_path)), stream=f"test:{uuid.uuid4().hex}")
    call_id = f"1764470001.{uuid.uuid4().int % 10**6}"
    stream = live.LiveStream(call_id, ReadingOutRecogniser(), bus,  # type: ignore[arg-type]
                             lambda: ("火",), time.time).start()
    stream.hear(bytes(320 * 10))
    stream.end()
    stream.thread.join(10)
    assert not stream.thread.is_alive() and not stream.failed
    events = [json.loads(f[b"data"]) for _i, f in bus.client.xrange(bus.stream)]
    bus.client.delete(bus.stream)
    said = [(e["utterance"], e["final"], e["text"]) for e in events if e["type"] == "speech.live"]
    assert said == [
        (0, False, "我的身份证号是 *"), (0, False, "我的身份证号是 ****"),
        (0, False, "我的身份证号是 ******"), (0, False, "我的身份证号是 ********"),
        (0, True, "我的身份证号是 ********"),
        (1, False, "****"), (1, False, "********"), (1, False, "**********"),
        (1, False, "******002X 着火"), (1, True, "******002X 着火了"),
        (2, False, "电话是 ***"), (2, False, "电话是 ******"), (2, True, "电话是 *******"),
        (3, False, "****"), (3, True, "****"),
        (4, False, "好的"), (4, True, "好的")]
    assert stream.published == len(said)
    alerts = [(e["keyword"], e["excerpt"]) for e in events if e["type"] == "speech.keyword"]
    assert alerts == [("火", "******002X 着火")]
    # no event carries four digits of a number being read, one after another
    for event in events:
        for shown in (event.get("text", ""), event.get("excerpt", ""), event["id"]):
            assert not re.search(r"[0-9]{4}", re.sub(r"\s", "", shown.split(call_id)[-1])), \
                event
