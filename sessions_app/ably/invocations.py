"""A stock AI Transport client driving our server: it publishes its user message on the
session's channel as `ai-input`, then POSTs its `Invocation` (`{inputEventId, sessionName}`)
to the app's agent endpoint, here `POST /api/ably/invocations`. We find that input on the
channel, check that the caller published it, and send it as a turn of the session, under
the input's own ids, so that the run's `input-codec-message-id` is the one the client waits
for. The mirror does not publish that user message again (it is on the channel already).
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from pydantic import ValidationError

from sessions_app.ably.config import ably_config, inputs_on_channel_key, rest_client
from sessions_app.ably.mapping import INPUT
from sessions_app.cancellation.services import client_id_of
from sessions_app.errors import Forbidden, Invalid, NotFound
from sessions_app.infra.db_threads import db
from sessions_app.infra.live_state import async_redis
from sessions_app.schemas import SendBody
from sessions_app.sessions.services import require_member
from sessions_app.turns.sending import turn_send

HISTORY_PAGES = 5  # the input is among the channel's newest messages: it was just published
LOOKUPS = 3  # history may trail a publish by a moment
ON_CHANNEL_SECONDS = 24 * 3600


async def run_invocation(*, user: AbstractBaseUser, input_event_id: str, session_name: str) -> dict[str, Any]:
    config = ably_config()
    if config is None:
        raise NotFound("the Ably channel is not configured on this server")
    session_id = config.session_of(session_name)
    if session_id is None:
        raise NotFound(f"{session_name!r} is not a session's channel")
    await db(require_member)(session_id=session_id, user=user)
    parts = await _find_input(config, session_name, input_event_id)
    publisher = parts[0].client_id
    if publisher != client_id_of(user):
        raise Forbidden("that input was published by another client")
    send = _send_body(parts)
    client = async_redis()
    key = inputs_on_channel_key(session_id)
    await client.sadd(key, send.messages[0].id)
    await client.expire(key, ON_CHANNEL_SECONDS)
    result = await db(turn_send)(session_id=session_id, user=user, body=send)
    turn_id = result.turn.turn_id
    return {**result.as_dict(), "runId": turn_id, "invocationId": turn_id}


async def _find_input(config: Any, channel_name: str, event_id: str) -> list[Any]:
    """The `ai-input` messages of the input event (one per part), oldest first."""
    rest = rest_client(config)
    try:
        channel = rest.channels.get(channel_name)
        for attempt in range(LOOKUPS):
            found = await _search(channel, event_id)
            if found:
                return found
            await asyncio.sleep(0.1 * (attempt + 1))
    finally:
        await rest.close()
    raise NotFound("no ai-input with that inputEventId on the channel")


async def _search(channel: Any, event_id: str) -> list[Any]:
    page = await channel.history(limit=100)
    seen: list[Any] = []
    for _ in range(HISTORY_PAGES):
        seen.extend(m for m in page.items if m.name == INPUT)
        match = next((m for m in seen if _transport(m).get("event-id") == event_id), None)
        if match is not None:
            codec_id = _transport(match).get("codec-message-id")
            same = [m for m in seen if _transport(m).get("codec-message-id") == codec_id]
            return sorted(same, key=lambda m: m.serial or "")
        if not page.has_next():
            break
        page = await page.next()
    return []


def _send_body(parts: list[Any]) -> SendBody:
    headers = _transport(parts[0])
    codec = ((parts[0].extras or {}).get("ai") or {}).get("codec") or {}
    if codec.get("kind") != "user-message":
        raise Invalid("only a user message starts a turn from an Ably client")
    texts = [
        {"type": "text", "text": m.data}
        for m in parts
        if (((m.extras or {}).get("ai") or {}).get("codec") or {}).get("partType") == "text" and isinstance(m.data, str)
    ]
    body = {
        "messages": [{"id": headers.get("codec-message-id"), "role": "user", "parts": texts}],
        "parent": headers.get("parent"),
        "forkOf": headers.get("fork-of"),
    }
    try:
        return SendBody.model_validate({k: v for k, v in body.items() if v is not None})
    except ValidationError as exc:
        raise Invalid(f"the input cannot be sent: {exc.errors()[0]['msg']}") from exc


def _transport(message: Any) -> dict[str, str]:
    headers = ((message.extras or {}).get("ai") or {}).get("transport") or {}
    return headers if isinstance(headers, dict) else {}
