"""A turn streams to every device of every member, in order, with nothing lost or doubled."""

from __future__ import annotations

import asyncio

from tests.integration.helpers import assert_clean, expected_answer, session_with


async def test_one_turn_streams_the_same_text_to_two_users_on_three_devices(make_client):
    alice, bob = await make_client("alice"), await make_client("bob")
    session = await session_with(alice, bob, tokens=30, rate=200)
    phone, laptop, bobs = await asyncio.gather(
        alice.connect(session["id"]), alice.connect(session["id"]), bob.connect(session["id"])
    )

    turn = await phone.send("Plan a trip")
    streamed = "".join([text async for text in turn.stream()])

    for device in (laptop, bobs):
        await device.wait_turn_end(turn.turn_id)
    answer = expected_answer("Plan a trip", 30)
    assert streamed == answer
    for device in (phone, laptop, bobs):
        assert device.text_of(turn.ack["assistantMessageId"]) == answer
        assert device.turns[turn.turn_id]["status"] == "complete"
    assert_clean(phone, laptop, bobs)
    detail = await bob.turn(session["id"], turn.turn_id)
    assert detail["status"] == "complete" and detail["content"] == answer
    assert detail["usage"] == {"inputTokens": 3, "outputTokens": 30}


async def test_concurrent_turns_each_stream_their_own_answer(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=20, rate=100)
    device = await alice.connect(session["id"])

    turns = [await device.send(f"question {i}") for i in range(3)]
    await device.wait_for(
        lambda: (
            len(device.active_turns.get(device.client_id, set())) == 3
            or all(device.turns.get(t.turn_id, {}).get("status") == "complete" for t in turns)
        )
    )
    for turn in turns:
        await turn.end()
    for i, turn in enumerate(turns):
        assert device.text_of(turn.ack["assistantMessageId"]) == expected_answer(f"question {i}", 20)
    starts = [e["turnId"] for e in device.events_of("turn.start")]
    assert starts == [t.turn_id for t in turns]
    assert_clean(device)


async def test_a_model_failure_ends_only_that_turn_with_error_and_keeps_its_partial_text(make_client):
    alice = await make_client("alice")
    failing = await session_with(alice, tokens=30, rate=200, failAfter=4)
    healthy = await session_with(alice, tokens=30, rate=200)
    broken, fine = await alice.connect(failing["id"]), await alice.connect(healthy["id"])

    doomed, survivor = await broken.send("rate limited"), await fine.send("unaffected")
    end, other = await doomed.end(), await survivor.end()

    assert end["reason"] == "error" and end["error"]["code"] == "provider_unavailable"
    assert broken.text_of(doomed.ack["assistantMessageId"]) == expected_answer("rate limited", 4)
    assert other["reason"] == "complete"
    detail = await alice.turn(failing["id"], doomed.turn_id)
    assert detail["status"] == "error" and detail["error"]["code"] == "provider_unavailable"
    assert detail["content"] == expected_answer("rate limited", 4)


async def test_the_next_queued_turn_starts_after_a_turn_fails(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=10, rate=200, failAfter=3, policy="queue")
    device = await alice.connect(session["id"])
    first, second = await device.send("one"), await device.send("two")
    assert second.status == "queued"
    assert (await first.end())["reason"] == "error"
    assert (await second.end())["reason"] == "error"  # it ran (and failed the same way)
    assert [e["turnId"] for e in device.events_of("turn.start")] == [first.turn_id, second.turn_id]


async def test_a_burst_of_sends_from_many_devices_starts_and_streams_every_turn(make_client):
    """Sends arriving together are decided, written and dispatched as a set (one task for
    the turns they start): every turn streams its whole answer, and two sends to one
    queue-policy session still queue one behind the other."""
    alice = await make_client("alice")
    sessions = [await session_with(alice, tokens=8, rate=200) for _ in range(10)]
    # Long enough that the first of the pair still streams whenever the second is decided.
    queueing = await session_with(alice, tokens=40, rate=100, policy="queue")
    devices = await asyncio.gather(*(alice.connect(s["id"]) for s in sessions))
    pair = await asyncio.gather(alice.connect(queueing["id"]), alice.connect(queueing["id"]))

    turns = await asyncio.gather(
        *(device.send(f"burst {i}") for i, device in enumerate(devices)),
        *(device.send(f"pair {i}") for i, device in enumerate(pair)),
    )

    ends = await asyncio.gather(*(turn.end() for turn in turns))
    assert [end["reason"] for end in ends] == ["complete"] * len(turns)
    for i, (device, turn) in enumerate(zip(devices, turns, strict=False)):
        assert device.text_of(turn.ack["assistantMessageId"]) == expected_answer(f"burst {i}", 8)
    first, second = sorted(turns[-2:], key=lambda t: t.ack["status"])  # "active" < "queued"
    assert (first.ack["status"], second.ack["status"]) == ("active", "queued")
    for device in pair:  # each device of the session sees both end, in order
        await device.wait_turn_end(second.turn_id)
        assert [device.turns[t.turn_id]["status"] for t in (first, second)] == ["complete", "complete"]
    assert_clean(*devices, *pair)
