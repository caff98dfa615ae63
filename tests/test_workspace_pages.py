"""The workspace pages' edges, through the app (no browser): a department handler reads only
their own department's order pages and queue; a form naming a role the person does not hold,
an action that does not exist or a department that does not exist is refused with its
reason and changes nothing; the recording is served only for a call of the order, whole or
in part (HTTP Range), and only a play from its start is audited."""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from accounts import service as accounts
from accounts.audit import AuditEntry
from accounts.service import Identity
from core.db import transaction
from tests import api_world
from tests.api_world import NOW, World
from tickets import service

PASSWORD = "workspace-页面-密码-1"


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    built = api_world.build(database_url, tmp_path)
    yield built
    built.engine.dispose()


def _as(world: World, identity: Identity, token_role: str) -> dict[str, str]:
    """That identity, with a bearer token (so forms need no CSRF token, as for a script)."""
    return {**world.tokens[token_role], **api_world.as_identity(world, identity)}


def _state(world: World) -> tuple[str, int, str]:
    with world.sessions() as session:
        order = service.get_order(session, world.case)
        return order.state, order.version, order.department_code


def test_a_department_handler_sees_only_their_departments_orders(world: World) -> None:
    sanitation = _as(world, Identity("环卫局小李", ("department",), False,
                                     department="sanitation"), "department")
    parks = _as(world, Identity("园林局小赵", ("department",), False,
                                department="landscape"), "department")
    assert world.client.get(f"/orders/{world.case}", headers=sanitation).status_code == 200
    assert world.client.get(f"/orders/{world.case}", headers=parks).status_code == 403
    assert world.client.get(f"/orders/{world.other_case}",
                            headers=sanitation).status_code == 403
    refused = world.client.post(f"/orders/{world.case}/act", headers=parks,
                                data={"action": "sign", "role": "department"})
    assert refused.status_code == 403
    assert world.client.get("/orders/209901010001", headers=sanitation).status_code == 404
    assert world.client.get("/orders/not-a-case", headers=sanitation).status_code == 404
    with transaction(world.sessions) as session:  # opened and dispatched: the queue has it
        service.transition(session, world.case, "open", actor="老李", role="shift_chief",
                           now=NOW)
        service.transition(session, world.case, "dispatch", actor="小张", role="dispatcher",
                           now=NOW)
    mine = world.client.get("/work", headers=sanitation).get_data(as_text=True)
    theirs = world.client.get("/work", headers=parks).get_data(as_text=True)
    assert f'data-case="{world.case}"' in mine
    assert 'data-case="' not in theirs


def test_forms_the_workflow_refuses_change_nothing(world: World) -> None:
    with transaction(world.sessions) as session:
        service.transition(session, world.case, "open", actor="老李", role="shift_chief",
                           now=NOW)
    dispatcher = world.tokens["dispatcher"]
    url = f"/orders/{world.case}/act"
    for form, status, reason in (
            ({"action": "close", "role": "shift_chief"}, 403,
             "role: dispatcher-account does not act as &#39;shift_chief&#39;"),
            ({"action": "fly", "role": "dispatcher"}, 409, "workflow: no action &#39;fly&#39;"),
            ({"action": "dispatch", "role": "dispatcher", "department": "nowhere"}, 400,
             "department_code: no active department &#39;nowhere&#39;"),
            ({"action": "dispatch", "role": "dispatcher", "expected_version": "1"}, 409,
             "changed since version 1 (now 2)"),
            ({"action": "sign", "role": "dispatcher"}, 403,
             "workflow: sign (签收) is for department, not &#39;dispatcher&#39;")):
        reply = world.client.post(url, headers=dispatcher, data=form)
        assert (reply.status_code, reason in reply.get_data(as_text=True)) == (status, True), \
            (form, reply.get_data(as_text=True)[-2000:])
        assert _state(world) == ("opened", 2, "sanitation")
    moved = world.client.post(url, headers=dispatcher, data={
        "action": "dispatch", "role": "dispatcher", "department": "enforcement",
        "expected_version": "2", "note": "占道问题，转执法局"})
    assert moved.status_code == 302
    assert _state(world) == ("dispatched", 3, "enforcement")


