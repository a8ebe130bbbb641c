"""Fixtures several unit modules share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sessions_app.web import token_cache


@pytest.fixture
async def watching() -> AsyncIterator[None]:
    """This process's credentials watch, subscribed (it connects on a thread of its own):
    until then, every generation read asks Redis."""
    async with asyncio.timeout(10):
        while token_cache._heard() is None:
            await asyncio.sleep(0.005)
    yield


@pytest.fixture
def no_archive(monkeypatch: pytest.MonkeyPatch) -> None:
    """The event archive left out, for tests that do not look at it: its thread would write
    after the test's data is gone."""
    from sessions_app.events.archive import archiver

    monkeypatch.setattr(archiver, "add", lambda *args: None)
