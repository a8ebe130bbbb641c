"""Django's request signals as an API request served on the event loop sends them.

Django's own receivers of `request_started` and `request_finished` reset the query log and
close the database connections (and caches) of the thread the request ran on. An API
request runs on the event loop's thread, where Django opens no database connection (it
raises SynchronousOnlyOperation: the API's queries run on database threads,
`infra/db_threads`), so there those receivers only ever look and find nothing, yet the
look (asgiref's per-context storage, asked for each database alias, answering "none" with
an exception) was ~8% of Daphne's CPU for a burst of sends and ~12% of a trivial GET's
(decision 034). In a web process (`run_request_signals_on_the_loop`), the receivers of
both signals that close connections skip the look on the event loop's thread, unless
DJANGO_ALLOW_ASYNC_UNSAFE lets Django connect there (as the test suite does), and Django's
`close_caches` is not connected where no configured cache backend has anything to close.
Sync requests (pages, the admin) run in threads, where each receiver runs as in Django; a
site's own receivers run as they always do.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from django.conf import settings
from django.core import signals
from django.core.cache import close_caches
from django.core.cache.backends.base import BaseCache
from django.db import close_old_connections, connections, reset_queries
from django.utils.module_loading import import_string

REQUEST_STARTED_UID = "sessions_app.request_started"
CLOSE_REQUEST_CONNECTIONS_UID = "sessions_app.close_request_connections"
CLOSE_OLD_CONNECTIONS_UID = "sessions_app.close_old_connections"


def connections_possible_here() -> bool:
    """False on a thread running an event loop, where Django refuses to open a database
    connection (unless DJANGO_ALLOW_ASYNC_UNSAFE, Django's own switch, is set)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return bool(os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE"))


def started() -> None:
    """Django's `request_started` receivers (reset the query log, close connections past
    their age), where this thread can hold a connection."""
    if connections_possible_here():
        reset_queries()
        close_old_connections()


async def request_started(**_kwargs: Any) -> None:
    """`started` as an async receiver, so that the signal needs no sync thread."""
    started()


def only_our_request_started() -> bool:
    """Whether `request_started` has no receiver but ours: then an API request calls it in
    place (`asend` gathers its receivers as tasks, a tenth of a trivial request's Python)."""
    receivers = signals.request_started.receivers
    return len(receivers) == 1 and receivers[0][0][0] == REQUEST_STARTED_UID  # ((uid, sender), ...)


def run_request_signals_on_the_loop() -> None:
    """In a web process: `request_started` through `request_started` above, Django's two
    receivers of it disconnected (a request's sync steps run in threads of their own, new
    for the request, whose connections are `close_request_connections`'s to close); and
    `request_finished`'s Django receivers that close connections and caches in the forms
    above. (Django's test client disconnects `close_old_connections` around its requests,
    so this is for the server's process only.)"""
    signals.request_started.disconnect(reset_queries)
    signals.request_started.disconnect(close_old_connections)
    signals.request_started.connect(request_started, dispatch_uid=REQUEST_STARTED_UID)
    signals.request_finished.disconnect(close_old_connections)
    signals.request_finished.connect(close_old_connections_where_possible, dispatch_uid=CLOSE_OLD_CONNECTIONS_UID)
    if not any_cache_closes():
        signals.request_finished.disconnect(close_caches)


def close_old_connections_where_possible(**_kwargs: Any) -> None:
    """Django's `close_old_connections`, where this thread can hold a connection."""
    if connections_possible_here():
        close_old_connections()


def any_cache_closes() -> bool:
    """Whether a configured cache backend has a `close` of its own (memcached's); Django's
    others, and a backend that does not override it, close nothing."""
    return any(import_string(cache["BACKEND"]).close is not BaseCache.close for cache in settings.CACHES.values())


def close_request_connections(**_kwargs: Any) -> None:
    """Under ASGI each sync request runs in a thread of its own, which a persistent
    connection would outlive: a burst of requests would hold one database connection each
    (beyond PostgreSQL's 100 by default). Close the request thread's connections when its
    request is done; the fixed thread sets (websocket commands, the worker's engine) keep
    theirs. An API request's thread, the event loop's, holds none."""
    if connections_possible_here():
        connections.close_all()


def connect_request_finished() -> None:
    signals.request_finished.connect(close_request_connections, dispatch_uid=CLOSE_REQUEST_CONNECTIONS_UID)