def test_the_recording_is_served_in_parts_and_each_play_audited_once(world: World) -> None:
    supervisor = world.tokens["supervisor"]
    url = f"/orders/{world.case}/calls/{world.call_id}/recording"
    assert world.client.get(url, headers=supervisor).status_code == 404  # not its call yet
    with transaction(world.sessions) as session:
        service.link_call(session, world.case, world.call_id, actor="operator-account",
                          now=NOW)
    whole = world.client.get(url, headers=supervisor)
    assert (whole.status_code, whole.data, whole.mimetype) == (200, b"RIFF....WAVE",
                                                              "audio/wav")
    first = world.client.get(url, headers={**supervisor, "Range": "bytes=0-3"})
    assert (first.status_code, first.data) == (206, b"RIFF")
    assert first.headers["Content-Range"] == "bytes 0-3/12"
    part = world.client.get(url, headers={**supervisor, "Range": "bytes=8-"})
    assert (part.status_code, part.data) == (206, b"WAVE")
    with world.sessions() as session:
        rows = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "recording_played").order_by(AuditEntry.id)).all()
        assert [(r.actor, r.target, json.loads(r.detail)["case_number"]) for r in rows] == [
            ("supervisor-account", world.call_id, world.case)] * 2  # the whole, from 0-3
    other = f"/orders/{world.other_case}/calls/{world.call_id}/recording"
    assert world.client.get(other, headers=supervisor).status_code == 404


def test_a_departments_request_for_more_time_waits_in_the_chiefs_queue(world: World) -> None:
    """Signed at 10:00 on a working Tuesday, 0102's handling has 4 working hours: due 15:30
    (two before noon, two from 13:30). The chief grants 2 more: due 17:30."""
    with transaction(world.sessions) as session:
        for action, role in (("open", "shift_chief"), ("dispatch", "dispatcher"),
                             ("sign", "department")):
            service.transition(session, world.case, action, actor=role, role=role, now=NOW)
    chief = world.tokens["shift_chief"]
    sanitation = _as(world, Identity("环卫局小李", ("department",), False,
                                     department="sanitation"), "department")
    assert f'data-case="{world.case}"' not in world.client.get(
        "/work", headers=chief).get_data(as_text=True)  # the department is working on it
    asked = world.client.post(f"/orders/{world.case}/act", headers=sanitation, data={
        "action": "request_extension", "role": "department", "note": "需协调吊车"})
    assert asked.status_code == 302
    queue = world.client.get("/work", headers=chief).get_data(as_text=True)
    assert f'data-case="{world.case}"' in queue and "申请延期中" in queue
    page = world.client.get(f"/orders/{world.case}", headers=chief).get_data(as_text=True)
    assert "2026-11-24 15:30" in page and 'data-action="grant_extension"' in page
    granted = world.client.post(f"/orders/{world.case}/act", headers=chief, data={
        "action": "grant_extension", "role": "shift_chief", "amount": "2"})
    assert granted.status_code == 302
    page = world.client.get(f"/orders/{world.case}", headers=chief).get_data(as_text=True)
    assert "2026-11-24 17:30" in page and "2026-11-24 15:30" not in page
    assert f'data-case="{world.case}"' not in world.client.get(
        "/work", headers=chief).get_data(as_text=True)



def test_the_dispatcher_refuses_a_park_in_the_row_and_cannot_answer_what_was_not_asked(
        world: World) -> None:
    with transaction(world.sessions) as session:
        for action, role in (("open", "shift_chief"), ("dispatch", "dispatcher"),
                             ("sign", "department")):
            service.transition(session, world.case, action, actor=role, role=role, now=NOW)
    dispatcher = world.tokens["dispatcher"]
    sanitation = _as(world, Identity("环卫局小李", ("department",), False,
                                     department="sanitation"), "department")
    # nothing asked: the dispatcher's page offers no answer, and a forged one is refused
    page = world.client.get(f"/orders/{world.case}", headers=dispatcher).get_data(as_text=True)
    assert 'data-action="park"' not in page and 'data-action="refuse_park"' not in page
    forged = world.client.post(f"/orders/{world.case}/act", headers=dispatcher, data={
        "action": "park", "role": "dispatcher"})
    assert forged.status_code == 409
    assert "answers the department&#39;s request_park (申请挂账), and none is pending" in \
        forged.get_data(as_text=True)
    asked = world.client.post(f"/orders/{world.case}/act", headers=sanitation, data={
        "action": "request_park", "role": "department", "note": "需等管网改造"})
    assert asked.status_code == 302
    queue = world.client.get("/work", headers=dispatcher).get_data(as_text=True)
    row = queue[queue.index(f'data-case="{world.case}"'):]
    row = row[:row.index("</tr>")]
    assert "申请挂账中" in row and "需等管网改造" in row
    assert row.count('class="work-answer"') == 2
    assert 'data-action="park"' in row and 'data-action="refuse_park"' in row
    refused = world.client.post(f"/orders/{world.case}/act", headers=dispatcher, data={
        "action": "refuse_park", "role": "dispatcher", "note": "本周内可完成", "next": "work"})
    assert refused.status_code == 302 and refused.headers["Location"].endswith("/work")
    assert f'data-case="{world.case}"' not in world.client.get(
        "/work", headers=dispatcher).get_data(as_text=True)
    with world.sessions() as session:
        order = service.get_order(session, world.case)
        last = service.history(session, world.case)[-1]
    assert order.state == "handling"
    assert (last.action, last.actor, last.role, last.note) == (
        "refuse_park", "dispatcher-account", "dispatcher", "本周内可完成")

