"""systemd units for the centre's processes on a production host (`hotline systemd`).

- `hotline-pbx.service` (only with `pbx.mode = "sandbox"`): the Asterisk sandbox, as root
  (chroot and mounts). `hotline pbx up` starts Asterisk and returns, so the unit is
  `Type=forking` with Asterisk's pid file: systemd watches Asterisk itself and restarts it
  when it fails; `hotline pbx down` stops it and undoes the mounts.
- `hotline.service`: the centre (`hotline serve`: FastAGI IVR, telephony service, web,
  desk push, the tickets, SMS, retention and quality loops), its database migrated first.
  It stops on SIGTERM within 10 s (hotline.stopping) with status 143, which is a success.

Order: the centre starts after the database, Redis and Asterisk it uses when they run on
this host (postgresql.service, redis-server.service, hotline-pbx.service or Debian's
asterisk.service). It only *wants* them, never *requires* them: the centre rides out a
restart of each (503s and reconnects), where `Requires=` would stop and restart the whole
centre, every live call's IVR session with it, whenever one of them is restarted.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from core.config import Settings

LOCAL_HOSTS = {"", "localhost", "127.0.0.1", "::1"}
README = Path(__file__).resolve().parents[1] / "README.md"  # "Running as a service"
STOP_TIMEOUT_SECONDS = 15  # the centre's own bound is 10 s (hotline.stopping.STOP_BOUND)


def units(settings: Settings, *, config: Path, prefix: Path, user: str | None
          ) -> dict[str, str]:
    """{file name: unit text} for this settings file, the hotline installed under `prefix`
    (a virtualenv: `prefix/bin/hotline`) and the account the centre runs as."""
    hotline = f"{prefix / 'bin' / 'hotline'} --config {config}"
    wanted = ["network-online.target"]
    after = ["network-online.target"]
    if _local(settings.storage.database_url, "postgresql"):
        after.append("postgresql.service")
        wanted.append("postgresql.service")
    if _local(settings.storage.redis_url, "redis"):
        after.append("redis-server.service")
        wanted.append("redis-server.service")
    out: dict[str, str] = {}
    if settings.pbx.mode == "sandbox":
        out["hotline-pbx.service"] = _pbx_unit(settings, hotline)
        after.append("hotline-pbx.service")
        wanted.append("hotline-pbx.service")
    elif settings.pbx.bind_address in LOCAL_HOSTS:  # Debian's own Asterisk on this host
        after.append("asterisk.service")
        wanted.append("asterisk.service")
    service = [
        "[Unit]",
        "Description=12319 city-service hotline: the centre (IVR, telephony, web, workers)",
        f"Documentation=file://{README}",
        f"After={' '.join(after)}",
        f"Wants={' '.join(wanted)}",
        "",
        "[Service]",
        "Type=exec",
        *([f"User={user}", f"Group={user}"] if user else []),
        f"Environment=HOTLINE_CONFIG={config}",
        f"ExecStartPre={hotline} db upgrade",
        f"ExecStart={hotline} serve",
        "Restart=on-failure",
        "RestartSec=5",
        "KillSignal=SIGTERM",
        # SIGTERM to the centre alone: it stops its own children (embedded Redis, sipp)
        "KillMode=mixed",
        f"TimeoutStopSec={STOP_TIMEOUT_SECONDS}",
        "SuccessExitStatus=143",  # 128 + SIGTERM: its clean stop
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    out["hotline.service"] = "\n".join(service) + "\n"
    return out


def _pbx_unit(settings: Settings, hotline: str) -> str:
    lines = [
        "[Unit]",
        "Description=12319 city-service hotline: the Asterisk sandbox",
        "After=network-online.target local-fs.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=forking",  # `pbx up` returns once Asterisk is fully booted
        f"PIDFile={settings.storage.data_dir / 'pbx' / 'asterisk.pid'}",
        f"Environment=HOTLINE_CONFIG={hotline.split(' --config ', 1)[1]}",
        f"ExecStart={hotline} pbx up",
        f"ExecStop={hotline} pbx down",
        "Restart=on-failure",
        "RestartSec=5",
        "KillSignal=SIGTERM",
        f"TimeoutStartSec={settings.pbx.boot_timeout + 300:.0f}",  # a first root build
        f"TimeoutStopSec={STOP_TIMEOUT_SECONDS}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def _local(url: str, scheme: str) -> bool:
    """`url` names a `scheme` server on this host (an empty URL is the embedded default)."""
    if not url:
        return False
    parts = urlsplit(url)
    return parts.scheme.startswith(scheme) and (parts.hostname or "") in LOCAL_HOSTS


def write(unit_texts: dict[str, str], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, body in unit_texts.items():
        path = out_dir / name
        path.write_text(body)
        path.chmod(0o644)
        written.append(path)
    return written
