"""Fixtures of the fault tests: a Redis server of each test's own (restartable), stacks on
it, and logged-in clients of a stack."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio

from chat_client import ChatClient
from tests.conftest import PASSWORD
from tests.stack import RedisServer, Stack, start_stack


@pytest.fixture(autouse=True)
def fresh_database_connections() -> Iterator[None]:
    """After a fault test, drop this process's database connections: an outage may have
    ended them (the next user opens a new one)."""
    yield
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        with contextlib.suppress(Exception):
            connection.close()


@pytest.fixture
def fault_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own: it may restart it (never the shared one)."""
    server = RedisServer.start()
    yield server
    server.stop()


@pytest.fixture
def fault_stack(test_database_url: str) -> Iterator[Callable[..., Stack]]:
    """`fault_stack(redis_url=..., webs=1, workers=1, env={...})`: the product on its own
    key prefix; every process it started is stopped at the end."""
    stacks: list[Stack] = []

    def start(
        *,
        redis_url: str | None = None,
        database: str | None = None,
        webs: int = 1,
        workers: int = 1,
        env: dict[str, str] | None = None,
        web_options: list[str] | None = None,
    ) -> Stack:
        prefix = f"{os.environ['CHAT_KEY_PREFIX']}-f{uuid.uuid4().hex[:6]}"
        extra = {**({"REDIS_URL": redis_url} if redis_url else {}), **(env or {})}
        stack = start_stack(
            database=database or test_database_url,
            key_prefix=prefix,
            extra_env=extra,
            worker=workers > 0,
            web_options=web_options,
        )
        stacks.append(stack)
        for index in range(1, workers):
            stack.start_worker(f"worker-{index + 1}")
        for index in range(1, webs):
            stack.start_web(f"web-{index + 1}")
        return stack

    yield start
    for stack in stacks:
        stack.stop()


@pytest_asyncio.fixture
async def login(create_user: Callable[..., str]) -> AsyncIterator[Callable[..., Any]]:
    """`await login(base_url, "alice")` -> a ChatClient of a new user, against that URL."""
    clients: list[ChatClient] = []

    async def make(base_url: str, prefix: str = "user") -> ChatClient:
        client = await ChatClient.login(base_url, create_user(prefix), PASSWORD)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
