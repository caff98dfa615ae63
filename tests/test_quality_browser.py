"""Quality review (质检) in Debian's Chromium against the real web app (waitress), as issue 13
asks it shown: an administrator defines a scoring form on its page; a supervisor draws the
week's sample, opens a sampled call, plays its recording in the page (HTTP Range, 206; the
play audited) and scores it; the agent whose call it was reads the score and the comment on
"my scores"; a second agent sees none of it.

Fixture call records with real WAV recordings: agent 8001's call and agent 8002's call of
Tuesday 2026-11-24 in Beijing; the sample share is 100 % so both are sampled. The clock is
pinned at 2026-11-24 10:00 Beijing."""

from __future__ import annotations

import json
import math
import struct
import threading
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect
from sqlalchemy import select
from waitress.server import create_server

from accounts import service as accounts
from accounts.audit import AuditEntry
from core.clock import FixedClock
from core.db import make_engine, session_factory, transaction, upgrade
from core.live import connect_redis
from hotline.web import create_app, stop_web_server
from quality import service as quality
from telephony import directory, records
from tests import isolation
from tests.api_world import NOW
from tests.browser import MEDIA_FLAGS, chromium, screenshot
from tests.conftest import REDIS_SERVER_URL, make_settings

PASSWORD = "quality-密码-2"
ADMIN, REVIEWER, AGENT, OTHER = "管理员老周", "监督员老王", "坐席小李", "坐席小赵"
CALLS = {"8001": "1764379800.11", "8002": "1764380400.12"}


@dataclass
class Site:
    url: str
    sessions: Any


