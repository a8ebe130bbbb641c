"""The mirror process (`manage.py ably_mirror`): every session's events, from its log in
Redis, onto its Ably channel; cancels from the channel back to the service.

It never touches the token path: the worker publishes to Redis as always, and the mirror
follows the log from behind. For each session it keeps a cursor (the last seq applied) and
the state of its turns in flight in Redis, next to the session's log, so a restarted
mirror carries on where it stopped.

- Which sessions: the numbering script publishes every batch on the session's Redis
  channel (a wake-up; the log is the truth); a check every second catches a dropped one.
  At start, every session with a log newer than its cursor (or never mirrored) catches up.
- Order: one task per session reads the log after its cursor and publishes in order.
- An outage, or a 429 spell: the session's task retries with backoff; the log keeps the
  events meanwhile, so memory holds one page of them and the text of the answers streaming.
- A gap (the log was trimmed past the cursor): the events are read from the archive, which
  keeps all but deltas; the answers whose deltas were lost are rewritten whole from their
  saved parts when their turn ends. Counted in `gaps`, `events_missed`, `answers_rewritten`.
- One mirror per deployment: a Redis lock; a second process waits as a standby.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Coroutine
from typing import Any

import orjson

from sessions_app.ably.config import AblyConfig, inputs_on_channel_key, redis_key, rest_client, session_state_key
from sessions_app.ably.inbound import CancelListener
from sessions_app.ably.mapping import Close, Publish, Republish, SessionTranslator
from sessions_app.ably.queries import archived_events, final_parts
from sessions_app.ably.stats import Stats
from sessions_app.ably.writer import Writer
from sessions_app.conf import app_settings, key_prefix
from sessions_app.infra.db_threads import db
from sessions_app.infra.live_state import Keys, async_pubsub, async_redis, sync_redis

logger = logging.getLogger(__name__)

PAGE = 500  # events read from the log at a time
MAX_PENDING_CHARS = 1_000_000  # text waiting to be appended before the reading pauses
TAIL_CHECK_SECONDS = 1.0
IDLE_EXIT_SECONDS = 60.0  # a session's task ends after this long with nothing to do
SAVE_SECONDS = 0.5
LOCK_SECONDS = 15
STOP_SECONDS = 10  # the longest a stop waits for the sessions' tasks


def _session_of(channel: bytes | str) -> str | None:
    """The session id of `{prefix}:{<session>}:...`."""
    text = channel.decode() if isinstance(channel, bytes) else channel
    start, end = text.find("{"), text.find("}")
    return text[start + 1 : end] if 0 <= start < end else None


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Until `event` is set, `seconds` at most. (Not `asyncio.wait_for`: on Python 3.11 it
    swallows a cancellation that comes as the event is set, and the task never stops.)"""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


def _events(entries: Any) -> list[dict[str, Any]]:
    """The events of log entries (XRANGE's answer)."""
    return [orjson.loads(fields[b"f"]) for _id, fields in entries or []]


