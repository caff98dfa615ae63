"""SIP security (issue 15, item 5): digest passwords, citizens only from their networks, and
the ban list fed by Asterisk's security events.

The must-show runs on the real Asterisk with a real SIPp client on its own loopback address:
five registrations as an agent with a wrong password ban the address, its next INVITE is
refused with 403, and when the ban's time is up (the centre's clock moved on) it registers
with the right password. Expected answers are written by hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from accounts.audit import AuditEntry
from agent_desk import feed
from asterisk_conf.render import render
from asterisk_conf.sandbox import Sandbox
from core.clock import FixedClock
from core.config import Settings
from core.db import make_engine, session_factory, transaction, upgrade
from hotline.centre import Centre
from hotline.cli import cli
from sipkit.kit import Call, Hangup, KitError, SipKit, Wait, free_port
from telephony import directory, sipguard
from telephony.ami import EventTap
from telephony.models import SipBan
from tests.conftest import TEST_PBX_ENV, make_settings, wait_until

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ROGUE_IP = "127.0.0.47"  # the client that guesses passwords
# callers outside the caller networks (127.0.0.2/32), each on its own address
OUTSIDE_IPS = ("127.0.0.48", "127.0.0.50", "127.0.0.51")
AGENT = "8147"  # an agent whose phone registers (no fixed address)
PHONE_IP = "127.0.0.52"  # where that agent's kit desk phone sits


# ----------------------------------------------------------------------------- units


def test_a_security_events_address_is_read_from_its_remote_address() -> None:
    assert sipguard.remote_address("IPV4/UDP/127.0.0.47/5060") == "127.0.0.47"
    assert sipguard.remote_address("IPV6/UDP/::1/5060") == "::1"
    assert sipguard.remote_address("IPV4/UDP/not-an-ip/5060") is None
    assert sipguard.remote_address("") is None


def test_an_address_is_banned_at_the_threshold_within_the_window_only() -> None:
    counter = sipguard.FailureCounter(3, 60, never_ban=("10.0.0.0/8",))
    # two failures, then the third 61 s after the first: the first has left the window
    assert [counter.failed("192.0.2.7", t) for t in (0, 30, 61)] == [None, None, None]
    assert counter.failed("192.0.2.7", 62) == 3  # 30, 61, 62
    assert counter.failed("192.0.2.7", 63) is None  # counted afresh after a ban
    # another address keeps its own count; a never-banned network is never counted
    assert [counter.failed("192.0.2.8", t) for t in (0, 1, 2)] == [None, None, 3]
    assert [counter.failed("10.1.2.3", t) for t in range(10)] == [None] * 10


def test_the_ban_acl_denies_exactly_the_banned_addresses() -> None:
    assert sipguard.acl_update(["192.0.2.9", "192.0.2.7"]) == {
        "Action": "UpdateConfig", "SrcFilename": "pjsip_bans.conf",
        "DstFilename": "pjsip_bans.conf", "Reload": "res_pjsip.so",
        "Action-000000": "EmptyCat", "Cat-000000": "hotline-bans",
        "Action-000001": "Append", "Cat-000001": "hotline-bans",
        "Var-000001": "type", "Value-000001": "acl",
        "Action-000002": "Append", "Cat-000002": "hotline-bans",
        "Var-000002": "deny", "Value-000002": "192.0.2.7/32",
        "Action-000003": "Append", "Cat-000003": "hotline-bans",
        "Var-000003": "deny", "Value-000003": "192.0.2.9/32"}


def test_bans_are_stored_lifted_by_hand_or_by_time_and_audited(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        first = sipguard.ban(session, "192.0.2.7", 5, "ChallengeResponseFailed 8001", NOW, 600)
        assert first is not None
        assert sipguard.ban(session, "192.0.2.7", 5, "again", NOW, 600) is None  # stands
        sipguard.ban(session, "192.0.2.8", 6, "InvalidAccountID", NOW + timedelta(minutes=5),
                     600)
    with transaction(sessions) as session:
        at_6 = NOW + timedelta(minutes=6)
        assert [b.address for b in sipguard.standing(session, at_6)] == [
            "192.0.2.7", "192.0.2.8"]
        sipguard.unban(session, "192.0.2.8", actor="cli:root", now=at_6)
        with pytest.raises(sipguard.SipGuardError, match=r"192\.0\.2\.8 is not banned"):
            sipguard.unban(session, "192.0.2.8", actor="cli:root", now=at_6)
        with pytest.raises(sipguard.SipGuardError, match="an IPv4 or IPv6 address"):
            sipguard.unban(session, "8001", actor="cli:root", now=at_6)
        # ten minutes after it began, the first ban ends by itself
        assert sipguard.expire(session, NOW + timedelta(minutes=9, seconds=59)) == []
        assert sipguard.expire(session, NOW + timedelta(minutes=10)) == ["192.0.2.7"]
        assert sipguard.standing(session, NOW + timedelta(minutes=10)) == []
    with sessions() as session:
        rows = session.scalars(select(SipBan).order_by(SipBan.id)).all()
        assert [(r.address, r.lifted_at, r.lifted_by) for r in rows] == [
            ("192.0.2.7", NOW + timedelta(minutes=10), ""),
            ("192.0.2.8", NOW + timedelta(minutes=6), "cli:root")]
        trail = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
        assert [(e.action, e.actor, e.target) for e in trail] == [
            ("sip_banned", "sip-guard", "192.0.2.7"), ("sip_banned", "sip-guard", "192.0.2.8"),
            ("sip_unbanned", "cli:root", "192.0.2.8")]
    engine.dispose()


def test_the_rendered_pbx_has_the_ban_acl_and_the_citizens_networks(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, HOTLINE_PBX_CALLER_NETWORKS="10.1.0.0/16,127.0.0.2",
                             HOTLINE_PBX_TRUNK_HOST="127.0.0.4")
    agents = directory.Directory(queues=(), agents=(
        directory.AgentPhone(number="8001", name="张三", sip_password="s3cret-8001",
                             static_contact=None),))
    files = render(settings, agents, ["192.0.2.7"])
    assert files["pjsip_bans.conf"].splitlines()[2:] == [
        "[hotline-bans]", "type = acl", "deny = 192.0.2.7/32"]
    pjsip = files["pjsip.conf"]
    assert "#include pjsip_bans.conf" in pjsip
    citizens = pjsip.split("[citizens](hotline-endpoint)")[1].split("\n\n")[0]
    assert citizens.splitlines()[1:] == [
        "context = from-citizens", "deny = 0.0.0.0/0.0.0.0", "permit = 10.1.0.0/16",
        "permit = 127.0.0.2/32"]
    trunk = pjsip.split("[trunk](hotline-endpoint)")[1].split("\n\n")[0]
    assert "deny = 0.0.0.0/0.0.0.0\npermit = 127.0.0.4\n" in trunk + "\n"
    # both of the agent's endpoints ask for the digest password
    assert pjsip.count("password = s3cret-8001") == 2
    assert "load = res_pjsip_acl.so" in files["modules.conf"]


# ----------------------------------------------------------------------------- real PBX


@dataclass
class Guarded:
    centre: Centre
    clock: FixedClock
    password: str
    settings: Settings


@pytest.fixture(scope="module")
def guarded(pbx: Sandbox, pbx_settings: Settings) -> Iterator[Guarded]:
    """A centre (its clock pinned) banning after 5 failures for 10 minutes, and an agent
    whose phone registers with its password. The clock starts at this second: the CLI, run
    beside it, reads the machine's clock, and must see the same bans standing."""
    settings = replace(pbx_settings, sip=replace(
        pbx_settings.sip, ban_threshold=5, ban_window_seconds=60, ban_seconds=600))
    sessions = session_factory(make_engine(settings.storage.database_url))
    with transaction(sessions) as session:
        directory.add_agent(session, AGENT, "注册坐席")
        password = directory.sip_password(session, AGENT)
        pbx.reload(render(settings, directory.snapshot(session)))
    clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
    centre = Centre(settings, web=False, worker=False, clock=clock).start()
    held = Guarded(centre, clock, password, settings)
    try:
        yield held
    finally:
        held.centre.stop()
        with transaction(sessions) as session:
            for row in sipguard.standing(session, clock.now()):
                row.lifted_at, row.lifted_by = clock.now(), "test"
            directory.remove_agent(session, AGENT)
            pbx.reload(render(settings, directory.snapshot(session)))


