"""The HTTP entry of the ASGI application: Django's handler, with the API's requests kept
off threads altogether.

Django runs each ASGI request in a `ThreadSensitiveContext`, so that the request's sync
steps share one thread; asgiref starts that thread at the request's first sync step, and
Django always has two: the `request_started` receivers and `response.close()`, which sends
`request_finished`. Starting a thread costs this machine ~0.4 ms, and even the process's
shared sync thread costs a hop (~0.3 ms) of a trivial API request's ~1 ms. The API's views
are async and use the database only on database threads (`infra/db_threads.db`), so their
two sync steps, which only reset the query log and close the database connections and
caches of the thread they run on (the event loop's, which holds none), run on the loop:
`request_started` through an async receiver, the response's close inline (decisions 024
and 025).
A receiver a site connects to `request_finished` therefore runs on the event loop after an
API request: it must not block (Django's own do not). Pages and the admin, whose views are
sync, keep Django's thread per request.

An API path, once resolved, is not resolved again: Django's resolver tries every pattern
before the match and, at each level of includes, rebuilds the list of those it tried (for
its 404 page), a fifth to a sixth of a trivial API request's Python. The matches of recent
paths are kept (`_resolved`), sharing their lists; each request gets a copy of its own.

Every method of an API path takes this path, HEAD too: the API answers it as GET
(web/api/app.py), and the body is left out here, as the last step.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
from typing import Any

from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.urls import ResolverMatch, URLResolver, get_resolver, set_script_prefix

from sessions_app.web import answering, request_signals

API_PREFIX = "/api/"


class HttpHandler(ASGIHandler):
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path", "").startswith(API_PREFIX):
            await self.handle_on_loop(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def handle_on_loop(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Django's `handle`, with the response closed on the loop: the view runs until it
        answers or the client disconnects (then it is cancelled, as in Django)."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        if request_signals.only_our_request_started():
            request_signals.started()  # what asend would run, without its gathered tasks
        else:
            await signals.request_started.asend(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        pending_answer = answering.PendingAnswer()
        try:
            if request is not None:
                response = await self._response_unless_disconnected(request, receive)
            if response is not None:
                _as_http_allows(scope["method"], response)
                with contextlib.suppress(asyncio.CancelledError):  # the client left meanwhile
                    await self.send_response(response, send)
        finally:
            pending_answer.done()  # written, or never to be
            body_file.close()
            if response is None:
                await signals.request_finished.asend(sender=self.__class__)
            else:
                response.close()

    def resolve_request(self, request: HttpRequest) -> ResolverMatch:
        """Django's, with the matches of API paths kept: a request with its own urlconf (set
        by a middleware), and the pages, are resolved as Django does."""
        if hasattr(request, "urlconf") or not request.path_info.startswith(API_PREFIX):
            return super().resolve_request(request)  # type: ignore[no-any-return]
        kept = _resolved(get_resolver(), request.path_info)
        match = ResolverMatch.__new__(ResolverMatch)  # a copy (it refuses copy.copy)
        match.__dict__.update(kept.__dict__, kwargs=dict(kept.kwargs))  # a view middleware may change its own
        request.resolver_match = match
        return match

    async def _response_unless_disconnected(self, request: HttpRequest, receive: Any) -> HttpResponseBase | None:
        """The view's response, or None if the client left first (the view is then
        cancelled). Django's `handle` waits on both tasks with `asyncio.wait` and then
        awaits the listener's cancel; here the listener cancels the view when it hears the
        client leave, and is cancelled unawaited once the view answers: ~2% of a trivial
        request's CPU less, the same outcomes."""
        view = asyncio.ensure_future(self.run_get_response(request))
        disconnect = asyncio.ensure_future(self.listen_for_disconnect(receive))
        disconnect.add_done_callback(lambda _: view.cancel())  # nothing once the view is done
        try:
            return await view
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():  # the server is stopping
                raise
            return None  # the client left
        finally:
            if disconnect.done():
                with contextlib.suppress(asyncio.CancelledError, RequestAborted):
                    disconnect.result()
            else:
                disconnect.cancel()


def _as_http_allows(method: str, response: HttpResponseBase) -> None:
    """The answer without what HTTP does not let it carry, whichever server writes it: a
    204 no body and no Content-Length (RFC 9110, 8.6), which Django's CommonMiddleware
    gives every answer; an answer to HEAD GET's headers, its Content-Length included, and
    no body (9.3.2)."""
    if response.status_code == 204:
        del response["Content-Length"]
    elif method == "HEAD" and isinstance(response, HttpResponse):
        if not response.has_header("Content-Length"):
            response["Content-Length"] = str(len(response.content))
        response.content = b""


@functools.lru_cache(maxsize=4096)
def _resolved(resolver: URLResolver, path: str) -> ResolverMatch:
    """A path's match under a resolver (a new urlconf is a new resolver: Django's
    `clear_url_caches`). Paths that match nothing raise Resolver404 and are not kept.

    The lists a match holds (`tried`, the patterns tried before it, and its namespaces) are
    the same for every path of a route, so the kept matches share one of each: a match
    owns ~26 objects the garbage collector walks, 22 of them `tried`'s lists, and 4,096
    kept paths (each session has its own) made every full collection of a web process
    ~30 ms longer."""
    match = resolver.resolve(path)
    if match.tried is not None:
        match.tried = _shared(_patterns_key(match.tried), match.tried)
    match.app_names = _shared(tuple(match.app_names), match.app_names)
    match.namespaces = _shared(tuple(match.namespaces), match.namespaces)
    return match


_SHARED_LIMIT = 1024  # distinct lists: a few per route; more only as urlconfs come and go
_shared_lists: dict[Any, list[Any]] = {}


def _shared(key: Any, value: list[Any]) -> list[Any]:
    """The kept list whose key is `key`, else `value`, kept."""
    kept = _shared_lists.get(key)
    if kept is None:
        if len(_shared_lists) >= _SHARED_LIMIT:
            _shared_lists.clear()
        kept = _shared_lists[key] = value
    return kept


def _patterns_key(tried: list[list[Any]]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A hashable stand-in for `tried`, a list of lists of patterns, compared by identity
    (the kept list holds the patterns, so their ids stay theirs while it is kept). Made by
    C iterations only: a path never resolved before (each session's are new) pays for it,
    and a key built item by item in Python was ~4% of a burst of sends' CPU."""
    return tuple(map(len, tried)), tuple(map(id, itertools.chain.from_iterable(tried)))


def http_application() -> HttpHandler:
    """`django.core.asgi.get_asgi_application()`, with this handler."""
    import django

    django.setup(set_prefix=False)
    request_signals.run_request_signals_on_the_loop()
    # The URLconf loaded now rather than at the first request: what it builds (the API's
    # routes and its schemas, ~10,000 objects) is then part of start-up, which a server
    # process moves out of the garbage collector's walks (interpreter.freeze_start_up_objects).
    get_resolver().url_patterns  # noqa: B018
    return HttpHandler()
