"""No task left behind: thousands of devices drop at once (a network partition, a load
balancer restart), then the web process stops with thousands connected. Every task the
server made for them ends: no "Task was destroyed but it is pending!" and no connection
Daphne had to kill, in its log; presence and the connection count go back to what remains.

2,000 connections by default (FAULT_CONNECTIONS): what this 2-core test machine holds with
the test's own clients on it. Daphne gives a connection 2 s (not its default 10) to clean up
after its client left: a leave must cost no long wait, even in a storm."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal

import httpx
import orjson
import pytest
import websockets

from tests.integration.helpers import session_with

CONNECTIONS = int(os.environ.get("FAULT_CONNECTIONS", "2000"))
SESSIONS = max(CONNECTIONS // 20, 1)
TROUBLE = ("Task was destroyed but it is pending", "took too long to shut down and was killed", "Traceback")


def open_connections(metrics: str) -> float:
    match = re.search(r"^chat_websocket_connections (\S+)$", metrics, re.M)
    return float(match.group(1)) if match else float("nan")


@pytest.mark.timeout(300)  # thousands of connections, twice, on a slow CI machine
async def test_thousands_of_devices_dropping_at_once_leave_no_task_behind(fault_stack, login):
    stack = fault_stack(
        env={"CHAT_MAX_CONNECTIONS_PER_USER": "0", "CHAT_FRAMES_PER_MINUTE": "0"},
        # Daphne kills a connection whose clean-up takes longer than this after its client
        # left (10 s by default): a disconnect must cost no long wait.
        web_options=["--application-close-timeout", "2"],
    )
    alice = await login(stack.base_url, "alice")
    bob = await login(stack.base_url, "bob")
    sessions = [await session_with(alice, bob) for _ in range(SESSIONS)]
    # Bob stays, one device in each session: sees alice's devices come and go.
    watchers = [await bob.connect(session["id"]) for session in sessions]
    url = stack.base_url.replace("http", "ws", 1)
    headers = {"Authorization": f"Token {alice.token}"}
    opening = asyncio.Semaphore(50)

    async def device(index: int) -> websockets.ClientConnection:
        async with opening:
            ws = await websockets.connect(
                f"{url}/ws/sessions/{sessions[index % SESSIONS]['id']}/", additional_headers=headers, open_timeout=60
            )
            while orjson.loads(await ws.recv())["type"] != "snapshot":  # hello, then the snapshot
                pass
            return ws

    devices = await asyncio.gather(*(device(i) for i in range(CONNECTIONS)))
    both = sorted([alice.client_id, bob.client_id])
    for watcher in watchers:
        await watcher.wait_for(lambda w=watcher: w.online == both)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        assert open_connections((await http.get("/metrics")).text) == CONNECTIONS + SESSIONS

        for ws in devices:  # every one at once, without a close frame
            ws.transport.abort()

        for watcher in watchers:  # alice's last device of each session has gone
            await watcher.wait_for(lambda w=watcher: w.online == [bob.client_id], timeout=120)
        assert open_connections((await http.get("/metrics")).text) == SESSIONS
    for ws in devices:
        with contextlib.suppress(Exception):
            await ws.close()

    # Then the process stops (a deploy) with thousands of devices connected: Daphne cancels
    # each connection, whatever it was doing, and the hub closes with it.
    devices = await asyncio.gather(*(device(i) for i in range(CONNECTIONS)))
    stack.kill("web", signal.SIGTERM)
    for ws in devices:
        with contextlib.suppress(Exception):
            await ws.close()
    for watcher in watchers:
        await watcher.close()
    log = stack.log_text("web")
    assert not [line for line in log.splitlines() if any(t in line for t in TROUBLE)], log[-3000:]
