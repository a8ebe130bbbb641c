"""How a started turn reaches a worker (decision 027): handed straight to a worker waiting
for work, with no Celery task; as a Celery task when no worker waits; run by the worker
whose turn's end started it (a queued turn), or by the first worker free when a cancel
ended the unclaimed turn it queued behind (decision 050); and, should the worker it was
handed to die before claiming it, handed out again by another's reaper."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from typing import Any

import httpx
import redis

from tests.faults.helpers import assert_shows_what_the_server_stored, settled
from tests.integration.helpers import session_with


def wait_for_waiting_workers(client: redis.Redis, count: int, timeout: float = 30) -> None:
    """Until `count` clients block on the offered turns (the workers' takers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(1 for c in client.client_list() if c.get("cmd") == "blpop") >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{count} worker(s) never waited for offered turns")


def celery_publishes(client: redis.Redis) -> int:
    """Messages published to Celery's queues so far (kombu's Redis transport LPUSHes them)."""
    return int(client.info("commandstats").get("cmdstat_lpush", {}).get("calls", 0))


def offers(client: redis.Redis) -> int:
    """Sets of turns offered to waiting workers so far (each offer is one RPUSH)."""
    return int(client.info("commandstats").get("cmdstat_rpush", {}).get("calls", 0))


def handed_over(base_url: str, way: str) -> float:
    """The web process's count of sets handed over that way (its /metrics)."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    match = re.search(rf'^chat_turn_sets_handed_over_total{{way="{way}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_a_waiting_worker_takes_a_turn_without_a_celery_task(fault_redis, fault_stack, login):
    stack = fault_stack(redis_url=fault_redis.url)
    alice = await login(stack.base_url, "alice")
    session = await session_with(alice, tokens=20, rate=200)
    device = await alice.connect(session["id"])
    wait_for_waiting_workers(fault_redis.client(), 1)

    turns = [await device.send(f"question {n}") for n in range(3)]

    for turn in turns:
        assert await settled(device, turn.turn_id) == "complete"
    assert celery_publishes(fault_redis.client()) == 0
    assert handed_over(stack.base_url, "waiting_worker") == 3
    assert handed_over(stack.base_url, "celery_task") == 0
    await assert_shows_what_the_server_stored(alice, session["id"], device)


async def test_a_turn_no_worker_waits_for_goes_as_a_celery_task(fault_redis, fault_stack, login):
    stack = fault_stack(redis_url=fault_redis.url, workers=0)
    alice = await login(stack.base_url, "alice")
    session = await session_with(alice, tokens=20, rate=200)
    device = await alice.connect(session["id"])

    turn = await device.send("waiting for a worker")
    assert turn.status == "active"
    assert celery_publishes(fault_redis.client()) == 1  # its task waits in the queue
    assert handed_over(stack.base_url, "celery_task") == 1
    stack.start_worker()

    assert await settled(device, turn.turn_id) == "complete"
    await assert_shows_what_the_server_stored(alice, session["id"], device)


async def test_a_cancel_ending_a_turn_no_worker_took_starts_the_one_queued_behind_it(fault_redis, fault_stack, login):
    """With every worker busy (here: none), a turn waits unclaimed; a cancel ends it at once,
    and the turn queued behind it starts in the same step (decision 050): its `turn.start`
    after the cancelled turn's `turn.end`, handed to the workers, and streamed in full by the
    first worker to come."""
    stack = fault_stack(redis_url=fault_redis.url, workers=0)
    alice = await login(stack.base_url, "alice")
    session = await session_with(alice, tokens=20, rate=200)
    device = await alice.connect(session["id"])
    unclaimed = await device.send("no worker takes this")
    queued = await device.send("after it", policy="queue")
    assert (unclaimed.status, queued.status) == ("active", "queued")

    await device.cancel(turn_id=unclaimed.turn_id)

    assert await settled(device, unclaimed.turn_id) == "cancelled"
    await device.wait_for(lambda: device.turns.get(queued.turn_id, {}).get("status") == "active", 30)
    lifecycle = [(e["type"], e["turnId"]) for e in device.events if e["type"] in ("turn.start", "turn.end")]
    assert lifecycle[-2:] == [("turn.end", unclaimed.turn_id), ("turn.start", queued.turn_id)]
    stack.start_worker()
    assert await settled(device, queued.turn_id) == "complete"
    await assert_shows_what_the_server_stored(alice, session["id"], device)


async def a_turn_and_one_queued(stack: Any, fault_redis: Any, login: Any, seconds: float) -> tuple[Any, ...]:
    """Alice's session on `stack`: a turn streaming for `seconds`, and a turn queued behind
    it; (alice, session, device, streaming, queued)."""
    alice = await login(stack.base_url, "alice")
    session = await session_with(alice, tokens=int(40 * seconds), rate=40)
    device = await alice.connect(session["id"])
    wait_for_waiting_workers(fault_redis.client(), 1)
    streaming = await device.send("a long answer")
    queued = await device.send("after it", policy="queue")
    assert queued.status == "queued"
    return alice, session, device, streaming, queued


async def test_a_queued_turn_runs_on_the_worker_whose_turn_ended(fault_redis, fault_stack, login):
    """The worker that ends a turn starts the turn queued behind it itself: no offer through
    Redis and no Celery task, and the queued turn streams in full."""
    stack = fault_stack(redis_url=fault_redis.url)
    alice, session, device, streaming, queued = await a_turn_and_one_queued(stack, fault_redis, login, seconds=2)
    offered_before = offers(fault_redis.client())

    await device.cancel(turn_id=streaming.turn_id)

    assert await settled(device, streaming.turn_id) == "cancelled"
    assert await settled(device, queued.turn_id) == "complete"
    assert offers(fault_redis.client()) == offered_before
    assert celery_publishes(fault_redis.client()) == 0
    await assert_shows_what_the_server_stored(alice, session["id"], device)


async def test_a_stopping_worker_ends_its_turn_and_leaves_the_queued_one_to_another(fault_redis, fault_stack, login):
    """A worker told to stop (SIGTERM: Celery's warm shutdown) streams its turn to the end;
    the turn queued behind it, started by that end, goes to a worker that keeps running."""
    stack = fault_stack(redis_url=fault_redis.url)
    # Long enough for a second worker to start while the first still streams the turn.
    alice, session, device, streaming, queued = await a_turn_and_one_queued(stack, fault_redis, login, seconds=8)
    await device.wait_for(lambda: any(e["type"] == "delta" for e in device.turn_events(streaming.turn_id)), 30)
    stack.start_worker("worker-2")
    wait_for_waiting_workers(fault_redis.client(), 2)

    assert device.turns[streaming.turn_id]["status"] == "active"  # still streaming as the worker stops
    await asyncio.to_thread(stack.kill, "worker", signal.SIGTERM)  # returns once it has exited

    assert await settled(device, streaming.turn_id) == "complete"
    assert await settled(device, queued.turn_id) == "complete"
    await assert_shows_what_the_server_stored(alice, session["id"], device)


async def test_a_turn_whose_worker_died_before_claiming_it_is_handed_out_again(fault_redis, fault_stack, login):
    stack = fault_stack(redis_url=fault_redis.url, env={"CHAT_HAND_OUT_LOST_TASKS": "true"})
    alice = await login(stack.base_url, "alice")
    session = await session_with(alice, tokens=20, rate=200)
    device = await alice.connect(session["id"])
    wait_for_waiting_workers(fault_redis.client(), 1)
    worker = stack.processes["worker"]
    worker.send_signal(signal.SIGSTOP)  # still blocked on the offers: Redis hands it the next one

    turn = await device.send("handed to a worker that dies")
    assert turn.status == "active"
    assert celery_publishes(fault_redis.client()) == 0  # it went to the stopped worker
    stack.kill("worker")
    stack.start_worker("worker-2")

    assert await settled(device, turn.turn_id) == "complete"  # worker-2's reaper handed it out again
    assert "handing out again turns whose task was lost" in stack.log_text("worker-2")
    await assert_shows_what_the_server_stored(alice, session["id"], device)
