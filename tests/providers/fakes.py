"""A local HTTP/1.1 server that plays a vendor's API for the official SDKs to talk to.

Each request gets the next scripted `Reply`: an error answer (status and JSON body, as the
vendor sends it) or a server-sent-event stream written chunk by chunk with
`transfer-encoding: chunked`, as the vendors do, which may pause, go silent forever
(`HANG`) or drop the connection mid-stream (`DROP`). Every request is recorded with an
event set when the client closes its connection, so tests can prove from the server side
that a cancel closed the upstream stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Pause:
    seconds: float


HANG = "hang"  # go silent until the client closes
DROP = "drop"  # close the connection without ending the chunked body

Step = bytes | Pause | str


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON body of a non-stream answer
    stream: list[Step] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    json: Any
    closed: asyncio.Event = field(default_factory=asyncio.Event)  # the client closed the connection
    completed: asyncio.Event = field(default_factory=asyncio.Event)  # the reply was written in full
    closed_at: float | None = None


REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Overloaded",
}


class FakeVendor:
    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[Recorded] = []
        self._arrived = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> FakeVendor:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests.clear()

    async def request(self, index: int = 0, timeout: float = 10) -> Recorded:
        """The index-th request, once it has arrived."""
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.requests) > index), timeout)
        return self.requests[index]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                recorded = await self._read_request(reader)
                if recorded is None:
                    return
                reply = self.replies.pop(0) if self.replies else Reply(500, {"error": {"message": "no reply scripted"}})
                async with self._arrived:
                    self.requests.append(recorded)
                    self._arrived.notify_all()
                if not await self._answer(reply, recorded, reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return  # the client went away, or the server stops
        finally:
            writer.close()

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> Recorded | None:
        head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
        if not head:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return Recorded(method=method, path=path, headers=headers, json=json.loads(body) if body else None)

    async def _answer(
        self, reply: Reply, recorded: Recorded, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Write the reply; False when the connection is finished with."""
        reason = REASONS.get(reply.status, "Error")
        if reply.status != 200 or not reply.stream:
            body = json.dumps(reply.body).encode()
            headers = {"content-type": "application/json", "content-length": str(len(body)), **reply.headers}
            writer.write(_head(reply.status, reason, headers) + body)
            await writer.drain()
            recorded.completed.set()
            return True
        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "transfer-encoding": "chunked",
            "cache-control": "no-cache",
            **reply.headers,
        }
        writer.write(_head(200, reason, headers))
        await writer.drain()
        watch = asyncio.ensure_future(reader.read(1))  # b"" once the client closes
        watch.add_done_callback(lambda done: _mark_closed(recorded, done))
        try:
            for step in reply.stream:
                if watch.done():
                    return False
                if isinstance(step, Pause):
                    await asyncio.wait({watch}, timeout=step.seconds)
                elif step == HANG:
                    await watch
                    return False
                elif step == DROP:
                    return False
                else:
                    assert isinstance(step, bytes)
                    writer.write(b"%x\r\n%s\r\n" % (len(step), step))
                    await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            recorded.completed.set()
        finally:
            if not watch.done():
                watch.cancel()
        return True


def _mark_closed(recorded: Recorded, watch: asyncio.Future[bytes]) -> None:
    """The client closed (EOF or reset) while the reply was being written."""
    if watch.cancelled() or (watch.exception() is None and watch.result() != b""):
        return
    recorded.closed_at = asyncio.get_running_loop().time()
    recorded.closed.set()


def _head(status: int, reason: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode()
