"""The worker process's turn engine: one asyncio loop (in its own thread) that streams every
turn this process runs, plus background duties:

- the cancel listener: one Redis subscription per process; a cancel sets the in-memory
  abort event of the turn, so the runner needs no Redis call per chunk to notice it. Each
  time it (re)subscribes it asks the database which of its turns had a cancel meanwhile;
- the heartbeat: this worker's liveness in a sorted set;
- the reaper: ends turns whose worker stopped heartbeating with error `worker_lost`, hands
  again to the workers the active turns nobody claimed whose task was lost (Redis lost its
  queue), and ends turns an interrupt waits for too long;
- the offer taker: while this process streams fewer sets of turns than its pool has
  threads, it waits for work on the Redis list of offered turns, and starts a set it is
  handed at once (decision 027).

A set of turns that started together (a set of sends, often one turn) reaches a worker in
one of two ways: handed to a worker waiting for work (the taker above), or, when none is
waiting, as a Celery task: a pool thread calls `engine().run_many(turn_pks)` and blocks until
those turns end. Either way the pool's size bounds how many sets a process streams at once.

The database or Redis away for a while: a claim or a finish is tried again until it goes
through (a turn is never left half-done by a blip), the duties go on once they are back.
Every task of the loop is cancelled and awaited when the worker shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson
from celery.signals import worker_shutdown, worker_shutting_down
from django.db import InterfaceError, OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sessions_app.conf import app_settings, key_prefix
from sessions_app.events.archive import archiver
from sessions_app.infra import live_state
from sessions_app.infra.batching import GroupedCall
from sessions_app.infra.db_threads import db
from sessions_app.ops import metrics
from sessions_app.turns import announce
from sessions_app.turns.running import (
    cancel_requested,
    overdue_interrupts,
    turns_claim,
    turns_fail_lost,
    turns_finish,
    turns_gone,
    unclaimed_turns,
)
from sessions_app.turns.types import ClaimedTurn, TurnOutcome
from sessions_app.worker.turn_stream import TurnRunner

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Turns claimed in one transaction at most: a group of sends hands over up to
# consumers.SEND_SET_LIMIT turns in one task, and claiming them together is what lets them
# start together (decision 014).
CLAIM_SET_LIMIT = 128
# The database or Redis unreachable: what is tried again, and for how long a claim is (a
# turn whose claim gave up is handed out again by a reaper); a finish is tried until it
# goes through, or the turn would stay active with a live worker.
TRANSIENT = (OperationalError, InterfaceError, RedisConnectionError, RedisTimeoutError)
CLAIM_RETRY_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 2.0
# How long one wait for an offer lasts (then the taker checks it should still take any).
# Well under the Redis client's socket timeout (redis-py's default, 5 s): a BLPOP as long
# as that races the read's own timeout, which drops the connection and pauses the taker.
OFFER_WAIT_SECONDS = 2.0


async def _persist(what: str, call: Callable[[], Awaitable[T]], give_up_after: float | None) -> T:
    """`await call()`, tried again while the database or Redis is unreachable."""
    loop = asyncio.get_running_loop()
    deadline = None if give_up_after is None else loop.time() + give_up_after
    pause = 0.05
    while True:
        try:
            return await call()
        except TRANSIENT as exc:
            if deadline is not None and loop.time() + pause > deadline:
                raise
            logger.warning("%s: %s; trying again in %.2f s", what, exc, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_BACKOFF_SECONDS)


class Engine:
    def __init__(self) -> None:
        # Scoped by the deployment's key prefix: a reaper only judges its own deployment's
        # workers, even where several deployments (or test stacks) share one database.
        self.worker_id = f"{key_prefix()}/{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="engine-db"))
        self.aborts: dict[int, asyncio.Event] = {}
        # Turns of sessions deleted while they ran: stopped without a word (nothing is
        # published or ended for them: their rows are gone), then their Redis keys go.
        self.gone: set[int] = set()
        self.cancel_asked_at: dict[int, float] = {}  # when a cancel of a running turn was committed
        # Turns handed over (or ended) while the previous claim (or finish) was in the
        # database go together: one transaction per batch (grouping.py).
        self._claims: GroupedCall[int, ClaimedTurn | None] = GroupedCall.on_thread(
            lambda pks: turns_claim(turn_pks=pks, worker_id=self.worker_id), max_batch=CLAIM_SET_LIMIT
        )
        self._finishes: GroupedCall[TurnOutcome, bool] = GroupedCall.on_thread(turns_finish, max_batch=64)
        # The reaper's memory of heartbeats (worker id -> last seen): a worker whose entry
        # Redis lost with its data is not taken for dead.
        self._seen: dict[str, float] = {}
        self._started = time.time()
        self._unclaimed_since: dict[int, float] = {}
        self._duties: set[asyncio.Task[Any]] = set()
        # Sets of turns streaming in this process (from tasks or offers), and how many may
        # before the offer taker stops taking offers (the pool's size; 0: takes none).
        self._sets_running = 0
        self._sets_limit = 0
        self._room = asyncio.Event()
        self._offer_taker: asyncio.Task[None] | None = None
        self._offered_sets: set[asyncio.Task[None]] = set()
        self._stopping = False  # Celery's shutdown began: no more sets start here
        metrics.serve_worker_metrics()  # without a metrics directory: this process's own
        self._thread = threading.Thread(target=self._main, name="turn-engine", daemon=True)
        self._ready = threading.Event()
        self._thread.start()
        self._ready.wait()

    # --- public, called from Celery threads ---

    def run_many(self, turn_pks: list[int]) -> None:
        asyncio.run_coroutine_threadsafe(self._run_turns(turn_pks), self.loop).result()

    def run_here(self, turn_pks: list[int]) -> bool:
        """From any thread: run a set of turns on this process's loop, as if this process
        had taken it from the offers, when it takes offers and has room for one more set;
        whether it does. For turns this process's own commit made ready (a queued turn that
        starts as one of its turns ends): no Redis round trip to offer them, and no other
        process to wake. Another set started meanwhile may take the room first: the limit
        is then passed by a set, as an offer popped as the room filled passes it."""
        # No room before the worker takes offers (a limit of 0) and none once it stops.
        if self._stopping or self._sets_running >= self._sets_limit:
            return False
        self.loop.call_soon_threadsafe(self._start_set, turn_pks)
        return True

    def take_offers(self, sets_limit: int) -> None:
        """Wait for offered turns while fewer than `sets_limit` sets stream here."""
        self.loop.call_soon_threadsafe(self._start_taking_offers, sets_limit)

    def stop_taking_offers(self) -> None:
        self._stopping = True  # at once: `run_here` is asked from other threads
        self.loop.call_soon_threadsafe(self._stop_taking_offers)

    def close(self, timeout: float = 10) -> None:
        """Let the sets of turns taken from offers end (as Celery's warm shutdown lets its
        tasks end), then cancel and await every task of the loop and stop it."""
        if self.loop.is_closed() or not self.loop.is_running():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._offered_sets_ended(), self.loop).result()
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._aclose(), self.loop).result(timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)

    # --- the loop ---

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        for duty in (self._listen_for_cancels, self._heartbeat, self._reap):
            task = self.loop.create_task(self._forever(duty), name=f"engine-{duty.__name__}")
            self._duties.add(task)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    # --- offered turns ---

    def _start_taking_offers(self, sets_limit: int) -> None:
        self._sets_limit = sets_limit
        self._update_room()
        if self._offer_taker is None:
            self._offer_taker = self.loop.create_task(self._forever(self._take_offers), name="engine-take-offers")
            self._duties.add(self._offer_taker)

    def _stop_taking_offers(self) -> None:
        if self._offer_taker is not None:
            self._offer_taker.cancel()

    def _update_room(self) -> None:
        if self._sets_running < self._sets_limit:
            self._room.set()
        else:
            self._room.clear()

    async def _take_offers(self) -> None:
        """Block on the offers while there is room. A set handed over between the pop and
        the claim is lost if this process dies then: a reaper hands its turns out again
        after WORKER_LOST_AFTER_SECONDS, as for a lost task."""
        while True:
            await self._room.wait()
            turn_pks = await live_state.take_offered_turns(OFFER_WAIT_SECONDS)
            if turn_pks:
                self._start_set(turn_pks)

    def _start_set(self, turn_pks: list[int]) -> None:
        offered = self.loop.create_task(self._run_turns(turn_pks))
        self._offered_sets.add(offered)
        offered.add_done_callback(self._offered_set_done)

    def _offered_set_done(self, offered: asyncio.Task[None]) -> None:
        """Log what a Celery task's failure would have logged (a claim that gave up)."""
        self._offered_sets.discard(offered)
        if not offered.cancelled() and offered.exception() is not None:
            logger.error("running offered turns failed", exc_info=offered.exception())

    async def _offered_sets_ended(self) -> None:
        self._stop_taking_offers()
        await asyncio.gather(*self._offered_sets, return_exceptions=True)

    async def _aclose(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _forever(self, duty: Callable[[], Any]) -> None:
        """Keep a background duty running through Redis or database hiccups."""
        pause = 0.5
        while True:
            try:
                await duty()
                pause = 0.5
            except asyncio.CancelledError:
                raise
            except TRANSIENT as exc:
                logger.warning("engine duty %s: %s; restarting it", duty.__name__, exc)
            except Exception:
                logger.exception("engine duty %s failed; restarting it", duty.__name__)
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_BACKOFF_SECONDS)

    def coalesce_window(self) -> float:
        """Seconds a delta may wait: none while this process streams one turn, growing with
        the number of turns it streams, up to COALESCE_WINDOW_MS."""
        others = max(len(self.aborts) - 1, 0)
        return min(app_settings.COALESCE_WINDOW_MS, app_settings.COALESCE_PER_TURN_MS * others) / 1000

    async def _run_turns(self, turn_pks: list[int]) -> None:
        self._sets_running += 1
        self._update_room()
        try:
            await asyncio.gather(*(self._run_turn(pk) for pk in turn_pks))
        finally:
            self._sets_running -= 1
            self._update_room()

    async def _run_turn(self, turn_pk: int) -> None:
        if turn_pk in self.aborts:
            return  # this process runs it already (handed out twice: a reaper, a redelivery)
        abort = asyncio.Event()
        self.aborts[turn_pk] = abort  # before the claim reads the cancel flag: no cancel slips by
        metrics.TURNS_STREAMING.inc()
        try:
            claimed = await _persist(
                f"claiming turn {turn_pk}", lambda: self._claims.call(turn_pk), give_up_after=CLAIM_RETRY_SECONDS
            )
            if claimed is None:
                return
            runner = TurnRunner(
                claimed, abort, self.coalesce_window, archiver.add, session_gone=lambda: turn_pk in self.gone
            )
            outcome = await runner.run()
            if turn_pk in self.gone:
                await self._forget(claimed)
            else:
                # The archive catches up off the critical path.
                ended = await _persist(
                    f"ending turn {claimed.turn_id}", lambda: self._finishes.call(outcome), give_up_after=None
                )
                if not ended:  # ended meanwhile, or its session deleted unheard: its buffer goes in time
                    await live_state.expire_live_content(outcome.session_id, outcome.message_id)
            self._count_end(turn_pk, outcome, runner.tokens_seen)
        finally:
            self.gone.discard(turn_pk)
            self.aborts.pop(turn_pk, None)
            self.cancel_asked_at.pop(turn_pk, None)
            metrics.TURNS_STREAMING.dec()

    async def _forget(self, turn: ClaimedTurn) -> None:
        """A turn of a deleted session has stopped: what its last publishes wrote in Redis
        goes (its answer's live buffer; the session's numbering and log expire soon)."""
        try:
            await live_state.forget_session(turn.session_id, [turn.assistant_message_id])
        except TRANSIENT as exc:  # they expire anyway (a week: EVENT_LOG_TTL_SECONDS)
            logger.warning("turn %s of a deleted session: forgetting its keys failed (%s)", turn.turn_id, exc)

    def _count_end(self, turn_pk: int, outcome: TurnOutcome, tokens: int) -> None:
        metrics.TOKENS.inc(tokens)
        metrics.TURNS_ENDED.labels(outcome.status).inc()
        if outcome.error_code:
            metrics.ERRORS.labels("turn", outcome.error_code).inc()
        asked = self.cancel_asked_at.get(turn_pk)
        if asked is not None and outcome.status == "cancelled":
            metrics.CANCEL_SECONDS.observe(max(time.time() - asked, 0.0))

    def _abort(self, turn_pk: int, asked_at: float | None = None) -> None:
        abort = self.aborts.get(turn_pk)
        if abort is not None and not abort.is_set():
            self.cancel_asked_at[turn_pk] = asked_at or time.time()
            abort.set()

    async def _listen_for_cancels(self) -> None:
        pubsub = live_state.async_pubsub()
        try:
            await pubsub.subscribe(live_state.Keys.cancel_channel())
            # Cancels signalled while this listener was away (Redis restarted): the flag is
            # in the database.
            if self.aborts:
                for turn_pk in await db(cancel_requested)(list(self.aborts)):
                    self._abort(turn_pk)
                for turn_pk in await db(turns_gone)(list(self.aborts)):
                    self.gone.add(turn_pk)
                    self._abort(turn_pk)
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                signal = orjson.loads(message["data"])
                asked_at = signal.get("at")
                for turn_pk in signal.get("turns", []):
                    if signal.get("deleted") and int(turn_pk) in self.aborts:
                        self.gone.add(int(turn_pk))  # its session was deleted
                    self._abort(int(turn_pk), asked_at / 1000 if asked_at else None)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _heartbeat(self) -> None:
        client = live_state.async_redis()
        while True:
            await client.zadd(live_state.Keys.workers(), {self.worker_id: time.time()})
            metrics.HEARTBEATS.inc()
            await asyncio.sleep(app_settings.HEARTBEAT_SECONDS)

    async def _reap(self) -> None:
        client = live_state.async_redis()
        while True:
            await asyncio.sleep(app_settings.HEARTBEAT_SECONDS)
            now = time.time()
            lost_after = float(app_settings.WORKER_LOST_AFTER_SECONDS)
            cutoff = now - lost_after
            await client.zremrangebyscore(live_state.Keys.workers(), "-inf", cutoff)
            heard: list[tuple[bytes, float]] = await client.zrangebyscore(  # type: ignore[assignment]
                live_state.Keys.workers(), cutoff, "+inf", withscores=True
            )
            for member, score in heard:
                worker = member.decode()
                self._seen[worker] = max(float(score), self._seen.get(worker, 0.0))
            self._seen = {w: seen for w, seen in self._seen.items() if seen >= cutoff}
            if now - self._started < lost_after:
                continue  # not heard every worker for long enough to call one lost
            alive = {*self._seen, self.worker_id}
            ended = await db(turns_fail_lost)(live_workers=alive, scope=f"{key_prefix()}/")
            if ended:
                logger.warning("ended turns of lost workers: %s", ", ".join(ended))
            overdue = await db(overdue_interrupts)(older_than_seconds=app_settings.INTERRUPT_WAIT_SECONDS)
            if overdue:
                logger.warning("ended turns whose workers did not stop them for an interrupt: %s", ", ".join(overdue))
            await self._hand_out_lost_tasks(now, lost_after)

    async def _hand_out_lost_tasks(self, now: float, lost_after: float) -> None:
        """Active turns that no worker claimed for WORKER_LOST_AFTER_SECONDS while the task
        queue is empty: their task was lost (Redis lost its data). Hand them out again, from
        one worker of the deployment at a time; a claim runs a turn once whoever gets it."""
        if not app_settings.HAND_OUT_LOST_TASKS:
            return
        client = live_state.async_redis()
        if not await client.set(f"{key_prefix()}:hand-out", self.worker_id, nx=True, ex=max(int(lost_after), 1)):
            return
        unclaimed = set(await db(unclaimed_turns)())
        self._unclaimed_since = {pk: self._unclaimed_since.get(pk, now) for pk in unclaimed}
        lost = [pk for pk, since in self._unclaimed_since.items() if now - since >= lost_after]
        if not lost:
            return
        if await asyncio.to_thread(_task_queue_empty):
            logger.warning("handing out again turns whose task was lost: %s", lost)
            await asyncio.to_thread(announce.run, lost)
            for pk in lost:
                self._unclaimed_since[pk] = now


def _task_queue_empty() -> bool:
    """Whether the deployment's Celery queue holds no task (sync: kombu)."""
    from celery import current_app
    from django.conf import settings

    try:
        with current_app.connection_for_read() as connection:
            channel: Any = connection.default_channel
            queue = channel.queue_declare(queue=getattr(settings, "CELERY_TASK_DEFAULT_QUEUE"), passive=True)  # noqa: B009
            return int(queue.message_count) == 0
    except Exception:  # no such queue (Redis lost it too): nothing waits in it
        return True


_engine: Engine | None = None
_engine_lock = threading.Lock()


def engine() -> Engine:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = Engine()
        return _engine


def started_engine() -> Engine | None:
    """The process's engine if one was started (a shutdown starts none)."""
    with _engine_lock:
        return _engine


@worker_shutting_down.connect
def stop_taking_offers(**_kwargs: Any) -> None:
    """Celery starts to shut down: take no more offered turns (they go as tasks to others)."""
    if (running := started_engine()) is not None:
        running.stop_taking_offers()


@worker_shutdown.connect
def stop_engine(**_kwargs: Any) -> None:
    """Celery is stopping (its tasks have ended): cancel and await the loop's tasks."""
    if (running := started_engine()) is not None:
        running.close()
