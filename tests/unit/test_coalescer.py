"""Delta coalescing: a lone stream is not delayed; a burst goes out in one publish; the
answer's live text and seq stay in step (real Redis)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson

from sessions_app.infra import live_state
from sessions_app.turns.types import ClaimedTurn
from sessions_app.worker.turn_stream import DeltaCoalescer

TIMEOUT = 10  # seconds: a bound on each wait, far above what any of them takes
# A coalescing window no test outlasts: a delta held for it goes out only with others or at
# close. A first delta still goes out at once (no flush since the loop clock's zero, at boot).
WINDOW = 60.0


def claimed() -> ClaimedTurn:
    session_id = str(uuid.uuid4())
    live_state.start_numbering_sync(session_id)  # as creating a session does: numbering from 1
    return ClaimedTurn(
        pk=1,
        session_id=session_id,
        turn_id="t",
        client_id="c",
        model="demo",
        model_options={},
        assistant_message_id="a1",
        cancel_requested=False,
    )


class Published:
    """The coalescer's `on_published`: records each batch's frames; `await next_batch()`
    returns once one more batch than before has been published."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self._changed = asyncio.Event()

    def __call__(self, _session_id: str, _events: list[Any], frames: list[str]) -> None:
        self.batches.append(frames)
        self._changed.set()

    async def next_batch(self) -> list[str]:
        seen = len(self.batches)
        while len(self.batches) == seen:
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), TIMEOUT)
        return self.batches[seen]


async def test_without_a_window_every_delta_goes_out_at_once():
    turn = claimed()
    published = Published()
    coalescer = DeltaCoalescer(turn, lambda: 0.0, published)
    coalescer.add("text", "a ")
    await published.next_batch()  # out on its own, with no close to push it
    coalescer.add("text", "b ")
    await published.next_batch()
    await coalescer.close()
    assert [len(batch) for batch in published.batches] == [1, 1]
    content = await live_state.live_contents(turn.session_id, ["a1"])
    assert content["a1"].parts == [{"type": "text", "text": "a b "}]
    assert content["a1"].content_seq == coalescer.last_seq == 2


async def test_a_burst_within_the_window_is_one_event():
    turn = claimed()
    published = Published()
    window_read = asyncio.Event()

    def window() -> float:
        window_read.set()  # the flusher woke for new deltas and now waits out the rest of the window
        return WINDOW

    coalescer = DeltaCoalescer(turn, window, published)
    coalescer.add("text", "x ")
    await published.next_batch()  # the leading delta goes out at once, not a window later
    window_read.clear()
    coalescer.add("text", "one ")
    await asyncio.wait_for(window_read.wait(), TIMEOUT)  # "one " is held for the window...
    for word in ("two ", "three "):
        coalescer.add("text", word)  # ...and what arrives meanwhile joins it
    await coalescer.close()
    frames = [f for batch in published.batches for f in batch]
    assert len(frames) == 2 and '"text":"one two three "' in frames[1]
    assert coalescer.parts() == [{"type": "text", "text": "x one two three "}]
    assert (await live_state.read_log(turn.session_id, 0)) == frames


async def test_a_batch_redis_refused_is_kept_and_sent_next_in_order(monkeypatch):
    """A Redis blip loses no token and repeats none: the batch goes back to the buffer, ahead
    of what arrives meanwhile."""
    turn = claimed()
    real_publish = live_state.publish_async
    failures = [ConnectionError("redis went away")]
    refused = asyncio.Event()

    async def flaky(session_id, events, **options):
        if failures:
            refused.set()
            raise failures.pop()
        return await real_publish(session_id, events, **options)

    monkeypatch.setattr(live_state, "publish_async", flaky)
    monkeypatch.setattr("sessions_app.worker.turn_stream.PUBLISH_RETRY_SECONDS", 0.01)
    published = Published()
    coalescer = DeltaCoalescer(turn, lambda: 0.0, published)
    coalescer.add("text", "one ")
    await asyncio.wait_for(refused.wait(), TIMEOUT)  # the first flush failed
    coalescer.add("text", "two ")
    await published.next_batch()  # the flusher retried, and Redis took it
    coalescer.add("text", "three ")
    await coalescer.close()
    frames = await live_state.read_log(turn.session_id, 0)
    assert "".join(orjson.loads(f)["text"] for f in frames) == "one two three "
    assert orjson.loads(frames[0])["text"].startswith("one ")
    assert coalescer.parts() == [{"type": "text", "text": "one two three "}]
