"""Group commit: many coroutines of one event loop ask for the same kind of database work,
and one call on a worker thread does it for every request that arrived while the previous
call ran.

A burst of 100 sends or turn starts then costs a handful of transactions instead of 100
competing ones (on SQLite each waits for the one write lock; on PostgreSQL each pays a
commit). A request that comes alone goes out at once: no added delay. Decision 012.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from sessions_app.dbasync import db

Q = TypeVar("Q")
R = TypeVar("R")


class GroupedCall(Generic[Q, R]):
    """`await grouped.call(request)` returns this request's outcome of
    `run_many(requests)`: one outcome per request, in order; an exception outcome is raised
    to its caller only."""

    def __init__(self, run_many: Callable[[list[Q]], Sequence[R | Exception]], max_batch: int = 16) -> None:
        self._run_many = db(run_many)
        # Bounded so that the first requests of a long burst are answered (and their turns
        # stream) while later ones still queue, rather than all at the end of one batch.
        self._max_batch = max_batch
        self._waiting: list[tuple[Q, asyncio.Future[R]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def call(self, request: Q) -> R:
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, done))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        self._wake.set()
        return await done

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            waiting, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch :]
            if not self._waiting:
                self._wake.clear()
            if not waiting:
                continue
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


_grouped: dict[tuple[int, str], GroupedCall[Any, Any]] = {}


def grouped(name: str, run_many: Callable[[list[Q]], Sequence[R | Exception]]) -> GroupedCall[Q, R]:
    """The running event loop's GroupedCall for `name` (made with `run_many` the first time)."""
    key = (id(asyncio.get_running_loop()), name)
    instance = _grouped.get(key)
    if instance is None:
        instance = _grouped[key] = GroupedCall(run_many)
    return instance
