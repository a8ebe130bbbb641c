"""Deleting a session (decision 045): the owner, or an operator in the admin, deletes it
while a turn streams; every device hears `session.deleted`, then its websocket closes with
4404; the worker stops the turn without a word in its log; the rows and the session's Redis
state go. A member who is not the owner cannot, and nothing changes.

These run on a stack of their own, whose worker serves its metrics: its
`chat_turns_streaming` going back to 0 is the worker having stopped the turn (and cleaned
up after it), and its log is this module's alone."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from functools import partial
from typing import Any

import httpx
import pytest

from chat_client import ChatClient, ChatClientError, Device
from sessions_app.infra.live_state import DELETED_SESSION_LOG_SECONDS
from sessions_app.models import ChatSession, EventRecord, Membership, MessageNode, Turn
from tests.integration.helpers import assert_clean, session_with
from tests.integration.test_admin import admin_login, csrf_token
from tests.stack import Stack, free_port

LONG = {"tokens": 4000, "rate": 40}  # 100 s of streaming: only a stop ends it within a test


@pytest.fixture(scope="module")
def own(stack_factory: Callable[..., Stack]) -> tuple[Stack, int]:
    port = free_port()
    return stack_factory({"CHAT_WORKER_METRICS_PORT": str(port)}), port


async def streaming(port: int) -> float:
    """The worker's `chat_turns_streaming` gauge."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics", timeout=10)).text
    found = re.search(r"^chat_turns_streaming (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def until(check: Callable[[], Any], timeout: float = 30) -> None:
    """Wait for an asynchronous `check()` to hold (it is asked again after each answer)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def session_keys(stack: Stack, session_id: str) -> dict[str, int]:
    """Every Redis key of the session, with its time to live (-1: none)."""
    redis = stack.redis
    return {key.decode(): redis.ttl(key) for key in redis.scan_iter(match=f"{stack.key_prefix}:{{{session_id}}}:*")}


def rows_of(orm: Any, session_id: str) -> list[int]:
    return orm(
        lambda: [
            model.objects.filter(**{"pk" if model is ChatSession else "session_id": session_id}).count()
            for model in (ChatSession, Membership, Turn, MessageNode, EventRecord)
        ]
    )


async def a_streaming_turn(owner: ChatClient, member: ChatClient) -> tuple[dict[str, Any], Device, Device, Any]:
    session = await session_with(owner, member, **LONG)
    phone, other = await owner.connect(session["id"]), await member.connect(session["id"])
    turn = await phone.send("a long answer")
    await other.wait_event(lambda e: e["type"] == "delta" and e["turnId"] == turn.turn_id)
    return session, phone, other, turn


async def gone_for_everyone(
    stack: Stack, port: int, orm: Any, session_id: str, by: str, devices: list[Device], turn: Any
) -> None:
    """What a deletion leaves: `session.deleted` then 4404 on every device, the turn stopped
    with no `turn.end`, no row, no Redis key but the log and seq about to expire."""
    for device in devices:
        await device.wait_for(partial(lambda d: d.close_code is not None, device))
        assert device.close_code == 4404
        assert device.events[-1]["type"] == "session.deleted" and device.events[-1]["clientId"] == by
        assert device.deleted_by == by and device.active_turns == {}
        assert not [e for e in device.turn_events(turn.turn_id) if e["type"] == "turn.end"]
        assert_clean(device)
    await until(lambda: _stopped(port))  # the worker stopped it, long before its 100 s
    assert rows_of(orm, session_id) == [0, 0, 0, 0, 0]
    left = session_keys(stack, session_id)
    assert set(left) <= {f"{stack.key_prefix}:{{{session_id}}}:{name}" for name in ("seq", "log")}, left
    assert all(0 < ttl <= DELETED_SESSION_LOG_SECONDS for ttl in left.values()), left


async def _stopped(port: int) -> bool:
    return await streaming(port) == 0


def no_fault_logged(stack: Stack, since: dict[str, int]) -> None:
    for name, offset in since.items():
        written = stack.log_text(name)[offset:]
        assert "Traceback" not in written and "ERROR" not in written, f"{name}: {written[-3000:]}"


def log_offsets(stack: Stack) -> dict[str, int]:
    return {name: len(stack.log_text(name)) for name in ("web", "worker")}


async def test_the_owner_deletes_a_session_while_a_turn_streams(own, make_client, orm):
    stack, port = own
    since = log_offsets(stack)
    alice, bob = await make_client("alice", stack.base_url), await make_client("bob", stack.base_url)
    session, phone, other, turn = await a_streaming_turn(alice, bob)
    sid = session["id"]
    assert await streaming(port) == 1

    answer = await alice.http.delete(f"/api/sessions/{sid}")

    assert answer.status_code == 204 and answer.content == b"" and "content-type" not in answer.headers
    await gone_for_everyone(stack, port, orm, sid, alice.client_id, [phone, other], turn)
    for client in (alice, bob):
        with pytest.raises(ChatClientError) as missing:
            await client.session(sid)
        assert (missing.value.status, missing.value.code) == (404, "not_found")
    with pytest.raises(ChatClientError) as again:
        await alice.delete_session(sid)
    assert (again.value.status, again.value.code) == (404, "not_found")
    with pytest.raises(ChatClientError):  # a device that comes back finds no session
        await alice.connect(sid)
    no_fault_logged(stack, since)


async def test_only_the_owner_deletes_and_a_refusal_changes_nothing(own, make_client, orm):
    stack, port = own
    alice, bob = await make_client("alice", stack.base_url), await make_client("bob", stack.base_url)
    mallory = await make_client("mallory", stack.base_url)
    session, phone, other, turn = await a_streaming_turn(alice, bob)
    sid = session["id"]
    rows = rows_of(orm, sid)

    # A member, a non-member (as everywhere in the API: 403 for a session that exists), an
    # unknown id.
    unknown = "00000000-0000-0000-0000-000000000000"
    for client, target, status, code in (
        (bob, sid, 403, "forbidden"),
        (mallory, sid, 403, "forbidden"),
        (alice, unknown, 404, "not_found"),
    ):
        with pytest.raises(ChatClientError) as refused:
            await client.delete_session(target)
        assert (refused.value.status, refused.value.code) == (status, code)

    seen = len(other.turn_events(turn.turn_id))
    await other.wait_for(lambda: len(other.turn_events(turn.turn_id)) > seen)  # still streaming
    assert (phone.close_code, other.close_code) == (None, None)
    assert not phone.events_of("session.deleted") and phone.deleted_by is None
    assert (await bob.session(sid))["id"] == sid and rows_of(orm, sid)[:4] == rows[:4]
    await alice.cancel(sid, all=True)
    await turn.end()
    await until(lambda: _stopped(port))


async def test_the_admin_deletes_sessions_through_the_service(own, make_client, create_user, orm):
    stack, port = own
    since = log_offsets(stack)
    alice, bob = await make_client("alice", stack.base_url), await make_client("bob", stack.base_url)
    first, *first_devices, first_turn = await a_streaming_turn(alice, bob)
    second, *second_devices, second_turn = await a_streaming_turn(alice, bob)
    third, *third_devices, third_turn = await a_streaming_turn(bob, alice)
    operator = create_user("admin", True)

    admin = await admin_login(stack.base_url, operator)
    try:
        # One session from its own page...
        page = await admin.get(f"/admin/sessions_app/chatsession/{first['id']}/delete/")
        assert page.status_code == 200 and "Are you sure" in page.text, page.text[-2000:]
        done = await admin.post(
            f"/admin/sessions_app/chatsession/{first['id']}/delete/",
            data={"post": "yes", "csrfmiddlewaretoken": csrf_token(page.text)},
        )
        assert done.status_code == 200
        # ...and two from the list's action.
        listing = await admin.get("/admin/sessions_app/chatsession/")
        chosen = {"action": "delete_selected", "_selected_action": [second["id"], third["id"]]}
        confirm = await admin.post(
            "/admin/sessions_app/chatsession/", data={**chosen, "csrfmiddlewaretoken": csrf_token(listing.text)}
        )
        assert "Are you sure" in confirm.text, confirm.text[-2000:]
        await admin.post(
            "/admin/sessions_app/chatsession/",
            data={**chosen, "post": "yes", "csrfmiddlewaretoken": csrf_token(confirm.text)},
        )
    finally:
        await admin.aclose()

    for session, devices, turn in (
        (first, first_devices, first_turn),
        (second, second_devices, second_turn),
        (third, third_devices, third_turn),
    ):
        await gone_for_everyone(stack, port, orm, session["id"], operator, devices, turn)
    no_fault_logged(stack, since)


async def test_a_user_deleted_in_the_admin_takes_their_sessions_with_them(own, make_client, create_user, orm):
    """The sessions a user owns go with their account (a cascade, not the service's call):
    they stop as the owner's deletion stops them. A session of someone else they were a
    member of goes on: their device of it closes (4403), the others hear `member.left`, and
    what they wrote there stays, their answer streaming at the time included."""
    from django.contrib.auth import get_user_model

    stack, port = own
    since = log_offsets(stack)
    alice, bob = await make_client("alice", stack.base_url), await make_client("bob", stack.base_url)
    owned, *owned_devices, owned_turn = await a_streaming_turn(alice, bob)
    others = await session_with(bob, alice)
    alice_there, bob_there = await alice.connect(others["id"]), await bob.connect(others["id"])
    theirs = await alice_there.send("an answer that outlives my account")
    await bob_there.wait_event(lambda e: e["type"] == "delta" and e["turnId"] == theirs.turn_id)
    operator = create_user("admin", True)
    alice_pk = orm(lambda: get_user_model().objects.get(username=alice.client_id).pk)

    admin = await admin_login(stack.base_url, operator)
    try:
        page = await admin.get(f"/admin/auth/user/{alice_pk}/delete/")
        assert page.status_code == 200 and "Are you sure" in page.text, page.text[-2000:]
        done = await admin.post(
            f"/admin/auth/user/{alice_pk}/delete/", data={"post": "yes", "csrfmiddlewaretoken": csrf_token(page.text)}
        )
        assert done.status_code == 200
    finally:
        await admin.aclose()

    await gone_for_everyone(stack, port, orm, owned["id"], alice.client_id, owned_devices, owned_turn)
    await alice_there.wait_for(lambda: alice_there.close_code is not None)
    assert alice_there.close_code == 4403 and not alice_there.events_of("session.deleted")
    left = await bob_there.wait_event(lambda e: e["type"] == "member.left")
    assert left["clientId"] == alice.client_id and bob_there.close_code is None
    ended = await bob_there.wait_event(lambda e: e["type"] == "turn.end" and e["turnId"] == theirs.turn_id)
    assert ended["reason"] == "complete"
    end = await (await bob_there.send("still here")).end()
    assert end["reason"] == "complete"
    kept = await bob.http.get(f"/api/sessions/{others['id']}/turns/{theirs.turn_id}")
    assert kept.status_code == 200 and kept.json()["clientId"] == alice.client_id, kept.text
    no_fault_logged(stack, since)