def _standing(centre: Centre) -> list[str]:
    with centre.sessions() as session:
        return [b.address for b in sipguard.standing(session, centre.clock.now())]


def _in_asterisk(pbx: Sandbox) -> str:
    return (pbx.root / "etc/asterisk/pjsip_bans.conf").read_text()


def test_a_client_guessing_an_agents_password_is_banned_refused_and_let_back_later(
        guarded: Guarded, pbx: Sandbox, pbx_settings: Settings) -> None:
    centre, clock, password, now = (guarded.centre, guarded.clock, guarded.password,
                                    guarded.clock.now())
    kit = SipKit(pbx_host=pbx_settings.pbx.bind_address, pbx_port=pbx_settings.pbx.sip_port,
                 caller_ip=ROGUE_IP)
    # the right password registers; the phone then leaves (Expires 0)
    assert kit.register(AGENT, password, ROGUE_IP, expires=0) == [200]
    # four wrong guesses: refused each time, not yet banned
    assert kit.register(AGENT, "wrong-guess", ROGUE_IP, attempts=4) == [401] * 4
    assert _standing(centre) == []
    # the fifth: banned (by the telephony service, from Asterisk's security events)
    assert kit.register(AGENT, "wrong-guess", ROGUE_IP) == [401]
    wait_until(lambda: _standing(centre) == [ROGUE_IP], 10, "the address was not banned")
    wait_until(lambda: f"deny = {ROGUE_IP}/32" in _in_asterisk(pbx), 10,
               "the ban did not reach Asterisk")
    # now everything from it is refused outright: an INVITE, even the right password
    call = kit.call(Call(caller_id="13800138000", script=(Wait(1), Hangup()), max_seconds=10))
    assert (call.outcome, call.status) == ("rejected", 403)
    assert kit.register(AGENT, password, ROGUE_IP, expires=0) == [403]
    # the supervisors are told, on their desks' notices
    def notice() -> dict[str, object] | None:
        for _id, fields in centre.bus.client.xrange(feed.DESK_STREAM):
            data = json.loads(fields[b"data"])
            if (fields[b"agent"] == b"supervisors" and data.get("alert", {}).get("kind")
                    == "sip_ban" and data["alert"]["address"] == ROGUE_IP):
                return data["alert"]
        return None
    wait_until(lambda: notice() is not None, 10, "no notice for the supervisors")
    alert = notice()
    assert alert is not None and alert["threshold"] == 5
    assert alert["until"] == (now + timedelta(minutes=10)).timestamp()
    # a minute before the ban ends it still stands; when it ends the phone gets back in
    clock.advance(timedelta(minutes=9))
    assert kit.register(AGENT, password, ROGUE_IP, expires=0) == [403]
    clock.advance(timedelta(minutes=1))
    wait_until(lambda: _standing(centre) == [], 10, "the ban did not end")
    wait_until(lambda: ROGUE_IP not in _in_asterisk(pbx), 10,
               "the ended ban was not lifted in Asterisk")
    assert kit.register(AGENT, password, ROGUE_IP, expires=0) == [200]


