"""The mirror, end to end: real turns on the real stack (Daphne, Celery worker, Redis), the
mirror as its own process, and the local Ably it publishes to through the official SDK."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from tests.ably.fake_ably import FakeAblyThread, Fault
from tests.ably.helpers import channel_of, codec, has_run_end, of_run, streamed_text, transport, wait_run_end
from tests.integration.helpers import expected_answer
from tests.stack import Stack


async def test_a_whole_turn_in_order_with_its_names_and_headers(
    ably_client: Any, fake_ably: FakeAblyThread, mirror: Any
) -> None:
    alice = await ably_client("alice")
    session = await alice.create_session(title="ably", model_options={"tokens": 12, "rate": 200})
    sent = await alice.send(session["id"], "hello ably")
    turn_id, user_id, answer_id = sent["turnId"], sent["userMessageId"], sent["assistantMessageId"]
    await alice.wait(session["id"], {"turnId": turn_id})

    messages = wait_run_end(fake_ably, session["id"], turn_id)
    names = [(m["name"], codec(m).get("kind")) for m in messages]
    assert names == [
        ("ai-input", "user-message"),
        ("ai-run-start", None),
        ("ai-output", "start"),
        ("ai-output", "start-step"),
        ("ai-output", "text"),
        ("ai-output", "finish-step"),
        ("ai-output", "finish"),
        ("ai-run-end", None),
    ]
    user_input = messages[0]
    assert user_input["clientId"] == alice.client_id
    assert user_input["data"] == "hello ably"
    assert transport(user_input) == {
        "role": "user",
        "codec-message-id": user_id,
        "run-client-id": alice.client_id,
        "event-id": user_id,
        "stream": "false",
        "discrete": "true",
    }
    assert codec(user_input) == {"kind": "user-message", "messageId": user_id, "partType": "text"}

    start = transport(messages[1])
    assert start == {
        "run-id": turn_id,
        "run-client-id": alice.client_id,
        "parent": user_id,
        "invocation-id": turn_id,
        "input-client-id": alice.client_id,
        "input-codec-message-id": user_id,
    }
    for output in messages[2:7]:
        headers = transport(output)
        assert headers["role"] == "assistant"
        assert headers["codec-message-id"] == answer_id
        assert headers["run-id"] == turn_id and headers["run-client-id"] == alice.client_id
        assert headers["parent"] == user_id and headers["input-codec-message-id"] == user_id
    assert codec(messages[2]) == {"kind": "start", "messageId": answer_id}

    text = messages[4]
    assert transport(text)["stream"] == "true"
    assert transport(text)["status"] == "complete"
    assert transport(text)["stream-id"] == codec(text)["id"] == f"{answer_id}:0"
    assert text["action"] == 1  # appended to: history gives it as an update, whole
    assert streamed_text(messages, turn_id) == expected_answer("hello ably", 12)
    assert codec(messages[6]) == {"kind": "finish", "finishReason": "stop"}

    end = transport(messages[7])
    assert end["run-reason"] == "complete"
    assert end["run-id"] == turn_id and end["input-codec-message-id"] == user_id
    assert len(of_run(messages, turn_id)) == 7


async def test_concurrent_turns_interleave_on_one_channel_each_in_order(
    ably_client: Any, fake_ably: FakeAblyThread, mirror: Any
) -> None:
    alice, bob = await ably_client("alice"), await ably_client("bob")
    session = await alice.create_session(title="two at once", model_options={"tokens": 30, "rate": 60})
    await alice.add_member(session["id"], bob.client_id)
    first = await alice.send(session["id"], "alice asks")
    second = await bob.send(session["id"], "bob asks too")
    messages = wait_run_end(fake_ably, session["id"], first["turnId"], second["turnId"])

    owners = [transport(m).get("run-id") for m in messages if m["name"] != "ai-input"]
    runs = [r for r in owners if r]
    # The two runs' messages interleave on the channel...
    switches = sum(1 for a, b in itertools.pairwise(runs) if a != b)
    assert switches >= 2, runs
    # ...and each run is whole and in order, under its owner's clientId.
    for sent, client, prompt in ((first, alice, "alice asks"), (second, bob, "bob asks too")):
        own = of_run(messages, sent["turnId"])
        kinds = [(m["name"], codec(m).get("kind")) for m in own]
        assert kinds == [
            ("ai-run-start", None),
            ("ai-output", "start"),
            ("ai-output", "start-step"),
            ("ai-output", "text"),
            ("ai-output", "finish-step"),
            ("ai-output", "finish"),
            ("ai-run-end", None),
        ]
        assert {transport(m)["run-client-id"] for m in own} == {client.client_id}
        assert {transport(m).get("codec-message-id") for m in own if m["name"] == "ai-output"} == {
            sent["assistantMessageId"]
        }
        assert streamed_text(messages, sent["turnId"]) == expected_answer(prompt, 30)
    inputs = [m for m in messages if m["name"] == "ai-input"]
    assert [(m["clientId"], m["data"]) for m in inputs] == [
        (alice.client_id, "alice asks"),
        (bob.client_id, "bob asks too"),
    ]
    nodes = {n["id"]: n for n in (await alice.messages(session["id"]))["results"]}
    for message in inputs:
        node = nodes[transport(message)["codec-message-id"]]
        assert transport(message).get("parent") == node["parent"]  # the tree, as the server keeps it


async def test_appends_are_coalesced_and_the_channel_stays_under_ablys_rate(
    ably_client: Any, fake_ably: FakeAblyThread, mirror: Any
) -> None:
    """Eight answers streaming together at 100 tokens/s each: the worker sends hundreds of
    delta events; the mirror sends a few appends, and Ably's 50 messages/s per channel is
    never crossed (the local Ably answers 429 beyond it, as Ably does)."""
    fake_ably.run(lambda: setattr(fake_ably.fake, "rate_limit", 50))
    alice = await ably_client("alice")
    session = await alice.create_session(title="burst", model_options={"tokens": 100, "rate": 100})
    sent = [await alice.send(session["id"], f"question {i}") for i in range(8)]
    messages = wait_run_end(fake_ably, session["id"], *(s["turnId"] for s in sent), timeout=90)

    channel = f"chat:{session['id']}"
    refused = [r for r in fake_ably.run(lambda: list(fake_ably.fake.requests)) if r[2] == 429 and channel in r[1]]
    assert refused == []
    deltas = [e for e in (await alice.events(session["id"]))["events"] if e["type"] == "delta"]
    appends = [op for op in fake_ably.operations(channel) if op.kind == "append"]
    assert len(deltas) > 2 * len(appends) > 0, (len(deltas), len(appends))
    for i, turn in enumerate(sent):
        assert streamed_text(messages, turn["turnId"]) == expected_answer(f"question {i}", 100)


def has_appended(fake: Any, channel: str) -> bool:
    return any(op.kind == "append" and op.channel == channel for op in fake.operations)


async def eventually(check: Any, timeout: float = 30) -> Any:
    """Re-check `check()` until it holds (bounded): for figures the mirror reports each second."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout}s")
        await asyncio.sleep(0.1)
    return value


