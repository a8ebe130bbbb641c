"""Reading a channel the way an AI Transport client does, for assertions."""

from __future__ import annotations

import json
from typing import Any

from tests.ably.fake_ably import FakeAbly, FakeAblyThread

PREFIX = "chat:"


def channel_of(session_id: str) -> str:
    return f"{PREFIX}{session_id}"


def transport(message: dict[str, Any]) -> dict[str, str]:
    return dict(message.get("extras", {}).get("ai", {}).get("transport", {}))


def codec(message: dict[str, Any]) -> dict[str, str]:
    return dict(message.get("extras", {}).get("ai", {}).get("codec", {}))


def of_run(messages: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    """The run's own messages (lifecycle and outputs), in channel order."""
    return [m for m in messages if transport(m).get("run-id") == run_id]


def has_run_end(fake: FakeAbly, channel: str, run_id: str) -> bool:
    return any(
        m.name == "ai-run-end" and transport(m.wire()).get("run-id") == run_id for m in fake.channel(channel).messages
    )


def wait_run_end(fake: FakeAblyThread, session_id: str, *run_ids: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Wait until the channel holds the `ai-run-end` of every run; its messages then."""
    channel = channel_of(session_id)
    fake.wait_for(lambda f: all(has_run_end(f, channel, run_id) for run_id in run_ids), timeout)
    return fake.messages(channel)


def streamed_text(messages: list[dict[str, Any]], run_id: str, kind: str = "text") -> str:
    """The run's streamed text of one kind, as a late joiner reads it from history."""
    return "".join(
        str(m.get("data") or "")
        for m in of_run(messages, run_id)
        if m["name"] == "ai-output" and codec(m).get("kind") == kind
    )


def data_of(message: dict[str, Any]) -> Any:
    data = message.get("data")
    return json.loads(str(data)) if message.get("encoding") == "json" else data


class MemberAbly:
    """A member's Ably clients (the official Python SDK), authenticated the way an app does
    it: token requests from our endpoint, exchanged with Ably by the SDK."""

    def __init__(self, client: Any, session_id: str, port: int) -> None:
        from ably import AblyRealtime, AblyRest

        async def token_request(_params: Any) -> Any:
            return await client.request("POST", f"/api/sessions/{session_id}/ably-token")

        self.rest = AblyRest(auth_callback=token_request, endpoint="127.0.0.1", port=port, tls=False)

        async def token(_params: Any) -> Any:
            # The realtime client's own REST calls ignore the port: the REST client asks.
            return await self.rest.auth.request_token()

        self.realtime = AblyRealtime(auth_callback=token, endpoint=f"127.0.0.1:{port}", tls=False)

    async def cancel(self, channel: str, **headers: str) -> None:
        """Publish an `ai-cancel` as the stock client does (headers: run-id, ...)."""
        import uuid

        from ably.types.message import Message

        transport = {"event-id": str(uuid.uuid4()), **{k.replace("_", "-"): v for k, v in headers.items()}}
        await self.realtime.channels.get(channel).publish(
            Message(name="ai-cancel", extras={"ai": {"transport": transport}})
        )

    async def close(self) -> None:
        await self.realtime.close()
        await self.rest.close()
