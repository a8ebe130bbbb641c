"""A lean HTTP/1.1 client for latency figures: keep-alive connections on asyncio streams,
the protocol spoken by h11 (the state machine under httpx, without httpx's pool).

Why not httpx itself: with a hundred requests in flight its pool spends milliseconds of
client CPU per request, on the same cores as the server, and the requests leave one by
one: 100 sends released together reached the server ~25 ms apart, and the figure measured
the client (2.4 s for the server's ~0.2 s). Here a request costs the client a few tens of
microseconds, so what a figure shows is the server's.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit

import h11


class HttpError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.protocol = h11.Connection(h11.CLIENT)

    @property
    def reusable(self) -> bool:
        """Ready for the next request (an answer with `Connection: close` leaves it not)."""
        return self.protocol.our_state is h11.IDLE and self.protocol.their_state is h11.IDLE

    async def exchange(self, request: h11.Request, body: bytes) -> tuple[int, bytes]:
        out = self.protocol.send(request) or b""
        if body:
            out += self.protocol.send(h11.Data(data=body)) or b""
        out += self.protocol.send(h11.EndOfMessage()) or b""
        self.writer.write(out)
        status, chunks = 0, []
        while True:
            event = self.protocol.next_event()
            if event is h11.NEED_DATA:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("the server closed the connection")
                self.protocol.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                if self.protocol.our_state is h11.DONE and self.protocol.their_state is h11.DONE:
                    self.protocol.start_next_cycle()
                return status, b"".join(chunks)

    def close(self) -> None:
        self.writer.close()


class LeanHttp:
    """JSON requests over a pool of keep-alive connections (one per request in flight)."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.headers = [("Host", f"{self.host}:{self.port}"), *headers.items()]
        self._idle: list[_Connection] = []

    async def connections(self, count: int) -> None:
        """Open connections until `count` are idle (a burst then opens none)."""
        while len(self._idle) < count:
            self._idle.append(await self._open())

    async def _open(self) -> _Connection:
        return _Connection(*await asyncio.open_connection(self.host, self.port))

    async def request(self, method: str, path: str, body: Any = None) -> tuple[float, Any]:
        """(seconds from the request's first byte to its answer's last, JSON answer);
        raises HttpError on an error status."""
        connection = self._idle.pop() if self._idle else await self._open()
        payload = b"" if body is None else json.dumps(body).encode()
        headers = [*self.headers, ("Content-Length", str(len(payload)))]
        if body is not None:
            headers.append(("Content-Type", "application/json"))
        request = h11.Request(method=method, target=path, headers=headers)
        started = time.perf_counter()
        try:
            status, answer = await connection.exchange(request, payload)
        except BaseException:
            connection.close()
            raise
        elapsed = time.perf_counter() - started
        if connection.reusable:
            self._idle.append(connection)
        else:
            connection.close()
        if status >= 400:
            raise HttpError(status, answer)
        return elapsed, json.loads(answer) if answer else None

    async def aclose(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
