"""Per-process fan-out of session events to the websockets this process serves.

Each Daphne process keeps one feed per session it has connections for, fed by a single
channel-layer channel: one Redis subscription per session per process, whatever the
number of devices. The channel layer is at-most-once, so a feed is gapless on its own:
it numbers what it forwards by `seq`, reads any gap from the session's log, and checks
every TAIL_CHECK_SECONDS (one round trip for all its sessions) that no trailing event was
dropped. Connections then see every event once, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from channels.layers import get_channel_layer

from sessions_app import live
from sessions_app.conf import app_settings

logger = logging.getLogger(__name__)


class Listener(Protocol):
    def offer(self, seq: int, frame: str) -> None:
        """Take one event, in seq order, each once."""

    def resync(self) -> None:
        """Events were lost beyond recovery (the log was trimmed): start from a snapshot."""


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
        frames = await live.read_log(self.session_id, self.seq, until)
        if not frames:
            return
        first = live.seq_of(frames[0])
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
        self.channel: str | None = None
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[Any]] = []

    async def _start(self) -> None:
        layer = get_channel_layer()
        assert layer is not None, "CHANNEL_LAYERS must be configured"
        self.channel = await layer.new_channel(prefix="hub.")
        self._tasks = [asyncio.create_task(self._receive_loop()), asyncio.create_task(self._tail_loop())]

    async def subscribe(self, session_id: str, listener: Listener) -> None:
        async with self._lock:
            if self.channel is None:
                await self._start()
            feed = self.feeds.get(session_id)
            if feed is None:
                feed = self.feeds[session_id] = SessionFeed(session_id)
                await get_channel_layer().group_add(live.session_group(session_id), self.channel)  # type: ignore[union-attr]
                feed.seq = await live.last_seq(session_id)
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
                with contextlib.suppress(Exception):
                    await get_channel_layer().group_discard(live.session_group(session_id), self.channel)  # type: ignore[union-attr]

    async def _receive_loop(self) -> None:
        layer = get_channel_layer()
        assert layer is not None and self.channel is not None
        while True:
            try:
                message = await layer.receive(self.channel)
                feed = self.feeds.get(message.get("session", ""))
                if feed is not None:
                    await feed.receive(int(message["first"]), list(message["frames"]))
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("hub receive failed")
                await asyncio.sleep(0.1)

    async def _tail_loop(self) -> None:
        while True:
            await asyncio.sleep(app_settings.TAIL_CHECK_SECONDS)
            try:
                feeds = [f for f in self.feeds.values() if f.ready.is_set()]
                seqs = await live.last_seqs([f.session_id for f in feeds])
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
