"""The Asterisk Manager Interface connection, over panoramisk (asyncio).

panoramisk 1.4 has no action timeout and retries connections forever on its own; this wrapper
bounds both, so a dead Asterisk is reported instead of waited on. `EventTap` runs a connection
in a background thread for synchronous code (the CLI demo, tests).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from panoramisk import Manager
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message
from panoramisk.utils import EOL

from core.background import BackgroundLoop
from core.clock import SYSTEM_CLOCK, Clock
from core.config import Settings
from core.errors import HotlineError

log = logging.getLogger(__name__)


class AmiError(HotlineError):
    """Asterisk's manager interface is unreachable, refused us, or did not answer in time."""


_GREETING = b"Asterisk Call Manager/"
_EOL = EOL.encode()


def _decode(block: bytes) -> str:
    """An AMI message's text. Asterisk passes caller names through as the network sent
    them: UTF-8 mostly, GB18030 (GBK) from older carriers and PBXs; each line that is not
    UTF-8 is read as GB18030."""
    try:
        return block.decode("utf-8")
    except UnicodeDecodeError:
        pass
    lines = []
    for line in block.split(b"\r\n"):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(line.decode("gb18030", errors="replace"))
    return "\r\n".join(lines)


_MULTI_VALUED = ("ChanVariable", "DestChanVariable")
_HAS_BODY = ("Response: Follows", "Response: Fail")  # panoramisk parses these itself
_QUOTED_KEYS = ("Result", "result", "RESULT")  # panoramisk's quoted_keys: %-encoded


def _plain(headers: dict[str, Any]) -> dict[str, str]:
    """`event_fields` of a header dict: repeated headers (lists) flattened."""
    fields: dict[str, str] = {}
    for key, value in headers.items():
        key = str(key)
        if not isinstance(value, list):
            fields[key] = str(value)
            continue
        if key in _MULTI_VALUED:
            for item in value:
                name, _, item_value = str(item).partition("=")
                fields[f"{key}({name})"] = item_value
        fields.setdefault(key, str(value[0]) if value else "")
    return fields


def event_fields(message: Any) -> dict[str, str]:
    """An AMI message as plain strings. A header Asterisk repeats comes from panoramisk as a
    list: each `NAME=value` of ChanVariable (one header per channel variable) becomes its own
    `ChanVariable(NAME)` key; any other repeated header keeps its first value.

    A message our protocol parsed carries these fields already (made once while parsing,
    shared by every listener: read them, never change them)."""
    fields = vars(message).get("fields") if hasattr(message, "__dict__") else None
    return fields if fields is not None else _plain(message)


class _FoldedStore:
    """`Message._store` (case-folded name -> (name, value)) made on first use: the listeners
    read `fields`, so most events never need it. A non-data descriptor: once built, the
    instance's own `_store` shadows it."""

    def __get__(self, message: _Event | None, owner: type) -> Any:
        if message is None:
            return self
        store = {key.lower(): (key, value) for key, value in message._headers.items()}
        store["content"] = ("content", "")  # as Message(headers, content="") stores it
        message.__dict__["_store"] = store
        return store


class _Event(Message):
    """A parsed AMI message, with panoramisk's whole `Message` API (case-insensitive keys,
    attributes, `.id`, `.success`) and its headers as plain strings in `fields`."""

    _store = _FoldedStore()
    _headers: dict[str, Any]
    fields: dict[str, str]


def _parse(text: str) -> Message | None:
    """`Message.from_line` without its per-header case-folding: the headers are split once
    into a plain dict, kept as the message's `fields` (`event_fields`); the case-insensitive
    store is made only if someone asks for it. Responses with a body go through panoramisk
    itself. None when the block is no message (neither an Event nor a Response value)."""
    if text.startswith(_HAS_BODY):
        message = Message.from_line(text)
        return message if message is not None and (
            message.get("Event") or message.get("Response")) else None
    pairs = [line.split(": ", 1) for line in text.split("\r\n") if ": " in line]
    headers: dict[str, Any] = dict(pairs)  # type: ignore[arg-type]
    repeated = len(headers) < len(pairs)
    if repeated:  # ChanVariable and the like: a list of values, as panoramisk makes it
        headers = {}
        for key, value in pairs:
            previous = headers.get(key)
            headers[key] = value if previous is None else (
                [*previous, value] if isinstance(previous, list) else [previous, value])
    for key in _QUOTED_KEYS:
        if key in headers and isinstance(headers[key], str):
            headers[key] = unquote(headers[key]).strip()
    if not (headers.get("Event") or headers.get("Response")):
        return None
    fields = _plain(headers) if repeated else headers
    message = _Event.__new__(_Event)
    message.__dict__.update(_headers=headers, manager=None, fields=fields)
    return message