def test_a_step_taken_from_the_queue_comes_back_to_the_queue(world: World) -> None:
    with transaction(world.sessions) as session:
        for action, role in (("open", "shift_chief"), ("dispatch", "dispatcher")):
            service.transition(session, world.case, action, actor=role, role=role, now=NOW)
    sanitation = _as(world, Identity("环卫局小李", ("department",), False,
                                     department="sanitation"), "department")
    queue = world.client.get("/work", headers=sanitation).get_data(as_text=True)
    # 签收 is one click in the row; 回退 needs its reason, written on the order's page
    assert queue.count('class="work-act"') == 1 and 'data-action="sign"' in queue
    assert f'href="/orders/{world.case}#actions">回退</a>' in queue
    signed = world.client.post(f"/orders/{world.case}/act", headers=sanitation, data={
        "action": "sign", "role": "department", "expected_version": "3", "next": "work"})
    assert (signed.status_code, signed.headers["Location"]) == (302, "/work")
    assert _state(world) == ("handling", 4, "sanitation")
    late = world.client.post(f"/orders/{world.case}/act", headers=sanitation, data={
        "action": "sign", "role": "department", "expected_version": "3", "next": "work"})
    assert late.status_code == 409 and "changed since version 3 (now 4)" in late.get_data(
        as_text=True)


def _csrf(page: str) -> str:
    found = re.search(r'<input[^>]*name="csrf_token"[^>]*value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


def test_feedback_carries_a_photo_of_up_to_8_mib(world: World) -> None:
    """Signed in with a password, as in the browser: the form's CSRF token is read before
    the view runs, and the form may still carry 8 MiB."""
    with transaction(world.sessions) as session:
        accounts.create_account(session, "环卫局小李", ["department"], password=PASSWORD,
                                department="sanitation", actor="测试", now=NOW)
        for action, role in (("open", "shift_chief"), ("dispatch", "dispatcher"),
                             ("sign", "department")):
            service.transition(session, world.case, action, actor=role, role=role, now=NOW)
    client = world.app.test_client()
    login = client.get("/login").get_data(as_text=True)
    signed_in = client.post("/login", data={"name": "环卫局小李", "password": PASSWORD,
                                            "csrf_token": _csrf(login)})
    assert signed_in.status_code == 302
    token = _csrf(client.get(f"/orders/{world.case}").get_data(as_text=True))
    url = f"/orders/{world.case}/act"
    png = b"\x89PNG\r\n\x1a\n"

    def feedback(photo: bytes) -> Any:
        return client.post(url, data={
            "csrf_token": token, "action": "feedback", "role": "department", "note": "已清运",
            "photo": (io.BytesIO(photo), "cleared.png", "image/png")})

    refused = feedback(png + b"\x00" * (8 * 1024 * 1024))  # 8 MiB and 8 bytes
    assert refused.status_code == 400
    assert "photo: 1 byte to 8 MiB" in refused.get_data(as_text=True)
    assert feedback(png + b"\x00" * (9 * 1024 * 1024)).status_code == 413  # past the form's
    assert _state(world) == ("handling", 4, "sanitation")
    assert feedback(png + b"\x01" * (3 * 1024 * 1024)).status_code == 302
    assert _state(world) == ("reported", 5, "sanitation")
    with world.sessions() as session:
        assert [(a.kind, a.bytes) for a in service.attachments(session, world.case)] == [
            ("photo", 3 * 1024 * 1024 + 8)]


def test_a_number_is_shown_whole_only_to_who_may_see_it_and_that_is_audited(
        world: World) -> None:
    masked = world.client.get(f"/orders/{world.case}", headers=world.tokens["dispatcher"])
    text = masked.get_data(as_text=True)
    assert "138****5678" in text and "13812345678" not in text
    assert "139****4321" in text and "13987654321" not in text  # typed into the description
    whole = world.client.get(f"/orders/{world.case}", headers=world.tokens["sees_phone"])
    text = whole.get_data(as_text=True)
    assert "13812345678" in text and "13987654321" in text
    with world.sessions() as session:
        shown = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "phone_shown")).all()
        assert [(e.actor, e.target) for e in shown] == [("sees-phones", world.case)]


