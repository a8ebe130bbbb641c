"""Who is asking, for the HTTP API: `Authorization: Token <key>` (API clients), or the
Django session cookie with its CSRF token (the browser page). A token or a browser session
the process has checked before costs no database query and, while the process hears every
credential change (web/credentials_watch.py), no Redis read either (web/token_cache.py,
web/session_cache.py); the database is read on a database thread, so a request never waits
for another on Django's one shared sync thread. A known session's writes still need the
CSRF token."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.security import APIKeyCookie, APIKeyHeader
from ninja.utils import check_csrf

from sessions_app.errors import Forbidden, Unauthenticated
from sessions_app.web import session_cache, token_cache


class TokenAuth(APIKeyHeader):
    """`Authorization: Token <key>`, the token `POST /api/auth/token` gives."""

    param_name = "Authorization"

    def _get_key(self, request: HttpRequest) -> str | None:
        # Read where Django keeps it: `request.headers` (Ninja's way) builds a mapping of
        # every header first, for each request.
        value = request.META.get("HTTP_AUTHORIZATION")
        return value if isinstance(value, str) else None

    async def authenticate(self, request: HttpRequest, key: str | None) -> Any:  # type: ignore[override]
        if not key:
            return None
        kind, _, token = key.partition(" ")
        if kind.lower() != "token" or not token.strip():
            raise Unauthenticated("use the header 'Authorization: Token <key>'")
        user = await token_cache.user_for_token(token)
        if user is None:
            raise Unauthenticated("invalid or expired token")
        return user


class SessionAuth(APIKeyCookie):
    """The browser's Django session; unsafe methods need the CSRF token, as in Django."""

    param_name = "sessionid"

    def __init__(self) -> None:
        super().__init__(csrf=False)  # checked below, once the user is known to use it

    async def authenticate(self, request: HttpRequest, key: str | None) -> Any:  # type: ignore[override]
        if not key:
            return None
        user = await session_cache.user_for_session(request, key)
        if user is None:
            return None
        if check_csrf(request) is not None:
            raise Forbidden("CSRF check failed: send the X-CSRFToken header with the csrftoken cookie")
        return user
