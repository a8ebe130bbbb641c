"""Cancellation: every filter, while silent, before the turn exists, once only, refused
cancels reported, partial answers kept, close with cancel, drops cancel nothing."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from chat_client import ChatClientError
from tests.integration.helpers import NOTICE, assert_clean, expected_answer, session_with

SLOW = {"tokens": 400, "rate": 40}  # ten seconds of streaming: cancels land mid-answer


async def first_delta(device, turn):
    return await device.wait_event(lambda e: e["type"] == "delta" and e["turnId"] == turn.turn_id)


async def test_cancel_by_turn_id_leaves_other_turn_streaming(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=60, rate=60)
    device = await alice.connect(session["id"])
    doomed, survivor = await device.send("one"), await device.send("two")
    await first_delta(device, doomed)

    answer = await device.cancel(turn_id=doomed.turn_id)

    assert answer["cancelled"] == [doomed.turn_id] and answer["rejected"] == []
    assert (await doomed.end())["reason"] == "cancelled"
    assert (await survivor.end())["reason"] == "complete"
    assert device.text_of(survivor.ack["assistantMessageId"]) == expected_answer("two", 60)
    partial = device.text_of(doomed.ack["assistantMessageId"])
    assert partial.endswith(NOTICE) and len(partial) < len(expected_answer("one", 60)) + len(NOTICE)
    assert_clean(device)


async def test_cancel_own_stops_only_the_requesters_turns(make_client):
    alice, bob = await make_client("alice"), await make_client("bob")
    session = await session_with(alice, bob, **SLOW)
    alice_phone = await alice.connect(session["id"])
    bob_laptop = await bob.connect(session["id"])
    mine = [await alice_phone.send("a1"), await alice_phone.send("a2")]
    theirs = await bob_laptop.send("b1")
    await first_delta(alice_phone, theirs)

    answer = await alice_phone.cancel()  # the default filter: own

    assert sorted(answer["cancelled"]) == sorted(t.turn_id for t in mine)
    for turn in mine:
        assert (await alice_phone.wait_turn_end(turn.turn_id))["reason"] == "cancelled"
    await bob_laptop.wait_for(lambda: bob_laptop.active_turns == {bob.client_id: {theirs.turn_id}})
    await bob_laptop.cancel()
    assert (await theirs.end())["reason"] == "cancelled"


async def test_cancel_by_client_id_from_another_member(make_client):
    alice, bob = await make_client("alice"), await make_client("bob")
    session = await session_with(alice, bob, **SLOW)
    alice_device, bob_device = await alice.connect(session["id"]), await bob.connect(session["id"])
    alices = await alice_device.send("mine")
    bobs = await bob_device.send("his")
    await first_delta(bob_device, alices)

    answer = await bob_device.cancel(client_id=alice.client_id)

    assert answer == {"type": "ack", "ref": answer["ref"], "cancelled": [alices.turn_id], "rejected": [], "pending": []}
    assert (await alice_device.wait_turn_end(alices.turn_id))["reason"] == "cancelled"
    cancel_event = await alice_device.wait_event(lambda e: e["type"] == "cancel")
    assert cancel_event["clientId"] == bob.client_id and cancel_event["filter"] == {"clientId": alice.client_id}
    assert alice_device.active_turns == {bob.client_id: {bobs.turn_id}}
    await bob_device.cancel(all=True)
    await bobs.end()


async def test_cancel_all_is_an_emergency_stop_including_queued_turns(make_client):
    alice, bob = await make_client("alice"), await make_client("bob")
    session = await session_with(alice, bob, **SLOW)
    device, other = await alice.connect(session["id"]), await bob.connect(session["id"])
    running = [await device.send("x"), await other.send("y")]
    queued = await device.send("z", policy="queue")
    assert queued.status == "queued"

    answer = await other.cancel(all=True)

    assert sorted(answer["cancelled"]) == sorted([*(t.turn_id for t in running), queued.turn_id])
    for turn in [*running, queued]:
        assert (await device.wait_turn_end(turn.turn_id))["reason"] == "cancelled"
    assert device.turn_events(queued.turn_id)[-1]["type"] == "turn.end"
    assert not [e for e in device.turn_events(queued.turn_id) if e["type"] in ("turn.start", "delta")]
    await device.wait_for(lambda: device.active_turns == {})


async def test_cancel_while_the_model_is_silent_ends_the_turn_at_once(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=50, rate=100, pauseAfter=5, pauseSeconds=60)
    device = await alice.connect(session["id"])
    turn = await device.send("go quiet")
    await device.wait_for(
        lambda: (
            len([e for e in device.turn_events(turn.turn_id) if e["type"] == "delta"]) >= 1
            and device.text_of(turn.ack["assistantMessageId"]).count(" ") >= 5
        )
    )

    await device.cancel(turn_id=turn.turn_id)
    # The model stays silent for 60 s: a turn that waited for its next token would not end
    # within this bound, nor with exactly the five tokens streamed before the silence.
    end = await turn.end(timeout=10)

    assert end["reason"] == "cancelled"
    assert device.text_of(turn.ack["assistantMessageId"]) == expected_answer("go quiet", 5) + NOTICE


async def test_cancel_for_a_turn_not_yet_created_is_held_and_applied(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, **SLOW)
    device = await alice.connect(session["id"])
    turn_id = f"early-{uuid.uuid4()}"

    answer = await device.cancel(turn_id=turn_id)
    assert answer["pending"] == [turn_id] and answer["cancelled"] == []
    turn = await device.send("too late", turn_id=turn_id)
    end = await turn.end()

    assert end["reason"] == "cancelled"
    assert not [e for e in device.turn_events(turn_id) if e["type"] in ("delta", "turn.start")]
    detail = await alice.turn(session["id"], turn_id)
    assert detail["status"] == "cancelled" and detail["content"] == ""


async def test_a_turn_cancels_once_and_later_cancels_are_no_ops(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, **SLOW)
    device = await alice.connect(session["id"])
    turn = await device.send("once")
    await first_delta(device, turn)

    first, second = await asyncio.gather(device.cancel(turn_id=turn.turn_id), device.cancel(turn_id=turn.turn_id))
    end = await turn.end()
    third = await device.cancel(turn_id=turn.turn_id)

    assert sorted([first["cancelled"], second["cancelled"]]) == [[], [turn.turn_id]]
    assert third["cancelled"] == [] and third["rejected"] == [] and third["pending"] == []
    # A barrier for stray events: a later turn, run by the worker and ended. Its events come
    # through the same log and fan-out, numbered after anything published before them, and
    # the device applies events in seq order (assert_clean: no gap); so once it has the
    # barrier's turn.end, it has every event the cancels or the first turn's run sent before.
    barrier = await device.send("after")
    await first_delta(device, barrier)
    await barrier.cancel()
    assert (await barrier.end())["seq"] > end["seq"]
    assert [e for e in device.turn_events(turn.turn_id) if e["seq"] > end["seq"]] == []  # no delta, no 2nd end
    assert device.text_of(turn.ack["assistantMessageId"]).count(NOTICE) == 1
    assert_clean(device)


async def test_a_cancel_matching_nothing_is_a_no_op(make_client):
    alice = await make_client("alice")
    session = await session_with(alice)
    device = await alice.connect(session["id"])
    assert (await device.cancel())["cancelled"] == []
    assert (await device.cancel(all=True))["cancelled"] == []
    assert (await alice.cancel(session["id"], client_id="nobody"))["cancelled"] == []


async def test_stop_on_one_device_stops_a_turn_started_on_another(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, **SLOW)
    phone, laptop = await alice.connect(session["id"]), await alice.connect(session["id"])
    turn = await phone.send("from the phone")
    await first_delta(laptop, turn)

    await laptop.cancel()

    assert (await phone.wait_turn_end(turn.turn_id))["reason"] == "cancelled"
    assert phone.text_of(turn.ack["assistantMessageId"]) == laptop.text_of(turn.ack["assistantMessageId"])
    assert_clean(phone, laptop)


async def test_partial_answer_is_kept_in_the_tree_with_status_cancelled(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, **SLOW)
    device = await alice.connect(session["id"])
    turn = await device.send("keep me")
    await first_delta(device, turn)
    await alice.cancel(session["id"], turn_id=turn.turn_id)  # over HTTP this time
    await turn.end()

    nodes = {n["id"]: n for n in (await alice.messages(session["id"]))["results"]}
    answer = nodes[turn.ack["assistantMessageId"]]
    assert answer["status"] == "cancelled"
    assert answer["parts"][0]["text"] == device.text_of(turn.ack["assistantMessageId"])
    assert answer["parts"][0]["text"].endswith(NOTICE)


async def test_closing_with_a_cancel_filter_cancels_own_turns(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, **SLOW)
    leaving, staying = await alice.connect(session["id"]), await alice.connect(session["id"])
    turn = await leaving.send("bye")
    await first_delta(staying, turn)

    reply = await leaving.close(cancel={"own": True})

    assert reply is not None and reply["cancelled"] == [turn.turn_id]
    assert (await staying.wait_turn_end(turn.turn_id))["reason"] == "cancelled"


async def test_a_dropped_connection_cancels_nothing(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=40, rate=80)
    device = await alice.connect(session["id"])
    turn = await device.send("still here")
    await first_delta(device, turn)

    await device.drop()
    result = await alice.wait(session["id"], {"turnId": turn.turn_id}, timeout=20)

    assert result["turns"] == [{"turnId": turn.turn_id, "status": "complete", "reason": "complete"}]
    assert (await alice.turn(session["id"], turn.turn_id))["content"] == expected_answer("still here", 40)


@pytest.fixture(scope="module")
def owner_only_url(stack):
    """A second Daphne on the shared stack, whose authoriser lets only a turn's owner cancel it."""
    return stack.start_web(
        "web-owner-only", {"CHAT_CANCEL_AUTHORISER": "sessions_app.cancellation.authorisers.turn_owner_only"}
    )


