"""IVR flows as data, the work calendar and caller screening, without a PBX."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from core.db import make_engine, session_factory, transaction, upgrade
from core.errors import ConfigError
from ivr.engine import CallContext, key_pressed_while, run_flow
from ivr.fastagi import AgiHangup
from ivr.flows import DEFAULT_FLOW, load_flow, parse_flow
from ivr.prompts import PROMPTS, ensure_prompts, prompt_paths, prompt_texts
from telephony import records, screening
from telephony.directory import DirectoryError
from tests.conftest import make_settings
from tickets.workcalendar import load_calendar, parse_hours, set_day, zone

PROMPT_NAMES = set(PROMPTS)


def test_the_shipped_flow_and_the_test_flow_load() -> None:
    flow = load_flow(None, PROMPT_NAMES, 5)
    assert flow.start == "hours" and flow.nodes["menu"].choices["9"] == "emergency"
    assert {n.number for n in flow.nodes.values() if n.type == "transfer"} == {
        "110", "119", "120"}
    load_flow(Path(__file__).with_name("data") / "flow.yaml", PROMPT_NAMES, 5)


def _flow_with(change: dict) -> dict:  # type: ignore[type-arg]
    data = yaml.safe_load(DEFAULT_FLOW.read_text(encoding="utf-8"))
    for path, value in change.items():
        *parents, last = path.split(".")
        target = data
        for key in parents:
            target = target[key]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return data


@pytest.mark.parametrize(("change", "names"), [
    ({"start": "nowhere"}, "start"),
    ({"nodes.menu.choices": {"1": "ghost"}}, "menu.choices.1"),
    ({"nodes.menu.choices": {"12": "report"}}, "one keypad key"),
    ({"nodes.menu.fallback": None}, "needs 'fallback'"),
    ({"nodes.welcome.prompt": "nonexistent"}, "welcome.prompt"),
    ({"nodes.welcome.interrupt": "report"}, "must name a menu"),
    ({"nodes.police.number": "11O"}, "police.number"),
    ({"nodes.report.queue": "General Queue"}, "report.queue"),
    ({"nodes.report.type": "voicemail"}, "report.type"),
    ({"nodes.report.colour": "red"}, "unknown key 'colour'"),
    ({"nodes.menu.retries": 99}, "retries 0-9"),
    ({"nodes.report.announce_wait": "yes"}, "report.announce_wait"),
])
def test_a_wrong_flow_names_the_node_and_key(change: dict, names: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match="ivr: flow") as caught:
        parse_flow(_flow_with(change), "test", PROMPT_NAMES)
    assert names in str(caught.value)


def test_a_flow_file_that_is_not_yaml_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "flow.yaml"
    bad.write_text("nodes: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_flow(bad, PROMPT_NAMES, 5)


@pytest.fixture
def sessions(database_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(database_url)
    upgrade(engine)
    return session_factory(engine)


def test_national_day_2026_with_its_make_up_saturday(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions() as session:
        cal = load_calendar(session, "Asia/Shanghai", "08:30-12:00,13:30-17:30")
    assert not cal.is_workday(date(2026, 10, 1)) and not cal.is_workday(date(2026, 10, 7))
    assert cal.is_workday(date(2026, 10, 10))  # a Saturday worked in exchange
    assert cal.is_workday(date(2026, 10, 9)) and not cal.is_workday(date(2026, 10, 11))
    assert not cal.is_workday(date(2026, 2, 17))  # Spring Festival
    assert cal.is_workday(date(2026, 2, 14))  # its make-up Saturday
    shanghai = zone("Asia/Shanghai")
    assert cal.is_working_time(datetime(2026, 10, 10, 9, 0, tzinfo=shanghai))
    assert not cal.is_working_time(datetime(2026, 10, 10, 12, 30, tzinfo=shanghai))  # lunch
    assert not cal.is_working_time(datetime(2026, 10, 10, 17, 30, tzinfo=shanghai))
    # 01:00 UTC is 09:00 in Shanghai: the zone is the operator's, not the server's
    assert cal.is_working_time(datetime(2026, 10, 9, 1, 0, tzinfo=UTC))


def test_the_operator_enters_a_year_the_package_does_not_know(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions() as session:
        cal = load_calendar(session, "Asia/Shanghai", "00:00-24:00")
    assert not cal.year_known(2031)
    assert not cal.is_workday(date(2031, 1, 4))  # a Saturday, by the weekday rule
    with transaction(sessions) as session:
        set_day(session, date(2031, 1, 1), workday=False, note="元旦")
        set_day(session, date(2031, 1, 4), workday=True, note="调休")
        set_day(session, date(2026, 10, 8), workday=True, note="local change")
    with sessions() as session:
        cal = load_calendar(session, "Asia/Shanghai", "00:00-24:00")
    assert cal.year_known(2031)
    assert not cal.is_workday(date(2031, 1, 1)) and cal.is_workday(date(2031, 1, 4))
    assert cal.is_workday(date(2026, 10, 8))  # the operator's entry wins over the package


BEIJING = zone("Asia/Shanghai")
# Fixed instants in Beijing and whether the line is staffed then, worked out by hand from
# the State Council's 2026 schedule and the default hours 08:30-12:00,13:30-17:30.
STAFFED_AT = [
    (datetime(2026, 11, 29, 22, 0, tzinfo=BEIJING), False),  # a Sunday night
    (datetime(2026, 2, 17, 10, 0, tzinfo=BEIJING), False),  # a Tuesday of Spring Festival
    (datetime(2026, 2, 28, 10, 0, tzinfo=BEIJING), True),  # its make-up working Saturday
    (datetime(2026, 11, 24, 8, 29, 59, tzinfo=BEIJING), False),  # a Tuesday, before opening
    (datetime(2026, 11, 24, 8, 30, tzinfo=BEIJING), True),  # the minute it opens
    (datetime(2026, 11, 24, 8, 31, tzinfo=BEIJING), True),  # the minute after
    (datetime(2026, 11, 24, 12, 0, tzinfo=BEIJING), False),  # lunch
    (datetime(2026, 11, 24, 17, 29, tzinfo=BEIJING), True),
    (datetime(2026, 11, 24, 17, 30, tzinfo=BEIJING), False),  # closed at 17:30 sharp
]


@pytest.mark.parametrize(("moment", "staffed"), STAFFED_AT)
def test_the_line_is_staffed_in_the_working_time_only(sessions, moment: datetime,  # type: ignore[no-untyped-def]
                                                      staffed: bool) -> None:
    with sessions() as session:
        cal = load_calendar(session, "Asia/Shanghai", "08:30-12:00,13:30-17:30")
    assert cal.is_staffed(moment) is staffed
    assert cal.is_staffed(moment.astimezone(UTC)) is staffed  # the zone is the operator's


def test_a_line_staffed_every_day_ignores_weekends_and_holidays(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions() as session:
        cal = load_calendar(session, "Asia/Shanghai", "08:30-12:00,13:30-17:30")
    sunday_night = datetime(2026, 11, 29, 22, 0, tzinfo=BEIJING)
    festival_lunch = datetime(2026, 2, 17, 12, 30, tzinfo=BEIJING)
    for moment in (sunday_night, festival_lunch):
        assert cal.is_staffed(moment, "00:00-24:00")
    assert cal.is_staffed(festival_lunch, "08:00-20:00")
    assert not cal.is_staffed(sunday_night, "08:00-20:00")


@pytest.mark.parametrize("text", ["9-17", "17:00-09:00", "08:00-12:00;13:00-17:00", ""])
def test_bad_working_hours_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_hours(text)


def _record(caller: str, started: datetime) -> dict:  # type: ignore[type-arg]
    epoch = started.timestamp()
    return {"call_id": f"c-{caller}-{epoch}", "caller_number": caller, "caller_name": "",
            "entry_number": "12319", "started_at": epoch, "ended_at": epoch + 60,
            "duration_seconds": 60, "outcome": "answered", "queue": "intake",
            "queue_position": 1, "wait_seconds": 3, "short_abandon": False, "agent": "8001",
            "connected_at": epoch + 3, "talk_seconds": 57, "hold_seconds": 0,
            "hangup_cause": 16, "hangup_cause_text": "", "ivr_path": [], "agent_attempts": [],
            "transfers": [], "legs": [], "recording": None, "incomplete": False}


def test_screening_blocklist_vip_expiry_and_repeat_callers(sessions) -> None:  # type: ignore[no-untyped-def]
    now = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)  # a Sunday night in Beijing
    window = timedelta(hours=24)
    with transaction(sessions) as session:
        screening.add_entry(session, "+86 138-0013-8000", "block", now + timedelta(days=1),
                            now=now)
        screening.add_entry(session, "13900139000", "vip", now=now)
        screening.add_entry(session, "13700137000", "block", now + timedelta(seconds=1),
                            now=now)
        for hours_ago in (1, 5, 30):
            records.store_call(session, _record("13600136000", now - timedelta(hours=hours_ago)))
    with sessions() as session:
        blocked = screening.screen(session, "13800138000", now, window, 2)
        vip = screening.screen(session, "008613900139000", now, window, 2)
        repeat = screening.screen(session, "13600136000", now, window, 2)
        later = screening.screen(session, "13700137000", now + timedelta(seconds=5), window, 2)
    assert blocked.blocked and not blocked.vip
    assert vip.vip and vip.priority_bonus == 10
    assert repeat.recent_calls == 2 and repeat.repeat and repeat.priority_bonus == 5
    assert not later.blocked  # expired
    for number, kind in (("12", "block"), ("13800138000", "grey")):
        with pytest.raises(DirectoryError), transaction(sessions) as session:
            screening.add_entry(session, number, kind, now=now)


def test_prompt_texts_come_from_config_and_recordings_are_left_alone(tmp_path: Path) -> None:

    texts = tmp_path / "prompts.yaml"
    texts.write_text('welcome: "您好，欢迎致电。"\nsnow_notice: "大雪期间请注意出行安全。"\n',
                     encoding="utf-8")
    settings = make_settings(tmp_path / "data", HOTLINE_IVR_PROMPTS_FILE=str(texts))
    made = ensure_prompts(settings)
    assert {"welcome", "snow_notice", "menu"} <= set(made)
    assert prompt_paths(settings)["snow_notice"].endswith("/snow_notice")
    assert ensure_prompts(settings) == []  # nothing changed, nothing made
    studio = settings.storage.prompts_dir / "menu.wav"
    studio.write_bytes(studio.read_bytes() + b"\x00" * 1600)  # the operator's recording
    texts.write_text('welcome: "您好。"\nmenu: "新的菜单。"\n', encoding="utf-8")
    assert ensure_prompts(settings) == ["welcome"]  # changed text; the recording stays


@pytest.mark.parametrize("content", ['"just text"', "Welcome: hi\n", "welcome: ''\n",
                                     "welcome: [1, 2]\n", "{unclosed"])
def test_a_bad_prompts_file_is_one_clear_error(tmp_path: Path, content: str) -> None:

    texts = tmp_path / "prompts.yaml"
    texts.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match="prompts file"):
        prompt_texts(make_settings(tmp_path, HOTLINE_IVR_PROMPTS_FILE=str(texts)))


class _Line:
    """The AGI session as the flow drives it, without a PBX: the commands it was sent, and
    the caller's keys, one answer to each WAIT FOR DIGIT in turn (None: no key)."""

    def __init__(self, waits: tuple[str | None, ...] = ()) -> None:
        self.sent: list[str] = []
        self.waits = list(waits)

    async def wait_for_digit(self, timeout_ms: int) -> str | None:
        self.sent.append(f"WAIT FOR DIGIT {timeout_ms}")
        await asyncio.sleep(0.01)
        return self.waits.pop(0) if self.waits else None

    async def stream_file(self, prompt: str, escape_digits: str = "") -> str | None:
        self.sent.append(f"STREAM FILE {prompt} {escape_digits}")
        return None

    async def get_data(self, prompt: str, timeout_ms: int, max_digits: int) -> str:
        self.sent.append(f"GET DATA {prompt} {timeout_ms} {max_digits}")
        return ""

    async def set_variable(self, name: str, value: str) -> None:
        self.sent.append(f"{name}={value}")


