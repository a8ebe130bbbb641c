"""The hub's pub/sub read (web/hub.py) against real Redis: events published for a session
reach its listeners in order, and no message is formatted for a debug line on the way
(redis-py's own push handler formats every message it receives, debug logging on or off)."""

from __future__ import annotations

import asyncio
import logging
import uuid

import orjson
import pytest

from sessions_app.infra import live_state
from sessions_app.web.hub import Hub

pytestmark = pytest.mark.django_db


class Collected:
    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.arrived = asyncio.Event()

    def offer(self, seq: int, frame: str) -> None:
        self.seqs.append(seq)
        self.arrived.set()

    def resync(self) -> None:
        raise AssertionError("nothing was lost")


class Formatted(logging.Handler):
    """Counts the records of redis-py's push handler, as a debug log would receive them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1


async def test_a_sessions_events_reach_its_listener_unformatted() -> None:
    handler = Formatted()
    push_logger = logging.getLogger("push_response")  # redis-py's
    push_logger.addHandler(handler)
    push_logger.setLevel(logging.DEBUG)
    hub = Hub()
    session_id = str(uuid.uuid4())
    listener = Collected()
    try:
        await hub.subscribe(session_id, listener)
        for i in range(3):
            await asyncio.to_thread(live_state.publish, session_id, [{"type": "custom", "n": i}])
        while len(listener.seqs) < 3:
            listener.arrived.clear()
            await asyncio.wait_for(listener.arrived.wait(), 10)
    finally:
        await hub.aclose()
        push_logger.removeHandler(handler)
        push_logger.setLevel(logging.NOTSET)
    first = listener.seqs[0]
    assert listener.seqs == [first, first + 1, first + 2]  # each once, in order
    assert handler.records == 0


def test_nothing_is_forwarded_after_a_sessions_deletion() -> None:
    """A worker can publish a last delta before it hears that the session is gone: the
    devices have `session.deleted` as their last event all the same."""
    from sessions_app.events import build
    from sessions_app.web.hub import SessionFeed

    def frame(seq: int, event: dict) -> str:  # as the numbering script writes it
        return f'{{"seq":{seq},' + orjson.dumps(event)[1:].decode()

    feed = SessionFeed(str(uuid.uuid4()))
    device = Collected()
    feed.listeners.add(device)
    delta = build.delta("t", "a-1", "late", "text")
    feed.forward(1, [frame(1, delta), frame(2, build.session_deleted("alice")), frame(3, delta)])
    feed.forward(4, [frame(4, delta)])
    feed.resync()  # nothing to start again from
    assert device.seqs == [1, 2]
