"""Work that waits until an API request's answer is written.

The API's handler (web/http_entry.py) collects, for each request it serves, callbacks that
run once the request's answer has been written to the client, or once the request ended
without one (the client left, the view failed). A send over HTTP uses it so that the work
after its set's commit (publishing the set's events, handing its turns to the workers)
does not compete with the set's answers for the one GIL of the process (decision 033)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar

logger = logging.getLogger(__name__)

_answered: ContextVar[list[Callable[[], None]] | None] = ContextVar("answered", default=None)


class PendingAnswer:
    """For the API's handler: made as a request starts (the request's view runs in a task
    that copies this context, and so registers its callbacks here), `done` once the answer
    is written or the request ended without one."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[], None]] = []
        self._token = _answered.set(self._callbacks)

    def done(self) -> None:
        _answered.reset(self._token)
        for callback in self._callbacks:
            try:
                callback()
            except Exception:
                logger.exception("work after an answer failed")
        self._callbacks.clear()


def after_answer(callback: Callable[[], None]) -> bool:
    """Run `callback` once this request's answer is written; False (and nothing
    registered) outside a request of the API's handler."""
    callbacks = _answered.get()
    if callbacks is None:
        return False
    callbacks.append(callback)
    return True