TEST_FLOW = Path(__file__).with_name("data") / "flow.yaml"


def _walk(line: _Line, early_key: str) -> str:
    flow = load_flow(TEST_FLOW, PROMPT_NAMES, 3)
    decision = asyncio.run(run_flow(line, flow, CallContext(working_time=True),  # type: ignore[arg-type]
                                    {name: name for name in PROMPT_NAMES}, "intake", early_key))
    return f"{decision.kind} {decision.target}"


def test_a_key_pressed_before_the_welcome_began_answers_it() -> None:
    """The caller keyed 1 while the call's lookups ran (no prompt playing yet): the welcome,
    which 1 would have interrupted, is skipped and the menu takes the 1."""
    line = _Line()
    assert _walk(line, "1") == "queue intake"
    assert line.sent == ["HOTLINE_IVR_NODE=hours", "HOTLINE_IVR_NODE=welcome",
                         "HOTLINE_IVR_NODE=menu", "HOTLINE_MENU_CHOICE=1",
                         "HOTLINE_IVR_NODE=report", "HOTLINE_QUEUE=intake",
                         "HOTLINE_PRIORITY=0"]


def test_an_early_key_no_menu_choice_has_is_not_an_answer() -> None:
    """7 would not have interrupted the welcome: it plays, and the menu is asked."""
    line = _Line()
    assert _walk(line, "7") == "queue intake"  # the menu's fallback, after no answer
    assert line.sent[:5] == ["HOTLINE_IVR_NODE=hours", "HOTLINE_IVR_NODE=welcome",
                             "STREAM FILE welcome 14239", "HOTLINE_IVR_NODE=menu",
                             "GET DATA menu 3000 1"]


