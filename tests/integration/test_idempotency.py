"""Repeating a send returns the existing turn and creates nothing; reusing an id for other
content is a conflict."""

from __future__ import annotations

import asyncio

import pytest

from chat_client import ChatClientError, user_message
from tests.integration.helpers import session_with


async def test_repeating_a_send_returns_the_same_turn_and_creates_nothing(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=5, rate=100)
    message = user_message("only once")

    first = await alice.send(session["id"], messages=[message])
    again = await alice.send(session["id"], messages=[message])
    device = await alice.connect(session["id"])
    over_ws = await device.send(messages=[message])

    assert again["turnId"] == first["turnId"] == over_ws.turn_id
    assert len(await alice.turns(session["id"])) == 1
    assert len((await alice.messages(session["id"]))["results"]) == 2


async def test_repeating_a_send_by_turn_id_returns_the_same_turn(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=5, rate=100)
    message = user_message("by turn id")
    concurrent = await asyncio.gather(
        *[alice.send(session["id"], messages=[message], turnId="my-turn") for _ in range(4)]
    )

    assert {c["turnId"] for c in concurrent} == {"my-turn"}
    assert len(await alice.turns(session["id"])) == 1


async def test_reusing_an_id_for_other_content_is_a_conflict(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=5, rate=100)
    await alice.send(session["id"], messages=[user_message("original", "m-1")], turnId="t-1")

    with pytest.raises(ChatClientError) as same_message_id:
        await alice.send(session["id"], messages=[user_message("different", "m-1")])
    with pytest.raises(ChatClientError) as same_turn_id:
        await alice.send(session["id"], messages=[user_message("other", "m-2")], turnId="t-1")

    assert (same_message_id.value.code, same_message_id.value.status) == ("conflict", 409)
    assert (same_turn_id.value.code, same_turn_id.value.status) == ("conflict", 409)
    assert len(await alice.turns(session["id"])) == 1


async def test_repeating_an_accepted_send_while_busy_returns_its_turn_not_busy(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=200, rate=40, policy="reject")
    message = user_message("first and only")

    first = await alice.send(session["id"], messages=[message])
    again = await alice.send(session["id"], messages=[message])  # the session is busy with it

    assert again["turnId"] == first["turnId"]
    await alice.cancel(session["id"], all=True)
