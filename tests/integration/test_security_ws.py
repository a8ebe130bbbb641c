"""Hostile input on the websocket gets a documented error and leaves the connection (and
the server) usable; membership, origin and limits hold for the life of a connection, not
only at its handshake (docs/security.md)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import orjson
import pytest
import websockets

from chat_client import ChatClient
from tests.integration.helpers import session_with

TIMEOUT = 30


def ws_url(base_url: str, session_id: str, query: str = "") -> str:
    return base_url.replace("http", "ws", 1) + f"/ws/sessions/{session_id}/" + (f"?{query}" if query else "")


def auth(client: ChatClient) -> dict[str, str]:
    return {"Authorization": f"Token {client.token}"}


async def frames_until(ws: Any, pred: Any, limit: int = 500) -> list[dict[str, Any]]:
    """Read frames until one matches `pred` (bounded by TIMEOUT); returns all read."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(TIMEOUT):
        while len(seen) < limit:
            frame = orjson.loads(await ws.recv())
            seen.append(frame)
            if pred(frame):
                return seen
    raise AssertionError(f"no matching frame in {seen[-5:]}")


async def closed_code(ws: Any) -> int | None:
    """Wait for the server to close `ws` (reading what comes meanwhile); its close code."""
    async with asyncio.timeout(TIMEOUT):
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await ws.recv()
    return ws.close_code


async def test_deeply_nested_frames_answer_invalid_and_the_connection_stays_usable(make_client):
    alice = await make_client("alice")
    session = await session_with(alice)
    device = await alice.connect(session["id"])

    deep = "[" * 300 + '"x"' + "]" * 300  # deeper than orjson writes (254), not than it reads (1024)
    await device.send_raw("[" * 100_000 + "]" * 100_000)
    await device.send_raw('{"type": "ping", "ref": ' + deep + "}")
    await device.send_raw('{"type": "cancel", "filter": {"own": ' + deep + "}}")
    await device.wait_for(lambda: len(device.errors) == 3)

    assert [e["code"] for e in device.errors] == ["invalid", "invalid", "invalid"]
    assert (await device.ping())["type"] == "pong"


async def test_a_frame_type_of_any_shape_answers_invalid(make_client):
    alice = await make_client("alice")
    session = await session_with(alice)
    device = await alice.connect(session["id"])

    for kind in ([1], {"a": 1}, 5, None, True, "x" * 10_000):
        await device.send_raw(orjson.dumps({"type": kind, "ref": 1}).decode())
    await device.wait_for(lambda: len(device.errors) == 6)

    assert [e["code"] for e in device.errors] == ["invalid"] * 6
    assert all(len(e["message"]) < 300 for e in device.errors)
    assert (await device.ping())["type"] == "pong"


async def test_a_frame_without_a_type_is_told_it_needs_one_in_the_protocols_words(make_client):
    alice = await make_client("alice")
    session = await session_with(alice)
    device = await alice.connect(session["id"])

    for frame in ({}, {"ref": "x"}, {"type": 5, "ref": "y"}, {"type": "dance"}):
        await device.send_raw(orjson.dumps(frame).decode())
    await device.wait_for(lambda: len(device.errors) == 4)

    needs, needs_with_ref, not_text, unknown = device.errors
    assert needs["message"] == needs_with_ref["message"] == 'a frame needs a "type": one of send, cancel, close, ping'
    assert needs_with_ref["ref"] == "x"
    assert not_text["message"] == 'a frame\'s "type" is a string: one of send, cancel, close, ping'
    assert unknown["message"] == "unknown frame type 'dance'; one of send, cancel, close, ping"
    assert {e["code"] for e in device.errors} == {"invalid"}


async def test_a_frame_over_the_limit_is_refused_without_dropping_the_connection(make_client, stack):
    alice = await make_client("alice")
    session = await session_with(alice)
    async with websockets.connect(ws_url(stack.base_url, session["id"]), additional_headers=auth(alice)) as ws:
        await frames_until(ws, lambda f: f["type"] == "snapshot")
        await ws.send("x" * (512 * 1024))  # over the app's limit, under the server's
        [*_, error] = await frames_until(ws, lambda f: f["type"] == "error")
        assert error["code"] == "too_large"
        await ws.send(orjson.dumps({"type": "ping", "ref": "p"}).decode())
        await frames_until(ws, lambda f: f["type"] == "pong")

        await ws.send("x" * (3 * 1024 * 1024))  # over the server's limit: a clean 1009
        assert await closed_code(ws) == 1009