async def test_an_outage_and_a_429_spell_mid_turn_leave_the_turn_alone_and_the_channel_whole(
    ably_client: Any, fake_ably: FakeAblyThread, mirror: Any
) -> None:
    alice = await ably_client("alice")
    session = await alice.create_session(title="outage", model_options={"tokens": 60, "rate": 30})
    channel = channel_of(session["id"])
    before = mirror.stats()
    sent = await alice.send(session["id"], "through the storm")
    fake_ably.wait_for(lambda f: has_appended(f, channel))  # the answer is streaming on Ably

    spell = fake_ably.add_fault(Fault("rate_limited", remaining=4, channel=channel))
    fake_ably.wait_for(lambda f: spell.hits == 4)
    outage = fake_ably.add_fault(Fault("unavailable", channel=channel))
    fake_ably.wait_for(lambda f: outage.hits >= 1)

    # The turn goes on and ends as if nothing happened...
    ended = await alice.wait(session["id"], {"turnId": sent["turnId"]}, timeout=30)
    assert ended["turns"] == [{"turnId": sent["turnId"], "status": "complete", "reason": "complete"}]
    turn = await alice.turn(session["id"], sent["turnId"])
    assert turn["content"] == expected_answer("through the storm", 60)
    # ...while Ably had none of its end.
    assert not fake_ably.run(lambda: has_run_end(fake_ably.fake, channel, sent["turnId"]))

    fake_ably.clear_faults()
    messages = wait_run_end(fake_ably, session["id"], sent["turnId"])
    assert streamed_text(messages, sent["turnId"]) == expected_answer("through the storm", 60)
    assert [m["name"] for m in of_run(messages, sent["turnId"])] == ["ai-run-start", *["ai-output"] * 5, "ai-run-end"]
    after = await eventually(lambda: (s := mirror.stats())["unavailable"] > before["unavailable"] and s)
    assert after["rate_limited"] >= before["rate_limited"] + 4
    assert after["retries"] > before["retries"]


