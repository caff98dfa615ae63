"""The citizens' portal (公众服务门户) through the web app: a report waits for its SMS code and
only then becomes a work order with its photos; the tracking link shows the public timeline
only; hostile photos and text, wrong codes and too many requests are a clear 4xx that leaves
nothing stored. Expected values are written by hand from tickets/catalogue.yaml and
tickets/demo_grids.geojson."""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import ExifTags, Image
from sqlalchemy import func, select

from channels import sms
from channels.portal_models import PortalDraft, PortalDraftPhoto, PortalTracker
from core.clock import FixedClock
from core.db import make_engine, session_factory, transaction, upgrade
from core.live import connect_redis
from hotline.web import create_app
from tests.api_world import DEMO_GRIDS
from tests.conftest import make_settings
from tickets import catalogue, geo, queues, service
from tickets.models import WorkOrder, WorkOrderAttachment

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # 10:00 in Beijing, a Tuesday
PHONE = "13900001111"
CENTRE_04 = ("45.75135", "126.63195")  # the middle of demo grid 23010300100104


@dataclass
class Site:
    client: Any
    sessions: Any
    clock: FixedClock
    data: Path


@pytest.fixture
def site(database_url: str, tmp_path: Path) -> Iterator[Site]:
    settings = make_settings(tmp_path, DATABASE_URL=database_url)  # its own embedded Redis
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        catalogue.seed(session)
        geo.load_grids(session, geo.read_geojson(DEMO_GRIDS))
    clock = FixedClock(NOW)
    app = create_app(settings, sessions, connect_redis(settings), clock)
    yield Site(app.test_client(), sessions, clock, tmp_path)
    engine.dispose()


def photo(size: tuple[int, int] = (640, 480), gps: bool = True, kind: str = "JPEG") -> bytes:
    """A camera-like photo, with a GPS location and a camera model in its EXIF."""
    image = Image.new("RGB", size, (120, 160, 90))
    exif = Image.Exif()
    exif[ExifTags.Base.Model] = "TestCam 1"
    if gps:
        exif[ExifTags.IFD.GPSInfo] = {1: "N", 2: (45.0, 45.0, 3.0), 3: "E", 4: (126.0, 37.0, 50.0)}
    out = io.BytesIO()
    image.save(out, kind, exif=exif.tobytes())
    return out.getvalue()


def csrf(site: Site, path: str = "/portal") -> str:
    page = site.client.get(path)
    assert page.status_code == 200
    found = re.search(r'data-csrf="([^"]+)"', page.text)
    assert found
    return found.group(1)


def report(site: Site, token: str, photos: list[tuple[bytes, str]] | None = None,
           **fields: str) -> Any:
    data: dict[str, Any] = {"category": "event:0505", "appeal_type": "complaint",
                            "description": "学府路口汽车乱停，堵住了人行道",
                            "latitude": CENTRE_04[0], "longitude": CENTRE_04[1],
                            "phone": PHONE, **fields}
    data["photos"] = [(io.BytesIO(content), name) for content, name in (photos or [])]
    return site.client.post("/api/v1/portal/reports", data=data, headers={"X-CSRFToken": token},
                            content_type="multipart/form-data")


def code_sent(site: Site, phone: str = PHONE) -> str:
    with site.sessions() as session:
        texts = [m.text for m in sms.outbox(session) if m.purpose == "code"
                 and m.phone == "+86" + phone]
    assert texts
    found = re.search(r"验证码是(\d{6})", texts[-1])
    assert found
    return found.group(1)


def counts(site: Site) -> dict[str, int]:
    with site.sessions() as session:
        return {"orders": session.scalar(select(func.count(WorkOrder.id))) or 0,
                "drafts": session.scalar(select(func.count(PortalDraft.id))) or 0,
                "draft_photos": session.scalar(select(func.count(PortalDraftPhoto.id))) or 0,
                "trackers": session.scalar(select(func.count(PortalTracker.id))) or 0,
                "attachments": session.scalar(select(func.count(WorkOrderAttachment.id))) or 0,
                "files": sum(1 for p in (site.data / "attachments").rglob("*") if p.is_file())}


NOTHING = {"orders": 0, "drafts": 0, "draft_photos": 0, "trackers": 0, "attachments": 0,
           "files": 0}


def confirm(site: Site, token: str, confirm_url: str, code: str) -> Any:
    draft = confirm_url.rsplit("/", 1)[1]
    return site.client.post(f"/api/v1/portal/reports/{draft}/code", data={"code": code},
                            headers={"X-CSRFToken": token}, content_type="multipart/form-data")


