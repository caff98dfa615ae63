"""HTTP adapter of the accounts room: the audit log for auditors (`GET /api/v1/audit`)."""

from __future__ import annotations

from typing import Any, Literal

from flask import current_app
from flask_openapi3 import APIBlueprint, Tag
from pydantic import Field

from accounts import audit
from accounts.access import requires
from core.schemas import ErrorBody, Moment, Out, Query, QueryInt, Text, Time

MAX_OFFSET = 10**9
audit_api = APIBlueprint("audit", __name__, url_prefix="/api/v1/audit",
                         abp_tags=[Tag(name="audit")], abp_security=[{"bearer": []}],
                         abp_responses={400: ErrorBody, 401: ErrorBody, 403: ErrorBody})
BLUEPRINTS = (audit_api,)


class AuditLogQuery(Query):
    actor: Text(64) | None = Field(None, description="account name")
    action: Literal[audit.ACTIONS] | None = None  # type: ignore[valid-type]
    target: Text(200) | None = Field(None, description="an account, a case number, a call id")
    since: Time | None = None
    until: Time | None = None
    limit: QueryInt(1, audit.MAX_PAGE) = 100
    offset: QueryInt(0, MAX_OFFSET) = 0


class AuditEntryOut(Out):
    id: int
    at: Moment
    actor: str = Field(description="account name; empty: anonymous")
    action: Literal[audit.ACTIONS]  # type: ignore[valid-type]
    target: str = Field(description="whose or what: an account, a case number, a call id")
    address: str = Field(description="the client's address")
    detail: dict[str, Any]


class AuditPage(Out):
    total: int
    limit: int
    offset: int
    items: list[AuditEntryOut]


@audit_api.get("", summary="The audit log, newest first (auditors)",
               responses={200: AuditPage})
@requires("audit.read")
def read_log(query: AuditLogQuery) -> Any:
    found = audit.AuditQuery(actor=query.actor, action=query.action, target=query.target,
                             since=query.since, until=query.until, limit=query.limit,
                             offset=query.offset)
    with current_app.extensions["hotline.sessions"]() as session:
        total, entries = audit.find(session, found)
        items = [audit.entry_view(e) for e in entries]
    return AuditPage.model_validate({"total": total, "limit": query.limit,
                                     "offset": query.offset, "items": items}).model_dump(
                                         mode="json")