async def test_a_bad_after_is_refused_before_anything_else_happens(make_client, stack):
    alice, bob = await make_client("alice"), await make_client("bob")
    session = await session_with(alice, bob)

    for after in ("-2", "abc", "1e3", str(2**70)):
        url = ws_url(stack.base_url, session["id"], f"after={after}")
        async with websockets.connect(url, additional_headers=auth(alice)) as ws:
            [error] = await frames_until(ws, lambda f: True)
            assert (error["type"], error["code"]) == ("error", "invalid"), after
            assert await closed_code(ws) == 4400

    laptop = await bob.connect(session["id"])
    assert laptop.online == [bob.client_id]  # alice's refused connections left no trace


async def test_a_member_who_leaves_is_disconnected_at_once(make_client, orm):
    alice, bob, carol = await make_client("alice"), await make_client("bob"), await make_client("carol")
    session = await session_with(alice, bob, carol)
    owner = await alice.connect(session["id"])
    leaver = await bob.connect(session["id"])
    removed = await carol.connect(session["id"])

    await bob.request("DELETE", f"/api/sessions/{session['id']}/members")
    await leaver.wait_for(lambda: leaver.close_code is not None)

    from sessions_app.models import Membership

    orm(lambda: Membership.objects.filter(session_id=session["id"], user__username=carol.client_id).delete())
    await removed.wait_for(lambda: removed.close_code is not None)

    assert (leaver.close_code, removed.close_code) == (4403, 4403)
    turn = await alice.send(session["id"], "after they left")
    await owner.wait_for(lambda: bool(owner.turn_events(turn["turnId"])))
    assert not leaver.turn_events(turn["turnId"]) and not removed.turn_events(turn["turnId"])
    async with websockets.connect(ws_url(alice.base_url, session["id"]), additional_headers=auth(bob)) as ws:
        assert await closed_code(ws) == 4403


async def test_an_upper_case_session_id_connects_and_receives_events(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=3)
    device = await alice.connect(session["id"].upper())
    turn = await alice.send(session["id"], "hello")
    await device.wait_for(lambda: any(e["type"] == "turn.end" for e in device.turn_events(turn["turnId"])))
    assert device.hello is not None


async def test_a_session_id_that_is_no_uuid_is_not_found(make_client, stack):
    alice = await make_client("alice")
    for session_id in ("not-a-uuid", "x" * 5000, "%00%ff", "0" * 31):
        async with websockets.connect(ws_url(stack.base_url, session_id), additional_headers=auth(alice)) as ws:
            assert await closed_code(ws) == 4404, session_id[:20]


async def test_the_origin_must_match_scheme_host_and_port(make_client, stack):
    alice = await make_client("alice")
    session = await session_with(alice)
    url = ws_url(stack.base_url, session["id"])
    port = int(stack.base_url.rsplit(":", 1)[1])

    for origin in (f"http://127.0.0.1:{port + 1}", f"https://127.0.0.1:{port}", "http://127.0.0.1", "null"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url, additional_headers={**auth(alice), "Origin": origin})
        assert refused.value.response.status_code == 403, origin

    headers = {**auth(alice), "Origin": f"http://127.0.0.1:{port}"}
    async with websockets.connect(url, additional_headers=headers) as ws:
        [hello, *_] = await frames_until(ws, lambda f: f["type"] == "snapshot")
        assert hello["type"] == "hello"


async def test_a_short_lived_ticket_opens_one_websocket(make_client, stack):
    alice = await make_client("alice")
    session = await session_with(alice)
    ticket = (await alice.request("POST", "/api/auth/ws-ticket"))["ticket"]
    url = ws_url(stack.base_url, session["id"], f"ticket={ticket}")

    async with websockets.connect(url) as ws:  # no header: the ticket is the credential
        [hello, *_] = await frames_until(ws, lambda f: f["type"] == "snapshot")
        assert hello["clientId"] == alice.client_id
    async with websockets.connect(url) as ws:  # used once already
        assert await closed_code(ws) == 4401


async def test_a_revoked_token_no_longer_opens_websockets(make_client, stack):
    alice = await make_client("alice")
    session = await session_with(alice)
    await alice.request("POST", "/api/auth/token/revoke")
    async with websockets.connect(ws_url(stack.base_url, session["id"]), additional_headers=auth(alice)) as ws:
        assert await closed_code(ws) == 4401
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        refused = await http.get("/api/sessions", headers=auth(alice))
    assert refused.status_code == 401


