"""A request to the ASGI application Daphne runs (web/http_entry.HttpHandler), in process,
with what the application hands the server: status, headers and body bytes as sent (a
server may strip a body itself; these are what it is given)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from sessions_app.web.http_entry import HttpHandler


@dataclass(frozen=True)
class Sent:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


async def call(
    method: str,
    path: str,
    token: str | None = None,
    body: Any = None,
    query: str = "",
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> Sent:
    """`headers`: more request headers (a browser's cookie, its CSRF token)."""
    raw = b"" if body is None else orjson.dumps(body)
    headers = [(b"host", b"testserver"), *headers]
    if token is not None:
        headers.append((b"authorization", f"Token {token}".encode()))
    if body is not None:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:
            await asyncio.Event().wait()  # the client stays connected until answered
        received = True
        return {"type": "http.request", "body": raw, "more_body": False}

    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await HttpHandler()(scope, receive, send)
    start = messages[0]
    assert start["type"] == "http.response.start", messages
    sent_headers = {name.decode().lower(): value.decode() for name, value in start["headers"]}
    sent_body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return Sent(start["status"], sent_headers, sent_body)
