"""An Open311 client written from the specification alone (tests/open311_client.py: httpx
and xml.etree, nothing of this project) against the real centre over HTTP: it discovers the
endpoint, lists the services, reads a definition and answers it, posts a request and reads
it back, in XML and in JSON, with a key the operator issued with `hotline channels
open311-key`. Then, on the centre's side, the order it became: intake on the channel
open311, the category, grid and department from the place."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from core.db import transaction
from hotline.centre import Centre
from tests.conftest import TEST_PBX_DIR, TEST_PBX_ENV, WEB_PORT
from tests.open311_client import GeoReportClient, GeoReportError
from tickets import geo, service

DISCOVERY = f"http://127.0.0.1:{WEB_PORT}/open311/discovery.xml"
GRID_01 = "23010300100101"  # the demo grid around 45.7504 N, 126.6306 E


def _issue_key(client: str) -> str:
    """The operator's command, as they would run it beside the running centre."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HOTLINE_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(TEST_PBX_ENV, HOTLINE_STORAGE_DATA_DIR=str(TEST_PBX_DIR))
    done = subprocess.run([sys.executable, "-m", "hotline", "channels", "open311-key", client],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def api_key(centre: Centre) -> str:
    with transaction(centre.sessions) as session:
        geo.load_grids(session, geo.read_geojson(geo.DEMO_GRIDS))
    return _issue_key("规范客户端")


@pytest.fixture(params=["xml", "json"])
def client(request: pytest.FixtureRequest, api_key: str) -> Iterator[GeoReportClient]:
    reader = GeoReportClient(DISCOVERY, api_key, fmt=request.param)
    yield reader
    reader.close()


def test_a_spec_client_lists_posts_and_reads_back(client: GeoReportClient,
                                                  centre: Centre) -> None:
    assert client.endpoint == f"http://127.0.0.1:{WEB_PORT}/open311/v2"
    services = {s["service_code"]: s for s in client.services()}
    cover = services["C0101"]
    assert (cover["service_name"], cover["group"], cover["metadata"], cover["type"]) == (
        "上水井盖", "公用设施", True, "realtime")
    assert "井盖" in cover["keywords"]
    assert services["0505"]["metadata"] is False  # 机动车乱停放: nothing to ask

    answers = client.answer_definition("C0101")
    assert answers == {"COVER": "missing", "HAZARD": ["traffic", "walkway"]}
    posted = client.post("C0101", attributes=answers, lat="45.7504", long="126.6306",
                         description=f"{client.fmt} 客户端：井盖不见了", first_name="芳",
                         last_name="王", phone="13800138000", email="wang@example.cn",
                         device_id="device-1", account_id="acct-7")
    case = posted["service_request_id"]
    assert posted["account_id"] == "acct-7" and posted["service_notice"]

    found = client.request(case)
    assert (found["service_request_id"], found["status"], found["service_code"],
            found["service_name"], found["agency_responsible"]) == (
        case, "open", "C0101", "上水井盖", "供水集团")
    assert (found["lat"], found["long"]) == (45.7504, 126.6306)
    assert found["status_notes"] == "已受理，等待立案"
    assert found["description"].startswith(f"{client.fmt} 客户端：井盖不见了")
    assert found["requested_datetime"] and found["expected_datetime"]
    assert "13800138000" not in str(found) and "wang@example.cn" not in str(found)
    assert [r["service_request_id"] for r in client.requests(service_request_id=case)] == [case]
    assert case in [r["service_request_id"] for r in client.requests(service_code="C0101",
                                                                      status="open")]

    # a street-order report in the demo street goes to the street's own team (属地优先)
    parked = client.post("0505", lat="45.7504", long="126.6306", description="车停在盲道上")
    assert client.request(parked["service_request_id"])["agency_responsible"] == \
        "示范街道综合执法队"

    with pytest.raises(GeoReportError) as refused:
        client.request("209901010001")
    assert refused.value.status == 404 and refused.value.errors[0][0] == 404

    with transaction(centre.sessions) as session:  # the centre's side of it
        order = service.get_order(session, case)
        assert (order.state, order.channel, order.category_kind, order.category_code,
                order.grid_code, order.department_code) == (
            "intake", "open311", "component", "0101", GRID_01, "water")
        assert (order.citizen_name, order.citizen_phone) == ("王芳", "+8613800138000")
        street = service.get_order(session, parked["service_request_id"])
        assert (street.grid_code, street.department_code) == (GRID_01, "demo-street")


def test_a_spec_client_without_a_key_is_refused(api_key: str) -> None:
    for fmt in ("xml", "json"):
        anonymous = GeoReportClient(DISCOVERY, "", fmt=fmt)
        with pytest.raises(GeoReportError) as refused:
            anonymous.post("0505", lat="45.7504", long="126.6306", description="无钥匙")
        anonymous.close()
        assert refused.value.status == 403 and refused.value.errors[0][0] == 403
