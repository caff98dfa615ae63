"""The reports page (报表) for supervisors, shift chiefs, administrators and auditors: the
hotline's KPIs and the CJ/T 292 evaluation (考核评价) of a day, an ISO week or a month of the
centre's time zone, the calls of a day hour by hour against the same weekday a week before,
the answer rate by hour (ECharts, vendored), and the same tables as XLSX and CSV.

A thin adapter: the period and the figures come from reports.period / reports.kpis, the
tables from `sections` here, written by reports.exports; the page, the XLSX and the CSV are
all written from the same sections.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from flask import Response, current_app, render_template
from flask_babel import gettext as _
from flask_openapi3 import APIBlueprint
from pydantic import AfterValidator, BeforeValidator, Field

from accounts.access import requires
from accounts.pages import guard_pages
from core.schemas import MAX_YEAR, MIN_YEAR, Query
from reports import exports, kpis, period
from reports.exports import Column, Section

report_pages = guard_pages(APIBlueprint("reports", __name__, template_folder="templates",
                                        doc_ui=False))
_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _iso_day(value: Any) -> Any:
    if not isinstance(value, str) or not _ISO_DAY.fullmatch(value):
        raise ValueError("a day as YYYY-MM-DD, e.g. 2026-11-24")
    return value


def _sane_year(value: date) -> date:
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"a year from {MIN_YEAR} to {MAX_YEAR}")
    return value


Day = Annotated[date, BeforeValidator(_iso_day), AfterValidator(_sane_year)]


class ReportQuery(Query):
    unit: Literal[period.UNITS] = Field(  # type: ignore[valid-type]
        "day", description="day, week (ISO, from Monday) or month")
    day: Day | None = Field(None, description="a day of the period; today if absent")


def _now() -> datetime:
    return current_app.extensions["hotline.clock"].now()  # type: ignore[no-any-return]


def _view(query: ReportQuery) -> period.ReportView:
    settings = current_app.extensions["hotline.settings"]
    now = _now()
    day = query.day or period.local_day(now, settings.calendar.timezone)
    with current_app.extensions["hotline.sessions"]() as session:
        return period.report_view(session, settings, query.unit, day, now)


# ------------------------------------------------------------------------------ tables

def _units() -> dict[str, str]:
    return {"day": _("Day"), "week": _("Week"), "month": _("Month")}


def _kpi_columns() -> tuple[tuple[str, str, str, str], ...]:
    """(part, name, label, kind): the KPI table's columns after the row's label."""
    return (
        ("calls", "calls", _("Calls"), "count"),
        ("calls", "offered", _("Offered"), "count"),
        ("calls", "answered", _("Answered"), "count"),
        ("calls", "abandoned", _("Abandoned"), "count"),
        ("calls", "answer_rate", _("Answer rate"), "rate"),
        ("calls", "service_level", _("Service level"), "rate"),
        ("calls", "abandon_rate", _("Abandon rate"), "rate"),
        ("calls", "asa_seconds", _("Average speed of answer (s)"), "seconds"),
        ("calls", "aht_seconds", _("Average handling time (s)"), "seconds"),
        ("calls", "repeat_call_rate", _("Repeat-call rate"), "rate"),
        ("orders", "orders_created", _("Orders taken in"), "count"),
        ("orders", "fcr_rate", _("First-call resolution"), "rate"),
        ("orders", "on_time_completion_rate", _("On-time completion"), "rate"),
        ("orders", "callback_rate", _("Callback rate"), "rate"),
        ("orders", "satisfaction_rate", _("Satisfaction"), "rate"),
        ("orders", "rework_count", _("Reworks"), "count"),
    )


def _row_label(bucket: kpis.ReportBucket, unit: str, timezone: str) -> str:
    if unit == "day":  # an hour of the day
        return bucket.start.astimezone(ZoneInfo(timezone)).strftime("%H:00")
    return bucket.label


def _kpi_section(view: period.ReportView) -> Section:
    columns = _kpi_columns()
    first = {"day": _("Hour"), "week": _("Day"), "month": _("Day")}[view.period.unit]

    def row(label: str, bucket: kpis.ReportBucket) -> tuple[Any, ...]:
        return (label, *(getattr(getattr(bucket, part), name) for part, name, _l, _k in columns))

    rows = [row(_row_label(b, view.period.unit, view.timezone), b)
            for b in view.report.buckets]
    rows.append(row(_("Total"), view.report.total))
    return Section("kpis", _("Hotline KPIs"),
                   (Column(first), *(Column(label, kind) for _p, _n, label, kind in columns)),
                   tuple(rows))


def _targets_section(view: period.ReportView) -> Section:
    names = {"answer_rate": _("Answer rate"), "service_level": _("Service level"),
             "satisfaction_rate": _("Satisfaction")}
    rows = []
    for name, judged in view.report.targets.items():
        met = judged["met"]
        rows.append((names.get(name, name), judged["target"], judged["value"],
                     None if met is None else _("met") if met else _("not met")))
    return Section("targets", _("Against the targets"),
                   (Column(_("Measure")), Column(_("Target"), "rate"),
                    Column(_("Actual"), "rate"), Column(_("Met"))), tuple(rows))


def _hours_section(view: period.ReportView) -> Section:
    before = {h.hour: h for h in view.week_before_hours}
    rows = tuple((f"{h.hour:02d}:00", h.calls,
                  before[h.hour].calls if h.hour in before else None,
                  h.offered, h.answered, h.answer_rate) for h in view.day_hours)
    return Section("hours", _("Calls per hour"), (
        Column(_("Hour")),
        Column(_("Calls on %(day)s", day=view.day.isoformat()), "count"),
        Column(_("Calls on %(day)s", day=view.week_before.isoformat()), "count"),
        Column(_("Offered"), "count"), Column(_("Answered"), "count"),
        Column(_("Answer rate"), "rate")), rows)


def _component_labels() -> dict[str, str]:
    return {
        "count": _("Workload"),
        "on_time_verify_dispatch": _("On-time verification dispatch"),
        "on_time_check_dispatch": _("On-time check dispatch"),
        "valid_report": _("Valid reports"), "missed_report": _("Reports not missed"),
        "on_time_verify": _("On-time verification"), "on_time_check": _("On-time check"),
        "on_time_open": _("On-time opening"), "accurate_open": _("Accurate opening"),
        "on_time_close": _("On-time closing"), "on_time_dispatch": _("On-time dispatch"),
        "accurate_dispatch": _("Accurate dispatch"), "closing": _("Closing rate"),
        "on_time_handling": _("On-time handling"), "rework": _("Without rework"),
    }


def _evaluation_sections(view: period.ReportView) -> list[Section]:
    kinds = (
        ("operators", _("Evaluation: hotline agents"), kpis.OPERATOR_WEIGHTS),
        ("supervisors", _("Evaluation: supervisors"), kpis.SUPERVISOR_WEIGHTS),
        ("shift_chiefs", _("Evaluation: shift chiefs"), kpis.SHIFT_CHIEF_WEIGHTS),
        ("dispatchers", _("Evaluation: dispatchers"), kpis.DISPATCHER_WEIGHTS),
        ("departments", _("Evaluation: departments"), kpis.AREA_WEIGHTS),
        ("counties", _("Evaluation: counties"), kpis.AREA_WEIGHTS),
        ("streets", _("Evaluation: streets"), kpis.AREA_WEIGHTS),
    )
    labels = _component_labels()
    out = []
    for key, title, weights in kinds:
        rows = tuple((r.who, r.score, r.grade, *(r.components.get(name) for name in weights))
                     for r in getattr(view.evaluation, key))
        out.append(Section(f"evaluation-{key}", title, (
            Column(_("Name")), Column(_("Score"), "score"), Column(_("Grade")),
            *(Column(f"{labels[name]} ({weight:.0%})", "rate")
              for name, weight in weights.items())), rows))
    return out


def sections(view: period.ReportView) -> list[Section]:
    """Every table of the page, in its order; the exports write the same."""
    return [_kpi_section(view), _targets_section(view), _hours_section(view),
            *_evaluation_sections(view)]


def heading(view: period.ReportView) -> list[str]:
    last = view.period.following - timedelta(days=1)
    return [
        _("12319 hotline report"),
        _("Period: %(unit)s %(label)s (%(first)s to %(last)s)",
          unit=_units()[view.period.unit], label=view.period.label,
          first=view.period.first.isoformat(), last=last.isoformat()),
        _("Time zone: %(zone)s", zone=view.timezone),
        _("Made at: %(at)s", at=_now().astimezone(ZoneInfo(view.timezone))
          .strftime("%Y-%m-%d %H:%M")),
    ]


# ------------------------------------------------------------------------------ routes

@report_pages.get("/reports")
@requires("kpis.read")
def page(query: ReportQuery) -> Any:
    view = _view(query)
    return render_template("reports/reports.html", view=view, units=_units(),
                           heading=heading(view), sections=sections(view),
                           shown=exports.shown, charts=period.chart_data(view),
                           query={"unit": view.period.unit, "day": view.day.isoformat()})


def _download(body: bytes, kind: str, view: period.ReportView, suffix: str) -> Response:
    name = f"report-{view.period.unit}-{view.period.label}.{suffix}"
    response = Response(body, mimetype=kind)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"  # staff grades by name
    return response


@report_pages.get("/reports/export.xlsx")
@requires("kpis.read")
def export_xlsx(query: ReportQuery) -> Response:
    view = _view(query)
    return _download(exports.to_xlsx(heading(view), sections(view)), XLSX_TYPE, view, "xlsx")


@report_pages.get("/reports/export.csv")
@requires("kpis.read")
def export_csv(query: ReportQuery) -> Response:
    view = _view(query)
    return _download(exports.to_csv(heading(view), sections(view)),
                     "text/csv", view, "csv")