async def test_refused_cancel_is_reported_to_the_requester_and_the_turn_goes_on(make_client, owner_only_url):
    alice = await make_client("alice", base_url=owner_only_url)
    bob = await make_client("bob", base_url=owner_only_url)
    session = await session_with(alice, bob, tokens=40, rate=80)
    alice_device, bob_device = await alice.connect(session["id"]), await bob.connect(session["id"])
    turn = await alice_device.send("mine only")
    await first_delta(bob_device, turn)

    refused = await bob_device.cancel(turn_id=turn.turn_id)
    everything = await bob_device.cancel(all=True)

    assert refused["cancelled"] == [] and refused["rejected"] == [turn.turn_id]
    assert everything["rejected"] == [turn.turn_id]
    cancel_event = await alice_device.wait_event(lambda e: e["type"] == "cancel")
    assert cancel_event["rejected"] == [turn.turn_id]
    assert (await turn.end())["reason"] == "complete"
    with pytest.raises(ChatClientError):
        await bob_device.cancel(turn_id="x" * 101)  # and a malformed filter is an error, not a no-op
    own = await alice_device.send("again")
    assert (await alice_device.cancel(turn_id=own.turn_id))["cancelled"] == [own.turn_id]


async def test_cancels_sent_together_over_http_and_websockets_each_stop_their_own_turn(make_client):
    """Cancels arriving at once are decided as one set: each caller still gets its own
    answer (a stranger its own error), and every turn ends cancelled on every device."""
    alice, eve = await make_client("alice"), await make_client("eve")
    sessions = [await session_with(alice, **SLOW) for _ in range(6)]
    devices = [await alice.connect(s["id"]) for s in sessions]
    turns = [await device.send(f"t{i}") for i, device in enumerate(devices)]
    for device, turn in zip(devices, turns, strict=True):
        await first_delta(device, turn)

    over_http = [alice.cancel(s["id"], turn_id=t.turn_id) for s, t in zip(sessions[:3], turns[:3], strict=True)]
    over_websockets = [d.cancel(turn_id=t.turn_id) for d, t in zip(devices[3:], turns[3:], strict=True)]
    answers = await asyncio.gather(*over_http, *over_websockets, eve.cancel(sessions[0]["id"]), return_exceptions=True)

    *mine, stranger = answers
    assert [a["cancelled"] if isinstance(a, dict) else a for a in mine] == [[t.turn_id] for t in turns]
    assert isinstance(stranger, ChatClientError) and stranger.code in {"not_found", "forbidden"}
    for device, turn in zip(devices, turns, strict=True):
        assert (await device.wait_turn_end(turn.turn_id))["reason"] == "cancelled"
        assert_clean(device)
