"""`hotline tickets ...` as an operator runs them: the catalogue and
grids loaded, an order taken in and moved, its events on the Redis stream like the centre's,
phones masked unless asked, and operator mistakes as one line and a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from core.events import EventBus
from core.live import connect_redis
from tests.conftest import make_settings

GRIDS = Path(__file__).parents[1] / "tickets" / "demo_grids.geojson"


def _hotline(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HOTLINE_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env["HOTLINE_STORAGE_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "hotline", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_an_order_taken_in_and_moved_from_the_shell(tmp_path: Path) -> None:
    assert "categories: 83 added" in _hotline(tmp_path, "tickets", "catalogue").stdout
    assert _hotline(tmp_path, "tickets", "grids", str(GRIDS)).stdout.strip() == \
        "4 grids loaded"
    opened = _hotline(tmp_path, "tickets", "open", "--appeal-type", "complaint", "--actor",
                      "小王", "--description", "路灯不亮", "--phone", "13800138000",
                      "--category", "0102", "--lat", "45.7504", "--lon", "126.6306",
                      "--json")
    assert opened.returncode == 0, opened.stderr
    order = json.loads(opened.stdout)
    assert (order["grid_code"], order["department_code"]) == ("23010300100101", "sanitation")
    assert order["citizen_phone"] == "138****8000"
    case = order["case_number"]
    moved = _hotline(tmp_path, "tickets", "act", case, "open", "--role", "shift_chief",
                     "--actor", "老李")
    assert moved.stdout.strip() == f"{case}: opened (version 2)"
    wrong = _hotline(tmp_path, "tickets", "act", case, "dispatch", "--role", "operator",
                     "--actor", "小王")
    assert wrong.returncode != 0
    assert wrong.stderr.strip() == ("hotline: workflow: dispatch (派遣) is for dispatcher, "
                                    "not 'operator'")
    shown = json.loads(_hotline(tmp_path, "tickets", "show", case, "--show-phone").stdout)
    assert shown["citizen_phone"] == "13800138000" and shown["state"] == "opened"
    assert [d.split()[0] for d in shown["deadlines"]] == ["open#1", "complete#1",
                                                          "dispatch#1"]
    bus = EventBus(connect_redis(make_settings(tmp_path)))
    published = [(e["type"], e.get("action")) for _id, e in bus.read()]
    assert published == [("work_order.opened", None), ("work_order.moved", "open")]


def test_an_order_nobody_took_in_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    # (`hotline users ...` is tested with the accounts: tests/test_accounts_cli.py)
    missing = _hotline(tmp_path, "tickets", "show", "209901010001")
    assert missing.returncode != 0
    assert missing.stderr.strip() == "hotline: no work order '209901010001'"
