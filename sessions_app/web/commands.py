"""The commands a device sends, as the web process runs them, shared by the websocket and
the HTTP API so that both take the same path: sends that arrive together in one process
(over either) are decided and written as one set (decision 014), and so are cancels
(decision 032), on a database thread, never on the event loop or Django's one shared sync
thread. A command that comes alone is a set of one and goes at once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from sessions_app.cancellation.services import CancelCommand, CancelOutcome, turns_cancel_many
from sessions_app.infra.batching import GroupedCall, grouped
from sessions_app.infra.db_threads import answering_first
from sessions_app.ops import metrics
from sessions_app.schemas import CancelFilter, SendBody
from sessions_app.turns.sending import SendRequest, SendResult, turns_send

# At most this many sends decided and written as one set. A set costs a fixed part plus
# ~0.5 ms a send, so bigger sets start a burst's turns sooner (100 sends at once: first
# token p99 ~270 ms with sets of 16, ~135 ms with one set; decision 014); the bound keeps
# the first sends of a very long burst from waiting for all of it.
SEND_SET_LIMIT = 128
# Cancels decided as one set at most (a cancel is cheaper than a send: ~0.15 ms in a set).
CANCEL_SET_LIMIT = 128


async def send(*, session_id: Any, user: AbstractBaseUser, body: SendBody, events_first: bool = True) -> SendResult:
    """Start (or queue) a turn; raises the send's error (a ChatError). `events_first`: return
    once the send's events are published (a websocket's ack follows them); else as soon as
    it has committed (an HTTP answer)."""
    sends = grouped("send", _send_sets)
    started = time.perf_counter()
    result, published = await sends.call(SendRequest(session_id, user, body))
    metrics.SEND_SECONDS.observe(time.perf_counter() - started)
    if events_first:
        await published
    return result


def _send_sets() -> GroupedCall[SendRequest, tuple[SendResult, asyncio.Future[None]]]:
    async def run(requests: list[SendRequest]) -> list[tuple[SendResult, asyncio.Future[None]] | Exception]:
        outcomes, published = await answering_first(turns_send)(requests)
        return [o if isinstance(o, Exception) else (o, published) for o in outcomes]

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
        return [o if isinstance(o, Exception) else (o, published) for o in outcomes]

    return GroupedCall(run, max_batch=CANCEL_SET_LIMIT)
