"""A worker's wait for offered turns (decision 027) ends on its own, before the Redis
client gives up on the read: an idle worker keeps taking offers, with no dropped
connection and no pause (real Redis)."""

from __future__ import annotations

import pytest

from sessions_app.infra import live_state
from sessions_app.worker.turn_loop import OFFER_WAIT_SECONDS

pytestmark = pytest.mark.django_db


async def test_the_wait_is_well_under_the_clients_read_timeout():
    read_timeout = live_state.async_redis().connection_pool.make_connection().socket_timeout
    assert read_timeout is None or OFFER_WAIT_SECONDS + 1 <= read_timeout


async def test_a_wait_with_nothing_offered_ends_empty_on_the_same_connection():
    pool = live_state.async_redis().connection_pool
    assert await live_state.take_offered_turns(OFFER_WAIT_SECONDS) is None
    reused = await pool.get_connection()
    try:
        assert reused.is_connected  # the wait did not time out and drop it
    finally:
        await pool.release(reused)
