"""The HTTP entry of the ASGI application: Django's handler, with the API's requests kept
off a thread of their own.

Django runs each ASGI request in a `ThreadSensitiveContext`, so that the request's sync
steps share one thread; asgiref starts that thread at the request's first sync step, and
Django always has two (the `request_started` receivers and `response.close()`, which sends
`request_finished`). Starting a thread costs this machine ~0.4 ms, most of a trivial API
request. The API's views are async and use the database only on database threads
(`infra/db_threads.db`), so its two sync steps, which only close connections of the
thread they run on, run on the process's shared sync thread instead (decision 024).
Pages and the admin, whose views are sync, keep Django's thread per request.
"""

from __future__ import annotations

from typing import Any

from django.core import signals
from django.core.handlers.asgi import ASGIHandler
from django.db import close_old_connections, reset_queries

API_PREFIX = "/api/"


class HttpHandler(ASGIHandler):
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path", "").startswith(API_PREFIX):
            await self.handle(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def http_application() -> HttpHandler:
    """`django.core.asgi.get_asgi_application()`, with this handler."""
    import django

    django.setup(set_prefix=False)
    run_request_started_on_the_loop()
    return HttpHandler()


async def request_started(**_kwargs: Any) -> None:
    """Django's `request_started` receivers (reset the query log, close connections past
    their age), on the event loop: async, so the signal needs no sync thread. Under ASGI
    they only ever saw a thread with no connection: the request's own, new thread."""
    reset_queries()
    close_old_connections()


def run_request_started_on_the_loop() -> None:
    signals.request_started.disconnect(reset_queries)
    signals.request_started.disconnect(close_old_connections)
    signals.request_started.connect(request_started, dispatch_uid="sessions_app.request_started")
