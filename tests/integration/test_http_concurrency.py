"""The HTTP API serves concurrent requests concurrently: a request waiting on the database
does not hold up the others of its Daphne process (as sync views on Django's one shared
sync thread did). PostgreSQL only: the test holds a session's row lock from outside and
sees the send wait on it in pg_stat_activity, so it knows the send is in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

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
