"""Redis restarts while a turn streams, with its data or without: the turn goes on (or
ends), nothing committed is lost, and every device, connected through the restart or
resuming with `after=`, ends showing exactly what the server stored."""

from __future__ import annotations

import pytest

from tests.faults.helpers import assert_shows_what_the_server_stored, settled
from tests.integration.helpers import expected_answer, session_with

TOKENS, RATE = 240, 40  # six seconds of answer: the restart falls in the middle of it


@pytest.mark.parametrize("keep_data", [False, True], ids=["without-its-data", "with-its-data"])
async def test_redis_restarts_mid_stream(fault_redis, fault_stack, login, keep_data):
    stack = fault_stack(redis_url=fault_redis.url)
    alice = await login(stack.base_url, "alice")
    session = await session_with(alice, tokens=TOKENS, rate=RATE)
    staying = await alice.connect(session["id"])  # connected through the restart
    leaving = await alice.connect(session["id"])  # away during it, resumes with after=
    turn = await staying.send("a long answer")
    answer = turn.ack["assistantMessageId"]
    await staying.wait_for(lambda: staying.text_of(answer).count(" ") >= 20)
    await leaving.drop()
    seen_before = leaving.last_seq

    fault_redis.restart(keep_data=keep_data)

    assert await settled(staying, turn.turn_id) == "complete"
    await leaving.open(after=seen_before)
    assert await settled(leaving, turn.turn_id) == "complete"
    fresh = await alice.connect(session["id"])
    detail = await alice.turn(session["id"], turn.turn_id)
    assert detail["content"] == expected_answer("a long answer", TOKENS)  # nothing the worker made was lost
    await assert_shows_what_the_server_stored(alice, session["id"], staying, leaving, fresh)
    assert leaving.resumed is keep_data  # without its data the numbering moved on: a snapshot

    # Life goes on: a new turn streams to every device.
    after = await leaving.send("and then")
    for device in (staying, leaving, fresh):
        assert await settled(device, after.turn_id) == "complete"
    await assert_shows_what_the_server_stored(alice, session["id"], staying, leaving, fresh)
    if not keep_data:
        assert staying.snapshots >= 2  # the server told it to start again from a snapshot
        assert after.ack["turnId"] and staying.last_seq > 10**15  # numbering went on above the old


async def test_a_turn_whose_task_redis_lost_is_handed_out_again(fault_redis, fault_stack, login):
    stack = fault_stack(  # the task waits in Redis's queue
        redis_url=fault_redis.url, workers=0, env={"CHAT_HAND_OUT_LOST_TASKS": "true"}
    )
    alice = await login(stack.base_url, "alice")
    session = await session_with(alice, tokens=20, rate=100)
    device = await alice.connect(session["id"])
    turn = await device.send("waiting for a worker")
    assert turn.status == "active"

    fault_redis.restart(keep_data=False)  # and the queue with it
    stack.start_worker()

    assert await settled(device, turn.turn_id) == "complete"  # a worker's reaper handed it out again
    await assert_shows_what_the_server_stored(alice, session["id"], device)
    assert "handing out again turns whose task was lost" in stack.log_text("worker")
