"""Double texting: concurrent (default), queue (server-side, bounded, FIFO, visible on every
device), interrupt (cancel own, then send) and reject."""

from __future__ import annotations

import asyncio

import pytest

from chat_client import ChatClientError
from tests.integration.helpers import NOTICE, assert_clean, expected_answer, session_with


async def test_queue_waits_visibly_and_runs_first_in_first_out(make_client):
    alice, bob = await make_client("alice"), await make_client("bob")
    session = await session_with(alice, bob, tokens=15, rate=150, policy="queue")
    device, watcher = await alice.connect(session["id"]), await bob.connect(session["id"])

    first = await device.send("first")
    second = await device.send("second")
    third = await watcher.send("third")

    assert (first.status, second.status, third.status) == ("active", "queued", "queued")
    queued = await await_all(watcher, "turn.queued", 2)
    assert [(e["turnId"], e["position"]) for e in queued] == [(second.turn_id, 1), (third.turn_id, 2)]
    for turn in (first, second, third):
        await watcher.wait_turn_end(turn.turn_id)
    starts = [e["turnId"] for e in watcher.events_of("turn.start")]
    assert starts == [first.turn_id, second.turn_id, third.turn_id]
    ends_before_start = {e["turnId"]: i for i, e in enumerate(watcher.events) if e["type"] == "turn.end"}
    start_index = {e["turnId"]: i for i, e in enumerate(watcher.events) if e["type"] == "turn.start"}
    assert ends_before_start[first.turn_id] < start_index[second.turn_id]
    assert ends_before_start[second.turn_id] < start_index[third.turn_id]
    # each queued message follows the answer of the turn it waited for
    parent = {m["id"]: m["parent"] for m in watcher.messages.values()}
    assert parent[second.ack["userMessageId"]] == first.ack["assistantMessageId"]
    assert parent[third.ack["userMessageId"]] == second.ack["assistantMessageId"]
    assert watcher.text_of(third.ack["assistantMessageId"]) == expected_answer("third", 15)
    assert_clean(device, watcher)


async def await_all(device, kind, count):
    """The `count` events of `kind` the device gets; an ack can arrive before the events
    its send published, which come through the session's feed."""
    await device.wait_for(lambda: len(device.events_of(kind)) >= count, 10)
    events = device.events_of(kind)
    assert len(events) == count, f"expected {count} {kind} events, saw {len(events)}"
    return events


async def test_queue_is_bounded_and_refuses_with_queue_full(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=1000, rate=20, policy="queue")
    device = await alice.connect(session["id"])
    await device.send("busy")
    for i in range(10):
        assert (await device.send(f"waiting {i}")).status == "queued"

    with pytest.raises(ChatClientError) as refused:
        await device.send("one too many")
    with pytest.raises(ChatClientError) as refused_http:
        await alice.send(session["id"], "also too many")

    assert refused.value.code == "queue_full"
    assert (refused_http.value.code, refused_http.value.status) == ("queue_full", 429)
    assert len(await alice.turns(session["id"], status="queued")) == 10
    await device.cancel(all=True)


async def test_cancelling_a_queued_turn_ends_it_without_calling_the_model(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=30, rate=100, policy="queue")
    device = await alice.connect(session["id"])
    running = await device.send("running")
    waiting = await device.send("waiting")

    answer = await device.cancel(turn_id=waiting.turn_id)
    end = await waiting.end()
    await running.end()

    assert answer["cancelled"] == [waiting.turn_id] and end["reason"] == "cancelled"
    assert [e["type"] for e in device.turn_events(waiting.turn_id)] == ["message", "message", "turn.queued", "turn.end"]
    detail = await alice.turn(session["id"], waiting.turn_id)
    assert detail["content"] == "" and detail["usage"] is None


async def test_interrupt_cancels_the_senders_turns_then_starts_the_new_one(make_client):
    alice, bob = await make_client("alice"), await make_client("bob")
    session = await session_with(alice, bob, tokens=400, rate=40)
    device, other = await alice.connect(session["id"]), await bob.connect(session["id"])
    old = await device.send("tell me everything")
    bobs = await other.send("bob's question")
    await device.wait_event(lambda e: e["type"] == "delta" and e["turnId"] == old.turn_id)

    new = await device.send("actually, just the summary", policy="interrupt")

    assert new.status == "queued"  # until the worker has stopped the turn it interrupts
    assert (await old.end())["reason"] == "cancelled"
    for watcher in (device, other):  # every device: the old turn's end, then the new turn's start
        await watcher.wait_event(lambda e: e["type"] == "turn.start" and e["turnId"] == new.turn_id)
        order = [(e["type"], e.get("turnId")) for e in watcher.events]
        assert order.index(("turn.end", old.turn_id)) < order.index(("turn.start", new.turn_id))
        queued = next(e for e in watcher.events if e["type"] == "turn.queued" and e["turnId"] == new.turn_id)
        assert queued["interrupts"] == [old.turn_id]
    cancel_event = await device.wait_event(lambda e: e["type"] == "cancel")
    assert cancel_event["cancelled"] == [old.turn_id]
    assert bob.client_id in device.active_turns  # another member's turn is left alone
    node = device.messages[new.ack["userMessageId"]]
    assert node["parent"] == old.ack["assistantMessageId"]  # follows the partial, kept answer
    assert device.text_of(old.ack["assistantMessageId"]).endswith(NOTICE)
    await device.cancel(all=True)
    await asyncio.gather(new.end(), other.wait_turn_end(bobs.turn_id))


async def test_reject_refuses_with_busy_while_a_turn_is_active(make_client):
    alice, bob = await make_client("alice"), await make_client("bob")
    session = await session_with(alice, bob, tokens=20, rate=100, policy="reject")
    device, other = await alice.connect(session["id"]), await bob.connect(session["id"])
    turn = await device.send("first")

    with pytest.raises(ChatClientError) as refused:
        await other.send("me too")
    with pytest.raises(ChatClientError) as refused_http:
        await bob.send(session["id"], "me too, over HTTP")
    await turn.end()
    later = await other.send("now it is free")

    assert refused.value.code == "busy"
    assert (refused_http.value.code, refused_http.value.status) == ("busy", 409)
    assert (await later.end())["reason"] == "complete"


async def test_concurrent_is_the_default_and_a_send_may_pick_its_own_policy(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=30, rate=100)
    device = await alice.connect(session["id"])
    assert session["policy"] == "concurrent"

    one, two = await device.send("one"), await device.send("two")
    three = await device.send("three", policy="queue")

    assert (one.status, two.status, three.status) == ("active", "active", "queued")
    for turn in (one, two, three):
        assert (await turn.end())["reason"] == "complete"
