"""Open websockets' credentials, checked again only when credentials change (web/open_sockets.py,
decision 029 amended). Real Redis and database: a command costs no database read while the
credentials generation stays; a change checks the sockets once; a logout refuses its browser
session even before Django deletes it; a ticket holds until all its user's tokens are
revoked."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client
from knox.crypto import hash_token

from sessions_app.web import open_sockets, token_cache, tokens

pytestmark = pytest.mark.django_db(transaction=True)


class Socket:
    def __init__(self) -> None:
        self.revoked = 0

    def credentials_revoked(self) -> None:
        self.revoked += 1


@pytest.fixture
def user() -> Any:
    return get_user_model().objects.create_user(username=f"ws-{uuid.uuid4().hex[:8]}", password="pw-ws-1")


def browser_session(user: Any) -> str:
    browser = Client()
    browser.force_login(user)
    return str(browser.cookies[settings.SESSION_COOKIE_NAME].value)


@pytest.mark.asyncio(loop_scope="function")
async def test_commands_read_no_database_until_credentials_change(
    user: Any, watching: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, other = await sync_to_async(tokens.issue)(user), await sync_to_async(tokens.issue)(user)
    sockets = open_sockets.OpenSockets()
    revoked, kept = Socket(), Socket()
    for socket, token in ((revoked, key), (kept, other)):
        generation = await token_cache.current_generation()
        found = await token_cache.user_and_expiry(token)
        assert found is not None
        sockets.add(
            socket, open_sockets.Credential("token", user.pk, generation, digest=hash_token(token), expiry=found[1])
        )
    assert sockets.ticker is not None
    sockets.ticker.cancel()  # this test looks by itself
    checked: list[int] = []
    verdicts = open_sockets._verdicts

    def counted(credentials: list[open_sockets.Credential]) -> list[tuple[bool, Any]]:
        checked.append(len(credentials))
        return verdicts(credentials)

    monkeypatch.setattr(open_sockets, "_verdicts", counted)

    for _ in range(100):
        assert await sockets.trusted(revoked) and await sockets.trusted(kept)
    assert checked == []  # nothing changed: no database read

    await sync_to_async(tokens.revoke)(user=user, key=key)

    assert not await sockets.trusted(revoked)
    assert checked == [2]  # both checked, once, on the change
    assert await sockets.trusted(kept)
    assert (revoked.revoked, kept.revoked, checked) == (1, 0, [2])
    sockets.discard(kept)


def test_a_logout_refuses_its_session_before_django_deletes_it(user: Any) -> None:
    key, other = browser_session(user), browser_session(user)
    credentials = [open_sockets.Credential("session", user.pk, None, session_key=k) for k in (key, other)]
    assert open_sockets._verdicts(credentials) == [(True, None), (True, None)]

    # The logout signal (token revocation, the mark): Django flushes the session after it,
    # and a process may check its websockets in between.
    tokens._on_logout(sender=None, request=SimpleNamespace(session=SessionStore(session_key=key)), user=user)

    assert SessionStore().exists(key)
    assert open_sockets._verdicts(credentials) == [(False, None), (True, None)]  # the other browser stays


def test_a_password_change_refuses_the_users_sessions(user: Any) -> None:
    credential = open_sockets.Credential("session", user.pk, None, session_key=browser_session(user))
    user.set_password("pw-ws-2")
    user.save()
    assert open_sockets._verdicts([credential]) == [(False, None)]


def test_a_ticket_holds_until_all_its_users_tokens_are_revoked(user: Any) -> None:
    key = tokens.issue(user)
    ticket, _ = tokens.ticket_issue(user)
    redeemed = async_to_sync(tokens.ticket_redeem)(ticket)
    assert redeemed is not None and redeemed[0] == str(user.pk)
    credential = open_sockets.Credential("ticket", user.pk, None, revocations=redeemed[1])

    tokens.revoke(user=user, key=key)  # one token: the ticket may not be its
    assert open_sockets._verdicts([credential]) == [(True, None)]

    tokens.revoke(user=user)  # all of them (none left): a logout or a password change does this
    assert open_sockets._verdicts([credential]) == [(False, None)]
