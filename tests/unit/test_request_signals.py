"""Django's request signals as the web process sends them (sessions_app/web/request_signals.py):
a sync request's thread has its database connections closed when the request is done; on
the event loop's thread, where Django opens none, the look for them is skipped."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from django.db import connection

from sessions_app.web.request_signals import close_request_connections, connections_possible_here


def in_a_thread(fn: Any) -> Any:
    """`fn()` on a thread of its own (as Django runs a page's sync steps), its result."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    thread.join()
    return result[0]


@pytest.mark.django_db(transaction=True)
def test_a_sync_requests_thread_has_its_connection_closed_when_the_request_is_done() -> None:
    def request_then_finished() -> tuple[bool, bool]:
        connection.ensure_connection()
        opened = connection.connection is not None
        close_request_connections()
        return opened, connection.connection is None

    assert in_a_thread(request_then_finished) == (True, True)


def test_the_event_loops_thread_holds_no_connection_to_look_for(monkeypatch: pytest.MonkeyPatch) -> None:
    async def on_the_loop() -> bool:
        return connections_possible_here()

    monkeypatch.delenv("DJANGO_ALLOW_ASYNC_UNSAFE", raising=False)
    assert in_a_thread(connections_possible_here) is True
    assert in_a_thread(lambda: asyncio.run(on_the_loop())) is False
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Django then connects there: look
    assert in_a_thread(lambda: asyncio.run(on_the_loop())) is True
