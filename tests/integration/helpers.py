"""Small helpers for the integration tests."""

from __future__ import annotations

from typing import Any

from chat_client import ChatClient, Device
from sessions_app.events.types import validate_event
from sessions_app.worker.providers.demo import demo_tokens

NOTICE = "\n[Response cancelled]"


def expected_answer(prompt: str, tokens: int) -> str:
    return "".join(demo_tokens(prompt, tokens))


async def session_with(owner: ChatClient, *members: ChatClient, **options: Any) -> dict[str, Any]:
    """A session owned by `owner` with `members` invited; options go to modelOptions."""
    policy = options.pop("policy", None)
    session = await owner.create_session(title="test", model_options=options, policy=policy)
    for member in members:
        assert member.client_id
        await member_add(owner, session["id"], member.client_id)
    return session


async def member_add(owner: ChatClient, session_id: str, username: str) -> None:
    await owner.add_member(session_id, username)


def assert_clean(*devices: Device) -> None:
    """Every device saw every event once, in order, each valid against its schema."""
    for device in devices:
        assert device.gaps == [], f"gaps seen by {device.connection_id}: {device.gaps}"
        assert device.duplicates == [], f"duplicates seen by {device.connection_id}: {device.duplicates}"
        for event in device.events:
            validate_event(event)
