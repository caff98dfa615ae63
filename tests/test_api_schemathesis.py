"""schemathesis over the generated OpenAPI document, bounded: for every route, a fixed
small number of derandomised examples (valid and invalid), anonymous and with an account of
every role, on SQLite and PostgreSQL. No answer is a 5xx; every answer keeps to the
document (its status is declared, its body fits the declared schema)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.service import ROLES, add_user
from core.db import transaction
from hotline.web import create_app
from telephony import http as telephony_http
from tests import api_world
from tests.conftest import RUN_DIR, make_settings

EXAMPLES = 12  # per route and way of calling: with 15 routes, about a minute per database
SEAT_COMMAND = "POST /api/v1/seats/{agent}/{action}"


def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """No 5xx, but for two honest 503s: no telephony service runs here, so nobody answers a
    seat command, and /readyz names the parts that are down (AMI, IVR, push), each saying so
    with Retry-After as the document declares."""
    if (case.operation.label == SEAT_COMMAND and response.status_code == 503
            and response.headers.get("retry-after") == ["1"]
            and "no answer to seat." in response.json()["detail"]):
        return None
    if (case.operation.label == "GET /readyz" and response.status_code == 503
            and response.headers.get("retry-after")
            and set(response.json()["down"]) == {"ami", "ivr", "push"}):
        return None
    return not_a_server_error(ctx, response, case)


CHECKS = [no_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(params=["anonymous", "every role"])
def caller(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def world(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
          caller: str) -> Iterator[tuple[Any, dict[str, str]]]:
    """The app on this database, and the headers to call it with: none, or an account of
    every role that may see phone numbers."""
    monkeypatch.setattr(telephony_http, "WEB_COMMAND_SECONDS", 0.1)  # nobody answers
    built = api_world.build(database_url, tmp_path)
    with transaction(built.sessions) as session:
        token = add_user(session, "every-role", list(ROLES), True, ROLES, now=api_world.NOW)
    yield built.app, ({} if caller == "anonymous" else {"Authorization": f"Bearer {token}"})
    built.engine.dispose()


# The document does not depend on the database: read it once, from an app with none.
_APP = create_app(make_settings(RUN_DIR / "openapi-document"),
                  None, None, None)  # type: ignore[arg-type]
_DOCUMENT = _APP.test_client().get("/api/v1/openapi.json").json
schema = schemathesis.openapi.from_dict(_DOCUMENT)


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
def test_no_route_fails_or_breaks_its_schema(case: Any, world: tuple[Any, dict[str, str]]
                                             ) -> None:
    app, headers = world
    case.call_and_validate(app=app, headers=headers, checks=CHECKS)