def test_a_voice_message_plays_in_parts_and_each_play_is_audited(world: World,
                                                                 tmp_path: Path) -> None:
    message = tmp_path / "recordings" / "message-1.wav"
    message.write_bytes(b"RIFF$\x00\x00\x00WAVEfmt ")
    digest = "5" * 64  # the page names it by its fingerprint, whatever the file holds
    with transaction(world.sessions) as session:
        service.attach(session, world.case, "audio", str(message), digest, 16, now=NOW)
    dispatcher = world.tokens["dispatcher"]
    page = world.client.get(f"/orders/{world.case}", headers=dispatcher).get_data(as_text=True)
    url = f"/orders/{world.case}/attachments/{digest}"
    assert f'src="{url}"' in page and "语音留言" in page
    first = world.client.get(url, headers={**dispatcher, "Range": "bytes=0-3"})
    assert (first.status_code, first.data, first.mimetype) == (206, b"RIFF", "audio/wav")
    rest = world.client.get(url, headers={**dispatcher, "Range": "bytes=8-11"})
    assert (rest.status_code, rest.data) == (206, b"WAVE")
    assert world.client.get(f"/orders/{world.case}/attachments/{'6' * 64}",
                            headers=dispatcher).status_code == 404
    assert world.client.get(f"/orders/{world.other_case}/attachments/{digest}",
                            headers=dispatcher).status_code == 404
    with world.sessions() as session:
        rows = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "recording_played")).all()
        assert [(r.actor, json.loads(r.detail)["attachment"]) for r in rows] == [
            ("dispatcher-account", digest)]


def test_a_citizens_added_information_shows_in_the_timeline_with_its_photos(
        world: World, tmp_path: Path) -> None:
    """What a citizen adds through the portal (市民补充材料): its Chinese title, the citizen as
    who added it, their own words escaped (a number in them masked), and the photos sent
    with it, each linked; the report's own photo, filed earlier, is not one of them."""
    later = NOW + timedelta(hours=2)
    directory = tmp_path / "attachments"
    png = b"\x89PNG\r\n\x1a\n"
    reported, first, second = png + b"report", png + b"added-1", png + b"added-2"
    with transaction(world.sessions) as session:  # as channels.portal files them
        service.store_photo(session, world.case, reported, directory, roles=("system",),
                            now=NOW)
        service.add_citizen_info(session, world.case,
                                 "<b>又堆满了</b>，请回电 13911112222",
                                 actor="公众服务门户", now=later)
        for content in (first, second):
            service.store_photo(session, world.case, content, directory, roles=("system",),
                                now=later)
    dispatcher = world.tokens["dispatcher"]
    page = world.client.get(f"/orders/{world.case}", headers=dispatcher).get_data(as_text=True)
    found = re.search(r'<li data-action="citizen_info">(.*?)</li>', page, re.S)
    assert found is not None
    entry = " ".join(found.group(1).split())
    assert "<strong>市民补充材料</strong> · 公众服务门户 (市民)" in entry
    assert ('<q class="timeline-note">&lt;b&gt;又堆满了&lt;/b&gt;，请回电 139****2222</q>'
            in entry)
    assert "<b>又堆满了" not in page and "13911112222" not in page
    assert 'data-photos="2"' in entry and "照片2张：" in entry
    assert page.count('class="timeline-photos"') == 1  # no other entry lists photos
    links = [f"/orders/{world.case}/attachments/{hashlib.sha256(c).hexdigest()}"
             for c in (first, second)]
    assert re.findall(r'<a href="([^"]+)"', entry) == links
    for link, content in zip(links, (first, second), strict=True):
        shown = world.client.get(link, headers=dispatcher)
        assert (shown.status_code, shown.data) == (200, content)
