"""The HTTP API serves concurrent requests concurrently: a request waiting on the database
does not hold up the others of its Daphne process (as sync views on Django's one shared
sync thread did). PostgreSQL only: the test holds a session's row lock from outside and
sees the send wait on it in pg_stat_activity, so it knows the send is in flight.

And clients that connect together are queued by the kernel, not dropped: a Daphne process
too busy to accept for a moment still completes the handshakes of hundreds of clients."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.stack import Stack

pytestmark = pytest.mark.asyncio


async def _wait_until(predicate: Callable[[], Any], timeout: float = 10) -> None:
    """Poll a condition of the database (no event to wait on there), bounded."""
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.01)


async def test_a_send_waiting_on_a_lock_does_not_hold_up_other_requests(make_client, test_database_url):
    if not test_database_url.startswith("postgres"):
        pytest.skip("needs PostgreSQL's row locks and pg_stat_activity")
    alice = await make_client("alice")
    busy, other = await alice.create_session(title="busy"), await alice.create_session(title="other")
    async with await psycopg.AsyncConnection.connect(test_database_url) as holder:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM sessions_app_chatsession WHERE id = %s FOR UPDATE", [busy["id"]])
            send = asyncio.create_task(alice.send(busy["id"], "waits for the lock"))

            async def send_waits_on_the_lock() -> bool:
                row = await (
                    await holder.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                    )
                ).fetchone()
                return bool(row and row[0])

            await _wait_until(send_waits_on_the_lock)
            answers = await asyncio.wait_for(
                asyncio.gather(
                    alice.request("GET", "/api/models"),
                    *(alice.request("GET", f"/api/sessions/{other['id']}") for _ in range(10)),
                    alice.cancel(other["id"], all=True),
                ),
                timeout=15,
            )
            assert answers[0]["results"] and all(a["id"] == other["id"] for a in answers[1:-1])
            assert answers[-1] == {"cancelled": [], "rejected": [], "pending": []}
            assert not send.done()  # still waiting: the others went past it
    assert (await asyncio.wait_for(send, 15))["status"] == "active"
    await alice.cancel(busy["id"], all=True)


async def test_clients_connecting_together_are_queued_not_dropped(stack: Stack):
    """300 connections opened while the web process accepts none (stopped): every handshake
    completes in the kernel's accept queue (Twisted's default backlog of 50 dropped the rest,
    which retried after 1 s, 3 s, ...), and every one is answered once it runs again."""
    web = stack.processes["web"]
    port = stack.web_ports["web"]
    request = b"GET /api/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    web.send_signal(signal.SIGSTOP)
    connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        # A dropped handshake is retried after 1 s, 3 s and 7 s: all still pending at 5 s.
        connections = await asyncio.wait_for(
            asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(300))), timeout=5
        )
        for _, writer in connections:
            writer.write(request)
    finally:
        web.send_signal(signal.SIGCONT)
    try:
        answers = await asyncio.wait_for(asyncio.gather(*(reader.read() for reader, _ in connections)), 30)
        assert all(answer.startswith(b"HTTP/1.1 401") for answer in answers)
    finally:
        for _, writer in connections:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
