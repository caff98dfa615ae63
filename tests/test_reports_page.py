"""The reports page (报表) and its XLSX and CSV exports over a hand-built week, every figure
worked out by hand below; the charts drawn by ECharts in Debian's Chromium; hostile period
parameters refused. Kept as screenshots.

All stored times are UTC; Beijing time (BJT) is UTC+8. The clock is pinned at Thursday
2026-11-26 12:00 BJT (04:00Z), so "today" is 2026-11-26 and its week is 2026-W48, Monday
2026-11-23 to Sunday 2026-11-29 BJT = [2026-11-22 16:00Z, 2026-11-29 16:00Z).

Calls (inbound; queue "general" unless IVR only):
  today, Thursday 2026-11-26 BJT
    09:05 T1 answered, wait 5, talk 100 (caller 13800000001)
    09:20 T2 answered, wait 10, talk 200
    09:40 T3 answered, wait 30, talk 60
    09:50 T4 abandoned, wait 40
    09:55 T5 short abandon (in calls, not offered)
    10:10 T6 answered, wait 8, talk 120
    10:30 T7 unanswered, wait 60
    11:15 T8 answered, wait 12, talk 90
    11:30 T9 IVR only, caller 13800000001 again: a repeat call of T1
  the same weekday a week before, Thursday 2026-11-19 BJT
    09:10 L1 answered, 09:30 L2 answered, 14:00 L3 abandoned, 23:30 L4 answered
  Monday 2026-11-23 BJT: 00:10 M1 (= 11-22 16:10Z, in the week) answered wait 5 talk 30;
    08:00 M2 answered wait 20 talk 100
  Sunday 2026-11-22 23:30 BJT S1 (= 15:30Z): answered, in week 47, not in week 48

Hours of today: 09 -> calls 5, offered 4, answered 3 (75.00 %); 10 -> 2, 2, 1 (50.00 %);
11 -> 2, 1, 1 (100.00 %); every other hour none. A week before: 09 -> 2, 14 -> 1, 23 -> 1.

Week 48: calls 9 + 2 = 11; offered 7 + 2 = 9; answered 5 + 2 = 7 -> answer rate 7/9 =
77.78 %; abandoned 1 -> 11.11 %; answered within 15 s: T1 T2 T6 T8 M1 = 5 -> 55.56 %;
ASA (5+10+30+8+12+5+20)/7 = 90/7 = 12.9 s; AHT (100+200+60+120+90+30+100)/7 = 700/7 =
100.0 s (no wrap-up); repeat calls 1 of 11 known numbers -> 9.09 %.
Month 2026-11: calls 11 + 4 + 1 = 16; offered 9 + 4 + 1 = 14; answered 7 + 3 + 1 = 11 ->
78.57 %.

Orders of week 48 (all by phone but Q4):
  Q1 enquiry, Monday 10:00 BJT by op-li, answered on the call (直接办结): on time
  Q2 enquiry, Thursday 09:30 BJT by op-li, still in intake
  Q3 suggestion, Thursday 10:00 BJT by op-wang, answered on the call: on time
  Q4 complaint by web, Tuesday, in intake
  -> 4 orders; first-call resolution 2 of 3 answerable phone orders = 66.67 %; on-time
  completion 2 of 2 = 100.00 %; no callback due (both closures were on the call): "—".
  Q5, Q6 complaints closed 2026-11-12, rated 2 (Tuesday) and 4 (Wednesday) in the week:
  satisfaction 1 of 2 = 50.00 %. No rework.
Evaluation of week 48: operators op-li (2 phone orders taken) and op-wang (1): count score
2/2 and 1/2, no other component to judge -> 100.00 A and 50.00 D.
"""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook
from playwright.sync_api import expect
from sqlalchemy.orm import Session
from waitress.server import create_server

