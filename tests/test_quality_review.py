"""Quality review (质检, issue 13 item 7) through its door and its API: versioned forms, the
weekly sample (random share per agent, reproducible by the seed; every complaint, low
rating and flagged call), scoring with weighted criteria, an agent's own scores only, the
report per agent, per queue (the centre's teams) and for the whole centre.

Week 2026-W48 (Monday 2026-11-23 to Sunday 2026-11-29 in Beijing); "now" is Monday
2026-11-30 10:00. Agent 8001 answered 20 calls that week, 8002 answered 4, each the even
ones from the queue intake (综合受理) and the odd ones from complaints (投诉专席); one call
of 8001 before the week (Sunday 2026-11-22 23:30 Beijing) and one abandoned call."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from accounts import service as accounts
from core.clock import FixedClock
from core.config import Quality
from core.db import make_engine, session_factory, transaction, upgrade
from core.live import connect_redis
from hotline.web import create_app
from quality import service as quality
from telephony import directory, records
from tests.conftest import REDIS_SERVER_URL, make_settings
from tickets import catalogue, service, surveys

NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
MONDAY = datetime(2026, 11, 22, 16, 0, tzinfo=UTC)  # 2026-11-23 00:00 Beijing
WEEK = date(2026, 11, 25)
PASSWORD = "quality-密码-1"
QUEUES = ("intake", "complaints")  # even calls, odd calls


def _call(session, call_id: str, agent: str | None, at: datetime,
          outcome: str = "answered", queue: str = "intake") -> None:
    started = at.timestamp()
    records.store_call(session, {
        "call_id": call_id, "caller_number": "13800138000", "caller_name": "",
        "entry_number": "12319", "started_at": started, "ended_at": started + 120,
        "duration_seconds": 120, "outcome": outcome, "queue": queue,
        "queue_position": 1, "wait_seconds": 3, "short_abandon": False, "agent": agent,
        "connected_at": started + 3 if agent else None, "talk_seconds": 117 if agent else None,
        "hold_seconds": 0, "hangup_cause": 16, "hangup_cause_text": "", "ivr_path": [],
        "agent_attempts": [], "transfers": [], "legs": [], "recording": None,
        "incomplete": False})


def _id(agent: str, n: int) -> str:
    return f"17644{agent}.{n:02d}"


@pytest.fixture
def world(database_url: str, tmp_path: Path):
    settings = make_settings(tmp_path, DATABASE_URL=database_url, REDIS_URL=REDIS_SERVER_URL)
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        catalogue.seed(session)
        directory.ensure_queue(session, "intake", "综合受理")
        directory.ensure_queue(session, "complaints", "投诉专席")
        for n in range(20):
            _call(session, _id("8001", n), "8001", MONDAY + timedelta(hours=8 + n),
                  queue=QUEUES[n % 2])
        for n in range(4):
            _call(session, _id("8002", n), "8002", MONDAY + timedelta(days=1, hours=n),
                  queue=QUEUES[n % 2])
        _call(session, "1764400000.99", "8001", MONDAY - timedelta(minutes=30))
        _call(session, "1764400000.98", None, MONDAY + timedelta(hours=3), "abandoned")
    yield settings, sessions
    engine.dispose()


def _form(session, name: str = "通话质检") -> quality.QualityForm:
    return quality.define_form(session, name, [
        quality.CriterionIn("服务用语", 30, 10), quality.CriterionIn("受理准确", 50, 5),
        quality.CriterionIn("情绪安抚", 20, 4)], actor="管理员", now=NOW)


def test_the_random_sample_is_a_share_per_agent_and_the_same_when_drawn_again(world) -> None:
    _settings, sessions = world
    rules = Quality(sample_percent=10, sample_seed="种子-A")
    with transaction(sessions) as session:
        first = quality.draw(session, WEEK, now=NOW, zone="Asia/Shanghai", settings=rules)
        picked = {(s.agent, s.call_id, s.period) for s in first}
    # 10 % of 20 calls is 2; of 4 calls 0.4, at least 1; nothing outside the week
    assert sorted(a for a, _c, _p in picked) == ["8001", "8001", "8002"]
    assert {p for _a, _c, p in picked} == {"2026-W48"}
    assert "1764400000.99" not in {c for _a, c, _p in picked}
    with transaction(sessions) as session:
        assert quality.draw(session, WEEK, now=NOW, zone="Asia/Shanghai", settings=rules) == []
    # the same seed on another database picks the same calls; another seed others
    assert quality._random_pick(sorted(_id("8001", n) for n in range(20)), 10, "种子-A",
                                "2026-W48", "8001") == \
        quality._random_pick(sorted(_id("8001", n) for n in range(20)), 10, "种子-A",
                             "2026-W48", "8001")
    chosen = {c for a, c, _p in picked if a == "8001"}
    others = [set(quality._random_pick(sorted(_id("8001", n) for n in range(20)), 10,
                                       f"种子-{k}", "2026-W48", "8001")) for k in range(8)]
    assert any(o != chosen for o in others)


def test_complaints_low_ratings_and_flags_are_sampled_whatever_the_draw(world) -> None:
    _settings, sessions = world
    rules = Quality(sample_percent=0)  # no random pick: only the reasons below
    with transaction(sessions) as session:
        complaint = service.open_order(session, appeal_type="complaint", description="态度差",
                                       channel="phone", actor="受理员", now=MONDAY)
        service.link_call(session, complaint.case_number, _id("8001", 3), actor="受理员",
                          now=MONDAY)
        enquiry = service.open_order(session, appeal_type="enquiry", description="咨询",
                                     channel="phone", actor="受理员", now=MONDAY)
        service.link_call(session, enquiry.case_number, _id("8002", 1), actor="受理员",
                          now=MONDAY)
        service.transition(session, enquiry.case_number, "resolve_on_call", actor="受理员",
                           role="operator", now=MONDAY)
        session.add(surveys.Survey(order_id=enquiry.id, phone="+8613800138000", state="done",
                                   next_attempt_at=MONDAY, rating=5, channel="phone",
                                   created_at=MONDAY, updated_at=MONDAY))
        # the speech side's keyword alert, before and after the call's record exists
        assert quality.flag_call(session, "1764499999.1", "keyword:煤气泄漏") is None
        flagged = quality.flag_call(session, _id("8001", 7), "keyword:坍塌")
        assert flagged is not None and flagged.reasons == ["flag:keyword:坍塌"]
        quality.flag_call(session, _id("8001", 7), "keyword:坍塌")  # again: nothing new
    with transaction(sessions) as session:
        quality.draw(session, WEEK, now=NOW, zone="Asia/Shanghai", settings=rules)
        got = {s.call_id: s.reasons for s in quality.pending(session)}
    assert got == {_id("8001", 3): [f"complaint:{complaint.case_number}"],
                   _id("8002", 1): ["low_rating:5"],
                   _id("8001", 7): ["flag:keyword:坍塌"]}


def test_a_score_is_weighted_and_a_new_form_version_leaves_it_alone(world) -> None:
    _settings, sessions = world
    with transaction(sessions) as session:
        quality.draw(session, WEEK, now=NOW, zone="Asia/Shanghai",
                     settings=Quality(sample_percent=100))
        form = _form(session)
        c = {x.title: x.id for x in quality.criteria_of(session, form.id)}
        sample = next(s for s in quality.pending(session) if s.call_id == _id("8002", 0))
        review = quality.score(session, sample.id, form_id=form.id,
                               points={c["服务用语"]: 8, c["受理准确"]: 5, c["情绪安抚"]: 2},
                               comment="开场白完整", reviewer="监督员", now=NOW)
        # (30*8/10 + 50*5/5 + 20*2/4) / 100 * 100 = 24 + 50 + 10
        assert review.score == 84.0
        newer = quality.define_form(session, "通话质检", [
            quality.CriterionIn("服务用语", 100, 10)], actor="管理员", now=NOW)
        assert (newer.version, form.active) == (2, False)
    with sessions() as session:
        view = quality.review_view(session, quality.reviews_of_agent(session, "8002")[0])
    assert view["score"] == 84.0 and view["form"]["version"] == 1
    assert [(x["title"], x["points"], x["max_points"]) for x in view["criteria"]] == [
        ("服务用语", 8, 10), ("受理准确", 5, 5), ("情绪安抚", 2, 4)]


def test_a_wrong_score_is_refused_and_stores_nothing(world) -> None:
    _settings, sessions = world
    with transaction(sessions) as session:
        quality.draw(session, WEEK, now=NOW, zone="Asia/Shanghai",
                     settings=Quality(sample_percent=100))
        form = _form(session)
        c = [x.id for x in quality.criteria_of(session, form.id)]
        sample_id = quality.pending(session)[0].id
        agent = quality.get_sample(session, sample_id).agent
    cases = [({c[0]: 11, c[1]: 5, c[2]: 4}, "from 0 to 10"),
             ({c[0]: 1, c[1]: 5}, "required"),
             ({c[0]: 1, c[1]: 5, c[2]: 4, 999_999: 1}, "no criterion")]
    for points, says in cases:
        with pytest.raises(quality.QualityError, match=says), transaction(sessions) as s:
            quality.score(s, sample_id, form_id=form.id, points=points, reviewer="监督员",
                          now=NOW)
    with pytest.raises(quality.NotYours), transaction(sessions) as s:
        quality.score(s, sample_id, form_id=form.id, points={c[0]: 1, c[1]: 1, c[2]: 1},
                      reviewer="监督员", reviewer_agent=agent, now=NOW)
    with sessions() as session:
        assert quality.get_sample(session, sample_id).state == "pending"
        assert quality.reviews_of_agent(session, agent) == []
    with transaction(sessions) as s:
        quality.score(s, sample_id, form_id=form.id, points={c[0]: 1, c[1]: 1, c[2]: 1},
                      reviewer="监督员", now=NOW)
    with pytest.raises(quality.AlreadyScored), transaction(sessions) as s:
        quality.score(s, sample_id, form_id=form.id, points={c[0]: 2, c[1]: 2, c[2]: 2},
                      reviewer="值班长", now=NOW)


def test_the_api_scores_an_agent_sees_only_their_own_and_the_report_averages(world) -> None:
    settings, sessions = world
    settings = replace(settings, quality=Quality(sample_percent=100))
    with transaction(sessions) as session:
        for name, roles, agent in (("管理员", ["admin"], None), ("监督员", ["supervisor"], None),
                                   ("坐席甲", ["operator"], "8001"),
                                   ("坐席乙", ["operator"], "8002")):
            accounts.create_account(session, name, roles, password=PASSWORD, agent=agent,
                                    actor="测试", now=NOW, strict=False)
    tokens = {}
    with transaction(sessions) as session:
        for name in ("管理员", "监督员", "坐席甲", "坐席乙"):
            secret = accounts.issue_token(session, name, scope=None, actor="测试", now=NOW)
            tokens[name] = {"Authorization": f"Bearer {secret}"}
    app = create_app(settings, sessions, connect_redis(settings), FixedClock(NOW))
    client = app.test_client()
    made = client.post("/api/v1/quality/forms", headers=tokens["管理员"], json={
        "name": "通话质检", "criteria": [{"title": "服务用语", "weight": 40, "max_points": 10},
                                     {"title": "受理准确", "weight": 60, "max_points": 10}]})
    assert made.status_code == 201, made.json
    criteria = [c["id"] for c in made.json["criteria"]]
    bad = client.post("/api/v1/quality/forms", headers=tokens["管理员"], json={
        "name": "坏表", "criteria": [{"title": "x", "weight": 0, "max_points": 10}]})
    assert bad.status_code == 400 and "weight" in bad.json["detail"]
    drawn = client.post("/api/v1/quality/samples", headers=tokens["监督员"],
                        json={"day": "2026-11-25"})
    assert drawn.status_code == 200 and len(drawn.json["items"]) == 24
    queue = client.get("/api/v1/quality/samples", headers=tokens["监督员"]).json["items"]
    sample_of = {s["call_id"]: s["id"] for s in queue}

    def score(call_id: str, points: list[int], comment: str = "") -> None:
        done = client.post(f"/api/v1/quality/samples/{sample_of[call_id]}/review",
                           headers=tokens["监督员"], json={
                               "form_id": made.json["id"], "comment": comment,
                               "points": {str(c): p for c, p in zip(criteria, points,
                                                                   strict=True)}})
        assert done.status_code == 201, done.json

    # both from intake
    score(_id("8001", 0), [10, 5], "给8001的意见")
    score(_id("8002", 0), [5, 10], "给8002的意见")
    again = client.post(f"/api/v1/quality/samples/{sample_of[_id('8001', 0)]}/review",
                        headers=tokens["监督员"], json={
                            "form_id": made.json["id"],
                            "points": {str(c): 1 for c in criteria}})
    assert again.status_code == 409
    mine = client.get("/api/v1/quality/mine", headers=tokens["坐席甲"]).json["items"]
    assert [(r["agent"], r["score"], r["comment"]) for r in mine] == [
        ("8001", 70.0, "给8001的意见")]  # 40*10/10 + 60*5/10
    theirs = client.get("/api/v1/quality/mine", headers=tokens["坐席乙"]).json["items"]
    assert [(r["agent"], r["score"]) for r in theirs] == [("8002", 80.0)]  # 20 + 60
    score(_id("8001", 1), [10, 10])  # complaints: 40 + 60 = 100
    score(_id("8002", 1), [0, 5])  # complaints: 0 + 30 = 30
    score(_id("8001", 2), [0, 0])  # intake: 0
    report = client.get("/api/v1/quality/report?from=2026-11-23T00:00:00%2B08:00"
                        "&to=2026-11-30T00:00:00%2B08:00", headers=tokens["监督员"]).json
    # scores (服务用语 %, 受理准确 %): 8001 intake 70 (100, 50), complaints 100 (100, 100),
    # intake 0 (0, 0); 8002 intake 80 (50, 100), complaints 30 (0, 50).
    # 8001: (70 + 100 + 0) / 3 = 56.7; (100 + 100 + 0) / 3 = 66.7; (50 + 100 + 0) / 3 = 50
    # 8002: (80 + 30) / 2 = 55; (50 + 0) / 2 = 25; (100 + 50) / 2 = 75
    assert [(a["agent"], a["reviews"], a["average"], a["criteria"]) for a in
            report["agents"]] == [("8001", 3, 56.7, {"受理准确": 50.0, "服务用语": 66.7}),
                                  ("8002", 2, 55.0, {"受理准确": 75.0, "服务用语": 25.0})]
    # intake: (70 + 80 + 0) / 3 = 50; (100 + 50 + 0) / 3 = 50; (50 + 100 + 0) / 3 = 50
    # complaints: (100 + 30) / 2 = 65; (100 + 0) / 2 = 50; (100 + 50) / 2 = 75
    assert [(q["queue"], q["title"], q["reviews"], q["average"], q["criteria"]) for q in
            report["queues"]] == [
        ("complaints", "投诉专席", 2, 65.0, {"受理准确": 75.0, "服务用语": 50.0}),
        ("intake", "综合受理", 3, 50.0, {"受理准确": 50.0, "服务用语": 50.0})]
    # the whole centre: (70 + 80 + 100 + 30 + 0) / 5 = 56; (100 + 50 + 100 + 0 + 0) / 5 = 50;
    # (50 + 100 + 100 + 50 + 0) / 5 = 60
    assert (report["team"]["reviews"], report["team"]["average"],
            report["team"]["criteria"]) == (5, 56.0, {"受理准确": 60.0, "服务用语": 50.0})
    assert client.get("/api/v1/quality/report", headers=tokens["坐席甲"]).status_code == 403


def test_the_cli_draws_a_week_and_reports_it(world, monkeypatch) -> None:
    import json

    from click.testing import CliRunner

    from hotline import cli

    settings, _sessions = world
    settings = replace(settings, quality=Quality(sample_percent=50, sample_seed="命令行"))
    monkeypatch.setattr(cli, "load_settings", lambda _path=None: settings)
    drawn = CliRunner().invoke(cli.cli, ["quality", "draw", "--day", "2026-11-25", "--json"])
    assert drawn.exit_code == 0, drawn.output
    samples = json.loads(drawn.output)
    # half of 8001's 20 calls and of 8002's 4, all of the week 2026-W48, all random
    assert sorted(s["agent"] for s in samples).count("8001") == 10
    assert sorted(s["agent"] for s in samples).count("8002") == 2
    assert {s["period"] for s in samples} == {"2026-W48"}
    assert {tuple(s["reasons"]) for s in samples} == {("random",)}
    again = CliRunner().invoke(cli.cli, ["quality", "draw", "--day", "2026-11-25", "--json"])
    assert json.loads(again.output) == []
    report = CliRunner().invoke(cli.cli, ["quality", "report", "--from", "2026-11-23",
                                          "--to", "2026-11-30"])
    assert json.loads(report.output)["team"] == {"agent": None, "reviews": 0,
                                                 "average": None, "criteria": {}}


def test_a_keyword_heard_flags_its_call_even_before_the_record_is_stored(world) -> None:
    """The speech side's `speech.keyword` on the bus, for a call still up and for a stored
    one: the loop flags both, and samples the first when its `call.ended` comes."""
    import json as _json

    from core.events import EventBus
    from quality.keywords import KeywordFlags

    settings, sessions = world
    bus = EventBus(connect_redis(settings), stream=f"test:quality-flags:{id(sessions)}")
    flags = KeywordFlags(sessions, bus, "Asia/Shanghai")
    live = "1764999999.5"

    def put(event: dict[str, object]) -> None:
        bus.client.xadd(bus.stream, {"type": str(event["type"]), "id": str(event["id"]),
                                     "data": _json.dumps(event, ensure_ascii=False)})

    put({"type": "speech.keyword", "id": "k1", "call_id": live, "keyword": "煤气泄漏"})
    put({"type": "speech.keyword", "id": "k2", "call_id": _id("8002", 2), "keyword": "跳楼"})
    put({"type": "call.agent_connected", "id": "c0", "call_id": _id("8002", 3)})
    assert flags.follow() == [live, _id("8002", 2)]
    with sessions() as session:
        assert [s.call_id for s in quality.pending(session)] == [_id("8002", 2)]
    with transaction(sessions) as session:
        _call(session, live, "8001", MONDAY + timedelta(days=2))
    put({"type": "call.ended", "id": "e1", "call_id": live})
    put({"type": "call.ended", "id": "e2", "call_id": _id("8002", 0)})  # nobody flagged it
    assert flags.follow() == [live]
    with sessions() as session:
        assert {s.call_id: s.reasons for s in quality.pending(session)} == {
            _id("8002", 2): ["flag:keyword:跳楼"], live: ["flag:keyword:煤气泄漏"]}
    assert flags.follow() == []  # each event handled once
    bus.client.delete(bus.stream)
