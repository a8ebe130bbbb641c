"""A cancel that ends a turn no worker had picked up yet frees its place: the turn queued
behind it starts in the same step. Run as the web process runs a cancel (`answering_first`),
against the real Redis of the tests: devices hear the cancel, the ended turn's `turn.end`
and the started turn's `turn.start`, in that order, and only then is the started turn
handed to the workers (a worker's first delta can never come before its `turn.start`)."""

from __future__ import annotations

from typing import Any

import pytest

from sessions_app.cancellation.services import CancelCommand, CancelOutcome, turns_cancel_many
from sessions_app.infra.db_threads import answering_first, db
from sessions_app.models import ChatSession, Turn
from sessions_app.schemas import CancelFilter
from sessions_app.turns import announce
from sessions_app.turns.sending import SendResult, turn_send
from tests.unit.published import events_and_signals, member_and_session, next_heard, send_body

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio(loop_scope="function"),
    pytest.mark.usefixtures("no_archive"),
]


@pytest.fixture
def queued_behind_unclaimed() -> tuple[Any, ChatSession, SendResult, SendResult]:
    """A member's session with an active turn no worker has claimed yet (all busy) and a
    turn queued behind it."""
    alice, session = member_and_session()
    first = turn_send(session_id=session.pk, user=alice, body=send_body())
    waiting = turn_send(session_id=session.pk, user=alice, body=send_body(policy="queue"))
    return alice, session, first, waiting


async def test_the_turn_queued_behind_a_cancelled_unclaimed_turn_starts_then_goes_to_a_worker(
    queued_behind_unclaimed,
):
    alice, session, first, waiting = queued_behind_unclaimed
    handed: list[tuple[list[int], tuple[str, list[str]]]] = []
    with events_and_signals(session) as listener:

        def to_workers(sender: Any, turn_pks: list[int], **kwargs: Any) -> None:
            handed.append((turn_pks, next_heard(listener)))  # what devices had heard by then

        announce.turns_ready.connect(to_workers, weak=False)
        try:
            command = CancelCommand(session.pk, alice, CancelFilter(turn_id=first.turn.turn_id))
            [outcome], after = await answering_first(turns_cancel_many)([command])
            await after
        finally:
            announce.turns_ready.disconnect(to_workers)

    assert isinstance(outcome, CancelOutcome) and outcome.cancelled == [first.turn.turn_id]
    statuses = await db(lambda: dict(Turn.objects.filter(session=session).values_list("pk", "status")))()
    assert statuses == {first.turn.pk: "cancelled", waiting.turn.pk: "active"}
    assert handed == [([waiting.turn.pk], ("events", ["cancel", "turn.end", "turn.start"]))]
