"""Transcript search (通话转写检索) in Chromium against the real web app, as issue 13 asks: a
supervisor reaches the page from their home page, types a Chinese phrase, sees the hits
ranked as the search ranks them, each with its call's case number (or none), its time in
Beijing and whose voice, the ID number said masked (never its digits anywhere in the page),
and a hit's link opens the order page playing the call's recording from that utterance
(the recording is two seconds of a real WAV; the utterance begins at 1.2 s). A dispatcher,
who may not search transcripts, is refused; bad input is a message on the page."""

from __future__ import annotations

from datetime import timedelta

from playwright.sync_api import expect

from core.db import transaction
from recordings import transcripts
from recordings.speech import Utterance, Word
from telephony import records
from tests.api_world import NOW
from tests.browser import MEDIA_FLAGS, chromium, screenshot
from tests.test_workspace_browser import (  # the workspace's site: a real WAV on a call
    CALL_ID,
    DISPATCHER,
    HANDLER,
    SUPERVISOR,
    Site,
    _sign_in,
    site,  # noqa: F401  (the fixture)
)

ID_NUMBER = "440524188001010014"  # check digit 4, worked by hand
OTHER_CALL = "1764381999.3"  # a call of no work order, stored at 09:30 Beijing
# Whatever played first on the page, and when in its recording it was: set before any of
# the page's own scripts run (media events do not bubble; they pass the capture phase).
WATCH_PLAYING = ("document.addEventListener('playing', (e) => { if (window.firstPlayedAt "
                 "=== undefined) window.firstPlayedAt = e.target.currentTime; }, true);")


def _words(start: float, end: float, said: str) -> Utterance:
    return Utterance(start, end, said, tuple(Word(w, start, end, 0.8) for w in said.split()))


def _store(at: Site) -> None:
    started = (NOW - timedelta(minutes=30)).timestamp()
    with transaction(at.sessions) as session:
        transcripts.store(session, sha256="d" * 64, call_id=CALL_ID, leg="caller",
                          engine="vosk", model="fixture", audio_seconds=2.0, now=NOW,
                          utterances=[_words(1.2, 1.9, f"我 的 身份证 是 {ID_NUMBER} 门口 "
                                                       "垃圾 没人 清 垃圾 没人 管")])
        transcripts.store(session, sha256="e" * 64, call_id=CALL_ID, leg="agent",
                          engine="vosk", model="fixture", audio_seconds=2.0, now=NOW,
                          utterances=[_words(0.2, 0.9, "您好 请 讲")])
        records.store_call(session, {
            "call_id": OTHER_CALL, "caller_number": "13800001111", "caller_name": "",
            "entry_number": "12319", "started_at": started, "ended_at": started + 60,
            "duration_seconds": 60, "outcome": "answered", "queue": "intake",
            "queue_position": 1, "wait_seconds": 5, "short_abandon": False, "agent": "8002",
            "connected_at": started + 5, "talk_seconds": 55, "hold_seconds": 0,
            "hangup_cause": 16, "hangup_cause_text": "", "ivr_path": [],
            "agent_attempts": [], "transfers": [], "legs": [], "recording": None,
            "incomplete": False})
        transcripts.store(session, sha256="f" * 64, call_id=OTHER_CALL, leg="agent",
                          engine="vosk", model="fixture", audio_seconds=60.0, now=NOW,
                          utterances=[_words(14.0, 18.0, "您 说 的 垃圾 没人 清 我 记下 了 "
                                                         "会 转 给 环卫 部门 尽快 处理")])


