"""Fixtures shared by every suite.

`stack` is the real product: a Daphne process and a Celery worker (threads pool) against
the test database and Redis (REDIS_URL, or the embedded one test settings start).
`make_client` creates a user and returns a logged-in protocol client.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio
from django.db import connection

from chat_client import ChatClient
from tests.stack import Stack, database_url, start_stack

PASSWORD = "pw-for-tests"


@pytest.fixture(scope="session")
def django_db_setup(django_test_environment: Any, django_db_blocker: Any) -> Iterator[None]:
    """Always create the default test database: the live stack's processes use it even when
    no collected test carries a django_db mark (pytest-django would skip it then)."""
    from django.test.utils import setup_databases, teardown_databases

    with django_db_blocker.unblock():
        config = setup_databases(verbosity=0, interactive=False, aliases={"default"})  # type: ignore[arg-type]
    yield
    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            # The stack's processes are gone, but PostgreSQL may not have reaped their
            # sessions yet; DROP DATABASE refuses while any remain.
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
        teardown_databases(config, verbosity=0)


@pytest.fixture(scope="session", autouse=True)
def flush_retried_after_a_deadlock() -> Iterator[None]:
    """A transactional test ends by emptying every table (TRUNCATE on PostgreSQL) while a
    process of the shared stack may still be writing for it: a turn it started ending, the
    events of it being archived. The TRUNCATE takes its tables' locks in one order, such a
    write in another, and PostgreSQL ends the deadlock by failing one of them; when that is
    the TRUNCATE, it runs again, and then waits for the write to commit."""
    from django.core.management.base import CommandError
    from django.db import OperationalError
    from django.test import TransactionTestCase

    flush = TransactionTestCase._fixture_teardown  # type: ignore[attr-defined]  # private: not in the stubs

    def flush_retried(self: TransactionTestCase) -> None:
        for attempt in range(1, 4):
            try:
                flush(self)
                return
            except (CommandError, OperationalError) as exc:
                deadlock = "deadlock detected" in f"{exc} {exc.__cause__}"
                if not deadlock or attempt == 3:
                    raise

    TransactionTestCase._fixture_teardown = flush_retried  # type: ignore[attr-defined]
    yield
    TransactionTestCase._fixture_teardown = flush  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def test_database_url(django_db_setup: Any, django_db_blocker: Any) -> str:
    with django_db_blocker.unblock():
        return database_url(connection.settings_dict)


@pytest.fixture(scope="session")
def stack_factory(test_database_url: str) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def start(extra_env: dict[str, str] | None = None, *, own_prefix: bool = True, **kwargs: Any) -> Stack:
        # A stack of its own prefix has its own queue, workers and keys; the shared stack
        # uses the test process's prefix, so services called in-process reach its worker.
        prefix = os.environ["CHAT_KEY_PREFIX"] + (f"-{uuid.uuid4().hex[:6]}" if own_prefix else "")
        stack = start_stack(database=test_database_url, key_prefix=prefix, extra_env=extra_env, **kwargs)
        stacks.append(stack)
        return stack

    yield start
    for stack in stacks:
        stack.stop()


@pytest.fixture(scope="session")
def stack(stack_factory: Callable[..., Stack]) -> Stack:
    """The shared stack. Its onAbort hook appends "[Response cancelled]" to cancelled answers."""
    return stack_factory({"CHAT_ON_ABORT": "sessions_app.hooks.append_cancelled_notice"}, own_prefix=False)


@pytest.fixture(scope="session")
def orm(django_db_blocker: Any) -> Callable[[Callable[[], Any]], Any]:
    """`orm(lambda: Turn.objects.get(...))`: read or write the test database from a test."""

    def run(fn: Callable[[], Any]) -> Any:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
        try:
            with django_db_blocker.unblock():
                return fn()
        finally:
            del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]

    return run


@pytest.fixture(scope="session")
def create_user(orm: Callable[[Callable[[], Any]], Any]) -> Callable[..., str]:
    def create(prefix: str = "user", staff: bool = False) -> str:
        from django.contrib.auth import get_user_model

        username = f"{prefix}-{uuid.uuid4().hex[:8]}"
        orm(
            lambda: get_user_model().objects.create_user(
                username=username, password=PASSWORD, is_staff=staff, is_superuser=staff
            )
        )
        return username

    return create


@pytest_asyncio.fixture
async def make_client(stack: Stack, create_user: Callable[..., str]) -> AsyncIterator[Callable[..., Any]]:
    """`await make_client("alice")` -> a ChatClient logged in as a new user."""
    clients: list[ChatClient] = []

    async def make(prefix: str = "user", base_url: str | None = None, staff: bool = False) -> ChatClient:
        username = create_user(prefix, staff)
        client = await ChatClient.login(base_url or stack.base_url, username, PASSWORD)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
