"""Fixtures of the provider tests: fake vendor servers on local ports, the environment
pointing the official SDKs at them, and quick retry/timeout settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from sessions_app.worker.providers.base import ModelRequest, ProviderError, StreamItem
from tests.providers.fakes import FakeVendor


@pytest_asyncio.fixture(scope="session")
async def vendor_server() -> AsyncIterator[FakeVendor]:
    server = await FakeVendor().start()
    yield server
    await server.stop()


@pytest.fixture
def fake(vendor_server: FakeVendor, monkeypatch: pytest.MonkeyPatch, settings: Any) -> FakeVendor:
    """The fake server, answering as both vendors, with both configured to reach it."""
    vendor_server.script()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
    monkeypatch.setenv("OPENAI_BASE_URL", f"{vendor_server.url}/v1")
    monkeypatch.setenv("OPENAI_MODELS", "gpt-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", vendor_server.url)
    monkeypatch.setenv("ANTHROPIC_MODELS", "claude-test")
    settings.SESSIONS_APP = {
        **settings.SESSIONS_APP,
        "PROVIDER_RETRIES": 0,
        "PROVIDER_RETRY_BACKOFF_SECONDS": 0.01,
        "PROVIDER_TIMEOUT_SECONDS": 5.0,
        "TOOLS": [],
    }
    return vendor_server


def request(model: str = "gpt-test", text: str = "Hello", **options: Any) -> ModelRequest:
    return ModelRequest(
        model=model, messages=[{"role": "user", "parts": [{"type": "text", "text": text}]}], options=options
    )


async def collect(stream: AsyncIterator[StreamItem]) -> tuple[list[StreamItem], ProviderError | None]:
    """Every item of a stream, and the ProviderError that ended it, if one did."""
    items: list[StreamItem] = []
    try:
        async for item in stream:
            items.append(item)
    except ProviderError as exc:
        return items, exc
    return items, None
