"""The process-wide Redis clients (infra/live_state.py) open new connections without
redis-py reading its package's metadata each time: the pools grow while a burst runs, and
that read cost ~0.5 ms a connection, up to 6 ms in a cold process (real Redis)."""

from __future__ import annotations

from typing import Any

import pytest
import redis.utils

from sessions_app.infra import live_state


@pytest.fixture
def metadata_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    real_version = redis.utils.metadata.version

    def version(name: str) -> Any:
        reads.append(name)
        return real_version(name)

    monkeypatch.setattr(redis.utils.metadata, "version", version)
    return reads


def test_a_new_connection_of_the_threads_client_reads_no_metadata(metadata_reads: list[str]):
    connection = live_state.sync_redis().connection_pool.make_connection()
    try:
        connection.connect()
        connection.send_command("PING")
        assert connection.read_response() in (b"PONG", "PONG", True)
    finally:
        connection.disconnect()
    assert metadata_reads == []


async def test_a_new_connection_of_the_loops_client_reads_no_metadata(metadata_reads: list[str]):
    connection = live_state.async_redis().connection_pool.make_connection()
    try:
        await connection.connect()
        await connection.send_command("PING")
        assert await connection.read_response() in (b"PONG", "PONG", True)
    finally:
        await connection.disconnect()
    assert metadata_reads == []
