"""Websocket routes (config/asgi.py routes every websocket through them).

Every path has a route: a path that no consumer serves is refused at the handshake (Daphne
answers 403, as for a refused Origin), before any credential is looked at. Without the
catch-all, Channels' router raised for it, and Daphne answered 500 and logged the
exception as an application failure.
"""

from typing import Any

from django.urls import path, re_path

from sessions_app.web.auth import TokenAuthMiddlewareStack
from sessions_app.web.consumer import SessionConsumer


async def no_route(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Refuse a websocket handshake whose path nothing serves."""
    await receive()  # websocket.connect
    await send({"type": "websocket.close"})  # before an accept: refused (Daphne: 403)


session = TokenAuthMiddlewareStack(SessionConsumer.as_asgi())

websocket_urlpatterns = [
    path("ws/sessions/<str:session_id>/", session),
    path("ws/sessions/<str:session_id>", session),  # without the slash, as HTTP paths accept it
    re_path(r"", no_route),  # type: ignore[arg-type]  # an ASGI app: what Channels routes to
]