def test_a_ban_outlives_a_restart_and_is_lifted_by_the_cli(
        guarded: Guarded, pbx: Sandbox, pbx_settings: Settings) -> None:
    kit = SipKit(pbx_host=pbx_settings.pbx.bind_address, pbx_port=pbx_settings.pbx.sip_port)
    assert kit.register(AGENT, "guess", ROGUE_IP, attempts=5) == [401] * 5
    wait_until(lambda: _standing(guarded.centre) == [ROGUE_IP], 10, "not banned")
    assert kit.register(AGENT, guarded.password, ROGUE_IP, expires=0) == [403]
    # the centre stops; Asterisk is given a configuration without the ban (as a restart
    # from an old rendering would): it lets the address in ...
    guarded.centre.stop()
    with session_factory(make_engine(pbx_settings.storage.database_url))() as session:
        pbx.reload(render(guarded.settings, directory.snapshot(session)))
    assert ROGUE_IP not in _in_asterisk(pbx)
    assert kit.register(AGENT, guarded.password, ROGUE_IP, expires=0) == [200]
    # ... until the centre is back: the stored ban is given to Asterisk again
    guarded.centre = Centre(guarded.settings, web=False, worker=False,
                            clock=guarded.clock).start()
    wait_until(lambda: f"deny = {ROGUE_IP}/32" in _in_asterisk(pbx), 10,
               "the stored ban was not given back to Asterisk")
    assert kit.register(AGENT, guarded.password, ROGUE_IP, expires=0) == [403]
    # the city's IT staff list and lift it
    env = {"DATABASE_URL": pbx_settings.storage.database_url, "USER": "it-staff",
           "HOTLINE_STORAGE_DATA_DIR": str(pbx_settings.storage.data_dir), **TEST_PBX_ENV}
    listed = CliRunner().invoke(cli, ["sip", "bans", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    assert [(b["address"], b["failures"]) for b in json.loads(listed.output)] == [(ROGUE_IP, 5)]
    wrong = CliRunner().invoke(cli, ["sip", "unban", "127.0.0.99"], env=env)
    assert wrong.exit_code != 0 and str(wrong.exception) == "127.0.0.99 is not banned"
    lifted = CliRunner().invoke(cli, ["sip", "unban", ROGUE_IP], env=env)
    assert lifted.exit_code == 0, lifted.output
    assert lifted.output.strip() == f"{ROGUE_IP} unbanned"
    wait_until(lambda: ROGUE_IP not in _in_asterisk(pbx), 10,
               "the lifted ban stayed in Asterisk")
    assert kit.register(AGENT, guarded.password, ROGUE_IP, expires=0) == [200]
    with guarded.centre.sessions() as session:
        last = session.scalars(select(AuditEntry).where(AuditEntry.target == ROGUE_IP)
                               .order_by(AuditEntry.id.desc())).first()
        assert last is not None and (last.action, last.actor) == ("sip_unbanned", "cli:it-staff")


def test_a_caller_outside_the_caller_networks_is_refused(
        guarded: Guarded, pbx_settings: Settings) -> None:
    def call_from(ip: str, caller_id: str) -> tuple[str, int | None, float | None]:
        kit = SipKit(pbx_host=pbx_settings.pbx.bind_address,
                     pbx_port=pbx_settings.pbx.sip_port, caller_ip=ip)
        result = kit.call(Call(caller_id=caller_id, script=(Wait(1), Hangup()),
                               max_seconds=10))
        return result.outcome, result.status, result.answered_at

    # calling as the citizens' endpoint by name, from outside its networks: its ACL refuses
    # (Asterisk answers as if a password were wanted, telling the caller nothing more)
    assert call_from(OUTSIDE_IPS[0], "citizens") == ("rejected", 401, None)
    # as the trunk, too
    assert call_from(OUTSIDE_IPS[1], "trunk") == ("rejected", 401, None)
    # and a plain caller number from there matches no endpoint at all
    assert call_from(OUTSIDE_IPS[2], "13800138000") == ("rejected", 401, None)


def test_a_kit_desk_phone_registers_with_its_password_and_is_rung(
        guarded: Guarded, pbx_settings: Settings, ami: EventTap) -> None:
    kit = SipKit(pbx_host=pbx_settings.pbx.bind_address, pbx_port=pbx_settings.pbx.sip_port)
    port = free_port(PHONE_IP)
    with pytest.raises(KitError, match="could not register: \\[401\\]"):
        kit.agent_phone(AGENT, PHONE_IP, port=port, password="not-its-password").start()
    with kit.agent_phone(AGENT, PHONE_IP, port=port, password=guarded.password,
                         answer_after=0.5, talk_seconds=1) as phone:
        answer = ami.action({"Action": "Originate", "Channel": f"PJSIP/{AGENT}",
                             "Application": "Wait", "Data": "3", "Async": "true"})
        assert answer.get("Response") == "Success", answer
        wait_until(lambda: [r.outcome for r in phone.results()] == ["answered"], 15,
                   "the registered phone was not rung at its registered address")
        wait_until(lambda: phone.results()[0].hangup_by == "agent", 10,
                   "the phone did not hang up after its talk time")


def test_the_it_staff_see_and_rotate_a_desk_phones_password(
        guarded: Guarded, pbx: Sandbox, pbx_settings: Settings) -> None:
    password = guarded.password
    env = {"DATABASE_URL": pbx_settings.storage.database_url, "USER": "it-staff",
           "HOTLINE_STORAGE_DATA_DIR": str(pbx_settings.storage.data_dir), **TEST_PBX_ENV}
    shown = CliRunner().invoke(cli, ["agents", "sip-password", AGENT], env=env)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.strip() == password
    rotated = CliRunner().invoke(cli, ["agents", "sip-password", AGENT, "--rotate"], env=env)
    assert rotated.exit_code == 0, rotated.output
    new = rotated.stdout.strip()
    assert new != password and len(new) == 16
    kit = SipKit(pbx_host=pbx_settings.pbx.bind_address, pbx_port=pbx_settings.pbx.sip_port)
    assert kit.register(AGENT, new, "127.0.0.49", expires=0) == [200]
    assert kit.register(AGENT, password, "127.0.0.49", expires=0) == [401]
    missing = CliRunner().invoke(cli, ["agents", "sip-password", "8999"], env=env)
    assert missing.exit_code != 0 and str(missing.exception) == "agent 8999 does not exist"
    with transaction(session_factory(make_engine(pbx_settings.storage.database_url))) as s:
        trail = s.scalars(select(AuditEntry).where(AuditEntry.target == AGENT)
                          .order_by(AuditEntry.id)).all()
        assert [(e.action, e.actor) for e in trail][-2:] == [
            ("sip_password_shown", "cli:it-staff"), ("sip_password_rotated", "cli:it-staff")]



def test_the_bans_asterisk_has_are_read_from_its_getconfig_answer() -> None:
    # as Asterisk answers GetConfig for pjsip_bans.conf, category hotline-bans
    answer = {"Response": "Success", "ActionID": "7", "Category-000000": "hotline-bans",
              "Line-000000-000000": "type=acl", "Line-000000-000001": "deny=192.0.2.7/32",
              "Line-000000-000002": "deny=192.0.2.9/255.255.255.255"}
    assert sipguard.denied(answer) == {"192.0.2.7", "192.0.2.9"}
    assert sipguard.denied({"Response": "Success", "Line-000000-000000": "type=acl"}) == set()
    assert sipguard.denied({"Response": "Error", "Message": "Config file not found"}) is None
    assert sipguard.denied({"Response": "Success", "Line-000000-000001": "deny=junk"}) is None
