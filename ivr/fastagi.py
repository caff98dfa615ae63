"""FastAGI server: Asterisk's AGI(agi://host:port/route) lands here, one session per call.

Written on asyncio streams rather than panoramisk's Application, whose header loop spins
forever on a socket closed before the blank line and whose result parser fails on EOF.
panoramisk's AGI result parser is reused for well-formed lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from panoramisk.utils import parse_agi_result

from core import logs

log = logging.getLogger(__name__)

HEADER_LIMIT = 16 * 1024
HEADER_TIMEOUT = 5.0
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class AgiHangup(Exception):
    """The caller is gone (or Asterisk closed the session); stop the flow."""


class AgiError(Exception):
    """Asterisk rejected a command (bad syntax, unknown command)."""


def _clean(text: str) -> str:
    return _CONTROL.sub("", text)


@dataclass
class AgiSession:
    headers: dict[str, str]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    commands: int = field(default=0)

    @property
    def script(self) -> str:
        return self.headers.get("agi_network_script", "")

    @property
    def caller_id(self) -> str:
        return self.headers.get("agi_callerid", "")

    @property
    def unique_id(self) -> str:
        return self.headers.get("agi_uniqueid", "")

    async def command(self, text: str, timeout: float = 60) -> dict[str, object]:
        if "\n" in text or "\r" in text:
            raise AgiError("an AGI command is one line")
        self.commands += 1
        self.writer.write(text.encode() + b"\n")
        await self.writer.drain()
        while True:
            try:
                line = await asyncio.wait_for(self.reader.readline(), timeout)
            except TimeoutError:
                raise AgiHangup(f"no answer to {text.split()[0]} in {timeout} s") from None
            if not line:
                raise AgiHangup("Asterisk closed the AGI session")
            decoded = line.decode("utf-8", errors="replace").rstrip("\r\n")
            if decoded == "HANGUP" or decoded.startswith("511"):
                raise AgiHangup("caller hung up")
            if not decoded[:3].isdigit():
                log.warning("ignoring unexpected AGI line %r", decoded[:200])
                continue
            result = parse_agi_result(decoded)
            if result.get("status_code") == 100:
                continue
            if result.get("error") == "AGIUsageError":
                with contextlib.suppress(TimeoutError):  # usage text ends with 520 End
                    while not (await asyncio.wait_for(self.reader.readline(), 2)).startswith(
                            b"520"):
                        pass
            if result.get("error") in ("AGIResultHangup",):
                raise AgiHangup("caller hung up")
            if result.get("error") in ("AGIInvalidCommand", "AGIUsageError", "AGIUnknownError"):
                raise AgiError(f"{text.split()[0]}: {result.get('msg') or result['error']}")
            return result

    async def stream_file(self, prompt: str, escape_digits: str = "") -> str | None:
        """Play a prompt; returns the digit that interrupted it, if any."""
        result = await self.command(f'STREAM FILE {prompt} "{escape_digits}"')
        return _digit(result)

    async def get_data(self, prompt: str, timeout_ms: int, max_digits: int) -> str:
        """Play `prompt` and collect up to `max_digits`; "" on timeout."""
        result = await self.command(f"GET DATA {prompt} {timeout_ms} {max_digits}",
                                    timeout=timeout_ms / 1000 + 120)
        value, _data = result.get("result", ("", ""))  # type: ignore[misc]
        return str(value) if value not in (None, "-1") else ""

    async def record_file(self, path: str, max_ms: int, silence_seconds: int = 5) -> None:
        """Record the caller (WAV) after a beep until '#', silence or `max_ms`."""
        if not re.fullmatch(r"[A-Za-z0-9_./-]+", path):
            raise AgiError(f"bad recording path {path!r}")
        await self.command(f'RECORD FILE {path} wav "#" {max_ms} BEEP s={silence_seconds}',
                           timeout=max_ms / 1000 + 30)

    async def listen(self, path: str, escape_digits: str, max_ms: int,
                     silence_seconds: int) -> tuple[str | None, int]:
        """Record what the caller says (WAV, no beep) until a key, a pause of
        `silence_seconds` or `max_ms`: the key pressed (None if none) and the milliseconds
        kept (Asterisk trims all but one second of the closing pause)."""
        if not re.fullmatch(r"[A-Za-z0-9_./-]+", path):
            raise AgiError(f"bad recording path {path!r}")
        result = await self.command(
            f'RECORD FILE {path} wav "{escape_digits}" {max_ms} s={silence_seconds}',
            timeout=max_ms / 1000 + 30)
        end, _data = result.get("endpos", ("0", ""))  # type: ignore[misc]
        kept_ms = int(end) // 8 if str(end).isdigit() else 0  # 8 kHz samples
        _value, why = result.get("result", ("", ""))  # type: ignore[misc]
        # only "(dtmf)" carries a key: after a pause the result is Asterisk's time left
        return (_digit(result) if why == "dtmf" else None), kept_ms

    async def wait_for_digit(self, timeout_ms: int) -> str | None:
        """The next key the caller presses within `timeout_ms`; None when none is."""
        return _digit(await self.command(f"WAIT FOR DIGIT {timeout_ms}",
                                         timeout=timeout_ms / 1000 + 30))

    async def get_variable(self, name: str) -> str:
        """The channel variable's value; "" when it is not set."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise AgiError(f"bad variable name {name!r}")
        result = await self.command(f"GET VARIABLE {name}")
        found, value = result.get("result", ("0", ""))  # type: ignore[misc]
        return str(value) if found == "1" else ""

    async def evaluate(self, expression: str) -> str:
        """A dialplan expression evaluated on the channel (GET FULL VARIABLE), e.g.
        ${QUEUE_WAITING_COUNT(intake)}; "" when it is empty."""
        if not re.fullmatch(r"\$\{[A-Z_]+\([a-z0-9_,-]*\)\}", expression):
            raise AgiError(f"bad expression {expression!r}")
        result = await self.command(f"GET FULL VARIABLE {expression}")
        found, value = result.get("result", ("0", ""))  # type: ignore[misc]
        return str(value) if found == "1" else ""

    async def set_variable(self, name: str, value: str) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise AgiError(f"bad variable name {name!r}")
        escaped = _clean(value).replace("\\", "\\\\").replace('"', '\\"')
        await self.command(f'SET VARIABLE {name} "{escaped}"')


