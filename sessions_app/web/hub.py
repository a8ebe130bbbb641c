"""Per-process fan-out of session events to the websockets this process serves, and the
process's share of presence.

Each Daphne process keeps one feed per session it has connections for, fed by one Redis
pub/sub connection subscribed to the sessions' event channels (the numbering script
publishes every batch there: live_state.py): one subscription per session per process, whatever
the number of devices. Pub/sub is at-most-once, so a feed is gapless on its own: it
forwards by `seq`, reads any gap from the session's log, and checks every
TAIL_CHECK_SECONDS (one round trip for all its sessions) that no trailing event was
dropped. Connections then see every event once, in order. See docs/decisions/002 and 008.

When Redis loses events (it restarted without its data, or with an older copy), a feed
finds the numbering jumped (or gone back, which it moves forward: live_state.renumber_above)
and has its listeners start again from a snapshot. Decision 022.

Presence: the process states, per session, the clientIds it has devices of, with a lease
it renews every third of PRESENCE_LEASE_SECONDS; a process that dies stops renewing, and its
devices drop out of `online` when the lease ends (live_state.state_presence).

Every task the hub starts is its own: kept, cancelled and awaited by `aclose()`, which
Daphne runs before it shuts down. A connection leaving costs no Redis round trip: presence
and channel unsubscriptions are settled by a background task, in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import uuid
import weakref
from collections import Counter
from collections.abc import Coroutine, Iterable
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from django.conf import settings

from sessions_app.conf import app_settings
from sessions_app.events.archive import archiver
from sessions_app.infra import live_state
from sessions_app.sessions.services import membership_ended_channel

logger = logging.getLogger(__name__)

# Sessions whose presence one pipeline states at most.
PRESENCE_BATCH = 500
# The longest pause between tries while Redis is unreachable.
MAX_BACKOFF_SECONDS = 2.0
# Deleted sessions a hub remembers (a connection that raced the deletion states no presence).
DELETED_REMEMBERED = 1000


class Listener(Protocol):
    def offer(self, seq: int, frame: str) -> None:
        """Take one event, in seq order, each once."""

    def resync(self) -> None:
        """Events were lost beyond recovery (the log was trimmed, or Redis lost them):
        start from a snapshot."""


# A listener may also have `membership_ended(user_id)`: the membership of `user_id` in the
# session ended, and a listener of theirs closes (the websocket consumer has it); and
# `session_deleted()`: the session was deleted, and it closes once what it was offered
# before (`session.deleted` last) is written.


# How a `session.deleted` frame begins after its seq (events/build.session_deleted).
_DELETED = '"type":"session.deleted"'


class SessionFeed:
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.listeners: set[Listener] = set()
        self.seq = 0
        self.ready = asyncio.Event()
        self.early: list[tuple[int, list[str]]] = []
        # `session.deleted` was forwarded: nothing after it is (a worker may publish a last
        # delta before it hears that the session is gone).
        self.ended = False

    def forward(self, first: int, frames: list[str]) -> None:
        if self.ended:
            return
        for index, frame in enumerate(frames):
            seq = first + index
            if seq <= self.seq:
                continue
            self.seq = seq
            for listener in list(self.listeners):
                listener.offer(seq, frame)
            if frame.startswith(_DELETED, frame.find(",") + 1):
                self.ended = True
                return

    async def catch_up(self, until: int) -> None:
        """Forward what the log holds after `self.seq` up to `until`; if some of it is no
        longer there (trimmed, or lost with Redis's data), the listeners start again from
        a snapshot."""
        frames = await live_state.read_log(self.session_id, self.seq, until)
        first = live_state.seq_of(frames[0]) if frames else until + 1
        if first > self.seq + 1:
            logger.warning(
                "session %s: events %d..%d are not in the log; resyncing", self.session_id, self.seq + 1, first - 1
            )
            self.seq = first - 1
            self.resync()
        self.forward(first, frames)

    def resync(self) -> None:
        if self.ended:
            return  # nothing to start again from: the session is gone
        for listener in list(self.listeners):
            listener.resync()

    async def receive(self, first: int, frames: list[str]) -> None:
        if not self.ready.is_set():
            self.early.append((first, frames))
            return
        if first > self.seq + 1:
            await self.catch_up(until=first - 1)  # pub/sub dropped something, or Redis lost it
        self.forward(first, frames)


class Hub:
    def __init__(self) -> None:
        self.feeds: dict[str, SessionFeed] = {}
        self.by_channel: dict[bytes, SessionFeed] = {}
        # This process in the presence entries: unique per process and hub.
        self.process = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lock = asyncio.Lock()
        self._pubsub: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._membership_channel = b""
        # Devices of each clientId this process serves, per session.
        self._clients: dict[str, Counter[str]] = {}
        self._dirty: set[str] = set()  # sessions whose presence changed here, to state
        self._unsubscribe: set[bytes] = set()  # channels of feeds that ended, to leave
        self._wake = asyncio.Event()
        self._closed = False
        # Sessions deleted lately: no presence is stated for them any more (it would write
        # their keys in Redis again, and number a `presence` event after `session.deleted`).
        self._deleted: dict[str, None] = {}

    # --- tasks ---

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """Run `coro` as a task the hub owns: `aclose()` cancels and awaits it."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _start(self) -> None:
        # A connection of its own: in subscribe mode it can carry nothing else.
        client = aioredis.Redis.from_url(settings.REDIS_URL, decode_responses=False)
        pubsub = live_state.async_pubsub(client, ignore_subscribe_messages=True)
        # Ended memberships (sessions/services.py), for every session this process serves.
        self._membership_channel = membership_ended_channel().encode()
        await pubsub.subscribe(self._membership_channel)  # get_message needs a subscription
        self._pubsub = pubsub
        self.spawn(self._receive_loop(), "hub-receive")
        self.spawn(self._tail_loop(), "hub-tail")
        self.spawn(self._housekeeping_loop(), "hub-housekeeping")
        _close_before_daphne_stops(self)

    async def aclose(self) -> None:
        """Leave: state this process's presence one last time (its devices are leaving),
        then cancel and await every task of the hub."""
        if self._closed:
            return
        self._closed = True
        for _ in range(100):  # let the connections Daphne is cancelling run their clean-up
            if not any(feed.listeners for feed in self.feeds.values()):
                break
            await asyncio.sleep(0.02)
        sessions = set(self._dirty) | set(self._clients)
        if sessions and self._pubsub is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._state_presence(sessions), timeout=2)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._pubsub is not None:
            with contextlib.suppress(Exception):  # bounded: the process is on its way out
                await asyncio.wait_for(self._pubsub.aclose(), timeout=1)

    # --- feeds ---

    async def subscribe(self, session_id: str, listener: Listener) -> None:
        async with self._lock:
            if self._pubsub is None:
                await self._start()
            feed = self.feeds.get(session_id)
            if feed is None:
                feed = self.feeds[session_id] = SessionFeed(session_id)
                channel = live_state.Keys.events_channel(session_id).encode()
                self.by_channel[channel] = feed
                self._unsubscribe.discard(channel)
                try:
                    await self._pubsub.subscribe(channel)
                    feed.seq = await live_state.last_seq(session_id)
                except BaseException:
                    self._drop(feed)
                    raise
                feed.ready.set()
                early, feed.early = feed.early, []
                for first, frames in early:
                    await feed.receive(first, frames)
            feed.listeners.add(listener)

    async def unsubscribe(self, session_id: str, listener: Listener) -> None:
        """Stop offering events to `listener`. No Redis round trip: a feed left without
        listeners is dropped now and its channel left in the background."""
        feed = self.feeds.get(session_id)
        if feed is None or listener not in feed.listeners:
            return
        feed.listeners.discard(listener)
        if not feed.listeners:
            self._drop(feed)

    def _drop(self, feed: SessionFeed) -> None:
        channel = live_state.Keys.events_channel(feed.session_id).encode()
        if self.feeds.get(feed.session_id) is feed:
            del self.feeds[feed.session_id]
            self.by_channel.pop(channel, None)
            self._unsubscribe.add(channel)
            self._wake.set()

    # --- presence ---

    async def presence_join(self, session_id: str, client_id: str) -> None:
        """A device of `client_id` connected here. The first one of this process is stated
        at once (the hello lists its user online, after the `presence` event)."""
        if session_id in self._deleted:
            return  # its connection is closing (4404)
        clients = self._clients.setdefault(session_id, Counter())
        clients[client_id] += 1
        if clients[client_id] == 1:
            await self._state_presence([session_id])

    def presence_leave(self, session_id: str, client_id: str) -> None:
        """A device of `client_id` left (no Redis round trip: stated in the background)."""
        clients = self._clients.get(session_id)
        if clients is None or clients[client_id] <= 0:
            return
        clients[client_id] -= 1
        if clients[client_id] <= 0:
            del clients[client_id]
            self._dirty.add(session_id)
            self._wake.set()

    async def _state_presence(self, sessions: Iterable[str]) -> None:
        sessions = [s for s in sessions if s not in self._deleted]
        lease = float(app_settings.PRESENCE_LEASE_SECONDS)
        for start in range(0, len(sessions), PRESENCE_BATCH):
            chunk = sessions[start : start + PRESENCE_BATCH]
            stated = {s: list(self._clients.get(s, ())) for s in chunk}
            states = await live_state.state_presence(self.process, stated, lease)
            for session_id, state in zip(chunk, states, strict=True):
                if state.frames:
                    archiver.add(session_id, [{"type": "presence"}], state.frames)
                if not self._clients.get(session_id):
                    self._clients.pop(session_id, None)

    # --- background duties ---

    async def _housekeeping_loop(self) -> None:
        """State presence that changed (at once) and all of it (every third of the lease),
        and leave the channels of dropped feeds."""
        loop = asyncio.get_running_loop()
        refresh = float(app_settings.PRESENCE_LEASE_SECONDS) / 3
        next_refresh = loop.time() + refresh
        backoff = 0.1
        while True:
            # asyncio.timeout, not wait_for: 3.11's wait_for, cancelled as its timeout of 0
            # ran out, could leave this task waiting for ever (the hub's close then hung).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(next_refresh - loop.time(), 0)):
                    await self._wake.wait()
            self._wake.clear()
            due = loop.time() >= next_refresh
            sessions, self._dirty = self._dirty, set()
            if due:
                sessions |= set(self._clients)
            try:
                if sessions:
                    await self._state_presence(sorted(sessions))
                await self._leave_channels()
                if due:
                    next_refresh = loop.time() + refresh
                backoff = 0.1
            except asyncio.CancelledError:
                self._dirty |= sessions
                raise
            except Exception as exc:
                self._dirty |= sessions  # stated next time
                logger.warning("hub: stating presence failed (%s); trying again", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                self._wake.set()

    async def _leave_channels(self) -> None:
        async with self._lock:
            channels = [c for c in self._unsubscribe if c not in self.by_channel]
            self._unsubscribe.clear()
            if channels:
                await self._pubsub.unsubscribe(*channels)

    async def _receive_loop(self) -> None:
        backoff = 0.1
        while True:
            try:
                # Blocking, with no timeout to arm and disarm around each read (~2% of a web
                # process's CPU while it forwards tokens): nothing here needs waking up
                # without a message, and a dropped connection raises as before.
                message = await self._pubsub.get_message(timeout=None)
                backoff = 0.1
                if message is None or message.get("type") != "message":
                    continue
                if message["channel"] == self._membership_channel:
                    self._membership_ended(message["data"])
                    continue
                feed = self.by_channel.get(message["channel"])
                if feed is not None:
                    await feed.receive(*live_state.parse_published(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The connection dropped: redis-py reconnects and resubscribes on the next
                # read; anything published meanwhile is recovered from the log.
                if backoff == 0.1:
                    logger.warning("hub: receiving failed (%s); reconnecting", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _membership_ended(self, data: bytes) -> None:
        ended = orjson.loads(data)
        if ended.get("deleted"):
            self._session_deleted(ended["session"])
            return
        feed = self.feeds.get(ended["session"])
        for listener in list(feed.listeners if feed is not None else ()):
            ended_for = getattr(listener, "membership_ended", None)
            if ended_for is not None:
                ended_for(ended["user"])

    def _session_deleted(self, session_id: str) -> None:
        """The session was deleted (sessions/services.session_delete): its feed's events up
        to `session.deleted` were offered before this (one subscription, in order); every
        listener closes, and this process states no presence for it any more."""
        self._deleted[session_id] = None
        while len(self._deleted) > DELETED_REMEMBERED:
            del self._deleted[next(iter(self._deleted))]
        self._clients.pop(session_id, None)
        self._dirty.discard(session_id)
        feed = self.feeds.get(session_id)
        for listener in list(feed.listeners if feed is not None else ()):
            deleted = getattr(listener, "session_deleted", None)
            if deleted is not None:
                deleted()

    async def _tail_loop(self) -> None:
        while True:
            await asyncio.sleep(app_settings.TAIL_CHECK_SECONDS)
            try:
                await self._check_tails()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("hub: tail check failed (%s)", exc)

    async def _check_tails(self) -> None:
        """One round trip for every session served: forward what pub/sub dropped; where
        the numbering went back (Redis lost it), move it forward and resync."""
        feeds = [f for f in self.feeds.values() if f.ready.is_set()]
        # Compared with what was forwarded before the read: a feed that forwarded more
        # while it was under way (every streaming session) did not see Redis go back.
        forwarded = [f.seq for f in feeds]
        seqs = await live_state.last_seqs([f.session_id for f in feeds])
        for feed, seen, seq in zip(feeds, forwarded, seqs, strict=True):
            if seq < seen:
                seq = await live_state.renumber_above(feed.session_id, feed.seq)
            if seq > feed.seq:
                await feed.catch_up(until=seq)


def _close_before_daphne_stops(instance: Hub) -> None:
    """Under Daphne (Twisted's asyncio reactor), close the hub before the reactor stops."""
    reactor = sys.modules.get("twisted.internet.reactor")
    loop = asyncio.get_running_loop()
    if reactor is None or getattr(reactor, "_asyncioEventloop", None) is not loop:
        return
    from twisted.internet import defer

    def close() -> Any:
        # Bounded: Daphne's shutdown waits for this.
        return defer.Deferred.fromFuture(loop.create_task(asyncio.wait_for(instance.aclose(), timeout=10)))

    reactor.addSystemEventTrigger("before", "shutdown", close)  # type: ignore[attr-defined]


# Per event loop, forgotten with it (an id could be reused by a later loop).
_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def hub() -> Hub:
    """The hub of the running event loop (one per Daphne process)."""
    loop = asyncio.get_running_loop()
    instance = _hubs.get(loop)
    if instance is None:
        instance = _hubs[loop] = Hub()
    return instance
