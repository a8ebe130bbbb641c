"""A web process remembers the browser sessions it has checked (web/session_cache.py,
decision 049): a known session cookie costs no database query, and every change that can
turn the browser away (a logout, a password change, a deactivation, the session deleted or
shortened) refuses it at the next request; so does its expiry. Requests go through the
ASGI application Daphne runs, with real Redis and database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.db.backends import utils as db_utils
from django.test import Client
from django.utils import timezone

from sessions_app.infra import live_state
from sessions_app.web import token_cache
from tests.unit.asgi_calls import call

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="function")]

CSRF = "c" * 32  # a CSRF cookie's secret; the header may carry it as it is


@pytest.fixture
def user() -> Any:
    return get_user_model().objects.create_user(username=f"sc-{uuid.uuid4().hex[:8]}", password="pw-sc-1")


def logged_in(user: Any) -> str:
    """A browser logged in as `user`: its session key."""
    browser = Client()
    browser.force_login(user)
    return str(browser.cookies[settings.SESSION_COOKIE_NAME].value)


async def browser(user: Any) -> str:
    return await sync_to_async(logged_in)(user)


async def request(method: str, path: str, session_key: str, *, csrf: bool = False) -> tuple[int, dict[str, str]]:
    """The API's answer to a browser's request: its status and headers."""
    headers = [
        (b"cookie", f"{settings.SESSION_COOKIE_NAME}={session_key}; {settings.CSRF_COOKIE_NAME}={CSRF}".encode())
    ]
    if csrf:
        headers.append((b"x-csrftoken", CSRF.encode()))
    sent = await call(method, path, body={} if method == "POST" else None, headers=headers)
    return sent.status, sent.headers


async def status(session_key: str) -> int:
    return (await request("GET", "/api/models", session_key))[0]


class Queries:
    """Counts the SQL statements run on any thread (the API's run on database threads)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        execute = db_utils.CursorWrapper.execute

        def counted(cursor: Any, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return execute(cursor, *args, **kwargs)

        monkeypatch.setattr(db_utils.CursorWrapper, "execute", counted)


@pytest.fixture
def queries(monkeypatch: pytest.MonkeyPatch) -> Iterator[Queries]:
    yield Queries(monkeypatch)


async def generation() -> Any:
    return await live_state.async_redis().get(token_cache._generation_key())


# --- known sessions ----------------------------------------------------------------------


async def test_a_known_browser_session_costs_no_database_query(user: Any, watching: None, queries: Queries) -> None:
    key = await browser(user)
    assert await status(key) == 200
    assert queries.count > 0  # checked once: the session, its user, its expiry

    queries.count = 0
    for _ in range(5):
        assert await status(key) == 200
    assert queries.count == 0


async def test_a_known_session_answers_as_a_checked_one_does(user: Any) -> None:
    key = await browser(user)
    checked = await request("GET", "/api/models", key)
    known = await request("GET", "/api/models", key)

    assert checked[0] == known[0] == 200
    assert "Cookie" in checked[1]["vary"] and "Cookie" in known[1]["vary"]  # no shared cache may keep it
    assert "set-cookie" not in known[1]


async def test_a_known_session_still_needs_the_csrf_token_to_write(user: Any) -> None:
    key = await browser(user)
    assert await status(key) == 200  # known from here on

    assert (await request("POST", "/api/auth/ws-ticket", key))[0] == 403
    assert (await request("POST", "/api/auth/ws-ticket", key, csrf=True))[0] == 200


async def test_a_session_engine_without_model_signals_is_checked_on_every_request(
    user: Any, settings: Any, queries: Queries
) -> None:
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cache"
    key = await browser(user)
    assert await status(key) == 200

    queries.count = 0
    assert await status(key) == 200
    assert queries.count > 0  # the user, read again: nothing says when such a session changes


async def test_a_login_elsewhere_leaves_the_known_sessions_known(user: Any, watching: None) -> None:
    key = await browser(user)
    assert await status(key) == 200
    before = await generation()

    await browser(user)  # a new session and its login's save: nothing remembered changes

    assert await generation() == before


# --- every end of a browser session is refused at once -----------------------------------


async def test_a_logout_is_refused_at_the_next_request(user: Any, watching: None) -> None:
    key, other = await browser(user), await browser(user)
    assert await status(key) == 200 and await status(other) == 200

    browser_client = Client()
    browser_client.cookies[settings.SESSION_COOKIE_NAME] = key
    assert (await sync_to_async(browser_client.post)("/logout/")).status_code == 302  # to the login page
    assert not await Session.objects.filter(session_key=key).aexists()

    assert await status(key) == 401
    assert await status(other) == 200  # another browser of the same user


async def test_a_password_change_refuses_the_other_sessions(user: Any, watching: None) -> None:
    key = await browser(user)
    assert await status(key) == 200

    user.set_password("a-new-password-123")
    await user.asave()

    assert await status(key) == 401  # its password hash no longer matches


async def test_a_deactivated_user_is_refused(user: Any, watching: None) -> None:
    key = await browser(user)
    assert await status(key) == 200

    user.is_active = False
    await user.asave()

    assert await status(key) == 401


async def test_a_session_deleted_in_a_shell_is_refused(user: Any, watching: None) -> None:
    key, other = await browser(user), await browser(user)
    assert await status(key) == 200 and await status(other) == 200

    await sync_to_async(Session.objects.filter(session_key=key).delete)()  # as the admin's bulk delete

    assert await status(key) == 401
    assert await status(other) == 200


async def test_a_session_whose_expiry_is_brought_forward_is_refused(user: Any, watching: None) -> None:
    key = await browser(user)
    assert await status(key) == 200

    def expire_now() -> None:
        store = SessionStore(key)
        store.set_expiry(timezone.now() - timedelta(seconds=1))
        store.save()

    await sync_to_async(expire_now)()

    assert await status(key) == 401


async def test_a_known_session_is_refused_once_its_expiry_passes(
    user: Any, watching: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await browser(user)
    assert await status(key) == 200
    row = await Session.objects.aget(session_key=key)
    later = row.expire_date + timedelta(seconds=1)

    monkeypatch.setattr(timezone, "now", lambda: later)  # time passes; nothing in the database changes

    assert await status(key) == 401


async def test_a_change_elsewhere_refuses_what_this_process_remembers(user: Any, watching: None) -> None:
    key = await browser(user)
    assert await status(key) == 200
    # Gone without a signal (a queryset update): only the generation can say so.
    await sync_to_async(Session.objects.filter(session_key=key).update)(expire_date=timezone.now())
    assert await status(key) == 200  # remembered

    await token_cache_changed_elsewhere()

    assert await status(key) == 401


async def token_cache_changed_elsewhere() -> None:
    """What another process's credential change writes to Redis as it commits."""
    async with live_state.async_redis().pipeline(transaction=True) as pipe:
        renewed = uuid.uuid4().hex
        pipe.set(token_cache._generation_key(), renewed)
        pipe.publish(token_cache._channel(), renewed)
        await pipe.execute()
