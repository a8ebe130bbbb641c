"""ORM calls from async code: on a worker thread, never on the event loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

T = TypeVar("T")


def db(fn: Callable[..., T]) -> Callable[..., Any]:
    """Wrap a sync ORM function for `await db(fn)(...)`.

    thread_sensitive=False: calls run in parallel on the loop's executor instead of
    queueing behind each other on Django's single sync thread.
    """

    def call(*args: Any, **kwargs: Any) -> T:
        close_old_connections()
        return fn(*args, **kwargs)

    return sync_to_async(call, thread_sensitive=False)