def test_a_report_becomes_an_order_only_with_its_code_and_is_followed_in_public_words(
        site: Site) -> None:
    token = csrf(site)
    sent = report(site, token, [(photo(), "IMG_0001.jpg")])
    assert sent.status_code == 201, sent.json
    assert sent.json["phone"] == "139****1111"
    assert counts(site) == {**NOTHING, "drafts": 1, "draft_photos": 1}  # no order yet
    assert site.client.get(sent.json["confirm_url"]).status_code == 200

    wrong = confirm(site, token, sent.json["confirm_url"], "000000" if code_sent(site) != "000000"
                    else "111111")
    assert wrong.status_code == 400 and wrong.json["detail"] == "code: wrong code; 4 attempts left"
    done = confirm(site, token, sent.json["confirm_url"], code_sent(site))
    assert done.status_code == 201, done.json
    case = done.json["case_number"]
    assert case == "202611240001"
    assert counts(site) == {**NOTHING, "orders": 1, "trackers": 1, "attachments": 1,
                            "files": 1}
    with site.sessions() as session:
        order = service.get_order(session, case)
        assert (order.channel, order.category_kind, order.category_code, order.grid_code,
                order.department_code, order.citizen_phone, order.state) == (
            "web", "event", "0505", "23010300100104", "demo-street", "+8613900001111", "intake")
        kept = service.attachments(session, case)[0]
        told = [m.text for m in sms.about(session, case)]
    assert len(told) == 1 and case in told[0] and "/portal/track/" in told[0]
    with Image.open(kept.path) as stored:  # re-encoded, no camera model, no location
        assert stored.format == "JPEG" and stored.size == (640, 480)
        exif = stored.getexif()
        assert ExifTags.Base.Model not in exif and not exif.get_ifd(ExifTags.IFD.GPSInfo)

    # the draft's link is used up
    assert confirm(site, token, sent.json["confirm_url"], code_sent(site)).status_code == 404

    tracking = done.json["tracking_url"].split("?")[0]
    link = tracking.rsplit("/", 1)[1]
    with transaction(site.sessions) as session:
        service.act(session, case, "open", actor="值班长老王", role="shift_chief",
                    note="内部备注：车主是王某", now=NOW + timedelta(minutes=5))
        queues.dispatch_to(session, case, "demo-street", actor="派遣员老李", role="dispatcher",
                           note="内部：尽快", expected_version=None,
                           now=NOW + timedelta(minutes=8))
        service.act(session, case, "supervise", actor="值班长老王", role="shift_chief",
                    note="督办", now=NOW + timedelta(minutes=9))
    seen = site.client.get(f"/api/v1/portal/track/{link}")
    assert seen.status_code == 200
    assert [(s["kind"], s["department"]) for s in seen.json["steps"]] == [
        ("received", ""), ("accepted", ""), ("dispatched", "示范街道综合执法队")]
    assert seen.json["state"] == "dispatched" and seen.json["category"] == "汽车乱停乱放"
    page = site.client.get(tracking)
    assert page.status_code == 200 and "已派遣" in page.text and case in page.text
    for secret in ("老王", "老李", "内部", "王某", "督办", "13900001111", "139****1111"):
        assert secret not in page.text and secret not in seen.text

    added = site.client.post(f"/api/v1/portal/track/{link}/info", data={
        "note": "车还停在那里", "photos": [(io.BytesIO(photo((300, 200), gps=False)), "more.png")]},
        headers={"X-CSRFToken": token}, content_type="multipart/form-data")
    assert added.status_code == 201, added.json
    assert added.json["steps"][-1] == {"kind": "citizen_info", "at": added.json["steps"][-1]["at"],
                                       "department": "", "note": "车还停在那里"}
    assert added.json["photos"] == 2
    assert site.client.get("/api/v1/portal/track/" + "x" * 32).status_code == 404


def test_the_photo_location_is_kept_only_when_the_citizen_shares_it(site: Site) -> None:
    token = csrf(site)
    sent = report(site, token, [(photo(size=(4000, 3000)), "big.jpg")], share_location="true")
    assert sent.status_code == 201
    done = confirm(site, token, sent.json["confirm_url"], code_sent(site))
    with site.sessions() as session:
        kept = service.attachments(session, done.json["case_number"])[0]
    with Image.open(kept.path) as stored:
        assert stored.size == (2560, 1920)  # the long side cut to portal.photo_max_side
        gps = stored.getexif().get_ifd(ExifTags.IFD.GPSInfo)
        assert gps[1] == "N" and gps[3] == "E" and float(gps[2][0]) == 45.0
        assert ExifTags.Base.Model not in stored.getexif()


