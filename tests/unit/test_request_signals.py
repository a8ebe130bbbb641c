"""Django's request signals as the web process sends them (sessions_app/web/request_signals.py):
a sync request's thread has its database connections closed when the request is done; on
the event loop's thread, where Django opens none, the look for them is skipped; caches are
closed where a backend has something to close."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from django.db import connection

from sessions_app.web.request_signals import any_cache_closes, close_request_connections, connections_possible_here
from tests.unit.web_process import lines_printed_by_a_web_process


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


def test_caches_are_closed_after_requests_only_where_a_backend_closes_something(settings: Any) -> None:
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    assert any_cache_closes() is False
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1"},
        "sessions": {"BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache", "LOCATION": "127.0.0.1"},
    }
    assert any_cache_closes() is True


def test_a_web_process_sends_the_request_signals_to_the_receivers_that_skip_the_loop() -> None:
    """In the web process (config.asgi), Django's receivers that close connections are
    replaced by those that skip the event loop's thread; a site's own receiver stays."""
    code = (
        "from django.core import signals\n"
        "def a_sites_receiver(**kwargs): pass\n"
        "signals.request_finished.connect(a_sites_receiver)\n"
        "for signal in (signals.request_started, signals.request_finished):\n"
        "    print(sorted(r().__name__ for _, r, *_ in signal.receivers if r() is not None))\n"
    )
    started, finished = lines_printed_by_a_web_process(code)[-2:]
    assert started == "['request_started']"
    assert (
        finished
        == "['a_sites_receiver', 'close_old_connections_where_possible', 'close_request_connections', 'reset_urlconf']"
    )