# --- limits, on a stack of their own with small ones ---------------------------------------


@pytest.fixture(scope="module")
def limited(stack_factory):
    return stack_factory(
        {
            "CHAT_MAX_CONNECTIONS_PER_USER": "3",
            "CHAT_FRAMES_PER_MINUTE": "30",
            "CHAT_MAX_OUTBOX_BYTES": str(1024 * 1024),  # a round below is 300 KB at once
        }
    )


async def test_connections_per_user_are_bounded(make_client, limited):
    alice = await make_client("alice", base_url=limited.base_url)
    session = await session_with(alice)
    devices = [await alice.connect(session["id"]) for _ in range(3)]

    async with websockets.connect(ws_url(limited.base_url, session["id"]), additional_headers=auth(alice)) as ws:
        [error] = await frames_until(ws, lambda f: True)
        assert (error["type"], error["code"]) == ("error", "rate_limited")
        assert await closed_code(ws) == 4429

    await devices[0].close()
    again = await alice.connect(session["id"])  # a slot is free again
    assert (await again.ping())["type"] == "pong"


async def test_frames_per_minute_are_bounded(make_client, limited):
    alice = await make_client("alice", base_url=limited.base_url)
    session = await session_with(alice)
    async with websockets.connect(ws_url(limited.base_url, session["id"]), additional_headers=auth(alice)) as ws:
        await frames_until(ws, lambda f: f["type"] == "snapshot")
        for index in range(40):
            await ws.send(orjson.dumps({"type": "ping", "ref": index}).decode())
        replies = await frames_until(ws, lambda f: f.get("ref") == 39)
        codes = [r.get("code") for r in replies if r["type"] == "error"]
        assert len([r for r in replies if r["type"] == "pong"]) == 30
        assert codes == ["rate_limited"] * 10
        for index in range(100):  # flooding on: closed
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send(orjson.dumps({"type": "ping", "ref": 100 + index}).decode())
        assert await closed_code(ws) == 4429


async def test_a_reader_that_falls_behind_is_dropped_not_buffered_for(make_client, limited):
    alice = await make_client("alice", base_url=limited.base_url)
    session = await session_with(alice, tokens=1)
    reader = await alice.connect(session["id"])
    # A client that stops reading: once its queue holds one frame it reads no more from
    # the socket, whose buffers then fill, then the server's outbox for it.
    slow = await websockets.connect(
        ws_url(limited.base_url, session["id"]), additional_headers=auth(alice), max_queue=1, ping_interval=None
    )
    text = "b" * 30_000
    dropped = False
    try:
        async with asyncio.timeout(120):
            for round_ in range(200):
                messages = [
                    {"id": f"m{round_}-{i}", "role": "user", "parts": [{"type": "text", "text": text}]}
                    for i in range(10)
                ]
                await alice.request("POST", f"/api/sessions/{session['id']}/turns", json={"messages": messages})
                try:
                    await slow.ping()  # a control frame, never the app's: a write notices a reset
                except websockets.ConnectionClosed:
                    dropped = True
                    break
    finally:
        await slow.close()
    # 300 KB a round: the socket buffers hold a few MB, the server's outbox 1 MiB more.
    assert dropped and slow.close_code in (4408, 1006)
    assert (await reader.ping())["type"] == "pong" and reader.close_code is None


async def test_a_session_of_more_than_a_mib_still_reaches_a_new_device(make_client, limited):
    # Its snapshot is over the stack's outbox bound (1 MiB) and over Daphne's message size
    # limit (1 MiB), which autobahn applies to what the server sends as well.
    alice = await make_client("alice", base_url=limited.base_url)
    session = await session_with(alice, tokens=1)
    text = "s" * 30_000
    for round_ in range(5):  # 1.5 MB of messages
        messages = [
            {"id": f"s{round_}-{i}", "role": "user", "parts": [{"type": "text", "text": text}]} for i in range(10)
        ]
        turn = await alice.request("POST", f"/api/sessions/{session['id']}/turns", json={"messages": messages})
    await alice.wait(session["id"], {"turnId": turn["turnId"]}, timeout=30)

    device = await alice.connect(session["id"])  # its presence event follows the snapshot

    assert len(device.messages) >= 50
    assert (await device.ping())["type"] == "pong" and device.close_code is None
