"""An SMPP 3.4 client (SMPP 短信中心接入): one transceiver bind to the operator's SMSC that
submits the parts of each message and takes the delivery receipts back.

PDUs are encoded and decoded by `smpp34`'s codec; the session here is our own, small, because
sending at most once needs to know exactly what went on the wire: a submit_sm is written only
while bound, one at a time (window 1), so when the bind drops every part is in one of three
states: answered (taken, or refused with a status), never written (provably not taken: sent
again after the rebind), or written and unanswered (uncertain: the message is held, see
`channels.outbound.gateway`). An unbind from the SMSC stops the writing of submits at once;
a submit the SMSC answers with ESME_RINVBNDSTS after its unbind was not taken either.

The session answers enquire_link, sends its own every `enquire_link_seconds` (a silent link
is closed and bound again), and binds again after a drop with a backoff of 1, 2, 4 ... 30 s.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import struct
from collections.abc import Callable
from datetime import datetime
from typing import Any

import smpp34

from channels.outbound.gateway import (
    OnPart,
    Outgoing,
    PermanentError,
    TemporaryError,
    UncertainError,
)
from core.background import BackgroundLoop

log = logging.getLogger(__name__)

GENERIC_NACK = 0x80000000
BIND_TRANSCEIVER, BIND_TRANSCEIVER_RESP = 0x00000009, 0x80000009
SUBMIT_SM, SUBMIT_SM_RESP = 0x00000004, 0x80000004
DELIVER_SM, DELIVER_SM_RESP = 0x00000005, 0x80000005
UNBIND, UNBIND_RESP = 0x00000006, 0x80000006
ENQUIRE_LINK, ENQUIRE_LINK_RESP = 0x00000015, 0x80000015

# submit_sm_resp statuses that say the SMSC did not take the message but may later: sent again
TEMPORARY = {0x04: "ESME_RINVBNDSTS", 0x08: "ESME_RSYSERR", 0x14: "ESME_RMSGQFUL",
             0x58: "ESME_RTHROTTLED", 0x64: "ESME_RX_T_APPN"}
# message_state TLV (SMPP 3.4 5.3.2.35) and the receipt text's stat: final outcomes only
DELIVERED_STATES = {2: True, 3: False, 5: False, 8: False, 4: False}
DELIVERED_STATS = {"DELIVRD": True, "EXPIRED": False, "UNDELIV": False, "REJECTD": False,
                   "DELETED": False}


def pdu(command_id: int, sequence: int, body: bytes = b"", status: int = 0) -> bytes:
    return struct.pack(">IIII", 16 + len(body), command_id, status, sequence) + body


def cstring(text: str) -> bytes:
    return text.encode("ascii") + b"\0"


def bind_body(system_id: str, password: str, system_type: str = "") -> bytes:
    # interface_version 0x34, addr_ton 0, addr_npi 0, address_range ""
    return cstring(system_id) + cstring(password) + cstring(system_type) + bytes([0x34, 0, 0]) \
        + b"\0"


def receipt_of(deliver: Any) -> tuple[str, bool] | None:
    """(SMSC message id, delivered) of a final delivery receipt, None for anything else."""
    if not deliver.esm_class & 0x04:  # not a receipt: a citizen's own message (smsin's)
        return None
    tlvs = {t.tag: t for t in deliver.tlvs}
    found = tlvs.get(smpp34.TLV_RECEIPTED_MESSAGE_ID)
    state = tlvs.get(smpp34.TLV_MESSAGE_STATE)
    text = deliver.short_message.decode("latin-1")
    fields = dict(part.split(":", 1) for part in text.split() if ":" in part)
    message_id = found.as_string() if found is not None else fields.get("id")
    if state is not None and state.value:
        delivered = DELIVERED_STATES.get(state.value[0])
    else:
        delivered = DELIVERED_STATS.get(fields.get("stat", "").upper())
    if not message_id or delivered is None:
        return None
    return message_id.strip("\0"), delivered


class _Link:
    """One TCP connection and its bind."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.bound = False
        self.pending: dict[int, asyncio.Future[tuple[int, int, bytes]]] = {}
        self.closed = asyncio.Event()

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    def lost(self) -> None:
        self.bound = False
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ConnectionError("the SMSC connection dropped"))
        self.pending.clear()
        self.closed.set()
        with contextlib.suppress(Exception):
            self.writer.close()


