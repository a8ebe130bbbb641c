"""A device that reads nothing for a minute (a stalled phone, a frozen tab) while its
session is busy: the turns and the other devices go on at their pace, the web process's
memory stays bounded (the server closes the stalled connection once its outbox is full,
rather than buffer for it), and the device, reading again, catches up from where it
stopped (or from a snapshot) to exactly what the server stored.

FAULT_STALL_SECONDS sets how long it stalls (60 by default)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import orjson
import psutil
import pytest
import websockets

from chat_client import Device, TurnHandle
from chat_client.protocol import user_message
from tests.faults.helpers import assert_shows_what_the_server_stored, settled
from tests.integration.helpers import expected_answer, session_with

STALL_SECONDS = float(os.environ.get("FAULT_STALL_SECONDS", "60"))
OUTBOX_BYTES = 256 * 1024
# Bound on the web process's growth while one client stalls: its outbox (256 KiB here), the
# socket buffers the kernel holds, and the process's own churn under the session's load.
MEMORY_BOUND_BYTES = 48 * 1024 * 1024
TOKENS, RATE = 20, 100


@pytest.mark.timeout(300)  # a minute's stall, then the catch-up, on a slow CI machine
async def test_a_device_that_reads_nothing_for_a_minute_slows_nothing_and_catches_up(fault_stack, login):
    stack = fault_stack(env={"CHAT_MAX_OUTBOX_BYTES": str(OUTBOX_BYTES), "CHAT_FRAMES_PER_MINUTE": "0"})
    alice = await login(stack.base_url, "alice")
    bob = await login(stack.base_url, "bob")
    session = await session_with(alice, bob, tokens=TOKENS, rate=RATE)
    reader = await bob.connect(session["id"])  # reads everything, all along
    web = psutil.Process(stack.pid("web"))

    # The stalled device: it stops reading once one frame waits (so the socket's buffers,
    # then the server's outbox for it, fill), and sends nothing.
    url = f"{stack.base_url.replace('http', 'ws', 1)}/ws/sessions/{session['id']}/"
    stalled = await websockets.connect(
        url, additional_headers={"Authorization": f"Token {alice.token}"}, max_queue=1, ping_interval=None
    )
    rss_before = web.memory_info().rss
    # Each send fans out ~240 KB to every device (eight messages of 30,000 characters): the
    # stalled socket's buffers fill within seconds, then its outbox.
    stall_ends = time.monotonic() + STALL_SECONDS
    turns: list[TurnHandle] = []
    while time.monotonic() < stall_ends:
        index = len(turns)
        messages = [user_message(f"busy {index}.{i} " + "x" * 30_000) for i in range(8)]
        turn = await reader.send(messages=messages)
        turns.append(turn)
        # Every turn runs at the model's pace for the reader, stalled device or not.
        assert await settled(reader, turn.turn_id, timeout=30) == "complete"
        assert reader.text_of(turn.ack["assistantMessageId"]) == expected_answer(
            messages[-1]["parts"][0]["text"], TOKENS
        )
    rss_after = web.memory_info().rss
    assert rss_after - rss_before < MEMORY_BOUND_BYTES, (rss_before, rss_after)

    # Reading again: what it was sent before the server let it go, then a resume.
    late = Device(alice, session["id"])
    with contextlib.suppress(websockets.ConnectionClosed):
        async with asyncio.timeout(60):
            async for raw in stalled:
                late._on_frame(orjson.loads(raw), time.time())
                if late.last_seq >= reader.last_seq:
                    break  # caught up on the same connection: it was never dropped
    closed_by_server = stalled.close_code is not None
    await stalled.close()
    await late.open(after=late.last_seq)
    assert closed_by_server, "the server kept buffering for a client that read nothing"
    for turn in turns:
        assert await settled(late, turn.turn_id) == "complete"
    await assert_shows_what_the_server_stored(alice, session["id"], reader, late)
