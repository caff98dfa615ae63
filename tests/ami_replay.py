"""A recorded AMI stream played back over TCP to the real telephony service.

The peer speaks the manager protocol as far as the service needs it (the greeting, Login,
Ping, CoreShowChannels, QueueStatus) and then plays the recorded events at the pace they
were recorded, with their Timestamp headers rewritten to the moment each is sent, or left
out, as an Asterisk without `timestampevents` would send them. Raw bytes may be played too
(a message cut off by a dropped link).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

EOL = b"\r\n"


def wire(event: dict[str, str]) -> bytes:
    return b"".join(f"{k}: {v}".encode() + EOL for k, v in event.items()) + EOL


@dataclass
class Replay:
    """Plays `events` (a recorded transcript, in order) once the service has resynced."""

    events: list[dict[str, str]]
    stamped: bool = True
    cut_off: bytes = b""  # sent after the events, then the link is dropped
    sent_at: list[float] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self) -> asyncio.Server:
        server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _session(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        first = self.connections == 1
        writer.write(b"Asterisk Call Manager/9.0.0" + EOL)
        try:
            while True:
                block = await reader.readuntil(EOL + EOL)
                action = dict(line.decode().split(": ", 1) for line in block.split(EOL)
                              if b": " in line)
                name, action_id = action.get("Action", "").lower(), action.get("ActionID", "")
                for reply in _answers(name, action_id):
                    writer.write(wire(reply))
                await writer.drain()
                if name == "queuestatus" and first:  # resynced: the recorded call begins
                    await self._play(writer)
                    if self.cut_off:
                        writer.write(self.cut_off)
                        await writer.drain()
                        writer.close()
                        self.done.set()
                        return
                    self.done.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the service dropped the link: the session is over
        finally:
            writer.close()

    async def _play(self, writer: asyncio.StreamWriter) -> None:
        recorded = [float(e["Timestamp"]) for e in self.events]
        start = time.time()
        for event, at in zip(self.events, recorded, strict=True):
            delay = start + (at - recorded[0]) - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.time()
            body = {k: v for k, v in event.items() if k != "Timestamp"}
            if self.stamped:
                body = {"Event": event["Event"], "Timestamp": f"{sent:.6f}", **body}
            writer.write(wire(body))
            await writer.drain()
            self.sent_at.append(sent)


def _answers(name: str, action_id: str) -> Iterator[dict[str, str]]:
    if name == "login":
        yield {"Response": "Success", "ActionID": action_id,
               "Message": "Authentication accepted"}
    elif name == "ping":
        yield {"Response": "Success", "ActionID": action_id, "Ping": "Pong"}
    elif name in ("coreshowchannels", "queuestatus"):
        yield {"Response": "Success", "ActionID": action_id, "EventList": "start",
               "Message": "will follow"}
        complete = "CoreShowChannelsComplete" if name == "coreshowchannels" else \
            "QueueStatusComplete"
        yield {"Event": complete, "ActionID": action_id, "EventList": "Complete",
               "ListItems": "0"}
    else:
        yield {"Response": "Error", "ActionID": action_id, "Message": "not in the replay"}
