"""The citizens' portal (公众服务门户): a citizen reports a problem on the web, confirms their
phone number with an SMS code, and follows the order with a private tracking link; no account.

    submit (a draft, its photos checked and re-encoded, a code to the phone)
      -> confirm (the right code: the work order, its photos, a tracking link; the draft goes)
      -> track (the public timeline) / add_info (while open) / rate (when closed)

Nothing is half-stored: a draft holds the report and its photos in the database until the
code is right, so an unconfirmed report leaves no order and no file; it expires after
`portal.code_minutes` and is swept by the next report. Only hashes of the draft's and the
tracking link's tokens are kept, and an HMAC of the code.

What a citizen sees of their order is decided here (PUBLIC_STEPS): a fixed wording per
workflow step, the department it was sent to, and their own additions; never who acted,
the staff's notes, nor anything of other citizens.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import secrets
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from channels import sms
from channels.portal_models import PortalDraft, PortalDraftPhoto, PortalTracker
from core import phones
from core.config import Portal as Rules
from core.errors import HotlineError
from core.events import EventBus
from tickets import catalogue, service, surveys, workflow
from tickets.policy import Policy

ACTOR = "公众服务门户"  # who took the order in, as staff see it in the timeline
GROUPS_FILE = Path(__file__).with_name("portal_groups.yaml")
FORMATS = {"JPEG", "PNG", "WEBP"}  # what Pillow must find inside; HEIC is refused (note)
CODE_TEXT = "【12319城市管理热线】您的验证码是{code}，{minutes}分钟内有效。请勿告诉他人。"
DONE_TEXT = ("【12319城市管理热线】您反映的问题已受理，案件编号{case}。"
             "查看进度：{link}")
MAX_NOTE = 1000

# Workflow steps a citizen sees, each under a public name the pages word (portal_pages);
# every other step (核实反馈, 申请延期, 申请挂账, 督办 and any added later) stays internal.
PUBLIC_STEPS = {
    "create": "received", "request_verification": "verifying", "open": "accepted",
    "resolve_on_call": "closed", "dispatch": "dispatched", "sign": "handling",
    "return": "redispatching", "grant_extension": "extended", "park": "parked",
    "unpark": "handling", "feedback": "handled", "request_check": "checking",
    "rework": "rework", "check_passed": "checked", "close": "closed", "evaluate": "rated",
    "reopen": "reopened", "defer": "deferred", "resume": "handling", "void": "voided",
    "merge": "merged", service.CITIZEN_INFO: "citizen_info",
}


class PortalError(HotlineError):
    """A report or an answer the portal cannot take; the message names the field."""

    status = 400


class PhotoRefused(PortalError):
    """Not a photo we take (not JPEG, PNG or WebP by its content)."""

    status = 415


class PhotoTooLarge(PortalError):
    status = 413


class LinkNotFound(PortalError):
    """No draft or order behind this link (never made, expired, or confirmed already)."""

    status = 404


# --- plain-language groups --------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    label: str
    en: str
    code: str
    kind: str

    @property
    def value(self) -> str:  # what the form sends
        return f"{self.kind}:{self.code}"


@dataclass(frozen=True)
class Group:
    title: str
    en: str
    choices: tuple[Choice, ...]


@cache
def _groups_file() -> tuple[Group, ...]:
    data = yaml.safe_load(GROUPS_FILE.read_text(encoding="utf-8"))
    return tuple(Group(g["title"], g.get("en", g["title"]), tuple(
        Choice(c["label"], c.get("en", c["label"]), str(c["code"]), c.get("kind", "event"))
        for c in g["choices"])) for g in data)


def groups(session: Session) -> list[Group]:
    """The groups the portal offers: each choice's category active in the catalogue."""
    active = {(c.kind, c.code) for c in catalogue.categories(session) if c.active}
    offered = []
    for group in _groups_file():
        choices = tuple(c for c in group.choices if (c.kind, c.code) in active)
        if choices:
            offered.append(Group(group.title, group.en, choices))
    return offered


