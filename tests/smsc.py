"""A small SMSC (短信中心) for the tests, on loopback: it takes transceiver binds, answers
submit_sm, sends delivery receipts back as deliver_sm, answers enquire_link, and can drop a
bind on cue. PDUs through smpp34's codec, as the client's.

Cues (each fires once):
- `unbind_after=N`: after answering its Nth submit_sm, the SMSC unbinds (a clean drop: it
  answers any submit that crosses its unbind with ESME_RINVBNDSTS, takes none, and closes);
- `unbind_crossing=N`: the SMSC unbinds when the (N+1)th submit_sm has reached it, so that
  submit crosses the unbind on the wire: answered ESME_RINVBNDSTS, not taken;
- `crash_on=N`: the Nth submit_sm is taken (kept, its receipt sent after the next bind) but
  the connection is cut before it is answered: the client cannot know it was taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
from dataclasses import dataclass
from typing import Any

import smpp34

from channels.outbound.parts import reassemble
from core.background import BackgroundLoop

BIND_TRANSCEIVER, SUBMIT_SM, DELIVER_SM, UNBIND, ENQUIRE_LINK = 0x09, 0x04, 0x05, 0x06, 0x15
RESP = 0x80000000


@dataclass
class Submitted:
    message_id: str
    destination: str
    source: str
    esm_class: int
    data_coding: int
    short_message: bytes
    bind: int  # which bind (1, 2, ...) it came on


def _pdu(command: int, sequence: int, body: bytes = b"", status: int = 0) -> bytes:
    return struct.pack(">IIII", 16 + len(body), command, status, sequence) + body


class TestSmsc:
    __test__ = False

    def __init__(self, system_id: str = "hotline", password: str = "secret", *,
                 unbind_after: int | None = None, unbind_crossing: int | None = None,
                 crash_on: int | None = None,
                 receipts: bool = True, receipt_stat: str = "DELIVRD", port: int = 0) -> None:
        self.system_id, self.password = system_id, password
        self.unbind_after, self.crash_on = unbind_after, crash_on
        self.unbind_crossing = unbind_crossing
        self.receipts, self.receipt_stat = receipts, receipt_stat
        self.submitted: list[Submitted] = []
        self.refused_after_unbind = 0
        self.binds = 0
        self.enquire_links = 0
        self._ids = itertools.count(1001)
        self._sequence = itertools.count(1)
        self._writer: asyncio.StreamWriter | None = None  # the bound session's
        self._owed: list[Submitted] = []  # receipts waiting for a bound session
        self._loop = BackgroundLoop("test-smsc")
        self._server: Any = None
        self.port = port  # 0: any free one

    def start(self) -> TestSmsc:
        self._server = self._loop.run(asyncio.start_server(self._session, "127.0.0.1", self.port))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            if self._writer is not None:
                self._writer.close()
        with contextlib.suppress(Exception):
            self._loop.run(close(), 5)
        self._loop.stop()

    def texts(self, destination: str) -> list[str]:
        """What the phone at `destination` shows: each message reassembled from its parts
        (grouped by the UDH reference), in the order the first part came."""
        groups: dict[Any, list[Submitted]] = {}
        for s in self.submitted:
            if s.destination != destination:
                continue
            key = (s.short_message[3], s.short_message[4]) if s.esm_class & 0x40 else id(s)
            groups.setdefault(key, []).append(s)
        return [reassemble([p.short_message for p in parts], parts[0].data_coding)
                for parts in groups.values()]

    # ---------------------------------------------------------------- the SMSC's sessions

    async def _session(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        unbinding = False
        bind = 0
        try:
            while True:
                header = await reader.readexactly(16)
                length, command, _status, sequence = struct.unpack(">IIII", header)
                body = await reader.readexactly(length - 16)
                if command == BIND_TRANSCEIVER:
                    system_id, password = body.split(b"\0")[:2]
                    if (system_id.decode(), password.decode()) != (self.system_id,
                                                                   self.password):
                        writer.write(_pdu(RESP | command, sequence, b"\0", status=0x0E))
                        continue
                    self.binds += 1
                    bind = self.binds
                    self._writer = writer
                    writer.write(_pdu(RESP | command, sequence, b"test-smsc\0"))
                    owed, self._owed = self._owed, []
                    for submitted in owed:
                        self._receipt(writer, submitted)
                elif command == SUBMIT_SM:
                    if self.unbind_crossing is not None and self.unbind_crossing == len(
                            self.submitted):
                        self.unbind_crossing = None
                        unbinding = True
                        writer.write(_pdu(UNBIND, next(self._sequence)))
                    if unbinding or not bind:
                        self.refused_after_unbind += 1
                        writer.write(_pdu(RESP | command, sequence, b"\0", status=0x04))
                        continue
                    submit = smpp34.decode(header + body)
                    taken = Submitted(str(next(self._ids)), submit.destination_addr,
                                      submit.source_addr, submit.esm_class,
                                      submit.data_coding, submit.short_message, bind)
                    self.submitted.append(taken)
                    if self.crash_on == len(self.submitted):
                        self.crash_on = None
                        self._owed.append(taken)
                        writer.transport.abort()  # cut, unanswered
                        return
                    writer.write(_pdu(RESP | command, sequence, taken.message_id.encode() + b"\0"))
                    if self.receipts:
                        self._receipt(writer, taken)
                    if self.unbind_after == len(self.submitted):
                        self.unbind_after = None
                        unbinding = True
                        writer.write(_pdu(UNBIND, next(self._sequence)))
                elif command == ENQUIRE_LINK:
                    self.enquire_links += 1
                    writer.write(_pdu(RESP | command, sequence))
                elif command == UNBIND:
                    writer.write(_pdu(RESP | command, sequence))
                    await writer.drain()
                    return
                elif command == RESP | UNBIND:
                    return  # our unbind answered: the bind is over
                elif command & RESP:
                    continue  # deliver_sm_resp, enquire_link_resp
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()

    def _receipt(self, writer: asyncio.StreamWriter, taken: Submitted) -> None:
        stat = self.receipt_stat
        text = (f"id:{taken.message_id} sub:001 dlvrd:001 submit date:2611300100 "
                f"done date:2611300100 stat:{stat} err:000 text:").encode()
        deliver = smpp34.DeliverSm(
            taken.destination, taken.source, text, esm_class=0x04,
            sequence_number=next(self._sequence),
            tlvs=[smpp34.Tlv(smpp34.TLV_RECEIPTED_MESSAGE_ID, taken.message_id.encode() + b"\0"),
                  smpp34.Tlv(smpp34.TLV_MESSAGE_STATE, bytes([2 if stat == "DELIVRD" else 5]))])
        writer.write(deliver.encode())
