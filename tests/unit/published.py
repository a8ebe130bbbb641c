"""What the unit tests of publishing share: a member's session, a send's body, a turn a
worker has claimed, and a subscriber that hears a session's events and the workers' cancel
signals in the order Redis ran the publishes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from django.contrib.auth import get_user_model

from sessions_app.infra import live_state
from sessions_app.models import ChatSession
from sessions_app.schemas import SendBody
from sessions_app.sessions.services import session_create
from sessions_app.turns.running import turns_claim
from sessions_app.turns.sending import SendResult, turn_send


def member_and_session() -> tuple[Any, ChatSession]:
    alice = get_user_model().objects.create_user(username=f"alice-{uuid.uuid4().hex[:6]}", password="x")
    return alice, session_create(owner=alice, title="t")


def send_body(**extra: Any) -> SendBody:
    message = {"id": str(uuid.uuid4()), "role": "user", "parts": [{"type": "text", "text": "hi"}]}
    return SendBody.model_validate({"messages": [message], **extra})


def claimed_turn(member: Any, session: ChatSession) -> SendResult:
    """A turn of the member's that a worker has claimed (a cancel then signals that worker
    rather than ending the turn itself)."""
    sent = turn_send(session_id=session.pk, user=member, body=send_body())
    turns_claim(turn_pks=[sent.turn.pk], worker_id="w")
    return sent


@contextmanager
def events_and_signals(session: ChatSession) -> Iterator[Any]:
    """Subscribed to the session's events and to the workers' cancel channel."""
    pubsub = live_state.sync_redis().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(live_state.Keys.events_channel(str(session.pk)), live_state.Keys.cancel_channel())
    for _ in range(2):
        pubsub.get_message(timeout=5)  # the subscriptions' confirmations
    try:
        yield pubsub
    finally:
        pubsub.close()


def next_heard(pubsub: Any) -> tuple[str, list[str]]:
    """("events", their types) or ("signal", [the session it names]), whichever came next."""
    message = pubsub.get_message(timeout=10)
    assert message is not None, "nothing was published"
    if message["channel"].decode() == live_state.Keys.cancel_channel():
        return "signal", [orjson.loads(message["data"])["session"]]
    return "events", [orjson.loads(frame)["type"] for frame in message["data"].decode().split("\n")]
