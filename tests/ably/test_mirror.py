"""The mirror, end to end: real turns on the real stack (Daphne, Celery worker, Redis), the
mirror as its own process, and the local Ably it publishes to through the official SDK."""

from __future__ import annotations

from typing import Any

from tests.ably.fake_ably import FakeAblyThread
from tests.ably.helpers import codec, of_run, streamed_text, transport, wait_run_end
from tests.integration.helpers import expected_answer


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