class SmppProvider:
    name = "smpp"

    def __init__(self, host: str, port: int, system_id: str, password: str, sender: str, *,
                 report: Callable[[str, bool, datetime], None], now: Callable[[], datetime],
                 enquire_link_seconds: float = 30, timeout_seconds: float = 15,
                 max_backoff_seconds: float = 30) -> None:
        self.host, self.port, self.system_id, self.password = host, port, system_id, password
        self.sender = sender
        self.report, self.now = report, now
        self.enquire_link_seconds, self.timeout = enquire_link_seconds, timeout_seconds
        self.max_backoff = max_backoff_seconds
        self.binds = 0  # binds made so far (a test's and an operator's view of reconnects)
        self._sequence = 0
        self._link: _Link | None = None
        self._bound: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._send_lock: asyncio.Lock | None = None
        self._loop: BackgroundLoop | None = None
        self._run: Any = None

    # -------------------------------------------------------------- the worker's side (sync)

    def start(self) -> SmppProvider:
        self._loop = BackgroundLoop("smpp")
        self._loop.run(self._setup())
        self._run = asyncio.run_coroutine_threadsafe(self._keep_bound(), self._loop.loop)
        return self

    def wait_bound(self, timeout: float) -> bool:
        assert self._loop is not None and self._bound is not None
        bound = self._bound
        try:
            self._loop.run(asyncio.wait_for(bound.wait(), timeout), timeout + 1)
        except TimeoutError:
            return False
        return True

    def ready(self) -> bool:
        return self._bound is not None and self._bound.is_set()

    def send(self, message: Outgoing, on_part: OnPart) -> int:
        assert self._loop is not None, "start() first"
        parts = message.split
        total = len(parts.texts)
        # each part waits at most `timeout` for its answer and for a bind: this outer limit
        # only guards against a hang elsewhere (the database in on_part)
        running = asyncio.run_coroutine_threadsafe(self._send(message, on_part),
                                                   self._loop.loop)
        try:
            return running.result(self.timeout * 2 * (total + 1) + 5)
        except concurrent.futures.TimeoutError:
            running.cancel()  # no further part leaves
            raise UncertainError("the send did not finish in time") from None

    def close(self) -> None:
        if self._loop is None:
            return
        with contextlib.suppress(Exception):
            self._loop.run(self._shutdown(), 10)
        with contextlib.suppress(Exception):
            self._run.result(5)
        self._loop.stop()
        self._loop = None

    # -------------------------------------------------------------------- the session loop

    async def _setup(self) -> None:
        self._bound, self._stopping = asyncio.Event(), asyncio.Event()
        self._send_lock = asyncio.Lock()

    def _next_sequence(self) -> int:
        self._sequence = self._sequence % 0x7FFFFFFF + 1
        return self._sequence

    async def _keep_bound(self) -> None:
        assert self._stopping is not None and self._bound is not None
        backoff = 1.0
        while not self._stopping.is_set():
            try:
                link = await self._connect()
            except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError) as exc:
                log.warning("smpp %s:%s: no bind (%s); again in %.0f s", self.host, self.port,
                            exc, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = 1.0
            self._link = link
            self._bound.set()
            reader = asyncio.create_task(self._read(link))
            keepalive = asyncio.create_task(self._enquire(link))
            stopping = asyncio.create_task(self._stopping.wait())
            closed = asyncio.create_task(link.closed.wait())
            await asyncio.wait([reader, closed, stopping], return_when=asyncio.FIRST_COMPLETED)
            self._bound.clear()
            link.lost()
            for task in (reader, keepalive, stopping, closed):
                task.cancel()
            self._link = None

    async def _connect(self) -> _Link:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.timeout)
        link = _Link(reader, writer)
        try:
            sequence = self._next_sequence()
            writer.write(pdu(BIND_TRANSCEIVER, sequence,
                             bind_body(self.system_id, self.password)))
            command, status, answered, _ = await asyncio.wait_for(_read_pdu(reader),
                                                                  self.timeout)
            if command != BIND_TRANSCEIVER_RESP or answered != sequence or status != 0:
                raise ConnectionError(f"bind refused (status 0x{status:02x})")
        except BaseException:
            writer.close()
            raise
        link.bound = True
        self.binds += 1
        log.info("smpp %s:%s: bound as %s", self.host, self.port, self.system_id)
        return link

    async def _read(self, link: _Link) -> None:
        try:
            while True:
                command, status, sequence, body = await _read_pdu(link.reader)
                if command & 0x80000000:  # a response (or generic_nack) to one of ours
                    future = link.pending.pop(sequence, None)
                    if future is not None and not future.done():
                        future.set_result((command, status, body))
                elif command == DELIVER_SM:
                    await self._deliver(link, sequence, body, status)
                elif command == ENQUIRE_LINK:
                    link.write(pdu(ENQUIRE_LINK_RESP, sequence))
                elif command == UNBIND:  # the SMSC ends the bind: no submit is written now
                    link.bound = False
                    if self._bound is not None:
                        self._bound.clear()
                    link.write(pdu(UNBIND_RESP, sequence))
                    # go on reading: a submit written before this unbind was read still gets
                    # its answer (ESME_RINVBNDSTS: not taken) before the SMSC closes
                    asyncio.get_running_loop().call_later(self.timeout, link.lost)
                else:
                    link.write(pdu(GENERIC_NACK, sequence, status=0x03))  # ESME_RINVCMDID
        except (OSError, ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            link.lost()

    async def _deliver(self, link: _Link, sequence: int, body: bytes, status: int) -> None:
        whole = pdu(DELIVER_SM, sequence, body, status)
        try:
            receipt = receipt_of(smpp34.decode(whole))
        except smpp34.SmppError:
            link.write(pdu(GENERIC_NACK, sequence, status=0x01))
            return
        if receipt is None:  # a citizen's own message: the SMS inbox takes them by webhook
            log.warning("smpp: deliver_sm that is no receipt acknowledged, not kept")
        else:
            # recorded before the answer: an SMSC that gets no answer sends it again
            await asyncio.get_running_loop().run_in_executor(
                None, self.report, receipt[0], receipt[1], self.now())
        link.write(pdu(DELIVER_SM_RESP, sequence, b"\0"))

    async def _enquire(self, link: _Link) -> None:
        while True:
            await asyncio.sleep(self.enquire_link_seconds)
            try:
                await self._request(link, pdu(ENQUIRE_LINK, self._next_sequence()))
            except (ConnectionError, TimeoutError, UncertainError):
                log.warning("smpp %s:%s: enquire_link unanswered, binding again", self.host,
                            self.port)
                link.lost()
                return

    async def _request(self, link: _Link, data: bytes) -> tuple[int, int, bytes]:
        sequence = struct.unpack(">I", data[12:16])[0]
        future: asyncio.Future[tuple[int, int, bytes]] = (
            asyncio.get_running_loop().create_future())
        link.pending[sequence] = future
        link.write(data)
        return await asyncio.wait_for(future, self.timeout)

    async def _shutdown(self) -> None:
        assert self._stopping is not None
        link = self._link
        if link is not None and link.bound:
            with contextlib.suppress(Exception):
                link.bound = False
                await self._request(link, pdu(UNBIND, self._next_sequence()))
        self._stopping.set()

    # ----------------------------------------------------------------------- sending

    async def _send(self, message: Outgoing, on_part: OnPart) -> int:
        assert self._send_lock is not None and self._bound is not None
        parts = message.split
        payloads = parts.payloads(reference=message.id % 256)
        destination = message.phone.lstrip("+")
        loop = asyncio.get_running_loop()
        async with self._send_lock:  # window 1: one submit on the wire at a time
            for seq in range(message.first, len(payloads) + 1):
                link = await self._bound_link()
                submit = smpp34.SubmitSm(
                    self.sender, destination, payloads[seq - 1],
                    source_addr_ton=0, source_addr_npi=0, dest_addr_ton=1, dest_addr_npi=1,
                    esm_class=parts.esm_class, data_coding=parts.data_coding,
                    registered_delivery=1, sequence_number=self._next_sequence())
                try:
                    command, status, body = await self._request(link, submit.encode())
                except (ConnectionError, TimeoutError) as exc:
                    raise UncertainError(
                        f"part {seq}/{len(payloads)} handed to the SMSC, no answer: "
                        f"{exc or 'timeout'}") from None
                if command == GENERIC_NACK:
                    raise TemporaryError(f"part {seq}: generic_nack 0x{status:02x}")
                if status in TEMPORARY:
                    raise TemporaryError(f"part {seq}: {TEMPORARY[status]}")
                if status:
                    raise PermanentError(f"part {seq}: refused, status 0x{status:02x}")
                message_id = body.split(b"\0", 1)[0].decode("ascii", "replace")
                await loop.run_in_executor(None, on_part, seq, message_id)
        return len(payloads)

    async def _bound_link(self) -> _Link:
        """The bound link, waiting up to `timeout` for a (re)bind; TemporaryError if none:
        nothing was written, so nothing was taken."""
        assert self._bound is not None
        deadline = asyncio.get_running_loop().time() + self.timeout
        while True:
            link = self._link
            if self._bound.is_set() and link is not None and link.bound \
                    and not link.closed.is_set():
                return link
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TemporaryError("not bound to the SMSC: the part was not written")
            with contextlib.suppress(TimeoutError):  # a dropped link: wait for the rebind
                await asyncio.wait_for(self._bound.wait(), min(left, 0.2))
            await asyncio.sleep(0.05 if link is not None and link.closed.is_set() else 0)


async def _read_pdu(reader: asyncio.StreamReader) -> tuple[int, int, int, bytes]:
    header = await reader.readexactly(16)
    length, command, status, sequence = struct.unpack(">IIII", header)
    if not 16 <= length <= 65536:
        raise ConnectionError(f"bad PDU length {length}")
    body = await reader.readexactly(length - 16)
    return command, status, sequence, body
