"""Delta coalescing: a lone stream is not delayed; a burst goes out in one publish; the
answer's live text and seq stay in step (real Redis)."""

from __future__ import annotations

import asyncio
import uuid

import orjson

from sessions_app.infra import live_state
from sessions_app.turns.types import ClaimedTurn
from sessions_app.worker.turn_stream import DeltaCoalescer


def claimed() -> ClaimedTurn:
    return ClaimedTurn(
        pk=1,
        session_id=str(uuid.uuid4()),
        turn_id="t",
        client_id="c",
        model="demo",
        model_options={},
        assistant_message_id="a1",
        cancel_requested=False,
    )


async def test_without_a_window_every_delta_goes_out_at_once():
    turn = claimed()
    published: list[list[str]] = []
    coalescer = DeltaCoalescer(turn, lambda: 0.0, lambda _sid, _events, frames: published.append(frames))
    coalescer.add("text", "a ")
    await asyncio.sleep(0.05)
    coalescer.add("text", "b ")
    await coalescer.close()
    assert [len(batch) for batch in published] == [1, 1]
    content = await live_state.live_contents(turn.session_id, ["a1"])
    assert content["a1"].parts == [{"type": "text", "text": "a b "}]
    assert content["a1"].content_seq == coalescer.last_seq == 2


async def test_a_burst_within_the_window_is_one_event():
    turn = claimed()
    published: list[list[str]] = []
    coalescer = DeltaCoalescer(turn, lambda: 0.2, lambda _sid, _events, frames: published.append(frames))
    coalescer.add("text", "x ")
    await asyncio.sleep(0.02)  # the leading delta goes out at once
    for word in ("one ", "two ", "three "):
        coalescer.add("text", word)
    await coalescer.close()
    frames = [f for batch in published for f in batch]
    assert len(frames) == 2 and '"text":"one two three "' in frames[1]
    assert coalescer.parts() == [{"type": "text", "text": "x one two three "}]
    assert (await live_state.read_log(turn.session_id, 0)) == frames


async def test_a_batch_redis_refused_is_kept_and_sent_next_in_order(monkeypatch):
    """A Redis blip loses no token and repeats none: the batch goes back to the buffer."""
    turn = claimed()
    real_publish = live_state.publish_async
    failures = [ConnectionError("redis went away")]

    async def flaky(session_id, events):
        if failures:
            raise failures.pop()
        return await real_publish(session_id, events)

    monkeypatch.setattr(live_state, "publish_async", flaky)
    monkeypatch.setattr("sessions_app.worker.turn_stream.PUBLISH_RETRY_SECONDS", 0.01)
    coalescer = DeltaCoalescer(turn, lambda: 0.0, lambda *_: None)
    coalescer.add("text", "one ")
    await asyncio.sleep(0.05)  # the first flush fails, then is retried
    coalescer.add("text", "two ")
    await coalescer.close()
    frames = await live_state.read_log(turn.session_id, 0)
    assert "".join(orjson.loads(f)["text"] for f in frames) == "one two "
    assert coalescer.parts() == [{"type": "text", "text": "one two "}]