def test_a_phrase_finds_its_calls_and_a_hit_plays_the_recording_from_there(
        site: Site) -> None:  # noqa: F811
    _store(site)
    with site.sessions() as session:
        _words_cut, ranked = transcripts.search(session, "垃圾没人清")
    assert {h.call_id for h in ranked} == {CALL_ID, OTHER_CALL}
    with chromium(*MEDIA_FLAGS) as browser:
        context, page = _sign_in(browser, site, SUPERVISOR)
        context.add_init_script(WATCH_PLAYING)
        # from the supervisor's home page, as a person finds it
        page.goto(f"{site.url}/home/supervisor")
        page.locator("#transcripts-link").click()
        page.wait_for_url(f"{site.url}/transcripts")
        page.get_by_label("通话中说过的话").fill("垃圾没人清")
        page.get_by_label("通话中说过的话").press("Enter")
        rows = page.locator("#results tbody tr")
        expect(rows).to_have_count(2)
        # ranked as recordings.transcripts.search ranks them
        assert [r.get_attribute("data-call") for r in rows.all()] == [
            h.call_id for h in ranked]
        ours = page.locator(f"#results tr[data-call='{CALL_ID}']")
        expect(ours.locator(".result-case")).to_have_text(site.case)
        expect(ours.locator(".result-time")).to_have_text("2026-11-24 09:45")  # Beijing
        expect(ours.locator(".result-speaker")).to_have_text("市民")
        expect(ours.locator(".result-text")).to_contain_text("4405**********0014")
        expect(ours.locator(".result-text mark").first).to_have_text("垃圾")
        other = page.locator(f"#results tr[data-call='{OTHER_CALL}']")
        expect(other.locator(".result-case")).to_have_text("无工单")
        expect(other.locator(".result-time")).to_have_text("2026-11-24 09:30")
        expect(other.locator(".result-speaker")).to_have_text("坐席")
        expect(other.locator(".result-moment")).to_have_text("0:14")
        expect(other.locator("a.result-play")).to_have_count(0)
        assert ID_NUMBER not in page.content()
        screenshot(page, "transcript-search")

        # the hit's link: the order page, playing the call from the utterance's start
        ours.locator("a.result-play").click()
        page.wait_for_url(f"{site.url}/orders/{site.case}?call={CALL_ID}&t=1.2")
        page.wait_for_function("() => window.firstPlayedAt !== undefined", timeout=10_000)
        assert 1.15 <= page.evaluate("window.firstPlayedAt") < 1.6
        audio = page.locator(f"#calls li[data-call='{CALL_ID}'] audio.call-recording")
        assert audio.evaluate("a => a.currentTime") >= 1.2
        current = page.locator(f"#calls li[data-call='{CALL_ID}'] li.transcript-current")
        expect(current).to_be_visible()
        expect(current).to_contain_text("4405**********0014")
        assert ID_NUMBER not in page.content()
        screenshot(page, "transcript-search-order-playing")

        # bad input: a message on the page, never an error page
        page.goto(f"{site.url}/transcripts")
        page.get_by_label("通话中说过的话").fill("？！……")
        page.get_by_role("button", name="检索").click()
        expect(page.locator("#search-message")).to_contain_text("没有可检索的词语")
        for q, says in (("煤" * 10_000, "最多 100 个字符"), ("NEAR(垃圾) -清 *", ""),
                        ('"垃圾" OR 1=1', "")):
            answer = page.goto(f"{site.url}/transcripts?q={q}")
            assert answer is not None and answer.status in ((400,) if says else (200,)), q
            if says:
                expect(page.locator("#search-message")).to_contain_text(says)
        context.close()

        # who may not search transcripts (a dispatcher, a department's handler) is refused,
        # and their home page offers no link to it
        for name, role in ((DISPATCHER, "dispatcher"), (HANDLER, "department")):
            context, page = _sign_in(browser, site, name)
            answer = page.goto(f"{site.url}/transcripts?q=垃圾没人清")
            assert answer is not None and answer.status == 403
            expect(page.locator("main")).to_contain_text("无权访问")
            assert "4405" not in page.content()
            page.goto(f"{site.url}/home/{role}")
            expect(page.locator("#transcripts-link")).to_have_count(0)
            context.close()
