"""The one place that emits events: after the database commit (services), or straight away
(the worker's streaming path, presence). Events go to Redis (numbered, logged, fanned out:
infra/live_state.py), then to the database archive (archive.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sessions_app.events.archive import archiver
from sessions_app.infra import live_state, publish_order
from sessions_app.infra.db_threads import after_commit, at_answer
from sessions_app.infra.live_state import Event


def now(session_id: str, events: Sequence[Event]) -> list[str]:
    """Publish, then archive in the background (the caller has committed what the events
    describe). Returns the frames as published."""
    return many_now([(session_id, events)])[0]


def many_now(batches: Sequence[tuple[str, Sequence[Event]]]) -> list[list[str]]:
    """`now` for many sessions' batches in one Redis round trip, in order."""
    published = live_state.publish_many(batches)
    for (session_id, events), frames in zip(batches, published, strict=True):
        archiver.add(session_id, events, frames)
    return published


async def now_async(session_id: str, events: Sequence[Event]) -> list[str]:
    """Publish, then archive in the background, from async code."""
    frames = await live_state.publish_async(session_id, events)
    archiver.add(session_id, events, frames)
    return frames


def on_commit(session_id: str, events: Sequence[Event]) -> None:
    """Publish once the surrounding transaction commits; nothing if it rolls back."""
    batch = list(events)
    if batch:
        after_commit(lambda: now(session_id, batch))


def in_commit_order(batches: Sequence[tuple[str, Sequence[Event]]], then: Callable[[], None] | None = None) -> None:
    """Publish `batches` once the surrounding transaction has committed (with the deferred
    work, db_threads.after_commit), after the events of the commands that committed before
    it on the same sessions in this process (infra/publish_order); then run `then`. For a
    command whose events must not be overtaken by a later command's: a send's (a cancel of
    its turn could otherwise reach devices before the turn's `turn.start`)."""
    batches = [(session_id, list(events)) for session_id, events in batches if events]
    ticket = publish_order.take_in_transaction(session_id for session_id, _ in batches)

    def publish() -> None:
        try:
            ticket.wait()
            if batches:
                many_now(batches)
        finally:
            ticket.published()
        if then is not None:
            then()

    after_commit(publish)


def ahead_of_workers(
    batches: Sequence[tuple[str, Sequence[Event]]],
    signals: Sequence[tuple[str, Sequence[int]]] = (),
    then: Callable[[], None] | None = None,
) -> None:
    """Publish `batches` as soon as the surrounding transaction has committed and the
    caller's answer is on its way (db_threads.at_answer: not held back by the answer's
    writing, decision 033), ahead of any later transaction's events; then tell the workers
    to stop `signals`' turns: one Redis pipeline, written without waiting
    (live_state.publish_then_signal). Redis's replies are read, the events archived, and
    `then` run with the deferred work (db_threads.after_commit). For the commands whose
    events another process could otherwise overtake: a worker that stops a turn publishes
    its `turn.end`, and one that ends a turn starts the queued turns, from their own
    transactions (decision 043)."""
    batches = [(session_id, list(events)) for session_id, events in batches]
    ticket = publish_order.take_in_transaction(session_id for session_id, events in batches if events)

    def write() -> None:
        ticket.wait()  # the commands committed before it on its sessions have published
        try:
            read = live_state.publish_then_signal(batches, signals)
        except BaseException:
            ticket.published()
            raise

        def finish() -> None:
            try:
                frames_of = read()  # Redis has run the publishes: the next command's may go
            finally:
                ticket.published()
            for (session_id, events), frames in zip(batches, frames_of, strict=True):
                if events:
                    archiver.add(session_id, events, frames)
            if then is not None:
                then()

        after_commit(finish)

    at_answer(write)