def test_keys_are_listened_for_while_a_slow_lookup_runs() -> None:
    async def listen(line: _Line, lookup_seconds: float) -> str:
        lookup = asyncio.ensure_future(asyncio.sleep(lookup_seconds))
        try:
            return await key_pressed_while(line, lookup)  # type: ignore[arg-type]
        finally:
            lookup.cancel()

    slow = _Line(waits=(None, "1"))
    assert asyncio.run(listen(slow, 5)) == "1"
    assert slow.sent == ["WAIT FOR DIGIT 200", "WAIT FOR DIGIT 200"]
    quick = _Line(waits=("1",))
    assert asyncio.run(listen(quick, 0)) == ""  # done at once: the welcome starts now
    assert quick.sent == []


class _HungUpLine(_Line):
    """A caller who hangs up while the IVR listens for an early key."""

    async def wait_for_digit(self, timeout_ms: int) -> str | None:
        self.sent.append(f"WAIT FOR DIGIT {timeout_ms}")
        raise AgiHangup("caller hung up")


def test_a_hang_up_while_the_lookup_runs_cancels_the_lookup() -> None:
    """The caller is gone before the call's lookups are done: the hang-up reaches the
    route, and the lookup is cancelled rather than left running for nobody."""
    async def listen() -> bool:
        lookup = asyncio.ensure_future(asyncio.sleep(5))
        with pytest.raises(AgiHangup):
            await key_pressed_while(_HungUpLine(), lookup)  # type: ignore[arg-type]
        await asyncio.sleep(0)  # the cancellation is delivered
        cancelled = lookup.cancelled()  # (asyncio.run would cancel it on leaving)
        lookup.cancel()
        return cancelled

    assert asyncio.run(listen())
