"""HEAD and 204 answers as Daphne writes them, read off one keep-alive connection byte by
byte: a HEAD's answer has GET's headers and no body, a 204 has no body, no Content-Type
and no Content-Length, and the connection carries the next request in both cases (a body
sent where none may be would be read as the start of the next answer)."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from chat_client import ChatClient
from tests.integration.helpers import session_with


class Connection:
    """One HTTP/1.1 connection to the stack, requests written and answers read raw."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, base_url: str) -> Connection:
        where = urlsplit(base_url)
        reader, writer = await asyncio.open_connection(where.hostname, where.port)
        return cls(reader, writer, where.netloc)

    async def ask(self, method: str, path: str, token: str | None) -> tuple[int, dict[str, str], bytes]:
        """(status, headers in lower case, body): a body only as long as Content-Length
        says, none for HEAD and 204, as HTTP/1.1 frames them."""
        auth = f"Authorization: Token {token}\r\n" if token else ""
        self.writer.write(f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{auth}\r\n".encode())
        await self.writer.drain()
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status_line, *lines = head.strip().split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        status = int(status_line.split()[1])
        if method == "HEAD" or status == 204:
            return status, headers, b""
        return status, headers, await self.reader.readexactly(int(headers["content-length"]))

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def test_head_and_204_answers_on_the_wire(make_client, stack):
    alice: ChatClient = await make_client("alice")
    bob: ChatClient = await make_client("bob")
    sid = (await session_with(alice, bob))["id"]
    connection = await Connection.open(stack.base_url)
    try:
        got = await connection.ask("GET", f"/api/sessions/{sid}", alice.token)
        head = await connection.ask("HEAD", f"/api/sessions/{sid}", alice.token)
        anonymous = await connection.ask("HEAD", "/api/models", None)
        left = await connection.ask("DELETE", f"/api/sessions/{sid}/members", bob.token)
        after = await connection.ask("GET", "/api/models", alice.token)  # the connection still frames answers
    finally:
        await connection.close()

    assert got[0] == 200 and head[0] == 200
    assert head[1]["content-length"] == str(len(got[2])) and head[1]["content-type"] == "application/json"
    assert anonymous[0] == 401 and anonymous[1]["www-authenticate"] == "Token"
    assert left[0] == 204
    assert "content-type" not in left[1] and "content-length" not in left[1], left[1]
    assert after[0] == 200 and b'"results"' in after[2]
    assert (await alice.session(sid))["members"] == [alice.client_id]
