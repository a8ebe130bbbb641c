"""Two commands on one session publish their events in the order they committed (decision
046): a cancel that commits while a send's events still wait for the send's HTTP answer
(decision 033) publishes after them, so that no device sees a turn end before it started.
Run as the web process runs them (`answering_first`, an HTTP send's `Hold`), against the
tests' real Redis; one subscriber hears the session's events and the workers' signals in
the order Redis ran the publishes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from sessions_app.cancellation.services import CancelCommand, CancelOutcome, turns_cancel_many
from sessions_app.infra.db_threads import Hold, answering_first, db
from sessions_app.models import ChatSession
from sessions_app.schemas import CancelFilter
from sessions_app.turns.running import turns_claim
from sessions_app.turns.sending import SendRequest, SendResult, turns_send
from tests.unit.published import events_and_signals, member_and_session, next_heard, send_body

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio(loop_scope="function"),
    pytest.mark.usefixtures("no_archive"),  # not what these tests look at
]


@pytest.fixture
def chat() -> tuple[Any, ChatSession]:
    return member_and_session()


@pytest.fixture
def listener(chat: tuple[Any, ChatSession]) -> Iterator[Any]:
    with events_and_signals(chat[1]) as pubsub:
        yield pubsub


def heard(pubsub: Any) -> tuple[str, list[str]]:
    """("events", their types) or ("signal", []), whichever came next."""
    kind, what = next_heard(pubsub)
    return kind, [] if kind == "signal" else what


@pytest.mark.parametrize("claimed", [False, True], ids=["no worker yet", "a worker runs it"])
async def test_a_cancel_committed_while_a_sends_events_wait_for_its_answer_publishes_after_them(
    chat, listener, claimed
):
    alice, session = chat
    hold = Hold(1, limit=60)  # the send's HTTP answer, not written yet

    [sent], sent_published = await answering_first(turns_send, hold)([SendRequest(session.pk, alice, send_body())])
    assert isinstance(sent, SendResult)
    if claimed:  # a worker took it (in a real stack only after its `turn.start`: the same rows)
        await db(turns_claim)(turn_pks=[sent.turn.pk], worker_id="w")
    command = CancelCommand(session.pk, alice, CancelFilter(turn_id=sent.turn.turn_id))
    [outcome], cancel_published = await answering_first(turns_cancel_many)([command])
    assert isinstance(outcome, CancelOutcome) and outcome.cancelled == [sent.turn.turn_id]

    # The cancel has committed and answered; its events wait behind the send's.
    assert not cancel_published.done()
    hold.release_one()  # the send's answer is written: its events go, then the cancel's
    await asyncio.gather(sent_published, cancel_published)

    assert heard(listener) == ("events", ["message", "message", "turn.start"])
    if claimed:  # its worker ends it, told after the `cancel`
        assert heard(listener) == ("events", ["cancel"])
        assert heard(listener) == ("signal", [])
    else:  # no worker had it: the cancel ended it
        assert heard(listener) == ("events", ["cancel", "turn.end"])


async def test_a_command_that_rolled_back_holds_no_later_publish_up(chat):
    """Its ticket, taken inside its transaction, is released once its database call ends:
    the next command on the session publishes without waiting for it."""
    from django.db import transaction

    from sessions_app.infra import publish_order

    _, session = chat
    session_id = str(session.pk)

    def rolled_back() -> None:
        with transaction.atomic():
            publish_order.take_in_transaction([session_id])
            raise RuntimeError("the command failed")

    with pytest.raises(RuntimeError):
        await db(rolled_back)()

    waits_for: list[bool] = []

    def next_command() -> None:  # on a thread of its own: a thread never waits for itself
        ticket = publish_order.take([session_id])
        waits_for.extend(earlier.is_set() for earlier in ticket._before)
        ticket.published()

    other = threading.Thread(target=next_command)
    other.start()
    await asyncio.to_thread(other.join)
    assert all(waits_for)
