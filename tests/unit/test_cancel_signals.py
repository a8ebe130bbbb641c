"""The signal that tells the workers to stop turns (decisions 038 and 043): written to Redis
as the command commits, behind its events, without waiting for the answer to be written or
for Redis's replies, which are read afterwards; a failed write or read sends it again
through the client. Against the real Redis of the tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from django.db import transaction

from sessions_app.infra import live_state
from sessions_app.infra.db_threads import Hold, after_commit, answering_first, at_answer

pytestmark = pytest.mark.django_db(transaction=True)

SIGNALS = [("session-a", [1, 2]), ("session-b", [3])]


@pytest.fixture
def workers_channel() -> Iterator[Any]:
    """A subscriber to the workers' cancel channel, as a worker listens to it."""
    pubsub = live_state.sync_redis().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(live_state.Keys.cancel_channel())
    pubsub.get_message(timeout=5)  # the subscription's confirmation
    yield pubsub
    pubsub.close()


def heard(pubsub: Any, count: int) -> list[dict[str, Any]]:
    """The next `count` signals on the channel (waiting for each as long as it takes)."""
    signals: list[dict[str, Any]] = []
    while len(signals) < count:
        message = pubsub.get_message(timeout=10)
        assert message is not None, f"heard {len(signals)} of {count} signals"
        signals.append(orjson.loads(message["data"]))
    return signals


def cancel_committing(signals: Any) -> str:
    """What a cancel does: its signals sent as it commits, their replies read after."""
    with transaction.atomic():
        at_answer(lambda: after_commit(live_state.publish_then_signal([], signals)))
    return "answer"


def connections_in_use() -> int:
    """Connections of the process's pool taken and not given back (a leak would leave the
    next commands waiting for one, then failing)."""
    pool: Any = live_state.sync_redis().connection_pool
    return len(pool._connections) - sum(1 for idle in pool.pool.queue if idle is not None)


@pytest.mark.asyncio(loop_scope="function")
async def test_the_workers_hear_a_cancel_before_its_answer_lets_the_work_after_it_go(workers_channel):
    in_use = connections_in_use()
    hold = Hold(1, limit=60)  # the work after the commit waits for this answer to be written

    answer, after = await answering_first(cancel_committing, hold)(SIGNALS)

    assert answer == "answer" and not after.done()
    signals = heard(workers_channel, 2)
    assert [(s["session"], s["turns"]) for s in signals] == [("session-a", [1, 2]), ("session-b", [3])]
    hold.release_one()
    await after  # the replies read, the connection given back
    assert connections_in_use() == in_use


def test_a_signal_whose_write_fails_goes_through_the_client(workers_channel, monkeypatch):
    real_send = redis.connection.Connection.send_packed_command
    failed = threading.Event()

    def failing_once(self: Any, command: Any, check_health: bool = True) -> None:
        if not failed.is_set():
            failed.set()
            raise redis.ConnectionError("the connection dropped")
        real_send(self, command, check_health)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", failing_once)

    live_state.publish_then_signal([], SIGNALS)()

    assert failed.is_set()
    assert [s["turns"] for s in heard(workers_channel, 2)] == [[1, 2], [3]]


def test_a_signal_whose_reply_is_lost_is_sent_again(workers_channel, monkeypatch):
    real_read = redis.connection.Connection.read_response
    failed = threading.Event()

    def failing_once(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not failed.is_set():
            failed.set()
            raise redis.ConnectionError("the connection dropped")
        return real_read(self, *args, **kwargs)

    read_replies = live_state.publish_then_signal([], SIGNALS)
    monkeypatch.setattr(redis.connection.Connection, "read_response", failing_once)
    in_use = connections_in_use()

    read_replies()

    assert failed.is_set()
    # Heard twice: once as written, once again through the client (a worker stops a turn once).
    assert [s["turns"] for s in heard(workers_channel, 4)] == [[1, 2], [3], [1, 2], [3]]
    assert connections_in_use() == in_use - 1
