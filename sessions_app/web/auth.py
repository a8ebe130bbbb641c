"""Websocket authentication and the handshake's Origin check (docs/security.md).

Credentials, the first present wins: `Authorization: Token <key>` (scripts); `?ticket=<one-use
ticket>` (POST /api/auth/ws-ticket: for clients that cannot set headers); `?token=<key>`
(only where SESSIONS_APP["ALLOW_QUERY_TOKEN"]: a URL ends up in access logs); otherwise the
Django session of a browser. A credential that does not check out leaves the connection
anonymous (closed with 4401), never falls back to another. What opened each websocket is
recorded (`Credential`), for web/open_sockets.py to close it when that credential ends.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

from channels import sessions
from channels.auth import AuthMiddleware
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.http.request import split_domain_port, validate_host
from knox.crypto import hash_token

from sessions_app.conf import app_settings
from sessions_app.web import token_cache, tokens
from sessions_app.web.open_sockets import Credential

logger = logging.getLogger(__name__)

CHECK_SECONDS = 0.5  # how often a loop's open websockets look for a credentials change
MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"


@database_sync_to_async
def _active_user(pk: Any) -> Any:
    user = get_user_model().objects.filter(pk=pk, is_active=True).first()
    return user or AnonymousUser()


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _query(scope: dict[str, Any]) -> dict[str, list[str]]:
    return parse_qs(scope.get("query_string", b"").decode("latin-1"))


def _token_from(scope: dict[str, Any]) -> str | None:
    kind, _, key = (_header(scope, b"authorization") or "").partition(" ")
    if kind.lower() == "token" and key.strip():
        return key.strip()
    if app_settings.ALLOW_QUERY_TOKEN:
        return _query(scope).get("token", [None])[0]
    return None


class GenerationFirstMiddleware(BaseMiddleware):
    """Reads the credentials generation before any credential is (a free read while the
    watch has heard nothing): a change that lands while the handshake checks them then shows
    as a different generation, and the websocket is checked again (`OpenSockets`)."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket":
            scope = {**scope, "credentials_generation": await token_cache.current_generation()}
        return await super().__call__(scope, receive, send)


class TokenAuthMiddleware(BaseMiddleware):
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        key = _token_from(scope)
        ticket = _query(scope).get("ticket", [None])[0]
        generation = scope.get("credentials_generation")
        credential: Credential | None = None
        if key is not None:
            found = await token_cache.user_and_expiry(key)
            user: Any = AnonymousUser() if found is None else found[0]
            if found is not None:
                credential = Credential("token", user.pk, generation, digest=hash_token(key.strip()), expiry=found[1])
            scope = {**scope, "user": user, "token_auth": True}
        elif ticket is not None:
            redeemed = await tokens.ticket_redeem(ticket)
            user = AnonymousUser() if redeemed is None else await _active_user(redeemed[0])
            if redeemed is not None and user.is_authenticated:
                credential = Credential("ticket", user.pk, generation, revocations=redeemed[1])
            scope = {**scope, "user": user, "token_auth": True}
        else:
            user, session = scope.get("user"), scope.get("session")
            session_key = getattr(session, "session_key", None) if session is not None else None
            if user is not None and user.is_authenticated and session_key:
                credential = Credential("session", user.pk, generation, session_key=session_key)
        return await super().__call__({**scope, "credential": credential}, receive, send)


class ConsumerSessionMiddleware(sessions.SessionMiddleware):
    """Channels' session middleware (the browser's Django session in the scope), without its
    look at the session on every message a websocket sends. Channels saves a modified
    session, and sets its cookie, only on an HTTP response's start, which a websocket never
    sends; its wrapper still read the session's state for every frame (~3% of a web
    process's CPU while it streams to many devices). A websocket's messages go straight
    out; a consumer that changes the session saves it itself, as under Channels."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        wrapper = sessions.InstanceSessionWrapper(scope, send)
        await wrapper.resolve_session()
        return await self.inner(wrapper.scope, receive, send if scope["type"] == "websocket" else wrapper.send)


def TokenAuthMiddlewareStack(inner: Any) -> Any:
    """Session auth (browsers) wrapped by token and ticket auth (scripts); those win.
    Channels' `AuthMiddlewareStack` with the session middleware above, after a read of the
    credentials generation. The scope's "credential" says what opened the websocket."""
    return GenerationFirstMiddleware(
        sessions.CookieMiddleware(ConsumerSessionMiddleware(AuthMiddleware(TokenAuthMiddleware(inner))))
    )


# --- Origin ------------------------------------------------------------------------------


def _allowed_hosts() -> list[str]:
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]  # as Django does for HTTP
    return allowed


def _secure(scope: dict[str, Any]) -> bool:
    """Whether the browser reached us over TLS: wss, or behind a proxy that says so, where
    the settings trust it to (SECURE_PROXY_SSL_HEADER, as Django's request.is_secure())."""
    if scope.get("scheme") in ("wss", "https"):
        return True
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        meta_name, expected = proxy_header
        name = meta_name.removeprefix("HTTP_").lower().replace("_", "-").encode()
        value = _header(scope, name)
        return value is not None and value.split(",")[0].strip() == expected
    return False


def _origin_matches(origin: str, pattern: str) -> bool:
    """CSRF_TRUSTED_ORIGINS semantics: scheme and host:port exactly, or `*.domain` for
    any subdomain (with the same scheme and port)."""
    wanted = urlsplit(pattern)
    given = urlsplit(origin)
    if wanted.scheme != given.scheme:
        return False
    if wanted.netloc.startswith("*."):
        suffix = wanted.netloc[1:]  # ".domain[:port]"
        return given.netloc.endswith(suffix) and len(given.netloc) > len(suffix)
    return given.netloc == wanted.netloc


def origin_allowed(scope: dict[str, Any]) -> bool:
    """A browser's handshake names its page's origin. It may open a websocket if that origin
    is this site itself (scheme, host and port of the handshake, the host in ALLOWED_HOSTS)
    or is listed in CSRF_TRUSTED_ORIGINS. No Origin header at all is a script, not a
    browser: cross-site websocket hijacking needs a browser, so it goes on to
    authentication."""
    origin = _header(scope, b"origin")
    if origin is None:
        return True
    try:
        parsed = urlsplit(origin)
        parsed.port  # noqa: B018  (raises ValueError for a malformed port)
    except ValueError:
        return False
    if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path not in ("", "/"):
        return False
    origin = f"{parsed.scheme}://{parsed.netloc.lower()}"
    if any(_origin_matches(origin, trusted) for trusted in settings.CSRF_TRUSTED_ORIGINS):
        return True
    host = (_header(scope, b"host") or "").lower()
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, _allowed_hosts()):
        return False
    own = f"{'https' if _secure(scope) else 'http'}://{host}"
    return _same_origin(origin, own)


def _same_origin(a: str, b: str) -> bool:
    """Equal scheme, host and port (a default port written out or not)."""
    first, second = urlsplit(a), urlsplit(b)
    default = {"http": 80, "https": 443}
    return (
        first.scheme == second.scheme
        and first.hostname == second.hostname
        and (first.port or default[first.scheme]) == (second.port or default[second.scheme])
    )


class OriginValidator:
    """Refuses (HTTP 403 on the handshake) a websocket whose Origin is not allowed."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)


def AllowedHostsBrowserOriginValidator(inner: Any) -> Any:
    return OriginValidator(inner)
