"""A command whose events another process could overtake publishes them as it commits
(decision 043): a cancel's and an interrupting send's events reach Redis before the signal
that tells a worker to stop the turn (whose `turn.end` would otherwise come first), and a
send that queues a turn publishes before its HTTP answer is written (a worker ending a turn
starts the queued ones). Run as the web process runs them (`answering_first`, an HTTP
send's `Hold`), against the real Redis of the tests; one subscriber hears both channels, in
the order Redis ran the publishes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from django.contrib.auth import get_user_model

from sessions_app.cancellation.services import CancelCommand, CancelOutcome, turns_cancel_many
from sessions_app.infra import live_state
from sessions_app.infra.db_threads import Hold, answering_first, db
from sessions_app.models import ChatSession
from sessions_app.schemas import CancelFilter, SendBody
from sessions_app.sessions.services import session_create
from sessions_app.turns.running import turns_claim
from sessions_app.turns.sending import SendRequest, SendResult, turn_send, turns_send

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio(loop_scope="function"),
    pytest.mark.usefixtures("no_archive"),  # not what these tests look at
]


@pytest.fixture
def streaming() -> tuple[Any, ChatSession, SendResult]:
    """A member, their session, and a turn of theirs a worker has claimed (a cancel then
    signals that worker rather than ending the turn itself)."""
    alice = get_user_model().objects.create_user(username=f"alice-{uuid.uuid4().hex[:6]}", password="x")
    session = session_create(owner=alice, title="t")
    first = turn_send(session_id=session.pk, user=alice, body=body())
    turns_claim(turn_pks=[first.turn.pk], worker_id="w")
    return alice, session, first


@pytest.fixture
def listener(streaming: tuple[Any, ChatSession, SendResult]) -> Iterator[Any]:
    """Subscribed to the session's events and to the workers' cancel channel."""
    _, session, _ = streaming
    pubsub = live_state.sync_redis().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(live_state.Keys.events_channel(str(session.pk)), live_state.Keys.cancel_channel())
    for _ in range(2):
        pubsub.get_message(timeout=5)  # the subscriptions' confirmations
    yield pubsub
    pubsub.close()


def body(**extra: Any) -> SendBody:
    message = {"id": str(uuid.uuid4()), "role": "user", "parts": [{"type": "text", "text": "hi"}]}
    return SendBody.model_validate({"messages": [message], **extra})


def next_heard(pubsub: Any, session: ChatSession) -> tuple[str, list[str]]:
    """("events", their types) or ("signal", the session it names), whichever came next."""
    message = pubsub.get_message(timeout=10)
    assert message is not None, "nothing was published"
    if message["channel"].decode() == live_state.Keys.cancel_channel():
        return "signal", [orjson.loads(message["data"])["session"]]
    return "events", [orjson.loads(frame)["type"] for frame in message["data"].decode().split("\n")]


async def test_a_cancels_event_reaches_redis_before_the_workers_signal(streaming, listener):
    alice, session, first = streaming
    command = CancelCommand(session.pk, alice, CancelFilter(turn_id=first.turn.turn_id))

    [outcome], after = await answering_first(turns_cancel_many)([command])
    await after

    assert isinstance(outcome, CancelOutcome) and outcome.cancelled == [first.turn.turn_id]
    assert next_heard(listener, session) == ("events", ["cancel"])
    assert next_heard(listener, session) == ("signal", [str(session.pk)])


async def test_an_interrupting_sends_events_reach_redis_before_the_signal_and_before_its_answer_is_out(
    streaming, listener
):
    alice, session, _ = streaming
    hold = Hold(1, limit=60)  # as for an HTTP send: the work after the commit waits for its answer
    interrupting = SendRequest(session.pk, alice, body(policy="interrupt"))

    [result], after = await answering_first(turns_send, hold)([interrupting])

    assert isinstance(result, SendResult) and result.turn.status == "queued"
    assert next_heard(listener, session) == ("events", ["cancel", "message", "message", "turn.queued"])
    assert next_heard(listener, session) == ("signal", [str(session.pk)])
    hold.release_one()
    await after


async def test_a_send_that_queues_a_turn_publishes_before_its_answer_is_out(streaming, listener):
    alice, session, _ = streaming
    hold = Hold(1, limit=60)

    [result], after = await answering_first(turns_send, hold)([SendRequest(session.pk, alice, body(policy="queue"))])

    assert isinstance(result, SendResult) and result.turn.status == "queued" and not after.done()
    assert next_heard(listener, session) == ("events", ["message", "message", "turn.queued"])
    hold.release_one()
    await after


async def test_a_lone_cancels_events_and_signal_go_in_that_order_through_the_db_helper_too(streaming, listener):
    """`db` (no answer first) runs the same work in the same order."""
    alice, session, _ = streaming

    await db(turns_cancel_many)([CancelCommand(session.pk, alice, CancelFilter(all=True))])

    assert next_heard(listener, session)[0] == "events"
    assert next_heard(listener, session) == ("signal", [str(session.pk)])
