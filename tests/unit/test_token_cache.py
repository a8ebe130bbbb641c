"""A web process remembers the API tokens it has checked (web/token_cache.py), and still
refuses a token at once when it expires or another process revokes it. Real Redis and
database; the other process's revocation is what it writes to Redis. While the process's
credentials watch is subscribed, a known token costs no Redis read; when the watch is down
or silent, the generation is read again."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.utils import timezone
from knox.models import AuthToken

from sessions_app.infra import live_state
from sessions_app.web import credentials_watch, token_cache, tokens

# A loop of each test's own: its database threads (and their connections) end with it, and
# do not serve later tests that have no database.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="function")]


@pytest.fixture
def key() -> str:
    user = get_user_model().objects.create_user(username=f"tc-{uuid.uuid4().hex[:8]}")
    return tokens.issue(user)


async def change_elsewhere(*, publish: bool = True) -> None:
    """What another process's revocation writes as it commits (without `publish`: a change
    this process's watch could not hear, made while its connection was down)."""
    async with live_state.async_redis().pipeline(transaction=True) as pipe:
        generation = uuid.uuid4().hex
        pipe.set(token_cache._generation_key(), generation)
        if publish:
            pipe.publish(token_cache._channel(), generation)
        await pipe.execute()


async def cut_the_watch() -> None:
    """Close this process's watch connection from Redis's side (a restart, a network cut)."""
    client = live_state.async_redis()
    name = token_cache.watch_client_name(os.getpid())
    for entry in await client.client_list():
        if entry.get("name") == name:
            await client.client_kill_filter(_id=entry["id"])


def expire_without_signals(key: str) -> None:
    """The database now refuses the token; no model signal says so (a queryset update)."""
    AuthToken.objects.filter(digest=tokens.hash_token(key)).update(expiry=timezone.now() - timedelta(seconds=1))


async def test_a_known_token_is_trusted_until_another_process_changes_credentials(key: str, watching: None) -> None:
    user = await token_cache.user_for_token(key)
    assert user is not None
    await sync_to_async(expire_without_signals)(key)
    assert await token_cache.user_for_token(key) == user  # remembered: no database read

    await change_elsewhere()

    assert await token_cache.user_for_token(key) is None


async def test_a_known_token_costs_no_redis_read_while_the_watch_is_subscribed(
    key: str, watching: None, monkeypatch: Any
) -> None:
    monkeypatch.setattr(credentials_watch, "HEARTBEAT_SECONDS", 60.0)  # no heartbeat mid-test
    assert await token_cache.user_for_token(key) is not None
    reads = 0
    read = token_cache._generation

    async def counted() -> bytes | None:
        nonlocal reads
        reads += 1
        return await read()

    monkeypatch.setattr(token_cache, "_generation", counted)
    await sync_to_async(expire_without_signals)(key)

    for _ in range(20):
        assert await token_cache.user_for_token(key) is not None
    assert reads == 0

    await change_elsewhere()
    assert await token_cache.user_for_token(key) is None
    assert reads == 1


class CountedReads:
    """Counts the process's reads of the credentials generation from Redis."""

    def __init__(self, monkeypatch: Any) -> None:
        self.reads = 0
        read = token_cache._generation

        async def counted() -> bytes | None:
            self.reads += 1
            return await read()

        monkeypatch.setattr(token_cache, "_generation", counted)


async def heartbeats_answered(count: int, *, while_: Any = None) -> None:
    """Wait until the watch's connection has answered `count` more heartbeats, calling
    `while_()` (if given) between polls."""
    watch = token_cache._watch
    assert watch is not None
    target = watch.heartbeats_answered + count
    async with asyncio.timeout(10):
        while watch.heartbeats_answered < target:
            if while_ is not None:
                await while_()
            await asyncio.sleep(0.005)


async def test_a_heartbeats_answer_costs_the_requests_after_it_no_redis_read(
    key: str, watching: None, monkeypatch: Any
) -> None:
    monkeypatch.setattr(credentials_watch, "HEARTBEAT_SECONDS", 0.01)
    assert await token_cache.user_for_token(key) is not None
    counted = CountedReads(monkeypatch)

    async def request() -> None:
        assert await token_cache.user_for_token(key) is not None

    await heartbeats_answered(5, while_=request)

    assert counted.reads == 0
    await change_elsewhere()
    await sync_to_async(expire_without_signals)(key)
    assert await token_cache.user_for_token(key) is None  # a message still counts


async def test_an_idle_process_keeps_its_watch_trusted(key: str, watching: None, monkeypatch: Any) -> None:
    monkeypatch.setattr(credentials_watch, "HEARTBEAT_SECONDS", 0.01)
    monkeypatch.setattr(credentials_watch, "TRUST_SECONDS", 0.05)
    monkeypatch.setattr(credentials_watch, "POLL_SECONDS", 0.005)
    assert await token_cache.user_for_token(key) is not None
    counted = CountedReads(monkeypatch)
    started = credentials_watch.time.monotonic()

    await heartbeats_answered(3)  # no request meanwhile: the loop polls the watch by itself
    async with asyncio.timeout(10):
        while credentials_watch.time.monotonic() - started < 2 * credentials_watch.TRUST_SECONDS:
            await heartbeats_answered(1)

    assert await token_cache.user_for_token(key) is not None
    assert counted.reads == 0


async def test_without_a_watch_the_generation_is_read_on_every_request(key: str, settings: Any) -> None:
    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "CREDENTIALS_WATCH": False}
    assert await token_cache.user_for_token(key) is not None
    await sync_to_async(expire_without_signals)(key)

    await change_elsewhere(publish=False)

    assert await token_cache.user_for_token(key) is None


async def test_a_change_made_while_the_watch_was_cut_off_is_read_from_redis(key: str, watching: None) -> None:
    assert await token_cache.user_for_token(key) is not None
    await sync_to_async(expire_without_signals)(key)

    await cut_the_watch()
    await change_elsewhere(publish=False)  # the watch heard nothing of it

    assert await token_cache.user_for_token(key) is None


async def test_a_watch_that_hears_nothing_for_a_while_is_not_trusted(
    key: str, watching: None, monkeypatch: Any
) -> None:
    user = await token_cache.user_for_token(key)
    assert await token_cache.user_for_token(key) == user
    await sync_to_async(expire_without_signals)(key)
    await change_elsewhere(publish=False)  # as if its message were lost on a partitioned network

    silent_until = credentials_watch.time.monotonic() + credentials_watch.TRUST_SECONDS
    monkeypatch.setattr(credentials_watch.time, "monotonic", lambda: silent_until)

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


async def test_without_redis_every_token_is_checked_in_the_database(key: str, watching: None, monkeypatch: Any) -> None:
    assert await token_cache.user_for_token(key) is not None
    await cut_the_watch()

    def unreachable() -> Any:
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(live_state, "async_redis", unreachable)
    await sync_to_async(expire_without_signals)(key)

    assert await token_cache.user_for_token(key) is None


async def test_a_lost_generation_matches_nothing_remembered(key: str, watching: None) -> None:
    assert await token_cache.user_for_token(key) is not None
    await sync_to_async(expire_without_signals)(key)

    # Redis restarted without its data: the connections closed, the generation is gone.
    await cut_the_watch()
    await live_state.async_redis().delete(token_cache._generation_key())

    assert await token_cache.user_for_token(key) is None