def _digit(result: dict[str, object]) -> str | None:
    value, _data = result.get("result", ("0", ""))  # type: ignore[misc]
    try:
        code = int(str(value))
    except ValueError:
        return None
    return chr(code) if code > 0 else None


Route = Callable[[AgiSession], Awaitable[None]]


class FastAgiServer:
    def __init__(self, routes: dict[str, Route], session_timeout: float = 3600,
                 on_close: Callable[[], None] | None = None) -> None:
        self.routes = routes
        self.session_timeout = session_timeout
        self.on_close = on_close
        self.server: asyncio.Server | None = None
        self.sessions = 0
        self.rejected = 0
        self.loading: Future[Any] | None = None  # what the routes still load (a model)
        # the connections being served now: their tasks and writers
        self._live: dict[asyncio.Task[object], asyncio.StreamWriter] = {}

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._handle, host, port, limit=HEADER_LIMIT)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        # live sessions end too (their sockets closed): an Asterisk channel waiting on an
        # AGI reply that never comes held Asterisk's own stop for seconds
        for writer in list(self._live.values()):
            writer.close()  # the session reads the end of its stream and stops
        if self._live:
            await asyncio.wait(list(self._live), timeout=1)
        for task in list(self._live):
            task.cancel()
        if self.on_close is not None:
            self.on_close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        task = asyncio.current_task()
        if task is not None:
            self._live[task] = writer
        try:
            headers = await self._read_headers(reader)
            if headers is None:
                self.rejected += 1
                return
            name = headers.get("agi_network_script", "").split("?", 1)[0].strip("/")
            route = self.routes.get(name)
            if route is None:
                self.rejected += 1
                log.warning("FastAGI from %s asked for unknown route %r", peer, name)
                return
            self.sessions += 1
            session = AgiSession(headers, reader, writer)
            logs.CALL_ID.set(session.unique_id)  # this task's log lines name the call
            try:
                await asyncio.wait_for(route(session), self.session_timeout)
            except AgiHangup as exc:
                log.info("AGI %s %s ended: %s", name, session.unique_id, exc)
            except Exception:
                log.exception("AGI route %r failed for call %s", name, session.unique_id)
        finally:
            if task is not None:
                self._live.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_headers(self, reader: asyncio.StreamReader) -> dict[str, str] | None:
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\n\n"), HEADER_TIMEOUT)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:  # connected and closed: a probe (/readyz), nothing to say
                return None
            log.warning("FastAGI connection without a valid header block: %s", type(exc).__name__)
            return None
        except (asyncio.LimitOverrunError, TimeoutError, ConnectionError) as exc:
            log.warning("FastAGI connection without a valid header block: %s", type(exc).__name__)
            return None
        headers: dict[str, str] = {}
        for line in raw.decode("utf-8", errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.startswith("agi_"):
                headers[_clean(key.strip())] = _clean(value.strip())
        if "agi_network_script" not in headers:
            log.warning("FastAGI header block without agi_network_script")
            return None
        return headers