class ChannelMirror:
    """One session onto its channel."""

    def __init__(self, mirror: Mirror, session_id: str) -> None:
        self.mirror = mirror
        self.session_id = session_id
        self.translator = SessionTranslator(session_id)
        channel = mirror.rest.channels.get(mirror.config.channel(session_id))
        self.writer = Writer(channel, mirror.config.append_interval, mirror.stats)
        self.cursor = 0
        self.wake = asyncio.Event()
        self._saved_at = 0.0
        self._dirty_state = False
        self.fresh = False  # no state kept for the session: start where its log starts
        self.deleted = False  # its `session.deleted` was applied: its runs are ended

    @property
    def busy(self) -> bool:
        return bool(self.translator.turns) or self.writer.pending()

    async def run(self) -> None:
        await self._load()
        idle_since = time.monotonic()
        while not self.mirror.stopping.is_set():
            self.wake.clear()
            read = await self._step()
            await self.writer.flush_due()
            if self.deleted and not self.writer.pending():
                break
            await self._save(force=False)
            if read or self.busy:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > IDLE_EXIT_SECONDS:
                break
            if read:
                continue
            due = self.writer.next_due()
            await _wait(self.wake, TAIL_CHECK_SECONDS if due is None else due)
        if self.deleted:  # nothing to resume: what the mirror kept of the session goes too
            await async_redis().delete(session_state_key(self.session_id), inputs_on_channel_key(self.session_id))
            return
        await self._save(force=True)

    # --- reading --------------------------------------------------------------------------

    async def _step(self) -> bool:
        """Apply the next page of the log; False when there was nothing new."""
        if self.writer.pending_chars() > MAX_PENDING_CHARS:
            return False  # let the appends catch up first: memory stays bounded
        # The seq first: the numbering script sets it and appends to the log in one atomic
        # step, so every seq up to it is in the log unless the log lost it.
        last = int(await async_redis().get(Keys.seq(self.session_id)) or 0)
        if last <= self.cursor:
            return False
        log = Keys.log(self.session_id)
        events = _events(await async_redis().xrange(log, min=f"{self.cursor + 1}-0", max=f"{last}-0", count=PAGE))
        if self.fresh:
            # Never mirrored (or Redis lost what the mirror kept): from the oldest event the
            # log holds, not the whole archive again.
            self.fresh = False
            if events:
                self.cursor = events[0]["seq"] - 1
        if not events:
            await self._repair(self.cursor, last)  # the log holds none of it any more
            return True
        if events[0]["seq"] > self.cursor + 1:
            await self._repair(self.cursor, events[0]["seq"] - 1)
        for event in events:
            await self._apply(event)
        return True

    async def _apply(self, event: dict[str, Any]) -> None:
        ops = self.translator.apply(event)
        if event["type"] == "message" and event["message"]["role"] == "user":
            self.mirror.listener.message_seen(self.session_id, event["message"])
            key = inputs_on_channel_key(self.session_id)
            if await async_redis().sismember(key, event["message"]["id"]):
                ops = []  # an Ably client published it before sending it: it is there already
        for op in ops:
            if isinstance(op, Publish):
                await self.writer.publish(op)
            elif isinstance(op, Close):
                await self.writer.close(op)
            elif isinstance(op, Republish):
                await self._rewrite(op)
        self.cursor = int(event["seq"])
        self._dirty_state = True
        self.deleted = self.deleted or event["type"] == "session.deleted"

    async def _repair(self, after: int, until: int) -> None:
        """The log no longer holds after < seq <= until: it was trimmed or expired before
        the mirror got there, or Redis lost the session's numbering, which then jumps ahead
        (infra/live_state.py). Replay what the archive holds of the range; the answers in
        flight across it are rewritten whole when they end."""
        events = await db(archived_events)(self.session_id, after, until, PAGE)
        if not events and not self.translator.turns:
            self.cursor = until  # nothing was there: a jump in the numbering
            return
        logger.warning(
            "ably: %s: events %d..%d left the log before they were mirrored", self.session_id, after + 1, until
        )
        self.mirror.stats.add("gaps")
        self.translator.mark_gap()
        self.translator.in_gap = True
        try:
            while events:
                self.mirror.stats.add("events_from_archive", len(events))
                for event in events:
                    await self._apply(event)
                if len(events) < PAGE:
                    break
                events = await db(archived_events)(self.session_id, self.cursor, until, PAGE)
        finally:
            self.translator.in_gap = False
        self.cursor = until

    async def _rewrite(self, op: Republish) -> None:
        turn = op.turn
        parts = await db(final_parts)(self.session_id, turn.assistant_id)
        publishes, texts = self.translator.rewrite(turn, parts, op.tag)
        for publish in publishes:
            if isinstance(publish, Publish):
                await self.writer.publish(publish)
        for stream, text in texts:
            await self.writer.replace(stream, text, stream.status)
        await self.writer.publish(Publish(self.translator.ending(turn, op.tag), turn_id=turn.turn_id))
        self.mirror.stats.add("answers_rewritten")

    # --- state across restarts ------------------------------------------------------------

    async def _load(self) -> None:
        raw = await async_redis().get(session_state_key(self.session_id))
        if raw is None:
            self.fresh = True
            return
        state = orjson.loads(raw)
        self.cursor = int(state["cursor"])
        self.translator.load(state)
        streams = [s for t in self.translator.turns.values() for s in t.streams.values() if s.status == "streaming"]
        for stream in streams:
            if stream.serial is not None:
                self.writer.streams[stream.key] = stream
        if not streams:
            return
        # Rebuild the open streams' text from the log (sent and pending), then set them whole.
        first = min(s.opened_seq for s in streams)
        entries = await async_redis().xrange(Keys.log(self.session_id), min=f"{first}-0", max=f"{self.cursor}-0")
        events = _events(entries)
        if not events or events[0]["seq"] > first:
            self.translator.mark_gap()  # their start left the log: rewrite them at their end
            return
        for event in events:
            if event["type"] == "delta":
                self.translator.take_delta(event)

    async def _save(self, *, force: bool) -> None:
        if not self._dirty_state or (not force and time.monotonic() - self._saved_at < SAVE_SECONDS):
            return
        state = {"cursor": self.cursor, **self.translator.dump()}
        await async_redis().set(
            session_state_key(self.session_id), orjson.dumps(state), ex=int(app_settings.EVENT_LOG_TTL_SECONDS)
        )
        self._saved_at = time.monotonic()
        self._dirty_state = False


