"""The worker process's turn engine: one asyncio loop (in its own thread) that streams every
turn this process runs, plus three background duties:

- the cancel listener: one Redis subscription per process; a cancel sets the in-memory
  abort event of the turn, so the runner needs no Redis call per chunk to notice it;
- the heartbeat: this worker's liveness in a sorted set;
- the reaper: ends turns whose worker stopped heartbeating with error `worker_lost`.

Celery pool threads call `engine().run_many(turn_pks)` with the turns a set of sends started
together (often one) and block until those turns end, so the pool's size bounds how many
tasks, and so sets of turns, a process streams at once.
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from sessions_app.conf import app_settings, key_prefix
from sessions_app.events.archive import archiver
from sessions_app.infra import live_state
from sessions_app.infra.batching import GroupedCall
from sessions_app.infra.db_threads import db
from sessions_app.turns.running import overdue_interrupts, turns_claim, turns_fail_lost, turns_finish
from sessions_app.turns.types import ClaimedTurn, TurnOutcome
from sessions_app.worker.turn_stream import TurnRunner

logger = logging.getLogger(__name__)


# Turns claimed in one transaction at most: a group of sends hands over up to
# consumers.SEND_SET_LIMIT turns in one task, and claiming them together is what lets them
# start together (decision 014).
CLAIM_SET_LIMIT = 128


class Engine:
    def __init__(self) -> None:
        # Scoped by the deployment's key prefix: a reaper only judges its own deployment's
        # workers, even where several deployments (or test stacks) share one database.
        self.worker_id = f"{key_prefix()}/{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="engine-db"))
        self.aborts: dict[int, asyncio.Event] = {}
        # Turns handed over (or ended) while the previous claim (or finish) was in the
        # database go together: one transaction per batch (grouping.py).
        self._claims: GroupedCall[int, ClaimedTurn | None] = GroupedCall.on_thread(
            lambda pks: turns_claim(turn_pks=pks, worker_id=self.worker_id), max_batch=CLAIM_SET_LIMIT
        )
        self._finishes: GroupedCall[TurnOutcome, bool] = GroupedCall.on_thread(turns_finish)
        self._thread = threading.Thread(target=self._main, name="turn-engine", daemon=True)
        self._ready = threading.Event()
        self._thread.start()
        self._ready.wait()

    # --- public, called from Celery threads ---

    def run_many(self, turn_pks: list[int]) -> None:
        asyncio.run_coroutine_threadsafe(self._run_turns(turn_pks), self.loop).result()

    # --- the loop ---

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        for duty in (self._listen_for_cancels, self._heartbeat, self._reap):
            self.loop.create_task(self._forever(duty))
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    async def _forever(self, duty: Callable[[], Any]) -> None:
        """Keep a background duty running through Redis or database hiccups."""
        while True:
            try:
                await duty()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("engine duty %s failed; restarting it", duty.__name__)
                await asyncio.sleep(1)

    def coalesce_window(self) -> float:
        """Seconds a delta may wait: none while this process streams one turn, growing with
        the number of turns it streams, up to COALESCE_WINDOW_MS."""
        others = max(len(self.aborts) - 1, 0)
        return min(app_settings.COALESCE_WINDOW_MS, app_settings.COALESCE_PER_TURN_MS * others) / 1000

    async def _run_turns(self, turn_pks: list[int]) -> None:
        await asyncio.gather(*(self._run_turn(pk) for pk in turn_pks))

    async def _run_turn(self, turn_pk: int) -> None:
        abort = asyncio.Event()
        self.aborts[turn_pk] = abort  # before the claim reads the cancel flag: no cancel slips by
        try:
            claimed = await self._claims.call(turn_pk)
            if claimed is None:
                return
            runner = TurnRunner(claimed, abort, self.coalesce_window, archiver.add)
            outcome = await runner.run()
            await self._finishes.call(outcome)  # the archive catches up off the critical path
        finally:
            self.aborts.pop(turn_pk, None)

    async def _listen_for_cancels(self) -> None:
        pubsub = live_state.async_redis().pubsub()
        await pubsub.subscribe(live_state.Keys.cancel_channel())
        try:
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                for turn_pk in orjson.loads(message["data"]).get("turns", []):
                    abort = self.aborts.get(int(turn_pk))
                    if abort is not None:
                        abort.set()
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _heartbeat(self) -> None:
        client = live_state.async_redis()
        while True:
            await client.zadd(live_state.Keys.workers(), {self.worker_id: time.time()})
            await asyncio.sleep(app_settings.HEARTBEAT_SECONDS)

    async def _reap(self) -> None:
        client = live_state.async_redis()
        while True:
            await asyncio.sleep(app_settings.HEARTBEAT_SECONDS)
            cutoff = time.time() - app_settings.WORKER_LOST_AFTER_SECONDS
            await client.zremrangebyscore(live_state.Keys.workers(), "-inf", cutoff)
            alive = {m.decode() for m in await client.zrangebyscore(live_state.Keys.workers(), cutoff, "+inf")}  # type: ignore[union-attr]
            alive.add(self.worker_id)
            ended = await db(turns_fail_lost)(live_workers=alive, scope=f"{key_prefix()}/")
            if ended:
                logger.warning("ended turns of lost workers: %s", ", ".join(ended))
            overdue = await db(overdue_interrupts)(older_than_seconds=app_settings.INTERRUPT_WAIT_SECONDS)
            if overdue:
                logger.warning("ended turns whose workers did not stop them for an interrupt: %s", ", ".join(overdue))


_engine: Engine | None = None
_engine_lock = threading.Lock()


def engine() -> Engine:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = Engine()
        return _engine
