"""Django's standard middleware, run on the event loop.

Under ASGI, `MiddlewareMixin.__acall__` runs every `process_request` and `process_response`
through `sync_to_async(thread_sensitive=True)`: two hops per middleware per request to the
one thread a Daphne process has for sync code, where concurrent requests queue behind each
other (with seven middleware, ~15 hops a request; decision 024). The hooks of the classes
below do no blocking I/O (headers, cookies, lazy objects), so they run inline; the one hook
that can write to the database, the session's save, goes to a database thread instead.
Each class is the stock one otherwise, and behaves the same under WSGI and the test client.
"""

from __future__ import annotations

import functools
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.messages.storage import default_storage
from django.contrib.sessions import middleware as sessions
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.middleware import clickjacking, common, csrf, security
from django.utils.functional import SimpleLazyObject, empty


class InlineHooks:
    """Run `process_request` and `process_response` on the event loop (no blocking I/O)."""

    get_response: Any

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.process_request(request) if hasattr(self, "process_request") else None
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            response = self.process_response(request, response)
        return response  # type: ignore[no-any-return]


class SecurityMiddleware(InlineHooks, security.SecurityMiddleware):
    pass


class CommonMiddleware(InlineHooks, common.CommonMiddleware):
    pass


class CsrfViewMiddleware(InlineHooks, csrf.CsrfViewMiddleware):
    async def process_view(  # type: ignore[override]
        self, request: HttpRequest, callback: Any, callback_args: Any, callback_kwargs: Any
    ) -> HttpResponseBase | None:
        """Compares the token with the cookie (the body is in memory under ASGI)."""
        return super().process_view(request, callback, callback_args, callback_kwargs)


class AuthenticationMiddleware(InlineHooks, auth.AuthenticationMiddleware):
    pass


class MessageMiddleware(InlineHooks, messages.MessageMiddleware):
    """The request's message storage made when it is first used: making it (a cookie signer
    from the settings, a session store and a cookie store) was ~3% of every API request,
    which never shows a message. A request that never used it has nothing to store."""

    def process_request(self, request: HttpRequest) -> None:
        request._messages = SimpleLazyObject(functools.partial(default_storage, request))  # type: ignore[attr-defined]

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        storage = getattr(request, "_messages", None)
        if isinstance(storage, SimpleLazyObject) and storage._wrapped is empty:
            return response
        return super().process_response(request, response)


class XFrameOptionsMiddleware(InlineHooks, clickjacking.XFrameOptionsMiddleware):
    pass


class SessionMiddleware(sessions.SessionMiddleware):
    """Loading a session is lazy; saving one writes to the database, on a database thread
    (never on the loop, never queued on the shared sync thread)."""

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        self.process_request(request)
        response = await self.get_response(request)  # type: ignore[misc]  # async in this mode
        session = request.session
        if session.accessed and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST):
            return await sync_to_async(self.process_response, thread_sensitive=False)(request, response)  # type: ignore[no-any-return]
        return self.process_response(request, response)
