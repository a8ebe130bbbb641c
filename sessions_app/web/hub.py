"""Per-process fan-out of session events to the websockets this process serves.

Each Daphne process keeps one feed per session it has connections for, fed by one Redis
pub/sub connection subscribed to the sessions' event channels (the numbering script
publishes every batch there: live_state.py): one subscription per session per process, whatever
the number of devices. Pub/sub is at-most-once, so a feed is gapless on its own: it
forwards by `seq`, reads any gap from the session's log, and checks every
TAIL_CHECK_SECONDS (one round trip for all its sessions) that no trailing event was
dropped. Connections then see every event once, in order. See docs/decisions/002 and 008.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from django.conf import settings

from sessions_app.conf import app_settings
from sessions_app.infra import live_state
from sessions_app.sessions.services import membership_ended_channel

logger = logging.getLogger(__name__)


class Listener(Protocol):
    def offer(self, seq: int, frame: str) -> None:
        """Take one event, in seq order, each once."""

    def resync(self) -> None:
        """Events were lost beyond recovery (the log was trimmed): start from a snapshot."""

    def membership_ended(self, user_id: str) -> None:
        """The membership of `user_id` in this session ended: a listener of theirs closes."""


class SessionFeed:
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.listeners: set[Listener] = set()
        self.seq = 0
        self.ready = asyncio.Event()
        self.early: list[tuple[int, list[str]]] = []

    def forward(self, first: int, frames: list[str]) -> None:
        for index, frame in enumerate(frames):
            seq = first + index
            if seq <= self.seq:
                continue
            self.seq = seq
            for listener in list(self.listeners):
                listener.offer(seq, frame)

    async def fill(self, until: int | None = None) -> None:
        """Forward what the log holds after `self.seq` (up to `until`)."""
        frames = await live_state.read_log(self.session_id, self.seq, until)
        if not frames:
            return
        first = live_state.seq_of(frames[0])
        if first > self.seq + 1:
            logger.warning(
                "session %s: events %d..%d no longer in the log; resyncing", self.session_id, self.seq + 1, first - 1
            )
            self.seq = first - 1
            for listener in list(self.listeners):
                listener.resync()
        self.forward(first, frames)

    async def receive(self, first: int, frames: list[str]) -> None:
        if not self.ready.is_set():
            self.early.append((first, frames))
            return
        if first > self.seq + 1:
            await self.fill(until=first - 1)  # the channel layer dropped something
        self.forward(first, frames)


class Hub:
    def __init__(self) -> None:
        self.feeds: dict[str, SessionFeed] = {}
        self.by_channel: dict[bytes, SessionFeed] = {}
        self._lock = asyncio.Lock()
        self._pubsub: Any = None
        self._subscribed = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._membership_channel = b""

    async def _start(self) -> None:
        # A connection of its own: in subscribe mode it can carry nothing else.
        client = aioredis.Redis.from_url(settings.REDIS_URL, decode_responses=False)
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        # Ended memberships (sessions/services.py), for every session this process serves.
        self._membership_channel = membership_ended_channel().encode()
        await self._pubsub.subscribe(self._membership_channel)
        self._subscribed.set()
        self._tasks = [asyncio.create_task(self._receive_loop()), asyncio.create_task(self._tail_loop())]

    async def subscribe(self, session_id: str, listener: Listener) -> None:
        async with self._lock:
            if self._pubsub is None:
                await self._start()
            feed = self.feeds.get(session_id)
            if feed is None:
                feed = self.feeds[session_id] = SessionFeed(session_id)
                channel = live_state.Keys.events_channel(session_id)
                self.by_channel[channel.encode()] = feed
                await self._pubsub.subscribe(channel)
                self._subscribed.set()
                feed.seq = await live_state.last_seq(session_id)
                feed.ready.set()
                for first, frames in feed.early:
                    await feed.receive(first, frames)
                feed.early.clear()
            feed.listeners.add(listener)

    async def unsubscribe(self, session_id: str, listener: Listener) -> None:
        async with self._lock:
            feed = self.feeds.get(session_id)
            if feed is None:
                return
            feed.listeners.discard(listener)
            if not feed.listeners:
                del self.feeds[session_id]
                channel = live_state.Keys.events_channel(session_id)
                self.by_channel.pop(channel.encode(), None)
                with contextlib.suppress(Exception):
                    await self._pubsub.unsubscribe(channel)

    async def _receive_loop(self) -> None:
        await self._subscribed.wait()  # get_message needs a subscribed connection
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
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
            except Exception:
                # The connection dropped: redis-py reconnects and resubscribes on the next
                # read; anything published meanwhile is recovered from the log.
                logger.exception("hub receive failed")
                await asyncio.sleep(0.1)

    def _membership_ended(self, data: bytes) -> None:
        ended = orjson.loads(data)
        feed = self.feeds.get(ended["session"])
        for listener in list(feed.listeners if feed is not None else ()):
            listener.membership_ended(ended["user"])

    async def _tail_loop(self) -> None:
        while True:
            await asyncio.sleep(app_settings.TAIL_CHECK_SECONDS)
            try:
                feeds = [f for f in self.feeds.values() if f.ready.is_set()]
                seqs = await live_state.last_seqs([f.session_id for f in feeds])
                for feed, seq in zip(feeds, seqs, strict=True):
                    if seq > feed.seq:
                        await feed.fill(until=seq)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("hub tail check failed")


_hubs: dict[int, Hub] = {}


def hub() -> Hub:
    """The hub of the running event loop (one per Daphne process)."""
    loop = asyncio.get_running_loop()
    instance = _hubs.get(id(loop))
    if instance is None:
        instance = _hubs[id(loop)] = Hub()
    return instance
