"""HTTP adapter of the reports room: the hotline's KPIs and the CJ/T 292 evaluation of a
window (/api/v1/kpis). The report grades staff by name, so it needs an account."""

from __future__ import annotations

from typing import Any, Literal

from flask import current_app
from flask_openapi3 import APIBlueprint, Tag
from pydantic import Field, model_validator

from accounts.access import requires
from core.schemas import ErrorBody, Out, Query, Time
from reports import kpis

KPI_BUCKETS = ("day", "week", "month")
MAX_WINDOW_DAYS = 3660  # ten years
kpis_api = APIBlueprint("kpis", __name__, url_prefix="/api/v1/kpis",
                        abp_tags=[Tag(name="kpis")], abp_security=[{"bearer": []}],
                        abp_responses={400: ErrorBody, 401: ErrorBody, 403: ErrorBody})
BLUEPRINTS = (kpis_api,)


class KpiQuery(Query):
    start: Time = Field(alias="from", description="the window's start, with its zone")
    end: Time = Field(alias="to", description="the window's end (excluded)")
    bucket: Literal[KPI_BUCKETS] | None = None  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _a_window(self) -> KpiQuery:
        if self.end <= self.start:
            raise ValueError("from, to: from before to")
        if (self.end - self.start).days > MAX_WINDOW_DAYS:
            raise ValueError("from, to: at most ten years")
        return self


SURGE_NOTE = (
    "Calls taken during a surge (突发事件模式: an announcement played to every caller before "
    "the menu) are counted in the ordinary call figures (`calls`: offered, answered, "
    "abandoned, rates) like every citizen's call, and counted apart in `surge` of the total "
    "and of each bucket: `calls` that heard the announcement, of them `repeated` (heard it "
    "again) and `left` (left with #, never queued), and the `offered`, `answered`, "
    "`abandoned`, `unanswered` and `short_abandons` among them, with their `answer_rate` and "
    "`abandon_rate`; the ordinary figures less `surge` are the calls outside a surge.")


class KpiReport(Out):
    report: dict[str, Any] = Field(description="hotline and work-order KPIs of the window, "
                                               "whole (`total`) and per bucket. "
                                               + SURGE_NOTE)
    evaluation: dict[str, Any] = Field(description="the CJ/T 292 evaluation of the window")


@kpis_api.get("", summary="Hotline and work-order KPIs over a window",
              description=SURGE_NOTE, responses={200: KpiReport})
@requires("kpis.read")
def read_kpis(query: KpiQuery) -> Any:
    with current_app.extensions["hotline.sessions"]() as session:
        return KpiReport.model_validate(kpis.window_report(
            session, current_app.extensions["hotline.settings"], query.start, query.end,
            query.bucket, current_app.extensions["hotline.clock"].now())).model_dump(
                mode="json")
