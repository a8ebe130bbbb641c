"""The Invocation endpoint (`POST /api/ably/invocations`) runs only an input the caller
published: another member's input, or one for a session the caller is not in, is refused."""

from __future__ import annotations

from typing import Any

import pytest
from ably.types.message import Message

from chat_client.protocol import ChatClientError
from tests.ably.fake_ably import FakeAblyThread
from tests.ably.helpers import MemberAbly, channel_of


async def test_an_invocation_runs_only_the_callers_own_input(
    ably_client: Any, fake_ably: FakeAblyThread, mirror: Any
) -> None:
    alice, bob, eve = await ably_client("alice"), await ably_client("bob"), await ably_client("eve")
    session = await alice.create_session(title="whose input", model_options={"tokens": 5, "rate": 100})
    await alice.add_member(session["id"], bob.client_id)
    bobs = MemberAbly(bob, session["id"], fake_ably.port)
    transport = {"role": "user", "codec-message-id": "bobs-message", "event-id": "bobs-event", "stream": "false"}
    codec = {"kind": "user-message", "messageId": "bobs-message", "partType": "text"}
    try:
        await bobs.realtime.channels.get(channel_of(session["id"])).publish(
            Message(name="ai-input", data="from bob", extras={"ai": {"transport": transport, "codec": codec}})
        )
        invocation = {"inputEventId": "bobs-event", "sessionName": channel_of(session["id"])}
        with pytest.raises(ChatClientError) as not_hers:
            await alice.request("POST", "/api/ably/invocations", json=invocation)
        assert not_hers.value.code == "forbidden"
        with pytest.raises(ChatClientError) as not_a_member:
            await eve.request("POST", "/api/ably/invocations", json=invocation)
        assert not_a_member.value.code == "forbidden"
        started = await bob.request("POST", "/api/ably/invocations", json=invocation)
        assert started["userMessageId"] == "bobs-message" and started["clientId"] == bob.client_id
        ended = await bob.wait(session["id"], {"turnId": started["turnId"]}, timeout=30)
        assert ended["turns"][0]["reason"] == "complete"
    finally:
        await bobs.close()