def _bomb() -> bytes:
    """A PNG of 20,000 x 20,000 one-bit pixels: a few kilobytes that decode to 400 million."""
    out = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize(("photos", "fields", "status", "detail"), [
    ([(b"<script>alert(1)</script>", "photo.jpg")], {}, 415,
     "photo 1: a JPEG, PNG or WebP photo"),
    ([(b"GIF89a" + bytes(100), "a.gif")], {}, 415, "photo 1: a JPEG, PNG or WebP photo"),
    ([(photo()[:300], "cut.jpg")], {}, 415, "photo 1: the image is damaged"),
    ([(_bomb(), "bomb.png")], {}, 413, "photo 1: at most 40,000,000 pixels"),
    ([(photo(), f"{n}.jpg") for n in range(7)], {}, 400, "photos: at most 6"),
    ([], {"description": "有人\u202e乱停车"}, 400, None),
    ([], {"description": "a\x00b"}, 400, None),
    ([], {"phone": "12319"}, 400, "phone: a mobile number of 11 digits, e.g. 13800138000"),
    ([], {"category": "event:0102x"}, 400, "category: choose one of the problems listed"),
    ([], {"latitude": "39.9", "longitude": "116.4"}, 400,
     "location: 39.90000, 116.40000 is outside the city's grids"),
    ([], {"latitude": "", "longitude": "", "address": ""}, 400,
     "location: put a pin on the map or write the address"),
])
def test_hostile_reports_are_refused_and_leave_nothing(site: Site, photos: list[Any],
                                                       fields: dict[str, str], status: int,
                                                       detail: str | None) -> None:
    reply = report(site, csrf(site), photos, **fields)
    assert reply.status_code == status, reply.json
    if detail:
        assert reply.json["detail"] == detail
    assert counts(site) == NOTHING
    with site.sessions() as session:
        assert sms.outbox(session) == []


def test_a_huge_upload_is_refused_before_it_is_read(site: Site) -> None:
    reply = report(site, csrf(site), [(bytes(8 << 20), f"{n}.jpg") for n in range(7)])
    assert reply.status_code == 413
    assert counts(site) == NOTHING


def test_too_many_wrong_codes_drop_the_report(site: Site) -> None:
    token = csrf(site)
    sent = report(site, token)
    right = code_sent(site)
    wrong = "123456" if right != "123456" else "654321"
    statuses = [confirm(site, token, sent.json["confirm_url"], wrong).status_code
                for _ in range(5)]
    assert statuses == [400, 400, 400, 400, 404]
    assert confirm(site, token, sent.json["confirm_url"], right).status_code == 404
    assert counts(site) == NOTHING


def test_an_expired_code_makes_no_order(site: Site) -> None:
    token = csrf(site)
    sent = report(site, token)
    site.clock.advance(timedelta(minutes=10))
    assert confirm(site, token, sent.json["confirm_url"], code_sent(site)).status_code == 404
    assert counts(site)["orders"] == 0


def test_codes_to_one_number_are_rate_limited(site: Site) -> None:
    token = csrf(site)
    statuses = [report(site, token).status_code for _ in range(4)]
    assert statuses == [201, 201, 201, 429]
    assert counts(site)["drafts"] == 3
    assert report(site, token, phone="13900002222").status_code == 201  # another number