class _Protocol(AMIProtocol):
    """panoramisk's protocol decodes each TCP chunk on its own with errors='ignore', so a
    Chinese name split across two reads loses bytes, a GBK name is lost, and one bad message
    can raise out of data_received. Split on bytes, decode each message whole, survive any
    single message, and stamp each with when it arrived (`received_at`: the time of an
    event Asterisk did not stamp)."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._pending = b""
        self.garbage = 0

    def data_received(self, data: bytes) -> None:
        received_at = getattr(self.factory, "clock", SYSTEM_CLOCK).time()
        pending = self._pending + data
        if self.version is None and (pending.startswith(_GREETING)
                                     or _GREETING.startswith(pending)):
            if _EOL not in pending:
                self._pending = pending  # the greeting line is not complete yet
                return
            line, _, pending = pending.partition(_EOL)
            self.version = line.decode(errors="replace").partition("/")[2].strip()
        blocks = pending.split(_EOL + _EOL)
        self._pending = blocks.pop(-1)
        for block in blocks:
            try:
                message = _parse(_decode(block).strip())
            except Exception:
                message = None
            if message is None:
                if block.strip():
                    self.garbage += 1
                    log.warning("ignoring a malformed AMI block (%d bytes)", len(block))
                continue
            message.received_at = received_at
            try:
                self.handle_message(message)
            except Exception:
                log.exception("AMI message %r could not be handled", message.get("Event"))

    def handle_message(self, message: Message) -> None:
        """panoramisk's, with one shortcut: an event that answers no action of ours (no
        ActionID, no CommandID: nearly all of them) goes straight to the listeners, told
        by its plain fields, without the case-folded lookups for a response to complete
        (which would build the case-folded store)."""
        fields = vars(message).get("fields")
        if (fields is not None and "Event" in fields and "ActionID" not in fields
                and "CommandID" not in fields):  # Asterisk's spelling, always
            if fields["Event"].lower() == "shutdown":
                self.connection_lost(message)
            self.factory.dispatch(message)
            return
        super().handle_message(message)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._pending.strip():
            # the rest of it will never come; the resync after reconnecting closes the
            # call it was about if that call ended meanwhile
            log.warning("AMI link lost in the middle of a message: %d bytes dropped",
                        len(self._pending))
            self._pending = b""
        super().connection_lost(exc)


class _Manager(Manager):
    """panoramisk's Manager without its own reconnect loop: it would re-send unanswered
    actions (an Originate could dial twice) and resume without a resync. Whoever owns the
    connection decides when and how to come back."""

    closed = False
    clock: Clock = SYSTEM_CLOCK  # times the events Asterisk did not stamp

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._running: set[asyncio.Future[Any]] = set()  # async listeners, kept till done

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        return None if self.closed else super().connect(*args, **kwargs)

    def dispatch(self, event: Message) -> list[str]:
        """panoramisk's, reading the event's name from its plain fields (the case-folded
        store is not made for it) and keeping a reference to each async listener's task,
        which the loop itself holds only weakly."""
        fields = vars(event).get("fields")
        name = fields.get("Event", "") if fields is not None else event.event
        event.manager = self
        matches = []
        for pattern, regexp in self.patterns:
            if regexp.match(name) is None:
                continue
            matches.append(pattern)
            for callback in self.callbacks[pattern]:
                result = callback(self, event)
                if result is not None and (asyncio.iscoroutine(result)
                                           or isinstance(result, asyncio.Future)):
                    task = asyncio.ensure_future(result, loop=self.loop)
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
        return matches

    def connection_lost(self, exc: Exception | None) -> None:
        self._connected = False
        if self.pinger:
            self.pinger.cancel()
            self.pinger = None
        if not self.closed:
            self.closed = True
            self.on_disconnect(self, exc)


class AmiClient:
    def __init__(self, settings: Settings, clock: Clock = SYSTEM_CLOCK) -> None:
        pbx = settings.pbx
        self.clock = clock
        self.address = f"{pbx.bind_address}:{pbx.ami_port}"
        self._config = dict(host=pbx.bind_address, port=pbx.ami_port, username=pbx.ami_user,
                            secret=pbx.ami_secret, ping_delay=10, ping_interval=10,
                            reconnect_timeout=1)
        self.manager: Manager | None = None

    async def connect(self, timeout: float = 10,
                      on_disconnect: Callable[[], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        logged_in = loop.create_future()

        def on_login(_manager: Manager) -> None:
            if not logged_in.done():
                logged_in.set_result(True)

        def lost(_manager: Manager, _exc: Exception | None) -> None:
            log.warning("AMI connection to %s lost", self.address)
            if on_disconnect is not None:
                on_disconnect()

        self.manager = _Manager(loop=loop, on_login=on_login, on_disconnect=lost,
                                protocol_factory=_Protocol, **self._config)
        self.manager.clock = self.clock
        self.manager.connect()
        try:
            await asyncio.wait_for(logged_in, timeout)
        except TimeoutError:
            refused = self.manager.protocol is not None and not self.manager.authenticated
            self.close()
            if refused:
                raise AmiError(f"ami: {self.address} refused the login") from None
            raise AmiError(f"ami: cannot reach Asterisk's manager at {self.address}") from None

    def on_event(self, pattern: str, callback: Callable[[Manager, Message], Any]) -> None:
        assert self.manager is not None, "connect() first"
        self.manager.register_event(pattern, callback)

    async def action(self, action: dict[str, str], timeout: float = 5,
                     as_list: bool | None = None) -> Any:
        assert self.manager is not None, "connect() first"
        try:
            return await asyncio.wait_for(
                asyncio.ensure_future(self.manager.send_action(action, as_list=as_list)), timeout)
        except TimeoutError:
            raise AmiError(f"ami: {action.get('Action')} got no answer in {timeout} s") from None

    @property
    def connected(self) -> bool:
        return self.manager is not None and not self.manager.closed

    def close(self) -> None:
        if self.manager is not None:
            self.manager.closed = True
            self.manager.close()
            self.manager = None


class EventTap:
    """Records every AMI event in a background thread; for synchronous callers."""

    def __init__(self, settings: Settings) -> None:
        self.client = AmiClient(settings)
        self.events: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._background: BackgroundLoop | None = None

    def start(self, timeout: float = 10) -> EventTap:
        self._background = BackgroundLoop("ami-tap")
        try:
            self._background.run(self._connect(timeout), timeout + 1)
        except BaseException:
            self.stop()
            raise
        return self

    async def _connect(self, timeout: float) -> None:
        await self.client.connect(timeout)
        self.client.on_event("*", self._record)

    def _record(self, _manager: Manager, event: Message) -> None:
        with self._lock:
            self.events.append(event_fields(event))

    def action(self, action: dict[str, str], timeout: float = 5, as_list: bool = False) -> Any:
        assert self._background is not None, "start() first"
        return self._background.run(self.client.action(action, timeout, as_list), timeout + 1)

    def snapshot(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self.events)

    def wait_for(self, predicate: Callable[[dict[str, str]], bool], timeout: float = 10
                 ) -> dict[str, str]:
        """The first recorded event matching `predicate`, waiting up to `timeout`."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            events = self.snapshot()
            for event in events[seen:]:
                if predicate(event):
                    return event
            seen = len(events)
            if time.monotonic() > deadline:
                raise TimeoutError("no matching AMI event within "
                                   f"{timeout} s ({len(events)} events seen)")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._background is not None:
            self._background.loop.call_soon_threadsafe(self.client.close)
            self._background.stop()
            self._background = None

    def __enter__(self) -> EventTap:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
