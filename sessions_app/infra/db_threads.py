"""ORM calls from async code: on a worker thread, never on the event loop.

`db(fn)` also answers first: what `fn` registers with `after_commit` runs on the same
thread once the awaiting coroutine has its answer. A send's or a cancel's Redis work after
its commit (publishing its events, handing turns to the workers, signalling a worker) takes
~1 to 2 ms; the HTTP answer or websocket ack no longer waits for it (decision 024). The
work itself starts as soon as before, so what devices see is not delayed.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from django.db import close_old_connections, transaction

T = TypeVar("T")

logger = logging.getLogger(__name__)


class _Deferred(threading.local):
    work: list[Callable[[], Any]] | None = None


_deferred = _Deferred()


def after_commit(work: Callable[[], Any]) -> None:
    """`transaction.on_commit(work)`; inside `db()`, `work` runs once the awaiting coroutine
    has been answered (in order, each failure logged). Elsewhere it runs at the commit."""

    def committed() -> None:
        if _deferred.work is None:
            work()
        else:
            _deferred.work.append(work)

    transaction.on_commit(committed)


def db(fn: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """Wrap a sync ORM function for `await db(fn)(...)`.

    Calls run in parallel on the loop's executor instead of queueing behind each other on
    Django's single sync thread (as `sync_to_async(thread_sensitive=False)` would).
    """

    async def call(*args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[T] = loop.create_future()
        context = contextvars.copy_context()
        loop.run_in_executor(None, context.run, _run, loop, answer, fn, args, kwargs)
        return await answer

    return call


def _run(
    loop: asyncio.AbstractEventLoop, answer: asyncio.Future[T], fn: Callable[..., T], args: Any, kwargs: Any
) -> None:
    work: list[Callable[[], Any]] = []
    _deferred.work = work
    try:
        close_old_connections()
        result = fn(*args, **kwargs)
    except BaseException as exc:
        _answer(loop, answer, None, exc)
    else:
        _answer(loop, answer, result, None)
    finally:
        _deferred.work = None
    for item in work:
        try:
            item()
        except Exception:
            logger.exception("work after a commit failed")


def _answer(
    loop: asyncio.AbstractEventLoop, answer: asyncio.Future[Any], result: Any, exc: BaseException | None
) -> None:
    try:
        loop.call_soon_threadsafe(_settle, answer, result, exc)
    except RuntimeError:  # the loop closed meanwhile (shutdown): no one is waiting
        pass


def _settle(answer: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if answer.done():  # its caller was cancelled meanwhile
        return
    if exc is not None:
        answer.set_exception(exc)
    else:
        answer.set_result(result)
