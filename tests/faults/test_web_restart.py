"""A web (Daphne) process restarts while a turn streams, by a deploy (SIGTERM) or a crash
(SIGKILL): its devices reconnect to it and resume from the last seq they applied, with
nothing lost or shown twice."""

from __future__ import annotations

import signal

import pytest
import websockets

from tests.faults.helpers import assert_shows_what_the_server_stored, settled
from tests.integration.helpers import expected_answer, session_with

TOKENS, RATE = 200, 40


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
async def test_devices_resume_after_their_web_process_restarts(fault_stack, login, sig):
    stack = fault_stack()
    alice = await login(stack.base_url, "alice")
    bob = await login(stack.base_url, "bob")
    session = await session_with(alice, bob, tokens=TOKENS, rate=RATE)
    phone = await alice.connect(session["id"], auto_reconnect=True)
    laptop = await bob.connect(session["id"], auto_reconnect=True)
    turn = await phone.send("through a restart")
    answer = turn.ack["assistantMessageId"]
    await laptop.wait_for(lambda: laptop.text_of(answer).count(" ") >= 15)
    first_connections = (phone.connection_id, laptop.connection_id)

    stack.restart_web("web", sig)

    for device in (phone, laptop):
        assert await settled(device, turn.turn_id) == "complete"
        assert device.connection_id not in first_connections and device.resumed is True
    assert laptop.text_of(answer) == expected_answer("through a restart", TOKENS)
    await assert_shows_what_the_server_stored(alice, session["id"], phone, laptop)
    await phone.wait_for(lambda: phone.online == sorted([alice.client_id, bob.client_id]))
    log = stack.log_text("web")
    assert "Task was destroyed but it is pending" not in log
    for device in (phone, laptop):
        await device.close()


async def test_a_stopping_web_process_says_so_to_its_websockets(fault_stack, login):
    """A deploy's SIGTERM closes each websocket with 1012 (service restart), not a dropped
    TCP connection a client can only read as a network fault (1006)."""
    stack = fault_stack()
    alice = await login(stack.base_url, "alice")
    session = await session_with(alice)
    url = stack.base_url.replace("http", "ws", 1) + f"/ws/sessions/{session['id']}/"
    async with websockets.connect(url, additional_headers={"Authorization": f"Token {alice.token}"}) as ws:
        assert '"type":"hello"' in str(await ws.recv())

        stack.kill("web", signal.SIGTERM)

        await ws.wait_closed()
        assert ws.close_code == 1012
    stack.start_web("web", port=stack.web_ports["web"])