class Mirror:
    def __init__(self, config: AblyConfig) -> None:
        self.config = config
        self.stats = Stats()
        self.rest: Any = None
        self.listener = CancelListener(self)
        self.channels: dict[str, ChannelMirror] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._spawned: set[asyncio.Task[Any]] = set()
        # Set first when stopping: a session's task also ends by itself at its next turn of
        # the loop (a cancellation can be swallowed by a library it is awaiting).
        self.stopping = asyncio.Event()
        self.identity = f"{socket.gethostname()}:{os.getpid()}"

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run a background task, keeping a reference until it is done."""
        task = asyncio.create_task(coroutine)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    def ensure(self, session_id: str) -> None:
        """Mirror this session (start its task if none runs) and wake it."""
        channel = self.channels.get(session_id)
        if channel is None:
            channel = self.channels[session_id] = ChannelMirror(self, session_id)
            task = asyncio.create_task(self._run_channel(channel))
            self._tasks[session_id] = task
        channel.wake.set()
        self.listener.watch(session_id)

    async def _run_channel(self, channel: ChannelMirror) -> None:
        try:
            await channel.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("ably: mirroring %s failed; restarting it", channel.session_id)
            await asyncio.sleep(1)
            self.channels.pop(channel.session_id, None)
            self._tasks.pop(channel.session_id, None)
            self.ensure(channel.session_id)
            return
        self.channels.pop(channel.session_id, None)
        self._tasks.pop(channel.session_id, None)

    async def run(self, stop: asyncio.Event) -> None:
        await self._acquire_lock(stop)
        if stop.is_set():
            return
        self.rest = rest_client(self.config)
        self.listener.start()
        logger.info("ably: mirroring sessions to %s*", self.config.channel_prefix)
        background = [
            asyncio.create_task(self._follow_events()),
            asyncio.create_task(self._tail_check(stop)),
            asyncio.create_task(self._catch_up()),
        ]
        try:
            await stop.wait()
        finally:
            logger.info("ably: stopping")
            self.stopping.set()
            for channel in self.channels.values():
                channel.wake.set()
            tasks = [*background, *self._tasks.values()]
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=STOP_SECONDS)
            for channel in self.channels.values():
                with contextlib.suppress(Exception):
                    await channel._save(force=True)
            self.stats.flush(sync_redis())
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.config.timeout):
                    await self.listener.stop()
            await self.rest.close()
            await async_redis().delete(redis_key("lock"))
            logger.info("ably: stopped")

    async def _acquire_lock(self, stop: asyncio.Event) -> None:
        """One mirror per deployment: two would append the same text twice."""
        waited = False
        while not stop.is_set():
            if await async_redis().set(redis_key("lock"), self.identity, nx=True, ex=LOCK_SECONDS):
                return
            if not waited:
                logger.info("ably: another mirror runs; waiting as a standby")
                waited = True
            await _wait(stop, LOCK_SECONDS / 3)

    async def _follow_events(self) -> None:
        """Wake-ups: every batch the numbering script publishes, and token requests."""
        pubsub = async_pubsub()
        await pubsub.psubscribe(f"{key_prefix()}:{{*}}:ev")
        await pubsub.subscribe(redis_key("watch"))
        async for message in pubsub.listen():
            if message["type"] == "pmessage":
                session_id = _session_of(message["channel"])
                if session_id:
                    self.ensure(session_id)
            elif message["type"] == "message":
                self.listener.watch(message["data"].decode())

    async def _catch_up(self) -> None:
        """At start: every session whose log is ahead of its cursor (or was never
        mirrored), and every session with turns in flight when the mirror stopped."""
        client = async_redis()
        prefix = key_prefix()
        async for key in client.scan_iter(match=f"{prefix}:{{*}}:seq", count=500):
            session_id = _session_of(key)
            if not session_id:
                continue
            state = await client.get(session_state_key(session_id))
            last = int(await client.get(key) or 0)
            if state is None or orjson.loads(state)["cursor"] < last or orjson.loads(state).get("turns"):
                self.ensure(session_id)

    async def _tail_check(self, stop: asyncio.Event) -> None:
        """Every second: wake the sessions whose log moved past their cursor (a dropped
        wake-up), keep the lock, flush the figures, let idle channels go."""
        while not stop.is_set():
            await asyncio.sleep(TAIL_CHECK_SECONDS)
            try:
                await async_redis().set(redis_key("lock"), self.identity, ex=LOCK_SECONDS)
                sessions = list(self.channels)
                pipe = async_redis().pipeline(transaction=False)
                for session_id in sessions:
                    pipe.get(Keys.seq(session_id))
                behind = 0
                for session_id, last in zip(sessions, await pipe.execute(), strict=True):
                    channel = self.channels.get(session_id)
                    if channel is not None and int(last or 0) > channel.cursor:
                        behind += int(last or 0) - channel.cursor
                        channel.wake.set()
                self.stats.gauges.update(channels_active=len(self.channels), events_behind=behind)
                await asyncio.to_thread(self.stats.flush, sync_redis())
                self.listener.sweep(set(self.channels))
            except Exception:
                logger.exception("ably: tail check failed")
