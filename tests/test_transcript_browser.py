"""The order page's transcript in Chromium: a supervisor opens the call's transcript and a
time stamp plays the call's recording from that utterance (the recording is two seconds of a
real WAV; the utterance begins at 1.2 s). What must not show: the ID number said."""

from __future__ import annotations

from core.db import transaction
from recordings import transcripts
from recordings.speech import Utterance, Word
from tests.api_world import NOW
from tests.browser import MEDIA_FLAGS, chromium, screenshot
from tests.test_workspace_browser import (  # the workspace's site: a real WAV on a call
    CALL_ID,
    SUPERVISOR,
    Site,
    _sign_in,
    site,  # noqa: F401  (the fixture)
)

ID_NUMBER = "440524188001010014"  # check digit 4, worked by hand


def test_a_time_stamp_plays_the_recording_from_that_utterance(site: Site) -> None:  # noqa: F811
    said = f"我 的 身份证 是 {ID_NUMBER} 门口 垃圾 没人 清"
    with transaction(site.sessions) as session:
        transcripts.store(session, sha256="c" * 64, call_id=CALL_ID, leg="caller",
                          engine="vosk", model="fixture", audio_seconds=2.0, now=NOW,
                          utterances=[Utterance(1.2, 1.9, said, tuple(
                              Word(w, 1.2, 1.9, 0.8) for w in said.split()))])
    with chromium(*MEDIA_FLAGS) as browser:
        context, page = _sign_in(browser, site, SUPERVISOR)
        page.goto(f"{site.url}/orders/{site.case}")
        call = page.locator(f"#calls li[data-call='{CALL_ID}']")
        call.locator("details.call-transcript summary").click()
        line = call.locator("details.call-transcript li[data-speaker='caller']")
        assert line.inner_text().startswith("0:01")
        assert "4405**********0014" in line.inner_text()
        assert ID_NUMBER not in page.content()
        audio = call.locator("audio.call-recording")
        # where it was when it began to play: the utterance's moment, not the start
        audio.evaluate("a => a.addEventListener('playing', "
                       "() => { window.firstPlayedAt = a.currentTime; }, {once: true})")
        line.locator("button.transcript-seek").click()
        page.wait_for_function("() => window.firstPlayedAt !== undefined", timeout=10_000)
        assert 1.15 <= page.evaluate("window.firstPlayedAt") < 1.6
        screenshot(page, "order-transcript")
        context.close()