from accounts import service as accounts
from accounts.service import ROLES, add_user
from core import phones
from core.clock import FixedClock
from core.db import make_engine, session_factory, transaction, upgrade
from core.live import connect_redis
from hotline.web import create_app, stop_web_server
from reports import exports
from reports.exports import Column, Section
from telephony.models import CallRecord
from tests import isolation
from tests.browser import chromium, screenshot
from tests.conftest import REDIS_SERVER_URL, make_settings
from tests.test_kpis import OP, _order
from tickets import rollups

NOW = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)  # Thursday 12:00 BJT
NAME, PASSWORD = "报表值班长", "reports-chief-密码-1"


def z(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


# (name, caller, started (UTC), queue, outcome, wait, short abandon, talk)
CALLS = [
    ("T1", "13800000001", z(11, 26, 1, 5), "general", "answered", 5, False, 100),
    ("T2", "13800000002", z(11, 26, 1, 20), "general", "answered", 10, False, 200),
    ("T3", "13800000003", z(11, 26, 1, 40), "general", "answered", 30, False, 60),
    ("T4", "13800000004", z(11, 26, 1, 50), "general", "abandoned", 40, False, None),
    ("T5", "13800000005", z(11, 26, 1, 55), "general", "abandoned", 2, True, None),
    ("T6", "13800000006", z(11, 26, 2, 10), "general", "answered", 8, False, 120),
    ("T7", "13800000007", z(11, 26, 2, 30), "general", "unanswered", 60, False, None),
    ("T8", "13800000008", z(11, 26, 3, 15), "general", "answered", 12, False, 90),
    ("T9", "13800000001", z(11, 26, 3, 30), None, "ivr", None, False, None),
    ("L1", "13900000001", z(11, 19, 1, 10), "general", "answered", 4, False, 50),
    ("L2", "13900000002", z(11, 19, 1, 30), "general", "answered", 6, False, 50),
    ("L3", "13900000003", z(11, 19, 6), "general", "abandoned", 20, False, None),
    ("L4", "13900000004", z(11, 19, 15, 30), "general", "answered", 3, False, 50),
    ("M1", "13700000001", z(11, 22, 16, 10), "general", "answered", 5, False, 30),
    ("M2", "13700000002", z(11, 23, 0), "general", "answered", 20, False, 100),
    ("S1", "13600000001", z(11, 22, 15, 30), "general", "answered", 5, False, 40),
]

WEEK_TOTAL = ["合计", "11", "9", "7", "1", "77.78%", "55.56%", "11.11%", "12.9", "100.0",
              "9.09%", "4", "66.67%", "100.00%", "—", "50.00%", "0"]
KPI_HEADER = ["日", "来电量", "进线量", "接通量", "放弃量", "接通率", "服务水平", "放弃率",
              "平均应答速度（秒）", "平均处理时长（秒）", "重复来电率", "受理工单", "首呼解决率",
              "按时办结率", "回访率", "满意率", "返工数"]
TODAY_CALLS = [0] * 9 + [5, 2, 2] + [0] * 12
WEEK_BEFORE_CALLS = [0] * 9 + [2, 0, 0, 0, 0, 1] + [0] * 8 + [1]
TODAY_RATES = [None] * 9 + [75.0, 50.0, 100.0] + [None] * 12


def _closed_order(session: Session, number: str, rating: int, answered: datetime) -> None:
    """A complaint closed on 2026-11-12, its survey answered `answered` with `rating`."""
    _order(session, number, appeal="complaint", channel="phone", steps=[
        (z(11, 10, 2), "create", OP, "op-zhang"),
        (z(11, 10, 2, 10), "open", "shift_chief", "chief-sun"),
        (z(11, 10, 2, 20), "dispatch", "dispatcher", "disp-zhou"),
        (z(11, 10, 2, 30), "sign", "department", "D01-li"),
        (z(11, 11, 5), "feedback", "department", "D01-li"),
        (z(11, 11, 5, 5), "request_check", "dispatcher", "disp-zhou"),
        (z(11, 11, 6), "check_passed", "supervisor", "sup-zhao"),
        (z(11, 12, 7), "close", "shift_chief", "chief-sun")],
        surveys=(("done", rating, answered),))


def _week(session: Session) -> None:
    for name, caller, started, queue, outcome, wait, short, talk in CALLS:
        session.add(CallRecord(
            call_id=name, caller_number=caller, started_at=started, outcome=outcome,
            citizen_number=phones.normalise_or_empty(caller), queue=queue,
            wait_seconds=wait, short_abandon=short, hold_seconds=0,
            agent="8101" if outcome == "answered" else None,
            connected_at=started + timedelta(seconds=wait) if outcome == "answered" else None,
            talk_seconds=talk, ended_at=started + timedelta(minutes=5), details={}))
    monday, thursday = z(11, 23, 2), z(11, 26, 1, 30)
    _order(session, "Q1", appeal="enquiry", channel="phone", steps=[
        (monday, "create", OP, "op-li"),
        (monday + timedelta(minutes=4), "resolve_on_call", OP, "op-li")],
        deadlines=(("complete", 1, monday, monday + timedelta(days=3),
                    monday + timedelta(minutes=4)),))
    _order(session, "Q2", appeal="enquiry", channel="phone", steps=[
        (thursday, "create", OP, "op-li")],
        deadlines=(("complete", 1, thursday, thursday + timedelta(days=3), None),))
    _order(session, "Q3", appeal="suggestion", channel="phone", steps=[
        (z(11, 26, 2), "create", OP, "op-wang"),
        (z(11, 26, 2, 5), "resolve_on_call", OP, "op-wang")],
        deadlines=(("complete", 1, z(11, 26, 2), z(11, 29, 2), z(11, 26, 2, 5)),))
    _order(session, "Q4", appeal="complaint", channel="web", steps=[
        (z(11, 24, 3), "create", OP, "web")])
    _closed_order(session, "Q5", 2, z(11, 24, 3))
    _closed_order(session, "Q6", 4, z(11, 25, 3))
    rollups.rebuild(session)  # the orders above were stored without moves


@dataclass
class Site:
    url: str
    app: Any
    headers: dict[str, str]


def _build(settings: Any) -> tuple[Any, Any, str]:
    """(app, engine, a supervisor's token) over the hand-built week."""
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        _week(session)
        accounts.create_account(session, NAME, ["shift_chief"], password=PASSWORD,
                                actor="测试", now=NOW)
        token = add_user(session, "reports-supervisor", ["supervisor"], False, ROLES, now=NOW)
    return create_app(settings, sessions, connect_redis(settings), FixedClock(NOW)), engine, token


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    settings = make_settings(tmp_path_factory.mktemp("reports"), REDIS_URL=REDIS_SERVER_URL)
    app, engine, token = _build(settings)
    port = isolation.free_port()
    server = create_server(app, host="127.0.0.1", port=port, threads=2)
    thread = threading.Thread(target=server.run, daemon=True, name="reports-web")
    thread.start()
    try:
        yield Site(f"http://127.0.0.1:{port}", app, {"Authorization": f"Bearer {token}"})
    finally:
        stop_web_server(server, thread)
        engine.dispose()


class _Tables(HTMLParser):
    """section id -> rows of cell texts (header row first), from the page's HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.heading: list[str] = []
        self._section: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_heading = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "section":
            self._section = found.get("id")
            self.tables[str(self._section)] = []
        elif tag == "tr" and self._section:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "p" and found.get("id") == "report-period":
            self._in_heading = True
        elif tag == "span" and self._in_heading:
            self.heading.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._section:
            self.tables[self._section].append(self._row)
            self._row = None
        elif tag == "section":
            self._section = None
        elif tag == "p":
            self._in_heading = False
            self.heading = [line.strip() for line in self.heading]

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        elif self._in_heading and self.heading:
            self.heading[-1] += data


def _page(site: Site, query: str) -> _Tables:
    reply = site.app.test_client().get(f"/reports?{query}", headers=site.headers)
    assert reply.status_code == 200, reply.data[:300]
    tables = _Tables()
    tables.feed(reply.get_data(as_text=True))
    return tables


def _row(rows: list[list[str]], first: str) -> list[str]:
    return next(row for row in rows if row and row[0] == first)


def _csv_sections(body: bytes) -> dict[str, list[list[str]]]:
    """CSV section title -> its rows (header first); the title follows a blank line."""
    assert body.startswith(b"\xef\xbb\xbf")  # UTF-8 with BOM: Excel reads the Chinese
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))
    out: dict[str, list[list[str]]] = {}
    current: list[list[str]] | None = None
    for at, row in enumerate(rows):
        if not row:
            current = None
        elif current is None and at > 4 and not rows[at - 1]:  # after the 4 heading lines
            current = out.setdefault(row[0], [])
        elif current is not None:
            current.append(row)
    return out


def test_the_week_on_the_page_and_in_both_exports_is_the_hand_worked_week(site: Site) -> None:
    page = _page(site, "unit=week&day=2026-11-24")
    assert page.heading[0] == "周期：周 2026-W48（2026-11-23 至 2026-11-29）"
    assert page.heading[1] == "时区：Asia/Shanghai"
    assert page.heading[2] == "生成时间：2026-11-26 12:00"
    kpis = page.tables["kpis"]
    assert kpis[0] == KPI_HEADER
    assert [row[0] for row in kpis[1:]] == [f"2026-11-{d}" for d in range(23, 30)] + ["合计"]
    assert _row(kpis, "合计") == WEEK_TOTAL
    assert _row(kpis, "2026-11-23")[1:4] == ["2", "2", "2"]
    assert _row(kpis, "2026-11-26")[1:7] == ["9", "7", "5", "1", "71.43%", "57.14%"]
    assert _row(kpis, "2026-11-25")[1:6] == ["0", "0", "0", "0", "—"]
    assert page.tables["targets"][1:] == [["接通率", "95.00%", "77.78%", "未达标"],
                                          ["服务水平", "80.00%", "55.56%", "未达标"],
                                          ["满意率", "85.00%", "50.00%", "未达标"]]
    operators = page.tables["evaluation-operators"]
    assert [row[:4] for row in operators[1:]] == [["op-li", "100.00", "A", "100.00%"],
                                                   ["op-wang", "50.00", "D", "50.00%"]]
    hours = page.tables["hours"]  # the picked day, Tuesday, against Tuesday a week before
    assert hours[0][:3] == ["时段", "2026-11-24 来电", "2026-11-17 来电"]
    assert len(hours) == 25 and all(row[1:3] == ["0", "0"] for row in hours[1:])

    client = site.app.test_client()
    reply = client.get("/reports/export.csv?unit=week&day=2026-11-24", headers=site.headers)
    assert reply.status_code == 200 and reply.mimetype == "text/csv"
    assert reply.headers["Content-Disposition"] == \
        'attachment; filename="report-week-2026-W48.csv"'
    table = _csv_sections(reply.data)
    assert table["热线指标"][0] == KPI_HEADER
    assert _row(table["热线指标"], "合计") == WEEK_TOTAL
    assert _row(table["热线指标"], "2026-11-26")[1:7] == ["9", "7", "5", "1", "71.43%",
                                                       "57.14%"]
    assert [row[:4] for row in table["考核评价：受理员"][1:]] == \
        [["op-li", "100.00", "A", "100.00%"], ["op-wang", "50.00", "D", "50.00%"]]

    reply = client.get("/reports/export.xlsx?unit=week&day=2026-11-24", headers=site.headers)
    assert reply.status_code == 200
    assert reply.mimetype == \
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    book = load_workbook(io.BytesIO(reply.data))
    sheet = book["热线指标"]
    assert sheet["A2"].value == "周期：周 2026-W48（2026-11-23 至 2026-11-29）"
    rows = [[cell.value for cell in row] for row in sheet.iter_rows()]
    assert rows[5] == KPI_HEADER
    total = next(row for row in sheet.iter_rows() if row[0].value == "合计")
    assert [cell.value for cell in total] == [
        "合计", 11, 9, 7, 1, 0.7778, 0.5556, 0.1111, 12.9, 100.0, 0.0909, 4, 0.6667, 1.0,
        None, 0.5, 0]
    assert [total[i].number_format for i in (1, 5, 8)] == ["0", "0.00%", "0.0"]
    operators_sheet = [[c.value for c in row][:4] for row in book["考核评价：受理员"].iter_rows()]
    assert operators_sheet[-2:] == [["op-li", 100.0, "A", 1.0], ["op-wang", 50.0, "D", 0.5]]


def test_today_by_hour_and_the_month(site: Site) -> None:
    page = _page(site, "")  # today, from the pinned clock
    assert page.heading[0] == "周期：日 2026-11-26（2026-11-26 至 2026-11-26）"
    kpis = page.tables["kpis"]
    assert kpis[0][0] == "时段" and len(kpis) == 1 + 24 + 1
    assert _row(kpis, "09:00")[1:6] == ["5", "4", "3", "1", "75.00%"]
    assert _row(kpis, "10:00")[1:6] == ["2", "2", "1", "0", "50.00%"]
    assert _row(kpis, "11:00")[1:6] == ["2", "1", "1", "0", "100.00%"]
    assert _row(kpis, "合计")[1:6] == ["9", "7", "5", "1", "71.43%"]
    hours = page.tables["hours"]
    assert hours[0][:3] == ["时段", "2026-11-26 来电", "2026-11-19 来电"]
    assert [int(row[1]) for row in hours[1:]] == TODAY_CALLS
    assert [int(row[2]) for row in hours[1:]] == WEEK_BEFORE_CALLS
    assert _row(hours, "09:00")[3:] == ["4", "3", "75.00%"]
    assert _row(hours, "23:00")[1:] == ["0", "1", "0", "0", "—"]

    month = _page(site, "unit=month&day=2026-11-01")
    assert month.heading[0] == "周期：月 2026-11（2026-11-01 至 2026-11-30）"
    assert len(month.tables["kpis"]) == 1 + 30 + 1
    assert _row(month.tables["kpis"], "合计")[1:6] == ["16", "14", "11", "2", "78.57%"]
    assert _row(month.tables["kpis"], "2026-11-22")[1:4] == ["1", "1", "1"]  # S1 only


def test_the_week_is_the_same_on_both_databases(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, DATABASE_URL=database_url, REDIS_URL=REDIS_SERVER_URL)
    app, engine, token = _build(settings)
    try:
        site = Site("", app, {"Authorization": f"Bearer {token}"})
        page = _page(site, "unit=week&day=2026-11-29")  # a Sunday: still week 48
        assert _row(page.tables["kpis"], "合计") == WEEK_TOTAL
        table = _csv_sections(app.test_client().get(
            "/reports/export.csv?unit=week&day=2026-11-23", headers=site.headers).data)
        assert _row(table["热线指标"], "合计") == WEEK_TOTAL
    finally:
        engine.dispose()


@pytest.mark.parametrize("query", [
    "unit=year", "unit=", "unit=day%00", "day=2026-13-01", "day=2026-02-30", "day=1",
    "day=20261124", "day=2026-11-24T00:00:00%2B08:00", "day=0001-01-01", "day=9999-12-31",
    "day=%27%20OR%201%3D1--", "day=" + "9" * 5000, "unit=week&day=%E4%BB%8A%E5%A4%A9",
])
def test_hostile_period_parameters_are_refused(site: Site, query: str) -> None:
    client = site.app.test_client()
    for path in ("/reports", "/reports/export.xlsx", "/reports/export.csv"):
        reply = client.get(f"{path}?{query}", headers=site.headers)
        assert reply.status_code == 400, (path, query, reply.data[:200])
        assert reply.json["detail"].split(":")[0] in ("unit", "day")


def test_the_charts_are_drawn_in_chromium(site: Site) -> None:
    with chromium() as browser:
        context = browser.new_context(locale="zh-CN", viewport={"width": 1366, "height": 900})
        try:
            page = context.new_page()
            page.goto(f"{site.url}/login")
            page.get_by_label("用户名").fill(NAME)
            page.get_by_label("密码").fill(PASSWORD)
            page.get_by_role("button", name="登录").click()
            page.wait_for_url(f"{site.url}/home/shift_chief")
            page.get_by_role("link", name="报表", exact=True).click()  # not 质检报表
            page.wait_for_url(f"{site.url}/reports")
            expect(page.locator("#report-period")).to_contain_text("日 2026-11-26")
            page.wait_for_function(
                "() => typeof echarts !== 'undefined' && !!echarts.getInstanceByDom("
                "document.getElementById('chart-answer-rate'))")
            series = page.evaluate("""() => ['chart-calls', 'chart-answer-rate'].map(id => {
                const chart = echarts.getInstanceByDom(document.getElementById(id));
                return chart.getOption().series.map(s => [s.id, s.type, s.name, s.data]);
            })""")
            assert series == [
                [["calls-day", "bar", "2026-11-26", TODAY_CALLS],
                 ["calls-week-before", "line", "2026-11-19", WEEK_BEFORE_CALLS]],
                [["answer-rate", "line", "接通率", TODAY_RATES]]]
            canvases = page.evaluate("""() => ['chart-calls', 'chart-answer-rate'].map(id =>
                [...document.getElementById(id).querySelectorAll('canvas')]
                    .map(c => c.width > 0 && c.height > 0))""")
            assert canvases == [[True], [True]]
            screenshot(page, "reports-day")

            page.select_option("#report-unit", "week")
            page.fill("#report-day", "2026-11-24")
            page.get_by_role("button", name="查询").click()
            page.wait_for_url(f"{site.url}/reports?unit=week&day=2026-11-24")
            expect(page.locator("#kpis tbody tr").last).to_contain_text("77.78%")
            page.wait_for_function(
                "() => !!echarts.getInstanceByDom(document.getElementById('chart-calls'))")
            assert page.evaluate(
                "() => echarts.getInstanceByDom(document.getElementById('chart-calls'))"
                ".getOption().series.map(s => s.name)") == ["2026-11-24", "2026-11-17"]
            screenshot(page, "reports-week")
            page.locator("#report-next").click()
            page.wait_for_url(f"{site.url}/reports?unit=week&day=2026-11-30")
            expect(page.locator("#report-period")).to_contain_text("2026-W49")
            with page.expect_download() as download:
                page.locator("#export-csv").click()
            assert download.value.suggested_filename == "report-week-2026-W49.csv"
        finally:
            context.close()


def test_the_exports_write_no_formula_from_a_name() -> None:
    """A name typed as a formula (an actor, a department code) stays text in both files."""
    section = Section("evil", "名单", (Column("名称"), Column("得分", "score")),
                      (("=HYPERLINK(\"http://x\")", 12.5), ("@SUM(A1)", None)))
    rows = list(csv.reader(io.StringIO(exports.to_csv(["标题"], [section]).decode("utf-8-sig"))))
    assert rows[-3:-1] == [["'=HYPERLINK(\"http://x\")", "12.50"], ["'@SUM(A1)", "—"]]
    sheet = load_workbook(io.BytesIO(exports.to_xlsx(["标题"], [section])))["名单"]
    assert [[c.value for c in row] for row in sheet.iter_rows(min_row=4)] == [
        ["'=HYPERLINK(\"http://x\")", 12.5], ["'@SUM(A1)", None]]
