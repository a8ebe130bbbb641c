"""Group commit: many coroutines of one event loop ask for the same kind of work, and one
call does it for every request that arrived while the previous call ran.

Used for the database (a burst of 100 sends or turn starts costs a handful of transactions
instead of 100 competing ones: on SQLite each waits for the one write lock, on PostgreSQL
each pays a commit) and for Redis (every turn's delta batches go out as one pipeline per
round trip: live.py). A request that comes alone goes out at once: no added delay.
Decision 012.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from sessions_app.infra.db_threads import db

Q = TypeVar("Q")
R = TypeVar("R")


class GroupedCall(Generic[Q, R]):
    """`await grouped.call(request)` returns this request's outcome of
    `await run_many(requests)`: one outcome per request, in order; an exception outcome is
    raised to its caller only. At most `max_batch` requests per call (None: no bound)."""

    def __init__(
        self, run_many: Callable[[list[Q]], Awaitable[Sequence[R | Exception]]], max_batch: int | None = 16
    ) -> None:
        self._run_many = run_many
        self._max_batch = max_batch
        self._waiting: list[tuple[Q, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def on_thread(
        cls, run_many: Callable[[list[Q]], Sequence[R | Exception]], max_batch: int = 16
    ) -> GroupedCall[Q, R]:
        """For ORM work: `run_many` runs on a worker thread. Bounded, so that the first
        requests of a long burst are answered (and their turns stream) while later ones still
        queue, rather than all at the end of one batch."""
        return cls(db(run_many), max_batch)

    async def call(self, request: Q) -> R:
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, done))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return await done

    async def _run(self) -> None:
        # Runs while requests wait, then ends: no task outlives the work (or its loop).
        while self._waiting:
            size = len(self._waiting) if self._max_batch is None else self._max_batch
            waiting, self._waiting = self._waiting[:size], self._waiting[size:]
            try:
                outcomes: Sequence[R | Exception] = await self._run_many([request for request, _ in waiting])
            except Exception as exc:
                outcomes = [exc] * len(waiting)
            for (_, done), outcome in zip(waiting, outcomes, strict=True):
                if done.done():  # its caller was cancelled meanwhile
                    continue
                if isinstance(outcome, Exception):
                    done.set_exception(outcome)
                else:
                    done.set_result(outcome)


# Per event loop, forgotten with it (a test or a closed loop leaves nothing behind).
_grouped: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, GroupedCall[Any, Any]]] = (
    weakref.WeakKeyDictionary()
)


def grouped(name: str, make: Callable[[], GroupedCall[Q, R]]) -> GroupedCall[Q, R]:
    """The running event loop's GroupedCall for `name` (made by `make` the first time)."""
    calls = _grouped.setdefault(asyncio.get_running_loop(), {})
    instance = calls.get(name)
    if instance is None:
        instance = calls[name] = make()
    return instance
