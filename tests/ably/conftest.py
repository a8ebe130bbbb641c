"""The Ably suite's fixtures: a local Ably (fake_ably.py) for the whole session, the real
product pointed at it (Daphne and a Celery worker with ABLY_* set), and the mirror as its
own process (`manage.py ably_mirror`), as `make run` starts it."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio
import redis

from chat_client import ChatClient
from config.runstack import mirror_command
from tests.ably.fake_ably import FakeAblyThread
from tests.conftest import PASSWORD
from tests.stack import ROOT, Stack


@pytest.fixture(scope="session")
def fake_ably() -> Iterator[FakeAblyThread]:
    fake = FakeAblyThread().start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _no_faults_left(fake_ably: FakeAblyThread) -> Iterator[None]:
    yield
    fake_ably.clear_faults()
    fake_ably.run(lambda: setattr(fake_ably.fake, "rate_limit", 50))


@pytest.fixture(scope="session")
def ably_stack(stack_factory: Callable[..., Stack], fake_ably: FakeAblyThread) -> Stack:
    """The product with Ably on: its token endpoint signs for the fake's key."""
    return stack_factory({**fake_ably.env(), "ABLY_APPEND_INTERVAL_MS": "100"})


class MirrorProcess:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.stack.logs / "mirror.log", "ab")
        self.process = subprocess.Popen(
            mirror_command(), env=self.stack.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        lock = f"{self.stack.key_prefix}:ably:lock"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the mirror exited: {self.stack.log_tail('mirror')}")
            if self.stack.redis.get(lock):
                return
            time.sleep(0.05)
        raise RuntimeError(f"the mirror did not start: {self.stack.log_tail('mirror')}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGUSR1)  # its stacks, in the log (faulthandler)
                time.sleep(1)
                self.process.kill()
                raise RuntimeError(f"the mirror did not stop: {self.stack.log_tail('mirror', 120)}") from None
        self.process = None

    def stats(self) -> dict[str, Any]:
        from sessions_app.ably.stats import COUNTERS

        raw = self.stack.redis.hgetall(f"{self.stack.key_prefix}:ably:stats")
        return {name: int(float(raw.get(name.encode(), 0))) for name in COUNTERS}  # type: ignore[union-attr]


@pytest.fixture(scope="session")
def mirror(ably_stack: Stack) -> Iterator[MirrorProcess]:
    process = MirrorProcess(ably_stack)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def ably_redis(ably_stack: Stack) -> redis.Redis:
    return ably_stack.redis


@pytest_asyncio.fixture
async def ably_client(ably_stack: Stack, create_user: Callable[..., str]) -> AsyncIterator[Callable[..., Any]]:
    """`await ably_client("alice")` -> a ChatClient of a new user on the Ably stack."""
    clients: list[ChatClient] = []

    async def make(prefix: str = "user") -> ChatClient:
        client = await ChatClient.login(ably_stack.base_url, create_user(prefix), PASSWORD)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
