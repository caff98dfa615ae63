"""A small world behind the JSON API for the access, hostile-input and schemathesis tests:
the app on a fresh database (SQLite or PostgreSQL), an account of every role, an order with
a citizen's number and name (one typed into its description too), a call with a recording
on disk, and a seam to call as an Identity no token can carry yet (an agent's seat, a
department's binding)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import g, request
from flask.testing import FlaskClient

from accounts.service import ROLES, Identity, add_user
from core.clock import FixedClock
from core.db import make_engine, session_factory, transaction, upgrade
from core.live import connect_redis
from hotline.web import create_app
from telephony import records
from tests.conftest import REDIS_SERVER_URL, make_settings
from tickets import catalogue, geo, service

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # 10:00 in Beijing
DEMO_GRIDS = Path(__file__).parents[1] / "tickets" / "demo_grids.geojson"
PHONE, NAME = "13812345678", "欧阳秀英"
TYPED_PHONE = "13987654321"  # typed into the description by the citizen
CALLER = "13566667777"
TRANSFERRED_TO = "045155556666"  # a transfer out of the hotline
AS_HEADER = "X-Test-As"  # the seam: the name of an identity in World.identities
SMS_TOKEN = "world-sms-token"  # the SMS gateway's: signs the inbound webhook


@dataclass
class World:
    client: FlaskClient
    app: Any
    sessions: Any
    engine: Any
    tokens: dict[str, dict[str, str]] = field(default_factory=dict)  # role -> headers
    identities: dict[str, Identity] = field(default_factory=dict)
    case: str = ""  # an order of the sanitation department
    other_case: str = ""  # an order of no department yet
    call_id: str = ""
    recording: Path = Path()


def build(database_url: str, tmp_path: Path) -> World:
    settings = make_settings(tmp_path, DATABASE_URL=database_url, REDIS_URL=REDIS_SERVER_URL,
                             HOTLINE_SMS_TWILIO_AUTH_TOKEN=SMS_TOKEN)
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        catalogue.seed(session)
        geo.load_grids(session, geo.read_geojson(DEMO_GRIDS))
    app = create_app(settings, sessions, connect_redis(settings), FixedClock(NOW))
    world = World(app.test_client(), app, sessions, engine)

    def pretend() -> None:  # registered first: runs before the app's own access check
        name = request.headers.get(AS_HEADER)
        if name is not None:
            g.hotline_identity = world.identities[name]

    app.before_request_funcs.setdefault(None, []).insert(0, pretend)
    with transaction(sessions) as session:
        for role in ROLES:
            token = add_user(session, f"{role}-account", [role], False, ROLES, now=NOW)
            world.tokens[role] = {"Authorization": f"Bearer {token}"}
        seeing = add_user(session, "sees-phones", ["operator", "supervisor"], True, ROLES,
                          now=NOW)
        world.tokens["sees_phone"] = {"Authorization": f"Bearer {seeing}"}
        order = service.open_order(
            session, appeal_type="complaint", description=f"垃圾没人清，请回电 {TYPED_PHONE}",
            channel="phone", actor="operator-account", citizen_phone=PHONE, citizen_name=NAME,
            category_code="0102", address="南岗区示范街1号", latitude=45.7504,
            longitude=126.6306, now=NOW)
        other = service.open_order(
            session, appeal_type="enquiry", description="路灯不亮", channel="web",
            actor="operator-account", citizen_phone=PHONE, citizen_name=NAME, now=NOW)
        world.case, world.other_case = order.case_number, other.case_number
        world.recording = tmp_path / "recordings" / "call-1.wav"
        world.recording.parent.mkdir(parents=True, exist_ok=True)
        world.recording.write_bytes(b"RIFF....WAVE")
        epoch = NOW.timestamp() - 3600
        world.call_id = "1732400000.42"
        records.store_call(session, {
            "call_id": world.call_id, "caller_number": CALLER, "caller_name": NAME,
            "entry_number": "12319", "started_at": epoch, "ended_at": epoch + 60,
            "duration_seconds": 60, "outcome": "answered", "queue": "intake",
            "queue_position": 1, "wait_seconds": 3, "short_abandon": False, "agent": "8001",
            "connected_at": epoch + 3, "talk_seconds": 57, "hold_seconds": 0,
            "hangup_cause": 16, "hangup_cause_text": "", "ivr_path": [], "agent_attempts": [],
            "transfers": [{"at": 20.0, "kind": "blind", "to": TRANSFERRED_TO, "result": ""}],
            "legs": [{"uniqueid": world.call_id, "channel": "PJSIP/trunk-00000001",
                      "role": "caller", "number": CALLER, "name": NAME, "created_at": epoch}],
            "recording": str(world.recording),
            "incomplete": False})
    assert order.department_code == "sanitation" and other.department_code == ""
    return world


def as_identity(world: World, identity: Identity) -> dict[str, str]:
    """Headers that make the request come from `identity` (see `pretend` in build)."""
    world.identities[identity.name] = identity
    return {AS_HEADER: identity.name}