def choice_of(session: Session, value: str) -> Choice:
    """The offered choice the form's value ("event:0102") names; PortalError otherwise."""
    for group in groups(session):
        for choice in group.choices:
            if choice.value == value:
                return choice
    raise PortalError("category: choose one of the problems listed")


def label_of(kind: str, code: str) -> tuple[str, str]:
    """The plain (Chinese, English) words for a category, or ("", "") if it has none."""
    for group in _groups_file():
        for choice in group.choices:
            if (choice.kind, choice.code) == (kind, code):
                return choice.label, choice.en
    return "", ""


# --- photos -----------------------------------------------------------------------------------


def clean_photo(content: bytes, *, number: int, share_location: bool, rules: Rules) -> bytes:
    """A photo as we keep it: opened by its content (JPEG, PNG or WebP, whatever its name
    says), refused above `photo_max_bytes` or `photo_max_pixels` before it is decoded,
    turned upright, re-encoded as JPEG no longer than `photo_max_side`, with no metadata
    but, when the citizen chose to share it, the GPS location."""
    where = f"photo {number}"
    if not content:
        raise PortalError(f"{where}: empty")
    if len(content) > rules.photo_max_bytes:
        raise PhotoTooLarge(f"{where}: at most {rules.photo_max_bytes >> 20} MiB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(content)) as probe:
                kind, (width, height) = probe.format, probe.size
                if kind not in FORMATS:
                    raise PhotoRefused(f"{where}: a JPEG, PNG or WebP photo")
                if width * height > rules.photo_max_pixels:
                    raise PhotoTooLarge(f"{where}: at most {rules.photo_max_pixels:,} pixels")
                probe.verify()  # the structure and checksums, before decoding it whole
            with Image.open(io.BytesIO(content)) as image:
                image.seek(0)  # an animation's first frame
                gps = image.getexif().get_ifd(ExifTags.IFD.GPSInfo) if share_location else {}
                upright = ImageOps.exif_transpose(image)
                upright.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PhotoTooLarge(f"{where}: at most {rules.photo_max_pixels:,} pixels") from None
    except UnidentifiedImageError:
        raise PhotoRefused(f"{where}: a JPEG, PNG or WebP photo") from None
    except (OSError, SyntaxError, ValueError, EOFError):
        raise PhotoRefused(f"{where}: the image is damaged") from None
    if upright.mode in ("RGBA", "LA", "P", "PA"):
        upright = upright.convert("RGBA")
        ground = Image.new("RGB", upright.size, "white")
        ground.paste(upright, mask=upright.getchannel("A"))
        upright = ground
    elif upright.mode != "RGB":
        upright = upright.convert("RGB")
    upright.thumbnail((rules.photo_max_side, rules.photo_max_side))
    exif = Image.Exif()
    if gps:
        exif[ExifTags.IFD.GPSInfo] = gps
    out = io.BytesIO()
    upright.save(out, "JPEG", quality=85, optimize=True, exif=exif.tobytes())
    return out.getvalue()


# --- reports and their codes -----------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    appeal_type: str
    category: str  # a choice's value, "event:0102"
    description: str
    phone: str
    address: str = ""
    latitude: float | None = None  # WGS84, checked by the adapter's map helper
    longitude: float | None = None


@dataclass(frozen=True)
class Submitted:
    token: str  # the draft's, for the code page's link (only its hash is kept)
    phone: str  # E.164
    expires_at: datetime


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _code_hash(secret: str, token_hash: str, code: str) -> str:
    return hmac.new(secret.encode(), f"{token_hash}:{code}".encode(), "sha256").hexdigest()


def mobile(phone: str) -> str:
    """A mainland mobile number (the code goes there by SMS), stored as E.164."""
    try:
        stored = phones.normalise(phone or "")
    except phones.PhoneError:
        stored = ""
    if not (stored.startswith("+861") and len(stored) == 14):
        raise PortalError("phone: a mobile number of 11 digits, e.g. 13800138000")
    return stored


def _text(value: str, what: str, limit: int, required: bool = False) -> str:
    text = (value or "").strip()
    if required and not text:
        raise PortalError(f"{what}: required")
    if len(text) > limit:
        raise PortalError(f"{what}: at most {limit} characters")
    return text


def _new_code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


def sweep(session: Session, now: datetime) -> int:
    """Drafts whose code expired go, with their photos."""
    gone = session.execute(delete(PortalDraft).where(PortalDraft.expires_at <= now)
                           .execution_options(synchronize_session=False))
    return gone.rowcount or 0


def submit(session: Session, report: Report, photos: list[bytes], *, rules: Rules,
           secret: str, now: datetime) -> Submitted:
    """A report waiting for its code: checked whole (photos already cleaned), kept as a
    draft, the code queued by SMS to the citizen's phone, in one transaction."""
    phone = mobile(report.phone)
    if report.appeal_type not in catalogue.APPEAL_TYPES:
        raise PortalError(f"appeal_type: one of {', '.join(catalogue.APPEAL_TYPES)}")
    choice = choice_of(session, report.category)
    text = _text(report.description, "description", service.MAX_DESCRIPTION, required=True)
    place = _text(report.address, "address", 200)
    if report.latitude is None and not place:
        raise PortalError("location: put a pin on the map or write the address")
    if len(photos) > rules.max_photos:
        raise PortalError(f"photos: at most {rules.max_photos}")
    sweep(session, now)
    token, code = secrets.token_urlsafe(24), _new_code()
    expires = now + timedelta(minutes=rules.code_minutes)
    draft = PortalDraft(token_hash=_hash(token), phone=phone,
                        code_hash=_code_hash(secret, _hash(token), code), attempts=0,
                        codes_sent=1, appeal_type=report.appeal_type,
                        category_code=choice.code, category_kind=choice.kind,
                        description=text, address=place, latitude=report.latitude,
                        longitude=report.longitude, created_at=now, expires_at=expires)
    session.add(draft)
    session.flush()
    for position, content in enumerate(photos, 1):
        session.add(PortalDraftPhoto(draft_id=draft.id, position=position, content=content))
    sms.queue(session, phone, CODE_TEXT.format(code=code, minutes=rules.code_minutes),
              purpose="code", reference=f"portal-{draft.id}", now=now)
    session.flush()
    return Submitted(token, phone, expires)


def _draft(session: Session, token: str, now: datetime) -> PortalDraft:
    draft = session.scalar(select(PortalDraft).where(PortalDraft.token_hash == _hash(token))
                           .with_for_update())
    if draft is None or draft.expires_at <= now:
        raise LinkNotFound("report: this link has expired or was used; please report again")
    return draft


def draft_phone(session: Session, token: str, now: datetime) -> tuple[str, datetime]:
    """The draft's phone (E.164) and when its code expires, for the code page."""
    draft = _draft(session, token, now)
    return draft.phone, draft.expires_at


def resend(session: Session, token: str, *, rules: Rules, secret: str, now: datetime) -> str:
    """A new code for the draft (the old one stops working); its phone, E.164. Limited like
    the first by the adapter (per phone and per address)."""
    draft = _draft(session, token, now)
    code = _new_code()
    draft.code_hash = _code_hash(secret, draft.token_hash, code)
    draft.attempts, draft.codes_sent = 0, draft.codes_sent + 1
    draft.expires_at = now + timedelta(minutes=rules.code_minutes)
    sms.queue(session, draft.phone, CODE_TEXT.format(code=code, minutes=rules.code_minutes),
              purpose="code", reference=f"portal-{draft.id}", now=now)
    return draft.phone


@dataclass
class Confirmed:
    case_number: str = ""
    tracking_token: str = ""
    refusal: PortalError | None = None  # a wrong code: counted (commit!), then refused


def confirm(session: Session, token: str, code: str, *, rules: Rules, secret: str,
            tracking_link: Callable[[str], str], attachments_dir: Path, bus: EventBus | None,
            policy: Policy, written: list[Path], now: datetime) -> Confirmed:
    """The citizen typed the code. Right: the work order (channel web, the confirmed phone,
    grid and department from the pin), its photos filed through the order's door, a
    tracking link (also sent by SMS with the case number); the draft goes. Wrong: the
    attempt counted, and after `code_attempts` wrong ones the draft goes. The caller commits
    in both cases and, if it fails (here or at the commit), removes the photo files listed
    in `written` as they are filed."""
    draft = _draft(session, token, now)
    typed = (code or "").strip()
    if not (len(typed) == 6 and typed.isascii() and typed.isdigit()) or not hmac.compare_digest(
            draft.code_hash, _code_hash(secret, draft.token_hash, typed)):
        draft.attempts += 1
        left = rules.code_attempts - draft.attempts
        if left <= 0:
            session.delete(draft)
            return Confirmed(refusal=LinkNotFound(
                "code: too many wrong codes; this report is gone, please report again"))
        return Confirmed(refusal=PortalError(f"code: wrong code; {left} attempts left"))
    order = service.open_order(
        session, appeal_type=draft.appeal_type, description=draft.description, channel="web",
        actor=ACTOR, citizen_phone=draft.phone, category_code=draft.category_code,
        category_kind=draft.category_kind, address=draft.address, latitude=draft.latitude,
        longitude=draft.longitude, bus=bus, policy=policy, now=now)
    tracking = secrets.token_urlsafe(24)
    session.add(PortalTracker(token_hash=_hash(tracking), case_number=order.case_number,
                              created_at=now))
    sms.queue(session, draft.phone, DONE_TEXT.format(case=order.case_number,
                                                     link=tracking_link(tracking)),
              purpose="portal", reference=order.case_number, now=now)
    photos = list(session.scalars(select(PortalDraftPhoto.content).where(
        PortalDraftPhoto.draft_id == draft.id).order_by(PortalDraftPhoto.position)))
    session.delete(draft)
    session.flush()
    _file_photos(session, order.case_number, photos, attachments_dir, written, now)
    return Confirmed(order.case_number, tracking)


def _file_photos(session: Session, case_number: str, photos: list[bytes], directory: Path,
                 written: list[Path], now: datetime) -> None:
    """The photos kept with the order (as the hotline itself: a citizen holds no workflow
    role); each file this call writes is listed in `written` at once, for the caller to
    remove if the transaction fails."""
    for content in photos:
        # where tickets.service.store_photo files it (a re-encoded photo is a JPEG)
        target = directory / now.strftime("%Y/%m") / f"{hashlib.sha256(content).hexdigest()}.jpg"
        existed = target.exists()
        row, _ = service.store_photo(session, case_number, content, directory,
                                     roles=(workflow.SYSTEM,), now=now)
        if not existed and Path(row.path) == target:
            written.append(target)


# --- following the order ---------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    kind: str  # a PUBLIC_STEPS value
    at: datetime
    department: str = ""  # the department's name, for "dispatched"
    note: str = ""  # the citizen's own words, for "citizen_info" only


@dataclass(frozen=True)
class Tracking:
    case_number: str
    state: str
    category: tuple[str, str]  # plain words (zh, en), else the catalogue's name twice
    description: str
    address: str
    created_at: datetime
    steps: list[Step]
    photos: int
    may_add: bool  # open: the citizen may add a note and photos
    may_rate: bool  # closed, and its survey waits for an answer
    rating: int | None  # the last rating given, on any channel


def case_of(session: Session, token: str) -> str:
    found = session.scalar(select(PortalTracker.case_number).where(
        PortalTracker.token_hash == _hash(token or "")))
    if found is None:
        raise LinkNotFound("tracking: no report has this link")
    return found


def track(session: Session, token: str) -> Tracking:
    """What the citizen may see of their order (see PUBLIC_STEPS)."""
    case = case_of(session, token)
    order = service.get_order(session, case)
    names = {d.code: d.name for d in catalogue.departments(session, active_only=False)}
    steps = []
    for event in service.history(session, case):
        kind = PUBLIC_STEPS.get(event.action)
        if kind is None:
            continue
        steps.append(Step(kind, event.at,
                          department=names.get(order.department_code, "")
                          if kind == "dispatched" else "",
                          note=event.note if event.role == service.CITIZEN else ""))
    plain = label_of(order.category_kind, order.category_code)
    if not plain[0]:
        found = catalogue.category(session, order.category_code, order.category_kind or "event") \
            if order.category_code else None
        plain = (found.name, found.name) if found else ("", "")
    rounds = surveys.surveys_of(session, order.id)
    waiting = bool(rounds) and rounds[-1].state in ("scheduled", "sms", "agent")
    rated = next((s.rating for s in reversed(rounds) if s.rating is not None), None)
    return Tracking(case, order.state, plain, order.description, order.address,
                    order.created_at, steps,
                    sum(1 for a in service.attachments(session, case) if a.kind == "photo"),
                    may_add=order.state in workflow.OPEN,
                    may_rate=order.state == "closed" and waiting, rating=rated)


def add_info(session: Session, token: str, note: str, photos: list[bytes], *,
             attachments_dir: Path, written: list[Path], now: datetime) -> None:
    """The citizen adds a note (and photos, already cleaned) while the order is open: a
    citizen's entry in its timeline through the order's door. Files written are listed in
    `written`, for the caller to remove if the transaction fails."""
    case = case_of(session, token)
    text = (note or "").strip()
    if not text and photos:
        text = "（补充照片）"
    if len(text) > MAX_NOTE:
        raise PortalError(f"note: at most {MAX_NOTE} characters")
    service.add_citizen_info(session, case, text, actor=ACTOR, now=now)
    _file_photos(session, case, photos, attachments_dir, written, now)


THUMBNAIL_SIDE = 320  # the tracking page's thumbnails, long side in pixels


def own_photos(session: Session, token: str) -> list[str]:
    """The SHA-256 of each photo the citizen sent themselves (their own 照片), oldest first:
    the portal files them at the instant of the report (`confirm`) or of the entry they
    add (`add_info`); a department's photos, filed at its own steps, are not theirs."""
    case = case_of(session, token)
    order = service.get_order(session, case)
    instants = {order.created_at} | {e.at for e in service.history(session, case)
                                     if e.action == service.CITIZEN_INFO}
    return [a.sha256 for a in service.attachments(session, case)
            if a.kind == "photo" and a.created_at in instants]


def own_photo_thumbnail(session: Session, token: str, sha256: str) -> bytes:
    """A JPEG thumbnail of one of the citizen's own photos, reached only through their own
    tracking link (LinkNotFound for any other photo, another order's included)."""
    if sha256 not in own_photos(session, token):
        raise LinkNotFound("photo: this report has no such photo")
    kept = next(a for a in service.attachments(session, case_of(session, token))
                if a.kind == "photo" and a.sha256 == sha256)
    try:
        with Image.open(kept.path) as image:  # our own re-encoded JPEG (clean_photo)
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            out = io.BytesIO()
            image.convert("RGB").save(out, "JPEG", quality=80)
    except (OSError, UnidentifiedImageError):
        raise LinkNotFound("photo: the file is not there any more") from None
    return out.getvalue()


def rate(session: Session, token: str, rating: int, *, policy: Policy, now: datetime) -> str:
    """The citizen's rating of their closed order: the same survey as by phone
    (tickets.surveys); 4 or 5 (by default) reopens it as the policy says."""
    case = case_of(session, token)
    if rating not in surveys.RATINGS:
        raise PortalError("rating: 1 (very satisfied) to 5 (very dissatisfied)")
    return surveys.rate_online(session, case, rating, channel="web", actor=ACTOR,
                               policy=policy, now=now)


def public_phone(stored: str) -> str:
    """The number as the code page shows it back: masked (138****8000)."""
    return phones.mask(stored)


def as_dict(tracking: Tracking) -> dict[str, Any]:
    return {"case_number": tracking.case_number, "state": tracking.state,
            "category": tracking.category[0], "description": tracking.description,
            "address": tracking.address, "created_at": tracking.created_at.isoformat(),
            "photos": tracking.photos, "may_add": tracking.may_add,
            "may_rate": tracking.may_rate, "rating": tracking.rating,
            "steps": [{"kind": s.kind, "at": s.at.isoformat(), "department": s.department,
                       "note": s.note} for s in tracking.steps]}
