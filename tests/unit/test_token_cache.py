"""A web process remembers the API tokens it has checked (web/token_cache.py), and still
refuses a token at once when it expires or another process revokes it. Real Redis and
database; the other process's revocation is what it writes to Redis."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.utils import timezone
from knox.models import AuthToken

from sessions_app.infra import live_state
from sessions_app.web import token_cache, tokens

# A loop of each test's own: its database threads (and their connections) end with it, and
# do not serve later tests that have no database.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="function")]


@pytest.fixture
def key() -> str:
    user = get_user_model().objects.create_user(username=f"tc-{uuid.uuid4().hex[:8]}")
    return tokens.issue(user)


def expire_without_signals(key: str) -> None:
    """The database now refuses the token; no model signal says so (a queryset update)."""
    AuthToken.objects.filter(digest=tokens.hash_token(key)).update(expiry=timezone.now() - timedelta(seconds=1))


async def test_a_known_token_is_trusted_until_another_process_changes_credentials(key: str) -> None:
    user = await token_cache.user_for_token(key)
    assert user is not None
    await sync_to_async(expire_without_signals)(key)
    assert await token_cache.user_for_token(key) == user  # remembered: no database read

    # What another process's revocation writes as it commits.
    await live_state.async_redis().set(token_cache._generation_key(), uuid.uuid4().hex)

    assert await token_cache.user_for_token(key) is None


async def test_a_revocation_here_is_seen_by_the_next_request(key: str) -> None:
    user = await token_cache.user_for_token(key)
    assert user is not None

    assert await sync_to_async(tokens.revoke)(user=user) == 1

    assert await token_cache.user_for_token(key) is None


async def test_a_known_token_is_refused_once_its_expiry_passes(key: str, monkeypatch: Any) -> None:
    assert await token_cache.user_for_token(key) is not None
    row = await AuthToken.objects.aget(digest=tokens.hash_token(key))
    later = row.expiry + timedelta(seconds=1)
    monkeypatch.setattr(token_cache.timezone, "now", lambda: later)
    monkeypatch.setattr(tokens.timezone, "now", lambda: later)

    assert await token_cache.user_for_token(key) is None


async def test_without_redis_every_token_is_checked_in_the_database(key: str, monkeypatch: Any) -> None:
    assert await token_cache.user_for_token(key) is not None

    def unreachable() -> Any:
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(live_state, "async_redis", unreachable)
    await sync_to_async(expire_without_signals)(key)

    assert await token_cache.user_for_token(key) is None


async def test_a_lost_generation_matches_nothing_remembered(key: str) -> None:
    assert await token_cache.user_for_token(key) is not None
    await sync_to_async(expire_without_signals)(key)

    await live_state.async_redis().delete(token_cache._generation_key())  # Redis lost its data

    assert await token_cache.user_for_token(key) is None
