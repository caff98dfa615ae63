"""HTTP adapter of retention (/api/v1/recordings): legal holds on a call's recording, placed
and released by administrators with a reason (each audited), and the deletion log."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask_openapi3 import APIBlueprint, Tag
from pydantic import Field

from accounts.access import requires
from accounts.web import client_address, current_identity
from core.db import transaction
from core.schemas import Body, ErrorBody, Moment, Out, Path, Query, QueryInt, Text
from recordings import retention

recordings_api = APIBlueprint("recording_retention", __name__, url_prefix="/api/v1/recordings",
                              abp_tags=[Tag(name="recordings")], abp_security=[{"bearer": []}],
                              abp_responses={400: ErrorBody, 401: ErrorBody, 403: ErrorBody})
BLUEPRINTS = (recordings_api,)


def _sessions() -> Any:
    return current_app.extensions["hotline.sessions"]


class CallPath(Path):
    call_id: Text(64, min_length=1, pattern=r"^[0-9A-Za-z_-][0-9A-Za-z._-]{0,63}$")


class HoldBody(Body):
    reason: Text(500, min_length=1) = Field(description="why: a case, a court's request")


class Hold(Out):
    call_id: str
    reason: str
    placed_by: str
    placed_at: Moment
    released_at: Moment | None
    released_by: str
    release_reason: str


class Holds(Out):
    items: list[Hold]


class Deletion(Out):
    call_id: str
    sha256: str
    bytes: int
    reason: str
    recorded_at: Moment
    claimed_at: Moment
    deleted_at: Moment | None
    run_by: str


class Deletions(Out):
    items: list[Deletion]


class PageQuery(Query):
    limit: QueryInt(1, 500) = 100
    offset: QueryInt(0, 2_000_000_000) = 0


def _hold(row: retention.RecordingHold) -> dict[str, Any]:
    return Hold.model_validate(row, from_attributes=True).model_dump(mode="json")


@recordings_api.post("/<call_id>/hold", summary="Put a call's recording on legal hold "
                     "(法律保全): retention keeps it until released", responses={
                         201: Hold, 404: ErrorBody, 409: ErrorBody})
@requires("recordings.hold")
def hold(path: CallPath, body: HoldBody) -> Any:
    with transaction(_sessions()) as session:
        row = retention.place_hold(session, path.call_id, reason=body.reason,
                                   actor=current_identity().name,
                                   now=current_app.extensions["hotline.clock"].now(),
                                   address=client_address())
        return _hold(row), 201


@recordings_api.post("/<call_id>/release", summary="Release a call's legal hold",
                     responses={200: Hold, 404: ErrorBody})
@requires("recordings.hold")
def release(path: CallPath, body: HoldBody) -> Any:
    with transaction(_sessions()) as session:
        row = retention.release_hold(session, path.call_id, reason=body.reason,
                                     actor=current_identity().name,
                                     now=current_app.extensions["hotline.clock"].now(),
                                     address=client_address())
        return _hold(row)


@recordings_api.get("/holds", summary="Legal holds in force", responses={200: Holds})
@requires("recordings.retention")
def holds() -> Any:
    with _sessions()() as session:
        return {"items": [_hold(h) for h in retention.holds(session)]}


@recordings_api.get("/deletions", summary="The deletion log: what retention deleted, when, "
                    "why, with the file's SHA-256", responses={200: Deletions})
@requires("recordings.retention")
def deletions(query: PageQuery) -> Any:
    with _sessions()() as session:
        return Deletions(items=[Deletion.model_validate(d, from_attributes=True)
                                for d in retention.deletions(session, query.limit,
                                                             query.offset)]
                         ).model_dump(mode="json")
