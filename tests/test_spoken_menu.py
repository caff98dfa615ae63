"""Spoken menu choices (智能语音导航) through the real Asterisk: a kit caller says a menu
choice or a case number instead of keying it, the IVR records the answer over AGI and the
real vosk engine (the registry's Korean model, the flow tests/data/spoken_flow.yaml in
Korean) recognises it against the flow's phrases only. A key still wins, and silence or an
unknown phrase leaves the caller on keys. Every expected route is written by hand from the
flow file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from core.config import Settings
from core.db import make_engine, session_factory, transaction
from core.errors import ConfigError
from ivr.fastagi import FastAgiServer
from ivr.flows import DEFAULT_FLOW, load_flow, parse_flow
from ivr.prompts import PROMPTS
from ivr.server import IvrInBackground
from ivr.spoken import choice_of, digits_of
from recordings.audio import wav_stats
from recordings.speech import Utterance, VoskEngine, Word
from sipkit.kit import Call, Dtmf, Hangup, Say, SipKit, Wait
from telephony.ami import EventTap
from telephony.calls import CallTracker
from tests.speech_audio import MODEL_DIR, speak_korean
from tickets import service as orders
from tickets.workcalendar import zone

FLOW = Path(__file__).with_name("data") / "spoken_flow.yaml"
MODEL_LOAD_SECONDS = 120


@pytest.fixture(scope="module")
def spoken_ivr(pbx_settings: Settings, pbx: object) -> Iterator[FastAgiServer]:
    settings = replace(pbx_settings,
                       ivr=replace(pbx_settings.ivr, flow_file=str(FLOW)),
                       speech=replace(pbx_settings.speech, model_path=MODEL_DIR))
    with IvrInBackground(settings) as server:
        assert server.loading is not None
        server.loading.result(MODEL_LOAD_SECONDS)  # the model is ready: callers may speak
        yield server


@pytest.fixture(scope="module")
def menu_ends(pbx_settings: Settings) -> float:
    """Seconds from answer to the end of the welcome and the menu prompts, when the IVR
    starts listening (measured on the prompt files, plus a margin for the AGI's steps)."""
    prompts = pbx_settings.storage.prompts_dir
    return sum(wav_stats(prompts / f"{name}.wav").seconds for name in ("welcome", "menu")) + 1.0


def _caller_vars(tap: EventTap, caller: str, variable: str) -> list[str]:
    channel = tap.wait_for(lambda e: e.get("Event") == "Newchannel"
                           and e.get("CallerIDNum") == caller)["Channel"]
    return [e.get("Value", "") for e in tap.snapshot() if e.get("Event") == "VarSet"
            and e.get("Channel") == channel and e.get("Variable") == variable]


def _queue_joined(tap: EventTap, caller: str) -> list[str]:
    return [e.get("Queue", "") for e in tap.snapshot()
            if e.get("Event") == "QueueCallerJoin" and e.get("CallerIDNum") == caller]


def test_a_spoken_choice_routes_as_its_key(
        spoken_ivr: FastAgiServer, kit: SipKit, ami: EventTap, menu_ends: float,
        tmp_path: Path) -> None:
    """처리 is menu key 2 in the flow: the aftercall queue, exactly where keying 2 goes."""
    said = speak_korean("처리", tmp_path / "choice.wav", telephone=False)
    spoken, keyed = "13800138301", "13800138302"
    kit.call(Call(caller_id=spoken, script=(Wait(menu_ends), Say(said), Wait(6), Hangup())))
    kit.call(Call(caller_id=keyed, script=(Wait(menu_ends), Dtmf("2"), Wait(4), Hangup())))
    for caller in (spoken, keyed):
        assert _caller_vars(ami, caller, "HOTLINE_MENU_CHOICE") == ["2"], caller
        assert _caller_vars(ami, caller, "HOTLINE_IVR_NODE") == [
            "hours", "welcome", "menu", "aftercall"], caller
        assert _queue_joined(ami, caller) == ["aftercall"], caller
    assert _caller_vars(ami, spoken, "HOTLINE_SPOKEN") == ["menu"]  # the desk can tell
    assert _caller_vars(ami, keyed, "HOTLINE_SPOKEN") == []


def test_another_spoken_choice_goes_its_own_way(
        spoken_ivr: FastAgiServer, kit: SipKit, ami: EventTap, menu_ends: float,
        tmp_path: Path) -> None:
    """민원 is key 1: the intake queue."""
    said = speak_korean("민원", tmp_path / "choice.wav", telephone=False)
    caller = "13800138303"
    kit.call(Call(caller_id=caller, script=(Wait(menu_ends), Say(said), Wait(6), Hangup())))
    assert _caller_vars(ami, caller, "HOTLINE_MENU_CHOICE") == ["1"]
    assert _caller_vars(ami, caller, "HOTLINE_IVR_NODE") == ["hours", "welcome", "menu",
                                                              "report"]
    assert _queue_joined(ami, caller) == ["intake"]


def test_a_key_wins_while_speech_is_possible(
        spoken_ivr: FastAgiServer, kit: SipKit, ami: EventTap, menu_ends: float,
        tmp_path: Path) -> None:
    """The caller keys 2 while the IVR listens and then says 민원 (key 1): the key decides."""
    said = speak_korean("민원", tmp_path / "choice.wav", telephone=False)
    caller = "13800138304"
    kit.call(Call(caller_id=caller, script=(Wait(menu_ends + 0.5), Dtmf("2"), Say(said),
                                            Wait(5), Hangup())))
    assert _caller_vars(ami, caller, "HOTLINE_MENU_CHOICE") == ["2"]
    assert _caller_vars(ami, caller, "HOTLINE_SPOKEN") == []
    assert _queue_joined(ami, caller) == ["aftercall"]


def test_silence_then_a_key_is_the_keyed_menu(
        spoken_ivr: FastAgiServer, kit: SipKit, ami: EventTap, menu_ends: float) -> None:
    """Nothing said; the caller keys 2 about four seconds into the menu's six, after the
    two-second pause that ended the listening: the rest of the menu's time is for keys."""
    caller = "13800138305"
    kit.call(Call(caller_id=caller, script=(Wait(menu_ends + 3.5), Dtmf("2"), Wait(4),
                                            Hangup())))
    assert _caller_vars(ami, caller, "HOTLINE_MENU_CHOICE") == ["2"]
    assert _caller_vars(ami, caller, "HOTLINE_SPOKEN") == []
    assert _queue_joined(ami, caller) == ["aftercall"]


def test_an_unknown_phrase_is_no_choice_and_silence_falls_back(
        spoken_ivr: FastAgiServer, kit: SipKit, ami: EventTap, menu_ends: float,
        tmp_path: Path) -> None:
    """안녕하세요 (hello) is none of the menu's phrases (the grammar makes it two of them, 안내
    확인, measured: not one whole phrase): no choice, the menu is asked again as after a
    timeout, then silence: the fallback, a person (report, intake)."""
    said = speak_korean("안녕하세요", tmp_path / "hello.wav", telephone=False)
    caller = "13800138306"
    kit.call(Call(caller_id=caller, script=(Wait(menu_ends), Say(said), Wait(36), Hangup())))
    assert _caller_vars(ami, caller, "HOTLINE_MENU_CHOICE") == ["timeout", "timeout"]
    assert _caller_vars(ami, caller, "HOTLINE_SPOKEN") == []
    assert _caller_vars(ami, caller, "HOTLINE_IVR_NODE") == ["hours", "welcome", "menu",
                                                              "report"]
    assert _queue_joined(ami, caller) == ["intake"]


BEIJING = zone("Asia/Shanghai")
# the digits of 204105140001, the first order of 14 May 2041, one word each as the flow
# names them (0 빵, 1 하나, 2 이, 4 넷, 5 오), a pause after each
CASE_SAID = "이. 빵. 넷. 하나. 빵. 오. 하나. 넷. 빵. 빵. 빵. 하나."


def test_a_case_number_said_in_digits_finds_the_order(
        spoken_ivr: FastAgiServer, kit: SipKit, ami: EventTap, pbx_settings: Settings,
        tmp_path: Path) -> None:
    sessions = session_factory(make_engine(pbx_settings.storage.database_url))
    with transaction(sessions) as session:
        number = orders.open_order(session, appeal_type="complaint", channel="phone",
                                   description="路灯不亮", actor="受理员",
                                   now=datetime(2041, 5, 14, 10, 0, tzinfo=BEIJING)).case_number
    assert number == "204105140001"
    said = speak_korean(CASE_SAID, tmp_path / "case.wav", telephone=False)
    ask = wav_stats(pbx_settings.storage.prompts_dir / "ask_case.wav").seconds
    caller = "13800138307"
    # 4 keyed during the welcome (the progress query), then the number said after the prompt
    # (after the number: the pause that ends the listening, the recognising, the lookup)
    kit.call(Call(caller_id=caller, script=(Wait(1), Dtmf("4"), Wait(ask + 1.5), Say(said),
                                            Wait(12), Hangup())))
    assert _caller_vars(ami, caller, "HOTLINE_MENU_CHOICE") == ["4"]
    assert _caller_vars(ami, caller, "HOTLINE_SPOKEN") == ["progress"]
    assert _caller_vars(ami, caller, "HOTLINE_CASE_QUERY") == ["204105140001"]
    assert _caller_vars(ami, caller, "HOTLINE_CASE_STATE") == ["intake"]


# The flow's spoken choices checked when it is loaded, and what counts as a choice said.

def _default_flow_with(change: dict[str, object]) -> dict[str, object]:
    data = yaml.safe_load(DEFAULT_FLOW.read_text(encoding="utf-8"))
    data["nodes"]["menu"].update(change)
    return data


@pytest.mark.parametrize(("change", "names"), [
    ({"say": {"7": ["投诉"]}}, "menu.say: '7' is not one of its choices"),
    ({"say": {"1": ["投诉"], "2": ["投诉"]}}, "a phrase is given for two choices"),
    ({"say": {"1": []}}, "a list of phrases"),
    ({"say": ["投诉"]}, "must map keypad keys"),
])
def test_wrong_spoken_choices_name_the_node(change: dict[str, object], names: str) -> None:
    with pytest.raises(ConfigError, match="ivr: flow") as caught:
        parse_flow(_default_flow_with(change), "test", set(PROMPTS))
    assert names in str(caught.value)


def test_only_a_menu_has_spoken_choices_and_digits_need_all_ten() -> None:
    data = _default_flow_with({})
    data["nodes"]["report"]["say"] = {"1": ["投诉"]}  # type: ignore[index]
    with pytest.raises(ConfigError, match="only a menu has spoken choices"):
        parse_flow(data, "test", set(PROMPTS))
    data = _default_flow_with({})
    data["spoken_digits"] = {"0": ["零"], "1": ["一"]}
    with pytest.raises(ConfigError, match="spoken_digits: needs the words for each digit"):
        parse_flow(data, "test", set(PROMPTS))


def test_the_shipped_flow_takes_mandarin_phrases_and_digits() -> None:
    flow = load_flow(None, set(PROMPTS), 5)
    assert flow.nodes["menu"].say["1"][0] == "我要投诉"
    assert flow.nodes["menu"].say["2"][0] == "查询进度"
    assert flow.spoken_digits["1"] == ("一", "幺") and flow.spoken_digits["0"][0] == "零"


def _said(*words: tuple[str, float]) -> Utterance:
    found = tuple(Word(text, n, n + 0.5, conf) for n, (text, conf) in enumerate(words))
    return Utterance(0, len(words), " ".join(w for w, _ in words), found)


SAY = {"1": ("我要投诉", "投诉"), "2": ("查询进度",)}
MANDARIN = load_flow(None, set(PROMPTS), 5).spoken_digits


def test_a_choice_is_one_whole_phrase_heard_clearly() -> None:
    assert choice_of(_said(("我", 1.0), ("要", 0.9), ("投诉", 1.0)), SAY, 0.6) == "1"
    assert choice_of(_said(("查询", 1.0), ("进度", 1.0)), SAY, 0.6) == "2"
    assert choice_of(_said(("投诉", 0.5)), SAY, 0.6) is None  # unsure
    assert choice_of(_said(("投诉", 1.0), ("查询进度", 1.0)), SAY, 0.6) is None  # two
    assert choice_of(_said(("[unk]", 1.0)), SAY, 0.6) is None
    assert choice_of(None, SAY, 0.6) is None


def test_digits_said_in_mandarin() -> None:
    heard = _said(*[(w, 1.0) for w in "二零二六幺幺二四零零零一"])
    assert digits_of(heard, MANDARIN, 0.6) == "202611240001"
    assert digits_of(_said(("两零", 1.0), ("洞", 1.0)), MANDARIN, 0.6) == "200"
    assert digits_of(_said(("二", 1.0), ("[unk]", 1.0)), MANDARIN, 0.6) == ""
    assert digits_of(_said(("二", 0.3), ("零", 0.3)), MANDARIN, 0.6) == ""


def test_the_grammar_is_the_models_words_and_its_unknown_word() -> None:
    """The Korean model spells its unknown word <UNK>; a phrase it cannot say is left out."""
    engine = VoskEngine(MODEL_DIR)
    assert engine.grammar(["민원", "확인", "zzqx"]) == ["민원", "확인", "<UNK>"]


def test_the_calls_ivr_path_tells_a_choice_said_from_one_keyed() -> None:
    """The answered call of tests/data/ami_answered.json, its caller saying the choice: no
    key, the IVR's HOTLINE_SPOKEN before the menu's choice; the stored path holds both."""
    events = json.loads((Path(__file__).with_name("data") / "ami_answered.json").read_text(
        encoding="utf-8"))
    [keyed] = [n for n, e in enumerate(events) if e.get("Event") == "DTMFEnd"]
    events[keyed] = {**events[keyed], "Event": "VarSet", "Variable": "HOTLINE_SPOKEN",
                     "Value": "menu"}
    tracker, out = CallTracker(), []
    for event in events:
        out += tracker.feed(event, 1795492100.0)
    assert [(s["node"], s["value"]) for s in out[-1].record["ivr_path"]] == [
        ("spoken", "menu"), ("menu", "1")]