def _wav(path: Path) -> None:
    """Two seconds of a 440 Hz tone, 8 kHz 16-bit mono: a real, playable recording."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(
            2 * math.pi * 440 * i / 8000))) for i in range(16000)))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    settings = make_settings(tmp_path_factory.mktemp("quality"), REDIS_URL=REDIS_SERVER_URL,
                             HOTLINE_QUALITY_SAMPLE_PERCENT="100")
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        for name, roles, agent in ((ADMIN, ["admin"], None),
                                   (REVIEWER, ["supervisor"], None),
                                   (AGENT, ["operator"], "8001"),
                                   (OTHER, ["operator"], "8002")):
            accounts.create_account(session, name, roles, password=PASSWORD, agent=agent,
                                    actor="测试", now=NOW, strict=False)
        directory.ensure_queue(session, "intake", "综合受理")
        for n, (agent, call_id) in enumerate(CALLS.items()):
            recording = settings.storage.recordings_dir / "2026" / "11" / "24" / \
                f"{call_id}.wav"
            _wav(recording)
            started = (NOW - timedelta(hours=2, minutes=10 * n)).timestamp()
            records.store_call(session, {
                "call_id": call_id, "caller_number": "13912345678", "caller_name": "",
                "entry_number": "12319", "started_at": started, "ended_at": started + 200,
                "duration_seconds": 200, "outcome": "answered", "queue": "intake",
                "queue_position": 1, "wait_seconds": 4, "short_abandon": False,
                "agent": agent, "connected_at": started + 4, "talk_seconds": 196,
                "hold_seconds": 0, "hangup_cause": 16, "hangup_cause_text": "",
                "ivr_path": [], "agent_attempts": [], "transfers": [], "legs": [],
                "recording": str(recording), "incomplete": False})
    app = create_app(settings, sessions, connect_redis(settings), FixedClock(NOW))
    port = isolation.free_port()
    server = create_server(app, host="127.0.0.1", port=port, threads=4)
    thread = threading.Thread(target=server.run, daemon=True, name="quality-web")
    thread.start()
    try:
        yield Site(f"http://127.0.0.1:{port}", sessions)
    finally:
        stop_web_server(server, thread)
        engine.dispose()


def _sign_in(browser: Browser, site: Site, name: str, then: str) -> tuple[BrowserContext, Page]:
    context = browser.new_context(locale="zh-CN", viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.goto(f"{site.url}/login?next={then}")
    page.get_by_label("用户名").fill(name)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(f"{site.url}{then}")
    return context, page


def test_a_form_defined_a_call_scored_and_only_its_agent_sees_the_score(site: Site) -> None:
    with chromium(*MEDIA_FLAGS) as browser:
        # the administrator defines the form: two criteria, weights 40 and 60
        admin_context, admin = _sign_in(browser, site, ADMIN, "/quality/forms")
        admin.locator("input[name=name]").fill("热线通话质检")
        for row, (title, weight, top) in enumerate((("服务用语", "40", "10"),
                                                    ("受理准确", "60", "5")), 1):
            admin.locator(f"input[name=title-{row}]").fill(title)
            admin.locator(f"input[name=weight-{row}]").fill(weight)
            admin.locator(f"input[name=max-{row}]").fill(top)
        admin.get_by_role("button", name="保存评分表").click()
        saved = admin.locator("section.quality-form[data-form='热线通话质检']")
        expect(saved).to_have_attribute("data-version", "1")
        expect(saved).to_contain_text("服务用语")

        # the supervisor draws the week's sample and opens agent 8001's call
        reviewer_context, reviewer = _sign_in(browser, site, REVIEWER, "/quality")
        reviewer.get_by_role("button", name="抽取样本").click()
        expect(reviewer.locator("#quality-message")).to_contain_text("2")
        rows = reviewer.locator("#quality-queue tbody tr")
        expect(rows).to_have_count(2)
        reviewer.locator(f"tr[data-call='{CALLS['8001']}'] a").click()
        expect(reviewer.locator("#sample-agent")).to_have_text("8001")

        statuses: list[tuple[int, str]] = []
        reviewer.on("response", lambda r: statuses.append(
            (r.status, r.request.headers.get("range", ""))) if "/recording" in r.url else None)
        audio = reviewer.locator("#sample-recording")
        audio.evaluate("a => a.play()")
        reviewer.wait_for_function("a => a.currentTime > 0.3", arg=audio.element_handle(),
                                   timeout=10_000)
        assert statuses and statuses[0] == (206, "bytes=0-")

        form = reviewer.locator("form.quality-score[data-form='热线通话质检']")
        form.get_by_label("服务用语", exact=True).fill("8")
        form.get_by_label("受理准确", exact=True).fill("3")
        form.locator("textarea[name=comment]").fill("开场白规范，地址未复述")
        screenshot(reviewer, "quality-review-scoring")
        form.get_by_role("button", name="保存评分").click()
        reviewer.wait_for_url(f"{site.url}/quality")
        expect(rows).to_have_count(1)  # agent 8002's call still waits

        # agent 8001 reads the score: 40*8/10 + 60*3/5 = 32 + 36 = 68
        agent_context, agent = _sign_in(browser, site, AGENT, "/quality/mine")
        mine = agent.locator("section.quality-mine")
        expect(mine).to_have_count(1)
        expect(mine).to_have_attribute("data-call", CALLS["8001"])
        expect(mine.locator(".quality-score-value")).to_have_text("68.0")
        expect(mine.locator(".quality-comment")).to_have_text("开场白规范，地址未复述")
        expect(mine).to_contain_text(REVIEWER)
        screenshot(agent, "quality-my-scores")

        # agent 8002 sees no score, and nothing of 8001's
        other_context, other = _sign_in(browser, site, OTHER, "/quality/mine")
        expect(other.locator("#quality-none")).to_be_visible()
        expect(other.locator("section.quality-mine")).to_have_count(0)
        assert "开场白规范" not in other.content()
        # ... nor the reviewers' pages
        assert other.request.get(f"{site.url}/quality").status == 403

        reviewer.goto(f"{site.url}/quality/report?day=2026-11-24&weeks=1")
        expect(reviewer.locator("#quality-report tr[data-agent='8001'] .quality-average")
               ).to_have_text("68.0")
        # the call came through intake: its team's line, and the whole centre's
        intake = reviewer.locator("#quality-report-queues tr[data-queue='intake']")
        expect(intake).to_contain_text("综合受理")
        expect(intake.locator(".quality-average")).to_have_text("68.0")
        centre = reviewer.locator("#quality-report tr[data-agent='team']")
        expect(centre).to_contain_text("全中心")
        expect(centre.locator(".quality-average")).to_have_text("68.0")
        screenshot(reviewer, "quality-report")
        for context in (admin_context, reviewer_context, agent_context, other_context):
            context.close()

    with site.sessions() as session:
        played = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "recording_played")).all()
        assert [(e.actor, e.target) for e in played] == [(REVIEWER, CALLS["8001"])]
        assert "quality_sample" in json.loads(played[0].detail)
        assert [r.score for r in quality.reviews_of_agent(session, "8002")] == []
