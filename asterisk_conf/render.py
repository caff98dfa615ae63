"""Render the Asterisk configuration from the hotline's settings and telephony directory.

The same files serve the sandbox and a production Asterisk (`hotline pbx render --out DIR`):
numbers, queues and agent phones have one source of truth, the hotline's own database.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from core.config import Settings
from telephony.cel import CEL_STORE
from telephony.directory import BROWSER_SUFFIX, Directory
from telephony.sipguard import BANS_ACL, BANS_FILE, acl_rules

TEMPLATES = Path(__file__).with_name("templates")
# The HTTPS server's certificate and key, inside Asterisk's root (the sandbox generates them;
# an existing Asterisk puts its own there).
TLS_DIR = "/etc/asterisk/keys"
TLS_CERT, TLS_KEY = f"{TLS_DIR}/hotline-https.crt", f"{TLS_DIR}/hotline-https.key"
MODULE_DIR = "/usr/lib/x86_64-linux-gnu/asterisk/modules"

MODULES = (
    # core resources
    "res_timing_timerfd.so", "res_crypto.so", "res_musiconhold.so", "res_agi.so",
    "res_rtp_asterisk.so", "res_speech.so", "res_sorcery_config.so", "res_sorcery_memory.so",
    "res_sorcery_astdb.so", "res_format_attr_opus.so",
    # PJSIP
    "res_pjproject.so", "res_pjsip.so", "res_pjsip_session.so", "chan_pjsip.so",
    "res_pjsip_authenticator_digest.so", "res_pjsip_outbound_authenticator_digest.so",
    "res_pjsip_endpoint_identifier_ip.so", "res_pjsip_endpoint_identifier_user.so",
    "res_pjsip_registrar.so", "res_pjsip_sdp_rtp.so", "res_pjsip_caller_id.so",
    "res_pjsip_dtmf_info.so", "res_pjsip_nat.so", "res_pjsip_rfc3326.so",
    "res_pjsip_diversion.so", "res_pjsip_logger.so", "res_pjsip_pubsub.so",
    "res_pjsip_refer.so", "res_pjsip_header_funcs.so",
    "res_pjsip_acl.so",  # the ban list's ACL and the citizens' and trunk's networks
    # the desk page's softphone: SIP over WSS on the HTTPS server, DTLS-SRTP, opus
    "res_http_websocket.so", "res_pjsip_transport_websocket.so", "res_srtp.so",
    "codec_opus_open_source.so",
    # media
    "codec_alaw.so", "codec_ulaw.so", "codec_a_mu.so", "codec_resample.so", "codec_gsm.so",
    "format_wav.so", "format_pcm.so", "format_gsm.so", "format_sln.so", "format_wav_gsm.so",
    # bridging
    "bridge_simple.so", "bridge_native_rtp.so", "bridge_softmix.so", "bridge_holding.so",
    "bridge_builtin_features.so",
    # dialplan
    "pbx_config.so", "app_dial.so", "app_queue.so", "app_mixmonitor.so", "app_playback.so",
    "app_read.so", "app_verbose.so", "app_echo.so", "app_senddtmf.so", "app_stack.so",
    "app_exec.so", "app_userevent.so", "app_originate.so", "app_record.so",
    "app_chanspy.so",
    # channel event logging to SQLite: the record of calls the centre missed (telephony.cel)
    "res_cdrel_custom.so", "cel_sqlite3_custom.so", "app_celgenuserevent.so",
    # live transcription: the caller's voice to the centre over AudioSocket (recordings.live)
    "res_audiosocket.so", "chan_audiosocket.so",
    "func_callerid.so", "func_channel.so", "func_strings.so", "func_logic.so",
    "func_global.so", "func_cut.so", "func_hangupcause.so", "func_uri.so", "func_math.so",
    "func_timeout.so", "func_db.so", "func_shell.so",
)

FILES = ("asterisk.conf", "http.conf", "modules.conf", "logger.conf", "manager.conf", "rtp.conf",
         "musiconhold.conf", "pjsip.conf", "queues.conf", "extensions.conf", "indications.conf",
         "features.conf", "cdr.conf", "cel.conf", "acl.conf", "udptl.conf", "pjproject.conf",
         "ccss.conf", "stasis.conf", "cel_sqlite3_custom.conf", BANS_FILE)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _sip_quote(text: str) -> str:
    """A display name safe inside a quoted SIP string and an Asterisk config line."""
    return _CONTROL.sub(" ", text).replace("\\", "").replace('"', "").replace(";", ",")


def _comment(text: str) -> str:
    return _CONTROL.sub(" ", text)


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined,
        keep_trailing_newline=True, autoescape=False,
    )
    env.filters["sip_quote"] = _sip_quote
    env.filters["comment"] = _comment
    return env


def render(settings: Settings, directory: Directory, bans: Sequence[str] = ()
           ) -> dict[str, str]:
    """File name -> text, for every file Asterisk reads; `bans`, the SIP bans standing."""
    env = _environment()
    context = {
        "generated_by": "hotline pbx render",
        "pbx": settings.pbx,
        "hotline": settings.hotline,
        "ivr": settings.ivr,
        "directory": directory,
        "modules": MODULES,
        "module_dir": MODULE_DIR,
        "browser_suffix": BROWSER_SUFFIX,
        "tls_cert": TLS_CERT,
        "tls_key": TLS_KEY,
        "host_addresses": host_addresses(),
        "cel_store": CEL_STORE,
        "bans_file": BANS_FILE, "bans_acl": BANS_ACL, "ban_rules": acl_rules(bans),
    }
    return {name: env.get_template(f"{name}.tmpl").render(context) for name in FILES}


def host_addresses() -> list[str]:
    """This host's own IPv4 addresses other than loopback: Asterisk offers them as ICE
    candidates, and rtp.conf maps them to loopback, where the sandbox's media lives."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True,
                             text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    found = re.findall(r"\binet ([0-9.]+)/", out)
    return sorted({a for a in found if not a.startswith("127.")})


def write(files: dict[str, str], out_dir: Path) -> list[Path]:
    """Write each file atomically, so a reload never reads a half-written config."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        target = out_dir / name
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o640)
        os.replace(tmp, target)
        written.append(target)
    return written
