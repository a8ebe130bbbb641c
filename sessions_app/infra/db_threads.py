"""ORM calls from async code: on a worker thread, never on the event loop.

`db(fn)` answers once `fn` and the work it registered to run after its commit are done (as
with `transaction.on_commit`, a failure of that work is the caller's).

`answering_first(fn)` answers as soon as `fn` returns, with a future that the work `fn`
registered with `after_commit` settles when done: that work runs next, on the same thread,
in order, each failure logged. A send's or a cancel's Redis work after its commit
(publishing its events, handing its turns to the workers, signalling a worker: ~1 to 2 ms)
then does not hold up an HTTP answer; the work starts as soon as before, so devices see
nothing later. A websocket ack still waits for it, so that a device has the events of its
own command when the ack comes (decision 025). A set of HTTP sends holds that work until
its answers are written (`Hold`, decision 033), so that the two do not compete.

`at_answer(work)` runs once the transaction has committed and `fn`'s answer is on its way to
the loop, before any deferred work and never held: the events and the workers' signals that
must reach Redis before anything a worker does next (decisions 038 and 043) go out then,
without the answer waiting for them. Outside `answering_first` it runs at the commit.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from django.db import close_old_connections, transaction

from sessions_app.infra import publish_order

T = TypeVar("T")

logger = logging.getLogger(__name__)


class _Deferred(threading.local):
    work: list[Callable[[], Any]] | None = None
    at_answer: list[Callable[[], Any]] | None = None


_deferred = _Deferred()


def after_commit(work: Callable[[], Any]) -> None:
    """`transaction.on_commit(work)`; inside `answering_first(fn)`, `work` runs once `fn`
    has answered (in order, each failure logged)."""

    def committed() -> None:
        if _deferred.work is None:
            work()
        else:
            _deferred.work.append(work)

    transaction.on_commit(committed)


def at_answer(work: Callable[[], Any]) -> None:
    """`transaction.on_commit(work)`, a failure logged; inside `answering_first(fn)`, `work`
    runs right after `fn`'s answer is handed to the loop, ahead of the deferred work and of
    any `Hold`. Work it registers with `after_commit` is deferred as usual."""

    def committed() -> None:
        if _deferred.at_answer is None:
            work()
        else:
            _deferred.at_answer.append(work)

    transaction.on_commit(committed, robust=True)


def db(fn: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """Wrap a sync ORM function for `await db(fn)(...)`.

    Calls run in parallel on the loop's executor instead of queueing behind each other on
    Django's single sync thread (as `sync_to_async(thread_sensitive=False)` would).
    """

    async def call(*args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[T] = loop.create_future()
        context = contextvars.copy_context()
        loop.run_in_executor(None, context.run, _run, loop, answer, None, fn, args, kwargs)
        return await answer

    return call


class Hold:
    """What the work after a commit may wait for once `answering_first` has answered:
    `count` releases (each from the loop, as an answer is written), or `limit` seconds,
    whichever comes first."""

    def __init__(self, count: int, limit: float) -> None:
        self._left = count
        self._limit = limit
        self._lock = threading.Lock()
        self._released = threading.Event()
        if count <= 0:
            self._released.set()

    def release_one(self) -> None:
        with self._lock:
            self._left -= 1
            if self._left <= 0:
                self._released.set()

    def wait(self) -> None:
        self._released.wait(self._limit)


def answering_first(
    fn: Callable[..., T], hold: Hold | None = None
) -> Callable[..., Awaitable[tuple[T, asyncio.Future[None]]]]:
    """`db(fn)`, answering `(result, after)` as soon as `fn` returns: `after` is settled
    (never with an error) once the work `fn` registered with `after_commit` has run. With
    a `hold`, that work waits for it first (the answers it lets out)."""

    async def call(*args: Any, **kwargs: Any) -> tuple[T, asyncio.Future[None]]:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[T] = loop.create_future()
        after: asyncio.Future[None] = loop.create_future()
        context = contextvars.copy_context()
        loop.run_in_executor(None, context.run, _run, loop, answer, after, fn, args, kwargs, hold)
        return await answer, after

    return call


def _run(
    loop: asyncio.AbstractEventLoop,
    answer: asyncio.Future[T],
    after: asyncio.Future[None] | None,
    fn: Callable[..., T],
    args: Any,
    kwargs: Any,
    hold: Hold | None = None,
) -> None:
    """Run `fn` on this thread; answer; then, if `after` is given, the deferred work (once
    `hold` lets it)."""
    work: list[Callable[[], Any]] = []
    answered: list[Callable[[], Any]] = []
    _deferred.work = work if after is not None else None
    _deferred.at_answer = answered if after is not None else None
    try:
        close_old_connections()
        result = fn(*args, **kwargs)
    except BaseException as exc:
        _settle_soon(loop, answer, None, exc)
    else:
        _settle_soon(loop, answer, result, None)
        _run_each(answered)  # its own after_commit work is still deferred
    finally:
        _deferred.work = _deferred.at_answer = None
    if after is None:
        publish_order.release_uncommitted()
        return
    if hold is not None and work:
        hold.wait()
    _run_each(work)
    publish_order.release_uncommitted()  # a command's transaction that rolled back publishes nothing
    _settle_soon(loop, after, None, None)


def _run_each(work: list[Callable[[], Any]]) -> None:
    for item in work:
        try:
            item()
        except Exception:
            logger.exception("work after a commit failed")


def _settle_soon(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any, exc: BaseException | None
) -> None:
    try:
        loop.call_soon_threadsafe(_settle, future, result, exc)
    except RuntimeError:  # the loop closed meanwhile (shutdown): no one is waiting
        pass


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # its caller was cancelled meanwhile
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
