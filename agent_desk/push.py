"""The desk push server (坐席推送服务): Server-Sent Events to open desk pages.

It runs on an asyncio loop of its own (started by the centre beside the web app), never on
the web server's few threads: an open desk holds its stream all shift. One reader per
process follows the desk feed (agent_desk.feed.DESK_STREAM, XREAD BLOCK) and hands each entry
to the streams open for that entry's agent (every stream, for EVERY_DESK). A message's `id:`
is the entry's stream id, `event:` its kind, `data:` its JSON.

- A stream opens with `GET /desk/push?agent=<number>&ticket=<push ticket>`: a bad or expired
  ticket is a 401, a ticket for another agent, or an account that was disabled, signed out or
  no longer holds desk.use, a 403. The stream ends when its ticket expires; the page renews
  its ticket before that and opens a new stream where it left off.
- Where it left off: a reconnecting EventSource sends `Last-Event-ID` (a page opening a new
  stream itself passes `last_id`); the entries for that desk after it are sent first (XRANGE),
  then the live ones, each once. A first connection starts from now.
- data["private"] (what only viewers who may see citizens' numbers see) is dropped for
  everyone else; showing it to one who may is audited (phone_shown, once per entry and
  stream), in a thread, before it is sent.
- A comment every HEARTBEAT_SECONDS keeps proxies from closing a quiet stream; a desk that
  does not read (its queue full) is closed, and catches up when it reconnects.
- A wallboard opens the same stream with agent=board (feed.BOARD): a ticket of a signed-in
  account holding board.read, or one a display wall's page got for its display token
  (session_user "display:<its token's id>", read-only: it hears the board entries and nothing
  else); that token's row is asked on every stream it opens, so a revoked one is refused,
  and a board entry of kind displays.REVOKED closes the streams it holds open.
  Entries for feed.SUPERVISORS go to the open desks of those who hold board.read.
- A case map opens it with agent=map (feed.CASE_MAP): a ticket of an account holding
  map.read; it hears the map entries and nothing else, a department handler only those of
  their own department's orders.
- CORS: the stream answers the desk page's origin, the one its ticket names.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import weakref
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis
from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from accounts import audit
from accounts.access import PERMISSIONS
from accounts.service import DEPARTMENT, Identity, account_identity, session_identity
from agent_desk import displays, push_ticket
from agent_desk.feed import BOARD, CASE_MAP, DESK_STREAM, EVERY_DESK, PRIVATE, SUPERVISORS
from core import tls
from core.clock import Clock
from core.config import Settings
from core.db import transaction
from core.errors import HotlineError
from core.live import SOCKET_TIMEOUT
from core.metrics import PUSH_CLOSED_SLOW, PUSH_QUEUE_DEEPEST, PUSH_STREAMS

log = logging.getLogger(__name__)

PATH = "/desk/push"
HEARTBEAT_SECONDS = 15.0
DISPLAY_PREFIX = "display:"  # a board ticket's session_user for a display wall
READ_BLOCK_MS = 5_000  # below core.live.SOCKET_TIMEOUT
RETRY_MS = 2_000  # how soon an EventSource reconnects after a dropped stream
QUEUE_LIMIT = 1_000  # entries waiting for one desk: past this, its stream is closed
BACKLOG_LIMIT = 5_000  # entries one reconnecting desk is sent from before it dropped
_ENTRY_ID = re.compile(r"\d{1,20}-\d{1,20}")


def entry_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Entry:
    """One desk feed entry, its JSON made once for every desk it goes to."""

    id: str
    agent: str
    kind: str
    public: str  # data without its private part
    full: str | None  # data with it; None when it has none
    target: str  # what an audit row of its showing names: its call, else the entry
    department: str = ""  # a map entry's order's department (data["department_code"])

    @classmethod
    def parse(cls, entry_id: bytes | str, fields: dict[Any, Any]) -> Entry | None:
        values = {_text(k): _text(v) for k, v in fields.items()}
        try:
            data = json.loads(values.get("data", "{}"))
        except ValueError:
            return None
        if not isinstance(data, dict) or not values.get("kind"):
            return None
        key = _text(entry_id)
        private = data.pop(PRIVATE, None)
        public = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        full = None
        if private is not None:
            full = json.dumps({**data, PRIVATE: private}, ensure_ascii=False,
                              separators=(",", ":"))
        return cls(key, values.get("agent", ""), values["kind"], public, full,
                   str(data.get("call_id") or key), str(data.get("department_code") or ""))

    def message(self, data: str) -> bytes:
        lines = "".join(f"data: {line}\n" for line in data.split("\n"))
        return f"id: {self.id}\nevent: {self.kind}\n{lines}\n".encode()


@dataclass(eq=False)
class Desk:
    """One open stream: whose desk, what it may see, what waits to be sent to it."""

    agent: str
    viewer: Identity
    address: str
    queue: asyncio.Queue[Entry | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    sent_up_to: tuple[int, int] = (0, 0)  # the newest entry id sent
    display_id: int | None = None  # a display wall's: its display token's row
    department: str | None = None  # a map of a department handler: that department's only

    def wants(self, entry: Entry) -> bool:
        if self.agent == BOARD:  # a board hears the board and nothing else
            return entry.agent == BOARD and entry.kind != displays.REVOKED
        if self.agent == CASE_MAP:  # a map the map's entries, a department its own
            return entry.agent == CASE_MAP and self.department in (None, entry.department)
        if entry.agent == CASE_MAP:
            return False
        if entry.agent == SUPERVISORS:
            return _reads_board(self.viewer)
        return entry.agent == EVERY_DESK or (bool(self.agent) and entry.agent == self.agent)


def _reads_board(viewer: Identity) -> bool:
    return bool(PERMISSIONS["board.read"] & set(viewer.roles))


def async_client(client: redis.Redis) -> aioredis.Redis:
    """An asyncio client to the same Redis as `client` (a server's URL or the embedded
    one's unix socket)."""
    kwargs = client.connection_pool.connection_kwargs
    common = {"db": kwargs.get("db", 0), "username": kwargs.get("username"),
              "password": kwargs.get("password"), "socket_timeout": SOCKET_TIMEOUT}
    if kwargs.get("path"):
        return aioredis.Redis(unix_socket_path=kwargs["path"], **common)
    return aioredis.Redis(host=kwargs.get("host", "localhost"), port=kwargs.get("port", 6379),
                          ssl=client.connection_pool.connection_class.__name__ == "SSLConnection",
                          **common)


_servers: weakref.WeakSet[PushServer] = weakref.WeakSet()
PUSH_STREAMS.set_function(lambda: sum(server.open_desks for server in list(_servers)))
PUSH_QUEUE_DEEPEST.set_function(
    lambda: max((server.deepest_queue for server in list(_servers)), default=0))


class PushServer:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session],
                 client: redis.Redis, clock: Clock, *, host: str | None = None,
                 port: int | None = None) -> None:
        self.settings, self.sessions, self.clock = settings, sessions, clock
        self.host = host or settings.web.host
        self.port = port or settings.web.push_port
        self._sync_client = client
        self._redis: aioredis.Redis | None = None
        self._desks: dict[str, set[Desk]] = {}  # agent ("" none) -> its open streams
        self._runner: web.AppRunner | None = None
        self._reader: asyncio.Task[None] | None = None
        self._last = "0-0"
        _servers.add(self)

    @property
    def open_desks(self) -> int:
        return sum(len(desks) for desks in list(self._desks.values()))

    @property
    def deepest_queue(self) -> int:
        """Entries waiting for the slowest open stream (read from the metrics' thread)."""
        return max((desk.queue.qsize() for desks in list(self._desks.values())
                    for desk in list(desks)), default=0)

    async def start(self) -> PushServer:
        self._redis = async_client(self._sync_client)
        self._last = await self._stream_end()
        app = web.Application()
        app.router.add_get(PATH, self._stream)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        # TLS as the web app has it (web.tls): an https page may only open an https stream
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True,
                           ssl_context=tls.server_context(self.settings))
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise HotlineError(f"desk push: cannot listen on {self.host}:{self.port} "
                               f"(web.push_port): {exc.strerror}") from None
        self._reader = asyncio.create_task(self._read(), name="desk-push-reader")
        return self

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        for desks in list(self._desks.values()):
            for desk in list(desks):
                with contextlib.suppress(asyncio.QueueFull):
                    desk.queue.put_nowait(None)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._redis is not None:
            await self._redis.aclose()

    # ------------------------------------------------------------------ the one reader

    async def _stream_end(self) -> str:
        assert self._redis is not None
        last = await self._redis.xrevrange(DESK_STREAM, count=1)
        return _text(last[0][0]) if last else "0-0"

    async def _read(self) -> None:
        assert self._redis is not None
        while True:
            try:
                answer = await self._redis.xread({DESK_STREAM: self._last}, count=500,
                                                 block=READ_BLOCK_MS)
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away: try again, the stream keeps what comes meanwhile
                log.exception("desk push: reading %s failed", DESK_STREAM)
                await asyncio.sleep(1.0)
                continue
            for _stream, entries in answer or []:
                for entry_id, fields in entries:
                    self._last = _text(entry_id)
                    entry = Entry.parse(entry_id, fields)
                    if entry is not None:
                        self._fan_out(entry)

    def _fan_out(self, entry: Entry) -> None:
        if entry.agent == BOARD and entry.kind == displays.REVOKED:
            self._close_display(entry)
            return
        if entry.agent == EVERY_DESK:
            desks = [d for group in self._desks.values() for d in group
                     if d.agent not in (BOARD, CASE_MAP)]
        elif entry.agent == CASE_MAP:
            desks = [d for d in self._desks.get(CASE_MAP, ()) if d.wants(entry)]
        elif entry.agent == SUPERVISORS:
            desks = [d for group in self._desks.values() for d in group if d.wants(entry)]
        elif not entry.agent:
            return  # for nobody's desk
        else:
            desks = list(self._desks.get(entry.agent, ()))
        for desk in desks:
            try:
                desk.queue.put_nowait(entry)
            except asyncio.QueueFull:  # it does not read: close it, it catches up later
                log.warning("desk push: desk %s too slow, stream closed", desk.agent)
                PUSH_CLOSED_SLOW.inc()
                self._close(desk)

    def _close_display(self, entry: Entry) -> None:
        """A display token was revoked: the streams its wall holds open end now."""
        try:
            revoked = json.loads(entry.public).get("display")
        except ValueError:
            return
        for desk in list(self._desks.get(BOARD, ())):
            if desk.display_id is not None and desk.display_id == revoked:
                log.info("desk push: display %s revoked, its stream closed", revoked)
                self._close(desk)

    def _close(self, desk: Desk) -> None:
        self._forget(desk)
        with contextlib.suppress(asyncio.QueueEmpty):
            desk.queue.get_nowait()  # room for the end, if it is full
        desk.queue.put_nowait(None)

    def _forget(self, desk: Desk) -> None:
        group = self._desks.get(desk.agent)
        if group is not None:
            group.discard(desk)
            if not group:
                del self._desks[desk.agent]

    # ------------------------------------------------------------------ one desk's stream

    def _viewer(self, ticket: push_ticket.Ticket) -> Identity | None:
        """The ticket's account as it stands now: None if it is gone, disabled or its
        sign-in session ended (blocking: run in a thread)."""
        with self.sessions() as session:
            if ticket.session_user:
                return session_identity(session, ticket.session_user)
            return account_identity(session, ticket.account_id)

    def _display(self, display_id: str) -> displays.Display | None:
        """The display wall of a board ticket, if its token still stands (blocking)."""
        if not display_id.isdigit():
            return None
        with self.sessions() as session:
            return displays.standing(session, int(display_id), self.clock.now())

    async def _admit(self, request: web.Request) -> tuple[Desk, push_ticket.Ticket]:
        agent = request.query.get("agent", "")
        try:
            ticket = push_ticket.verify(self.settings.accounts.session_secret, self.clock,
                                        request.query.get("ticket", ""))
        except push_ticket.TicketError as exc:
            raise _refusal(web.HTTPUnauthorized, str(exc)) from None
        if agent != ticket.agent:
            raise _refusal(web.HTTPForbidden, "this ticket is for another desk")
        loop = asyncio.get_running_loop()
        if agent == BOARD and ticket.session_user.startswith(DISPLAY_PREFIX):
            # a display wall: the page that issued this ticket checked its display token;
            # the token's row is asked again here, so a revoked one is refused at its next
            # stream. It reads the board and nothing else, never a full number.
            display = await loop.run_in_executor(
                None, self._display, ticket.session_user.removeprefix(DISPLAY_PREFIX))
            if display is None:
                raise _refusal(web.HTTPUnauthorized,
                               "the display token was revoked or has expired")
            return Desk(agent, Identity(display.name, (), False), request.remote or "",
                        display_id=display.id), ticket
        viewer = await loop.run_in_executor(None, self._viewer, ticket)
        if viewer is None or viewer.account_id != ticket.account_id:
            raise _refusal(web.HTTPForbidden, "the account is disabled or signed out")
        if agent == BOARD:  # a supervisor's board: the board and nothing private
            if not _reads_board(viewer):
                raise _refusal(web.HTTPForbidden, f"{viewer.name} may not board.read")
            return Desk(agent, Identity(viewer.name, viewer.roles, False), request.remote or ""
                        ), ticket
        if agent == CASE_MAP:  # a case map: the orders' moves, never a number
            if not PERMISSIONS["map.read"] & set(viewer.roles):
                raise _refusal(web.HTTPForbidden, f"{viewer.name} may not map.read")
            only = None if set(viewer.roles) - {DEPARTMENT} else viewer.department or "\x00none"
            return Desk(agent, Identity(viewer.name, viewer.roles, False), request.remote or "",
                        department=only), ticket
        if not PERMISSIONS["desk.use"] & set(viewer.roles):
            raise _refusal(web.HTTPForbidden, f"{viewer.name} may not desk.use")
        if (viewer.agent or "") != agent:
            raise _refusal(web.HTTPForbidden, "the account works as another agent now")
        if not ticket.see_phone and viewer.see_phone:  # never more than the ticket says
            viewer = Identity(viewer.name, viewer.roles, False, viewer.department,
                              viewer.agent, viewer.account_id)
        return Desk(agent, viewer, request.remote or ""), ticket

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        try:
            desk, ticket = await self._admit(request)
        except web.HTTPException as refusal:
            _cors(refusal.headers, request, None)
            raise
        after = request.headers.get("Last-Event-ID") or request.query.get("last_id", "")
        if after and not _ENTRY_ID.fullmatch(after):
            raise _refusal(web.HTTPBadRequest, "Last-Event-ID: not a desk feed entry id")
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store",
            "X-Accel-Buffering": "no"})  # nginx: pass each message on at once
        _cors(response.headers, request, ticket.origin)
        await response.prepare(request)
        self._desks.setdefault(desk.agent, set()).add(desk)  # before the backlog: no gap
        try:
            await response.write(f"retry: {RETRY_MS}\n\n".encode())
            if after:
                for entry in await self._backlog(desk, after):
                    await self._send(response, desk, entry)
            ends_at = ticket.issued_at + push_ticket.TICKET_SECONDS
            while (left := ends_at - self.clock.time()) > 0:
                try:
                    entry = await asyncio.wait_for(desk.queue.get(),
                                                   min(HEARTBEAT_SECONDS, left))
                except TimeoutError:
                    await response.write(b": heartbeat\n\n")
                    continue
                if entry is None:  # closed: too slow, or the server stops
                    break
                await self._send(response, desk, entry)
        except ConnectionResetError:
            pass  # the page went away
        finally:
            self._forget(desk)
        return response

    async def _backlog(self, desk: Desk, after: str) -> list[Entry]:
        """This desk's entries after `after`, up to the stream's end now."""
        assert self._redis is not None
        found: list[Entry] = []
        start, scanned = f"({after}", 0
        while scanned < BACKLOG_LIMIT:
            page = await self._redis.xrange(DESK_STREAM, min=start, max="+", count=500)
            if not page:
                break
            scanned += len(page)
            for entry_id, fields in page:
                entry = Entry.parse(entry_id, fields)
                if entry is not None and desk.wants(entry):
                    found.append(entry)
            start = f"({_text(page[-1][0])}"
        return found

    async def _send(self, response: web.StreamResponse, desk: Desk, entry: Entry) -> None:
        key = entry_key(entry.id)
        if key <= desk.sent_up_to:  # sent from the backlog already
            return
        data = entry.public
        if entry.full is not None and desk.viewer.see_phone:
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, self._audit_shown, desk, entry)
                data = entry.full
            except Exception:  # not audited: not shown
                log.exception("desk push: auditing entry %s failed", entry.id)
        await response.write(entry.message(data))
        desk.sent_up_to = key

    def _audit_shown(self, desk: Desk, entry: Entry) -> None:
        """A citizen's number shown unmasked on this desk (accounts.web.phones_shown)."""
        with transaction(self.sessions) as session:
            audit.record(session, audit.PHONE_SHOWN, actor=desk.viewer.name,
                         now=self.clock.now(), target=entry.target, address=desk.address,
                         detail={"what": f"desk:{entry.kind}", "entry": entry.id})


def _refusal(kind: type[web.HTTPException], detail: str) -> web.HTTPException:
    return kind(text=json.dumps({"error": kind.__name__.removeprefix("HTTP"),
                                 "detail": detail}),
                content_type="application/json")


def _cors(headers: Any, request: web.Request, origin: str | None) -> None:
    """Let the desk page's origin read the answer (a refusal too, so the page can tell a
    401 from a dropped connection)."""
    asked = request.headers.get("Origin", "")
    if asked and (origin is None or asked == origin):
        headers["Access-Control-Allow-Origin"] = asked
        headers["Vary"] = "Origin"
