"""The database is away for a few seconds while turns stream and devices send: requests
answer a clear error (503 `unavailable`, in the protocol's envelope, over HTTP and the
websocket) or wait and go through; no turn is left half-done; every device ends showing
what the server stored, and the same send tried again goes through once.

PostgreSQL: connections are refused and the open ones ended (as when its server
restarts). SQLite: an exclusive lock on the file, so writers wait for it."""

from __future__ import annotations

import asyncio

import httpx

from chat_client import ChatClientError
from chat_client.protocol import user_message
from tests.faults.helpers import assert_shows_what_the_server_stored, settled
from tests.integration.helpers import session_with
from tests.stack import database_outage

OUTAGE_SECONDS = 4.0


async def test_a_database_outage_answers_unavailable_and_leaves_no_turn_half_done(
    fault_stack, login, test_database_url
):
    postgres = test_database_url.startswith("postgres")
    stack = fault_stack()
    alice = await login(stack.base_url, "alice")
    session = await session_with(alice, tokens=120, rate=40)
    device = await alice.connect(session["id"])
    streaming = await device.send("streams through the outage")
    await device.wait_for(lambda: device.text_of(streaming.ack["assistantMessageId"]).count(" ") >= 5)
    retried = user_message("sent during the outage")
    http = httpx.AsyncClient(base_url=stack.base_url, headers={"Authorization": f"Token {alice.token}"}, timeout=60)

    with database_outage(test_database_url, OUTAGE_SECONDS) as outage:
        during = await http.post(f"/api/sessions/{session['id']}/turns", json={"messages": [retried]})
        read = await http.get(f"/api/sessions/{session['id']}")
        ready = await http.get("/readyz")
        try:
            ws_answer: str = (await device.send("over the websocket")).status
        except ChatClientError as exc:
            ws_answer = exc.code
        await asyncio.to_thread(outage.wait)

    for response in (during, read):
        assert response.headers["content-type"] == "application/json"
        if postgres:
            assert response.status_code == 503 and response.json()["error"]["code"] == "unavailable"
            assert "Retry-After" in response.headers or response.json()["error"]["message"]
        else:  # writers waited for the lock, then went through
            assert response.status_code in (200, 202), response.text
    if postgres:
        assert ws_answer == "unavailable" and ready.status_code == 503
        assert ready.json()["error"]["code"] == "unavailable" and "database" in ready.json()["error"]["message"]
    else:
        assert ws_answer in ("active", "queued")

    # Back: the send tried again (the same message id) goes through exactly once.
    again = await http.post(f"/api/sessions/{session['id']}/turns", json={"messages": [retried]})
    assert again.status_code in (200, 202), again.text
    assert (await http.get("/readyz")).status_code == 200
    await http.aclose()
    assert await settled(device, streaming.turn_id) == "complete"
    assert await settled(device, again.json()["turnId"]) == "complete"
    for _ in range(100):  # every turn ends: none is left active by the outage
        active = await alice.turns(session["id"], status="active")
        if not active:
            break
        await device.wait_for(lambda: not any(t.get("status") == "active" for t in device.turns.values()), 30)
    assert active == []
    await assert_shows_what_the_server_stored(alice, session["id"], device)
    senders = [m for m in (await alice.messages(session["id"]))["results"] if m["id"] == retried["id"]]
    assert len(senders) == 1
