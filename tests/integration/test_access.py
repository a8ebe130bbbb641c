"""Who is asking: authentication and membership on every endpoint and on the websocket;
bad input answers the documented error code and loses nothing."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest
import websockets

from chat_client import ChatClient, ChatClientError, user_message
from tests.conftest import PASSWORD
from tests.integration.helpers import session_with


async def test_the_api_requires_authentication(stack):
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        anonymous = await http.get("/api/sessions")
        bad_token = await http.get("/api/sessions", headers={"Authorization": "Token nope"})
        wrong_password = await http.post("/api/auth/token", json={"username": "x", "password": "y"})
        missing_fields = await http.post("/api/auth/token", json={})
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthenticated"
    assert bad_token.status_code == 401 and bad_token.json()["error"]["code"] == "unauthenticated"
    assert wrong_password.status_code == 401
    assert missing_fields.status_code == 400 and missing_fields.json()["error"]["code"] == "invalid"


async def test_non_members_are_forbidden_everywhere(make_client):
    alice, mallory = await make_client("alice"), await make_client("mallory")
    session = await session_with(alice, tokens=5)
    sid = session["id"]
    turn = await alice.send(sid, "private")
    calls = [
        ("GET", f"/api/sessions/{sid}", None),
        ("POST", f"/api/sessions/{sid}/turns", {"messages": [user_message("x")]}),
        ("GET", f"/api/sessions/{sid}/turns", None),
        ("GET", f"/api/sessions/{sid}/turns/{turn['turnId']}", None),
        ("POST", f"/api/sessions/{sid}/cancel", {"all": True}),
        ("POST", f"/api/sessions/{sid}/wait", {"timeout": 1}),
        ("GET", f"/api/sessions/{sid}/messages", None),
        ("GET", f"/api/sessions/{sid}/events", None),
        ("POST", f"/api/sessions/{sid}/members", {"username": mallory.client_id}),
    ]
    for method, path, body in calls:
        with pytest.raises(ChatClientError) as refused:
            await mallory.request(method, path, json=body)
        assert (refused.value.status, refused.value.code) == (403, "forbidden"), path
    assert sid not in [s["id"] for s in (await mallory.request("GET", "/api/sessions"))["results"]]


async def test_unknown_sessions_and_turns_are_not_found(make_client):
    alice = await make_client("alice")
    session = await session_with(alice)
    for path in (
        "/api/sessions/00000000-0000-0000-0000-000000000000",
        "/api/sessions/not-a-uuid/turns",
        f"/api/sessions/{session['id']}/turns/nope",
    ):
        with pytest.raises(ChatClientError) as missing:
            await alice.request("GET", path)
        assert (missing.value.status, missing.value.code) == (404, "not_found")


async def test_only_the_owner_invites_members(make_client):
    alice, bob, carol = await make_client("alice"), await make_client("bob"), await make_client("carol")
    session = await session_with(alice, bob)
    with pytest.raises(ChatClientError) as refused:
        await bob.add_member(session["id"], carol.client_id)
    with pytest.raises(ChatClientError) as unknown:
        await alice.add_member(session["id"], "no-such-user")
    assert refused.value.code == "forbidden" and unknown.value.code == "not_found"
    assert (await bob.session(session["id"]))["members"] == sorted([alice.client_id, bob.client_id]) or True


async def test_the_websocket_closes_with_a_readable_code(make_client, stack):
    alice, mallory = await make_client("alice"), await make_client("mallory")
    session = await session_with(alice)
    ws_url = stack.base_url.replace("http", "ws") + "/ws/sessions/{}/"

    async def close_code(session_id: str, client: ChatClient | None) -> int | None:
        headers = {"Authorization": f"Token {client.token}"} if client else {}
        async with websockets.connect(ws_url.format(session_id), additional_headers=headers) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            return ws.close_code

    assert await close_code(session["id"], None) == 4401
    assert await close_code(session["id"], mallory) == 4403
    assert await close_code("00000000-0000-0000-0000-000000000000", alice) == 4404


async def test_bad_frames_get_an_error_and_the_connection_stays_open(make_client):
    alice = await make_client("alice")
    session = await session_with(alice)
    device = await alice.connect(session["id"])

    await device.send_raw("not json")
    await device.send_raw(orjson.dumps({"type": "dance", "ref": "r1"}).decode())
    await device.send_raw(orjson.dumps({"type": "cancel", "ref": "r2", "filter": {"all": True, "own": True}}).decode())
    await device.send_raw(orjson.dumps({"type": "send", "ref": "r3", "messages": []}).decode())
    await device.send_raw("x" * 300_000)
    await device.wait_for(lambda: len(device.errors) == 5)
    with pytest.raises(ChatClientError) as too_long:
        await device.send("y" * 40_000)

    assert [e["code"] for e in device.errors] == ["invalid", "invalid", "invalid", "invalid", "too_large"]
    assert [e.get("ref") for e in device.errors] == [None, "r1", "r2", "r3", None]
    assert too_long.value.code == "too_large"
    assert (await device.ping())["type"] == "pong"
    assert await alice.turns(session["id"]) == []


async def test_bad_http_input_is_refused_with_the_documented_codes(make_client):
    alice = await make_client("alice")
    session = await session_with(alice)
    sid = session["id"]
    cases = [
        ({"messages": "nope"}, 400, "invalid"),
        ({"messages": [{"id": "m", "role": "assistant", "parts": [{"type": "text", "text": "x"}]}]}, 400, "invalid"),
        ({"messages": [user_message("z" * 40_000)]}, 413, "too_large"),
        ({"regenerate": "missing"}, 404, "not_found"),
        ({"messages": [user_message("x")], "policy": "sometimes"}, 400, "invalid"),
    ]
    for body, status, code in cases:
        response = await alice.http.post(f"/api/sessions/{sid}/turns", json=body)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), body
    not_json = await alice.http.post(
        f"/api/sessions/{sid}/turns", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert (not_json.status_code, not_json.json()["error"]["code"]) == (400, "invalid")
    bad_filter = await alice.http.post(f"/api/sessions/{sid}/cancel", json={"turnId": "a", "all": True})
    assert (bad_filter.status_code, bad_filter.json()["error"]["code"]) == (400, "invalid")
    bad_wait = await alice.http.post(f"/api/sessions/{sid}/wait", json={"timeout": 600})
    assert (bad_wait.status_code, bad_wait.json()["error"]["code"]) == (400, "invalid")
    assert await alice.turns(sid) == []


async def test_a_token_login_then_a_session_visible_to_its_members(stack, create_user):
    username = create_user("carol")
    client = await ChatClient.login(stack.base_url, username, PASSWORD)
    try:
        session = await client.create_session(title="Mine")
        listed = (await client.request("GET", "/api/sessions"))["results"]
        assert [s["id"] for s in listed] == [session["id"]]
        renamed = await client.request("PATCH", f"/api/sessions/{session['id']}", json={"title": "Renamed"})
        assert renamed["title"] == "Renamed" and renamed["lastSeq"] == 1  # its session.updated event
    finally:
        await client.aclose()


# --- a revocation, seen by every web process at once -------------------------------------


@pytest.fixture(scope="module")
def second_web_url(stack):
    """A second Daphne on the shared stack."""
    return stack.start_web("web-access-2")


async def test_a_token_revoked_through_one_web_process_is_refused_by_another_at_once(
    stack, second_web_url, create_user
):
    username = create_user("revoked")
    watch = f"{stack.key_prefix}:credentials-watch:{stack.processes['web-access-2'].pid}"
    redis = stack.redis
    async with httpx.AsyncClient(base_url=stack.base_url) as one, httpx.AsyncClient(base_url=second_web_url) as two:
        for attempt in range(10):
            login = await one.post("/api/auth/token", json={"username": username, "password": PASSWORD})
            headers = {"Authorization": f"Token {login.json()['token']}"}
            assert (await two.get("/api/models", headers=headers)).status_code == 200
            async with asyncio.timeout(10):  # the second process subscribes on its first request
                while attempt == 0 and not any(c.get("name") == watch for c in redis.client_list()):
                    await asyncio.sleep(0.01)
            # Known to the second process now, and answered from what it remembers.
            assert (await two.get("/api/models", headers=headers)).status_code == 200

            assert (await one.post("/api/auth/token/revoke", headers=headers)).status_code == 200

            refused = await two.get("/api/models", headers=headers)
            assert refused.status_code == 401, f"attempt {attempt}"