def test_a_failure_while_filing_photos_leaves_no_order_and_no_file(
        site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    token = csrf(site)
    sent = report(site, token, [(photo(), "1.jpg"), (photo(size=(320, 240)), "2.jpg")])
    real, calls = service.store_photo, []

    def fail_second(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(service, "store_photo", fail_second)
    assert confirm(site, token, sent.json["confirm_url"], code_sent(site)).status_code == 500
    assert len(calls) == 2  # the first photo's file was written, then removed again
    assert counts(site) == {**NOTHING, "drafts": 1, "draft_photos": 2}  # the draft waits


def test_a_closed_order_is_rated_with_the_survey_and_a_bad_rating_reopens_it(
        site: Site) -> None:
    token = csrf(site)
    sent = report(site, token, category="event:0102")
    done = confirm(site, token, sent.json["confirm_url"], code_sent(site))
    case, link = done.json["case_number"], done.json["tracking_url"].split("?")[0].rsplit("/", 1)[1]
    steps = [("open", "shift_chief"), ("dispatch", "dispatcher"), ("sign", "department"),
             ("feedback", "department"), ("request_check", "dispatcher"),
             ("check_passed", "supervisor"), ("close", "shift_chief")]
    with transaction(site.sessions) as session:
        for minutes, (action, role) in enumerate(steps, 1):
            service.act(session, case, action, actor="某人", role=role,
                        now=NOW + timedelta(minutes=minutes))
    seen = site.client.get(f"/api/v1/portal/track/{link}").json
    assert seen["may_rate"] is True and seen["may_add"] is False
    refused = site.client.post(f"/api/v1/portal/track/{link}/info", data={"note": "还有"},
                               headers={"X-CSRFToken": token},
                               content_type="multipart/form-data")
    assert refused.status_code == 409
    rated = site.client.post(f"/api/v1/portal/track/{link}/rating", data={"rating": "5"},
                             headers={"X-CSRFToken": token}, content_type="multipart/form-data")
    assert rated.status_code == 200 and rated.json == {"outcome": "reopened"}
    seen = site.client.get(f"/api/v1/portal/track/{link}").json
    assert seen["state"] == "handling" and seen["steps"][-1]["kind"] == "reopened"
    assert seen["rating"] == 5 and seen["may_rate"] is False
    again = site.client.post(f"/api/v1/portal/track/{link}/rating", data={"rating": "1"},
                             headers={"X-CSRFToken": token}, content_type="multipart/form-data")
    assert again.status_code == 409


def test_a_new_code_replaces_the_old_one(site: Site) -> None:
    token = csrf(site)
    sent = report(site, token)
    old = code_sent(site)
    draft = sent.json["confirm_url"].rsplit("/", 1)[1]
    again = site.client.post(f"/api/v1/portal/reports/{draft}/resend",
                             headers={"X-CSRFToken": token}, content_type="multipart/form-data")
    assert again.status_code == 202 and again.json["phone"] == "139****1111"
    new = code_sent(site)
    if new != old:  # one time in a million they are the same
        assert confirm(site, token, sent.json["confirm_url"], old).status_code == 400
    assert confirm(site, token, sent.json["confirm_url"], new).status_code == 201
    page = site.client.get(sent.json["confirm_url"])  # the draft is gone with its link
    assert page.status_code == 404 and "此链接已过期或已使用" in page.text


def test_the_tracking_page_shows_the_citizens_own_photos_only_through_their_link(
        site: Site) -> None:
    token = csrf(site)
    mine = report(site, token, [(photo((800, 600)), "IMG_1.jpg")])
    done = confirm(site, token, mine.json["confirm_url"], code_sent(site))
    case, link = done.json["case_number"], done.json["tracking_url"].split("?")[0].rsplit("/", 1)[1]
    site.clock.set(NOW + timedelta(minutes=30))  # later, the citizen adds a photo
    added = site.client.post(f"/api/v1/portal/track/{link}/info", data={
        "note": "又多了一辆", "photos": [(io.BytesIO(photo((300, 200), gps=False)), "2.jpg")]},
        headers={"X-CSRFToken": token}, content_type="multipart/form-data")
    assert added.status_code == 201, added.json
    department_photo = b"\x89PNG\r\n\x1a\n" + b"the department's"
    with transaction(site.sessions) as session:  # staff file a photo of their own, later
        service.store_photo(session, case, department_photo, site.data / "attachments",
                            roles=("shift_chief",), now=NOW + timedelta(hours=1))
    theirs = report(site, token, [(photo((640, 480)), "IMG_9.jpg")], phone="13900002222")
    other = confirm(site, token, theirs.json["confirm_url"], code_sent(site, "13900002222"))
    other_case = other.json["case_number"]
    other_link = other.json["tracking_url"].split("?")[0].rsplit("/", 1)[1]
    with site.sessions() as session:
        kept = [a.sha256 for a in service.attachments(session, case)]
        [other_photo] = [a.sha256 for a in service.attachments(session, other_case)]
    department = hashlib.sha256(department_photo).hexdigest()
    assert len(kept) == 3 and kept[2] == department
    own = kept[:2]  # the report's photo, then the one added

    page = site.client.get(f"/portal/track/{link}")
    assert page.status_code == 200
    assert re.findall(r'<img src="([^"]+)"', page.text) == [
        f"/portal/track/{link}/photos/{own[0]}", f"/portal/track/{link}/photos/{own[1]}"]
    for sha256, size in zip(own, [(320, 240), (300, 200)], strict=True):
        shown = site.client.get(f"/portal/track/{link}/photos/{sha256}")
        assert (shown.status_code, shown.mimetype) == (200, "image/jpeg")
        assert shown.headers["Cache-Control"] == "private, max-age=86400"
        with Image.open(io.BytesIO(shown.data)) as thumbnail:
            assert (thumbnail.format, thumbnail.size) == ("JPEG", size)
    for path in (f"/portal/track/{link}/photos/{department}",  # staff's, not theirs
                 f"/portal/track/{link}/photos/{other_photo}",  # another order's
                 f"/portal/track/{other_link}/photos/{own[0]}",
                 f"/portal/track/{'x' * 32}/photos/{own[0]}",  # no such link
                 f"/portal/track/{link}/photos/{own[0].upper()}",
                 f"/portal/track/{link}/photos/..%2F..%2Fhotline.db"):
        assert site.client.get(path).status_code == 404, path
    other_page = site.client.get(f"/portal/track/{other_link}").text
    assert re.findall(r'<img src="([^"]+)"', other_page) == [
        f"/portal/track/{other_link}/photos/{other_photo}"]
