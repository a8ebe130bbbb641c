"""The Python client's edges (docs/python-client.md): an automatic reconnect that a final
close code ends at the handshake, commands on a closed device, waiting for a turn that
ended before the device connected, and a program that never closes its device."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from chat_client import ChatClient, ChatClientError, Device, TurnHandle
from tests.integration.helpers import session_with
from tests.stack import ROOT, Stack, free_port

MakeClient = Callable[..., Awaitable[ChatClient]]


async def leave_while_offline(code: int, owner: ChatClient, member: ChatClient, session_id: str) -> None:
    """What makes the member's next handshake end with `code`."""
    if code == 4404:
        await owner.delete_session(session_id)
    elif code == 4403:
        await member.request("DELETE", f"/api/sessions/{session_id}/members")
    else:
        assert await member.request("POST", "/api/auth/token/revoke") == {"revoked": 1}


@pytest.mark.parametrize("code", [4401, 4403, 4404])
async def test_a_handshake_refused_for_good_ends_the_automatic_reconnect(make_client: MakeClient, code: int) -> None:
    """A device away while its session is deleted (its member left, its token was revoked)
    comes back to a handshake closed with 4404 (4403, 4401): final, so it stops there, and
    its waits and commands answer `closed` (a turn's end `not_found` for a deleted session)
    instead of waiting out their timeouts."""
    alice, bob = await make_client("alice"), await make_client("bob")
    session = await session_with(alice, bob, tokens=400, rate=40)
    device = await bob.connect(session["id"], auto_reconnect=True)
    turn = await device.send("a long answer")
    await device.wait_for(lambda: device.text_of(turn.ack["assistantMessageId"]))

    unreachable = ChatClient(f"http://127.0.0.1:{free_port()}", bob.token)  # the network is gone
    device.client = unreachable
    try:
        await device.drop()
        reconnecting = device._auto_reconnecting
        assert reconnecting is not None and not reconnecting.done()
        await leave_while_offline(code, alice, bob, session["id"])
        device.client = bob  # the network is back: the next try reaches the server
        await asyncio.wait_for(reconnecting, 30)  # it ends, rather than trying every 5 s for ever
    finally:
        await unreachable.aclose()
        if code != 4404:
            await alice.cancel(session["id"], all=True)

    assert (device.close_code, device.closed_for_good, device._auto_reconnecting) == (code, True, None)
    with pytest.raises(ChatClientError) as waited:
        await device.wait_for(lambda: False, timeout=60)
    assert waited.value.code == "closed" and str(code) in waited.value.message
    with pytest.raises(ChatClientError) as ended:
        await turn.end(timeout=60)
    assert ended.value.code == ("not_found" if code == 4404 else "closed")
    with pytest.raises(ChatClientError) as pinged:
        await device.ping()
    assert pinged.value.code == "closed"
    await device.close()  # closing a device closed for good is quiet


async def assert_commands_raise_closed(device: Device) -> None:
    commands: list[Callable[[], Awaitable[Any]]] = [
        lambda: device.send("after the end"),
        device.cancel,
        device.ping,
        lambda: device.send_raw('{"type": "ping"}'),
    ]
    for command in commands:
        with pytest.raises(ChatClientError) as caught:
            await command()
        assert caught.value.code == "closed", caught.value
    assert device._replies == {}  # no answer is awaited any more


async def test_commands_on_a_closed_device_raise_closed(make_client: MakeClient) -> None:
    alice = await make_client("alice")
    deleted = await session_with(alice)
    device = await alice.connect(deleted["id"])
    await alice.delete_session(deleted["id"])
    await device.wait_for(lambda: device.close_code is not None)
    assert device.close_code == 4404
    await assert_commands_raise_closed(device)

    dropped = await alice.connect((await session_with(alice))["id"])
    await dropped.drop()
    await assert_commands_raise_closed(dropped)

    # A connection lost while a command is on its way: the command answers `closed`, and
    # its answer is no longer awaited.
    cut = await alice.connect((await session_with(alice))["id"])
    cut.ws.transport.abort()
    with pytest.raises(ChatClientError) as caught:
        await cut.ping()
    assert caught.value.code == "closed" and cut._replies == {}


