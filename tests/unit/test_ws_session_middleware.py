"""The websocket's session middleware (web/auth.py): a browser's Django session still
identifies its user, a websocket's frames go to the server as the consumer sent them (no
look at the session per frame), and an HTTP response still saves a changed session and
sets its cookie, as under Channels."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client

from sessions_app.web.auth import TokenAuthMiddlewareStack

pytestmark = pytest.mark.django_db(transaction=True)


def logged_in_session() -> tuple[Any, str]:
    """A user, and the key of the session a browser logged in as them holds."""
    user = get_user_model().objects.create_user(username="browser", password="pw-browser-1")
    browser = Client()
    browser.force_login(user)
    return user, browser.cookies[settings.SESSION_COOKIE_NAME].value


def scope_of(kind: str, session_key: str) -> dict[str, Any]:
    cookie = f"{settings.SESSION_COOKIE_NAME}={session_key}".encode()
    return {"type": kind, "path": "/", "headers": [(b"cookie", cookie)], "query_string": b""}


async def receive() -> dict[str, Any]:
    raise AssertionError("nothing is received here")


async def test_a_browsers_websocket_is_its_user_and_its_frames_go_straight_out() -> None:
    user, key = await sync_to_async(logged_in_session)()
    sent: list[dict[str, Any]] = []

    async def server_send(message: dict[str, Any]) -> None:
        sent.append(message)

    seen: dict[str, Any] = {}

    async def consumer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen["user_pk"] = await sync_to_async(lambda: scope["user"].pk)()
        seen["send"] = send
        for text in ("one", "two"):
            await send({"type": "websocket.send", "text": text})

    await TokenAuthMiddlewareStack(consumer)(scope_of("websocket", key), receive, server_send)
    assert seen["user_pk"] == user.pk
    assert seen["send"] is server_send  # no wrapper between the consumer and the server
    assert [m["text"] for m in sent] == ["one", "two"]


async def test_an_http_response_saves_a_changed_session_and_sets_its_cookie() -> None:
    _, key = await sync_to_async(logged_in_session)()
    sent: list[dict[str, Any]] = []

    async def server_send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def view(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await sync_to_async(scope["session"].__setitem__)("seen", True)
        await send({"type": "http.response.start", "status": 200, "headers": []})

    await TokenAuthMiddlewareStack(view)(scope_of("http", key), receive, server_send)
    cookies = [value for name, value in sent[0]["headers"] if name == b"Set-Cookie"]
    assert cookies and cookies[0].startswith(f"{settings.SESSION_COOKIE_NAME}={key}".encode())
    stored = await sync_to_async(lambda: SessionStore(session_key=key).load())()
    assert stored["seen"] is True
