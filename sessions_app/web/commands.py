"""The commands a device sends, as the web process runs them, shared by the websocket and
the HTTP API so that both take the same path: sends that arrive together in one process
(over either) are decided and written as one set (decision 014), and so are cancels
(decision 032), on a database thread, never on the event loop or Django's one shared sync
thread. A command that comes alone is a set of one and goes at once."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, TypeVar

from django.contrib.auth.models import AbstractBaseUser

from sessions_app.cancellation.services import CancelCommand, CancelOutcome, turns_cancel_many
from sessions_app.infra.batching import GroupedCall, grouped
from sessions_app.infra.db_threads import Hold, answering_first
from sessions_app.ops import metrics
from sessions_app.schemas import CancelFilter, SendBody
from sessions_app.turns.sending import SendRequest, SendResult, turns_send
from sessions_app.web.answering import after_answer

Outcome = TypeVar("Outcome")

# At most this many sends decided and written as one set. A set costs a fixed part plus
# ~0.5 ms a send, so bigger sets start a burst's turns sooner (100 sends at once: first
# token p99 ~270 ms with sets of 16, ~135 ms with one set; decision 014); the bound keeps
# the first sends of a very long burst from waiting for all of it.
SEND_SET_LIMIT = 128
# The longest a set's events and turn hand-over wait for its HTTP answers to be written
# (decision 033): an answer that never comes (its client gone) holds nothing up for long.
ANSWERS_FIRST_SECONDS = 0.02
# Cancels decided as one set at most (a cancel is cheaper than a send: ~0.15 ms in a set).
CANCEL_SET_LIMIT = 128


@dataclass(eq=False)
class _QueuedSend:
    """A send waiting for its set; `answer_first` for an HTTP send, whose answer goes out
    before the set's events and turn hand-over (decision 033)."""

    request: SendRequest
    answer_first: bool = False
    hold: Hold | None = None

    def answered(self) -> None:
        if self.hold is not None:
            self.hold.release_one()


async def send(*, session_id: Any, user: AbstractBaseUser, body: SendBody, events_first: bool = True) -> SendResult:
    """Start (or queue) a turn; raises the send's error (a ChatError). `events_first`: return
    once the send's events are published (a websocket's ack follows them); else as soon as
    it has committed (an HTTP answer), and the set's events wait for the answer to be
    written (at most ANSWERS_FIRST_SECONDS)."""
    sends = grouped("send", _send_sets)
    queued = _QueuedSend(SendRequest(session_id, user, body))
    if not events_first:
        queued.answer_first = after_answer(queued.answered)
    started = time.perf_counter()
    result, published = await sends.call(queued)
    metrics.SEND_SECONDS.observe(time.perf_counter() - started)
    if events_first:
        await published
    return result


def _send_sets() -> GroupedCall[_QueuedSend, tuple[SendResult, asyncio.Future[None]]]:
    async def run(sends: list[_QueuedSend]) -> list[tuple[SendResult, asyncio.Future[None]] | Exception]:
        answering = [queued for queued in sends if queued.answer_first]
        hold = Hold(len(answering), ANSWERS_FIRST_SECONDS) if answering else None
        for queued in answering:
            queued.hold = hold
        outcomes, published = await answering_first(turns_send, hold)([queued.request for queued in sends])
        return _with_published(outcomes, published)

    return GroupedCall(run, max_batch=SEND_SET_LIMIT)


async def cancel(
    *, session_id: Any, user: AbstractBaseUser, flt: CancelFilter, events_first: bool = True
) -> CancelOutcome:
    """Cancel what the filter matches that the user may cancel (`events_first` as for
    `send`); raises the cancel's error (a ChatError)."""
    cancels = grouped("cancel", _cancel_sets)
    outcome, published = await cancels.call(CancelCommand(session_id, user, flt))
    if events_first:
        await published
    return outcome


def _cancel_sets() -> GroupedCall[CancelCommand, tuple[CancelOutcome, asyncio.Future[None]]]:
    async def run(commands: list[CancelCommand]) -> list[tuple[CancelOutcome, asyncio.Future[None]] | Exception]:
        outcomes, published = await answering_first(turns_cancel_many)(commands)
        return _with_published(outcomes, published)

    return GroupedCall(run, max_batch=CANCEL_SET_LIMIT)


def _with_published(
    outcomes: list[Outcome | Exception], published: asyncio.Future[None]
) -> list[tuple[Outcome, asyncio.Future[None]] | Exception]:
    """Each command's outcome of a set, with the set's `published` (its errors as they are)."""
    return [o if isinstance(o, Exception) else (o, published) for o in outcomes]
