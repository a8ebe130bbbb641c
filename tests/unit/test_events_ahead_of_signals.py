"""A command whose events another process could overtake publishes them as it commits
(decision 043): a cancel's and an interrupting send's events reach Redis before the signal
that tells a worker to stop the turn (whose `turn.end` would otherwise come first), and a
send that queues a turn publishes before its HTTP answer is written (a worker ending a turn
starts the queued ones). Run as the web process runs them (`answering_first`, an HTTP
send's `Hold`), against the real Redis of the tests; one subscriber hears both channels, in
the order Redis ran the publishes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sessions_app.cancellation.services import CancelCommand, CancelOutcome, turns_cancel_many
from sessions_app.infra.db_threads import Hold, answering_first, db
from sessions_app.models import ChatSession
from sessions_app.schemas import CancelFilter
from sessions_app.turns.sending import SendRequest, SendResult, turns_send
from tests.unit.published import claimed_turn, events_and_signals, member_and_session, next_heard, send_body

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio(loop_scope="function"),
    pytest.mark.usefixtures("no_archive"),  # not what these tests look at
]


@pytest.fixture
def streaming() -> tuple[Any, ChatSession, SendResult]:
    """A member, their session, and a turn of theirs a worker has claimed."""
    alice, session = member_and_session()
    return alice, session, claimed_turn(alice, session)


@pytest.fixture
def listener(streaming: tuple[Any, ChatSession, SendResult]) -> Iterator[Any]:
    with events_and_signals(streaming[1]) as pubsub:
        yield pubsub


async def test_a_cancels_event_reaches_redis_before_the_workers_signal(streaming, listener):
    alice, session, first = streaming
    command = CancelCommand(session.pk, alice, CancelFilter(turn_id=first.turn.turn_id))

    [outcome], after = await answering_first(turns_cancel_many)([command])
    await after

    assert isinstance(outcome, CancelOutcome) and outcome.cancelled == [first.turn.turn_id]
    assert next_heard(listener) == ("events", ["cancel"])
    assert next_heard(listener) == ("signal", [str(session.pk)])


async def test_an_interrupting_sends_events_reach_redis_before_the_signal_and_before_its_answer_is_out(
    streaming, listener
):
    alice, session, _ = streaming
    hold = Hold(1, limit=60)  # as for an HTTP send: the work after the commit waits for its answer
    interrupting = SendRequest(session.pk, alice, send_body(policy="interrupt"))

    [result], after = await answering_first(turns_send, hold)([interrupting])

    assert isinstance(result, SendResult) and result.turn.status == "queued"
    assert next_heard(listener) == ("events", ["cancel", "message", "message", "turn.queued"])
    assert next_heard(listener) == ("signal", [str(session.pk)])
    hold.release_one()
    await after


async def test_a_send_that_queues_a_turn_publishes_before_its_answer_is_out(streaming, listener):
    alice, session, _ = streaming
    hold = Hold(1, limit=60)

    [result], after = await answering_first(turns_send, hold)(
        [SendRequest(session.pk, alice, send_body(policy="queue"))]
    )

    assert isinstance(result, SendResult) and result.turn.status == "queued" and not after.done()
    assert next_heard(listener) == ("events", ["message", "message", "turn.queued"])
    hold.release_one()
    await after


async def test_a_lone_cancels_events_and_signal_go_in_that_order_through_the_db_helper_too(streaming, listener):
    """`db` (no answer first) runs the same work in the same order."""
    alice, session, _ = streaming

    await db(turns_cancel_many)([CancelCommand(session.pk, alice, CancelFilter(all=True))])

    assert next_heard(listener)[0] == "events"
    assert next_heard(listener) == ("signal", [str(session.pk)])