async def test_a_turn_that_ended_before_the_device_connected_has_its_end_at_once(make_client: MakeClient) -> None:
    alice = await make_client("alice")
    session = await session_with(alice, tokens=5, rate=50)
    done = await alice.send(session["id"], "short")
    await alice.wait(session["id"], {"turnId": done["turnId"]}, timeout=30)
    await alice.request("PATCH", f"/api/sessions/{session['id']}", json={"modelOptions": {"tokens": 4000, "rate": 40}})
    stopped = await alice.send(session["id"], "stopped")
    await alice.cancel(session["id"], turn_id=stopped["turnId"])
    await alice.wait(session["id"], {"turnId": stopped["turnId"]}, timeout=30)

    device = await alice.connect(session["id"])  # a snapshot: no turn.end reaches it
    assert device.turns[done["turnId"]]["status"] == "complete"
    assert device.events_of("turn.end") == []

    # timeout=0: the answer is already known, there is nothing to wait for.
    assert await device.wait_turn_end(done["turnId"], timeout=0) == {
        "type": "turn.end",
        "turnId": done["turnId"],
        "clientId": alice.client_id,
        "reason": "complete",
    }
    cancelled = await TurnHandle(device, stopped).end(timeout=0)
    assert (cancelled["reason"], cancelled["cancelledBy"], "seq" in cancelled) == ("cancelled", alice.client_id, False)
    assert [text async for text in TurnHandle(device, done).stream(timeout=5)] == []  # its text: text_of()
    assert device.text_of(done["assistantMessageId"])
    await device.close()


NEVER_CLOSED = """
import asyncio, sys
from chat_client import ChatClient

async def main() -> None:
    client = ChatClient(sys.argv[1], sys.argv[2])
    device = await client.connect(sys.argv[3], auto_reconnect=True)
    await device.ping()  # and returns with the device open

asyncio.run(main())
print("done")
"""


async def test_a_program_that_never_closes_its_reconnecting_device_exits_quietly(
    make_client: MakeClient, stack: Stack
) -> None:
    """asyncio.run() cancels the device's reader on the way out: that is no network drop,
    and starts no reconnect (a task that would never run: "Task was destroyed but it is
    pending")."""
    alice = await make_client("alice")
    session = await session_with(alice)
    assert alice.token
    program = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        NEVER_CLOSED,
        stack.base_url,
        alice.token,
        session["id"],
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(program.communicate(), 60)
    assert (program.returncode, out.decode().strip()) == (0, "done"), err.decode()
    assert "Task was destroyed" not in err.decode(), err.decode()


async def test_a_connect_that_fails_leaves_nothing_running(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that accepts the websocket and never says `hello`: `connect` raises
    `closed`, and neither that connection's reader nor an automatic reconnect goes on for a
    device the caller never got (each would open connections of its own, unseen)."""
    import websockets

    from chat_client import device as device_module

    monkeypatch.setattr(device_module, "HELLO_TIMEOUT_SECONDS", 0.2)
    handshakes: list[Any] = []
    silent = asyncio.Event()

    async def never_greets(connection: Any) -> None:
        handshakes.append(connection)
        await silent.wait()

    made: list[Device] = []
    real_init = Device.__init__

    def remember(self: Device, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(Device, "__init__", remember)
    async with websockets.serve(never_greets, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        client = ChatClient(f"http://127.0.0.1:{port}", token="unused")
        try:
            with pytest.raises(ChatClientError) as refused:
                await client.connect("00000000-0000-0000-0000-000000000001", auto_reconnect=True)
            [device] = made
            assert refused.value.code == "closed"
            assert device._reader is not None and device._reader.done()
            assert device._auto_reconnecting is None and len(handshakes) == 1
        finally:
            silent.set()
            await client.aclose()
