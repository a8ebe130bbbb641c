"""Group commit and the pipelined publisher: what arrives while a call is under way goes
out together in the next one, each caller gets its own outcome, and order and numbering
hold (real Redis)."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest

from sessions_app.infra import live_state
from sessions_app.infra.batching import GroupedCall

TIMEOUT = 10  # seconds: a bound on each wait, far above what any of them takes

# `GroupedCall.on_thread` runs its work where ORM work runs: a database thread, which
# checks the connection it holds (if any) before each call.
on_a_database_thread = pytest.mark.django_db


@on_a_database_thread
async def test_requests_arriving_during_a_call_go_together_in_the_next():
    loop = asyncio.get_running_loop()
    calls: list[list[int]] = []
    first_call_entered = asyncio.Event()
    release = threading.Event()

    def run_many(requests: list[int]) -> list[int | Exception]:
        calls.append(list(requests))
        if len(calls) == 1:
            loop.call_soon_threadsafe(first_call_entered.set)
            assert release.wait(TIMEOUT)  # hold the first call while more requests arrive
        return [ValueError(f"bad {r}") if r < 0 else r * 10 for r in requests]

    grouped: GroupedCall[int, int] = GroupedCall.on_thread(run_many, max_batch=3)

    async def queued_call(request: int) -> asyncio.Task[int]:
        """Start `grouped.call(request)` in a task; return once the request is queued."""
        entered = asyncio.Event()

        async def caller() -> int:
            call = grouped.call(request)
            entered.set()
            # `await call` runs grouped.call up to its first await, by which point it has
            # queued the request: a waiter on `entered` resumes only after this step.
            return await call

        task = asyncio.create_task(caller())
        await asyncio.wait_for(entered.wait(), TIMEOUT)
        return task

    first = await queued_call(1)
    await asyncio.wait_for(first_call_entered.wait(), TIMEOUT)  # the first call is under way
    rest = [await queued_call(r) for r in (2, -3, 4, 5)]  # queued, in this order, meanwhile
    assert calls == [[1]]
    release.set()
    assert await asyncio.wait_for(first, TIMEOUT) == 10
    done = await asyncio.wait_for(asyncio.gather(*rest, return_exceptions=True), TIMEOUT)
    assert [done[0], done[2], done[3]] == [20, 40, 50]
    assert isinstance(done[1], ValueError) and str(done[1]) == "bad -3"  # only its own caller sees the error
    assert calls == [[1], [2, -3, 4], [5]]  # grouped, in order, at most max_batch per call


@on_a_database_thread
async def test_a_failing_call_fails_each_of_its_requests_and_the_next_call_runs():
    def run_many(requests: list[int]) -> list[int | Exception]:
        if 0 in requests:
            raise RuntimeError("database down")
        return list(requests)

    grouped: GroupedCall[int, int] = GroupedCall.on_thread(run_many)
    with pytest.raises(RuntimeError):
        await grouped.call(0)
    assert await grouped.call(7) == 7


def new_session() -> str:
    """A session id whose numbering starts at 1, as creating a session starts it."""
    session_id = str(uuid.uuid4())
    live_state.start_numbering_sync(session_id)
    return session_id


async def test_pipelined_batches_keep_each_sessions_numbering_gapless_and_ordered():
    sessions = [new_session() for _ in range(20)]

    async def stream(session_id: str) -> list[str]:
        frames: list[str] = []
        for i in range(10):
            frames += await live_state.publish_async(session_id, [{"type": "x", "n": i}, {"type": "x", "n": i + 100}])
        return frames

    results = await asyncio.gather(*(stream(s) for s in sessions))
    for session_id, frames in zip(sessions, results, strict=True):
        assert [live_state.seq_of(f) for f in frames] == list(range(1, 21))
        assert await live_state.read_log(session_id, 0) == frames  # as sent, as logged


async def test_the_publisher_reloads_its_script_after_redis_forgot_it():
    session_id = new_session()
    await live_state.publish_async(session_id, [{"type": "x"}])
    await live_state.async_redis().script_flush()
    frames = await live_state.publish_async(session_id, [{"type": "y"}, {"type": "z"}])
    assert [live_state.seq_of(f) for f in frames] == [2, 3]


def test_a_set_of_sends_publishes_every_sessions_batch_in_one_pipeline_numbered_in_order():
    first, second = new_session(), new_session()
    live_state.publish(first, [{"type": "x"}])
    live_state.sync_redis().script_flush()  # and after Redis forgot the script
    frames = live_state.publish_many([(first, [{"type": "a"}, {"type": "b"}]), (second, []), (second, [{"type": "c"}])])
    assert [[live_state.seq_of(f) for f in batch] for batch in frames] == [[2, 3], [], [1]]
    assert [f.split('"type":')[1] for f in frames[0]] == ['"a"}', '"b"}']