async def test_a_retried_request_publishes_each_message_once_and_no_text_twice(
    ably_client: Any, fake_ably: FakeAblyThread, mirror: Any
) -> None:
    """Every other write is applied by Ably but its answer lost: the mirror sends it again.
    Creates carry stable ids (Ably drops the copy); an append is never sent twice (the
    stream is set whole instead)."""
    alice = await ably_client("alice")
    session = await alice.create_session(title="lost answers", model_options={"tokens": 30, "rate": 60})
    channel = channel_of(session["id"])
    lossy = fake_ably.add_fault(Fault("drop_after_apply", remaining=4, every=2, channel=channel))
    sent = await alice.send(session["id"], "say it once")
    messages = wait_run_end(fake_ably, session["id"], sent["turnId"])

    assert lossy.hits == 4
    operations = fake_ably.operations(channel)
    assert any(op.duplicate for op in operations)  # a create sent again, dropped by its id
    assert any(op.kind == "update" for op in operations)  # an append whose answer was lost
    ids = [m["id"] for m in messages]
    assert len(ids) == len(set(ids)) == 8
    assert streamed_text(messages, sent["turnId"]) == expected_answer("say it once", 30)
    assert [m["name"] for m in messages] == ["ai-input", "ai-run-start", *["ai-output"] * 5, "ai-run-end"]


async def test_answers_whose_deltas_left_the_log_are_rewritten_whole(
    ably_client: Any, fake_ably: FakeAblyThread, mirror: Any, ably_stack: Stack, orm: Any
) -> None:
    """The mirror is down while a turn streams and ends, and the session's log loses what it
    had not read (trimmed). Back, it reads the archive (no deltas there) and rewrites the
    answer whole from its saved parts, as an update of the message it had started."""
    from sessions_app.models import EventRecord

    alice = await ably_client("alice")
    session = await alice.create_session(title="gap", model_options={"tokens": 40, "rate": 40})
    channel = channel_of(session["id"])
    before = mirror.stats()
    sent = await alice.send(session["id"], "mind the gap")
    fake_ably.wait_for(lambda f: has_appended(f, channel))
    mirror.stop()
    try:
        await alice.wait(session["id"], {"turnId": sent["turnId"]}, timeout=30)
        await eventually(
            lambda: orm(lambda: EventRecord.objects.filter(session_id=session["id"], type="turn.end").exists())
        )
        ably_stack.redis.xtrim(f"{ably_stack.key_prefix}:{{{session['id']}}}:log", maxlen=0)
    finally:
        mirror.start()
    messages = wait_run_end(fake_ably, session["id"], sent["turnId"])
    assert streamed_text(messages, sent["turnId"]) == expected_answer("mind the gap", 40)
    text = next(m for m in of_run(messages, sent["turnId"]) if codec(m).get("kind") == "text")
    assert transport(text)["status"] == "complete"
    assert any(op.kind == "update" and op.serial == text["serial"] for op in fake_ably.operations(channel))
    after = await eventually(lambda: (s := mirror.stats())["answers_rewritten"] > before["answers_rewritten"] and s)
    assert after["gaps"] > before["gaps"]


async def test_the_mirrors_figures_are_for_staff(
    ably_client: Any, ably_stack: Stack, create_user: Any, fake_ably: FakeAblyThread, mirror: Any
) -> None:
    from chat_client import ChatClient
    from chat_client.protocol import ChatClientError
    from tests.conftest import PASSWORD

    member = await ably_client("member")
    session = await member.create_session(title="figures", model_options={"tokens": 3, "rate": 100})
    sent = await member.send(session["id"], "count me")
    wait_run_end(fake_ably, session["id"], sent["turnId"])
    await eventually(lambda: mirror.stats()["messages_published"] > 0)
    with pytest.raises(ChatClientError) as refused:
        await member.request("GET", "/api/ably/stats")
    assert refused.value.code == "forbidden"
    staff = await ChatClient.login(ably_stack.base_url, create_user("operator", staff=True), PASSWORD)
    try:
        figures = await staff.request("GET", "/api/ably/stats")
    finally:
        await staff.aclose()
    assert figures["messages_published"] >= 8  # at least this test's turn
    assert figures["seconds_since_report"] is not None and figures["seconds_since_report"] < 30
    assert {"gaps", "answers_rewritten", "rate_limited", "cancels_ignored", "events_behind"} <= set(figures)
