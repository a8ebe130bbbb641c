"""Cancels from Ably clients: the `ai-cancel` messages published on a session's channel.

The mirror's realtime connection attaches to the channels of the sessions it is mirroring
and of those a member just took a token for (the member is about to be on the channel), and
detaches from idle ones. Attaching rewinds a few seconds, so a cancel published just before
the attach is not missed; each message is handled once.

A cancel names its run (`run-id`, our turnId), or the user message that started it
(`input-codec-message-id`), or, as our extension, one of our filters (`cancel-filter`:
`{"own": true}`, `{"clientId": ...}`, `{"all": true}`, `{"turnId": ...}`). It is applied
by the cancellation service with the publisher's clientId, which Ably verified, as the
identity: the same membership check and authoriser as the HTTP API. A cancel for a turnId
not seen yet is held by the service; one for a user message not seen yet is held here and
applied when that message arrives.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any, Protocol

from ably.types.channeloptions import ChannelOptions

from sessions_app.ably.config import AblyConfig, realtime_client
from sessions_app.ably.mapping import CANCEL, CANCEL_FILTER_HEADER
from sessions_app.ably.queries import cancel_from_ably
from sessions_app.ably.stats import Stats
from sessions_app.conf import app_settings
from sessions_app.infra.db_threads import db

logger = logging.getLogger(__name__)

REWIND = "15s"  # replayed on attach: covers a cancel published as the member arrived
WATCH_SECONDS = 600  # a channel nobody was seen on for this long is detached
SEEN_LIMIT = 10_000  # message ids remembered, so a rewound cancel is not applied twice


class Host(Protocol):
    """What the listener needs of the mirror process."""

    config: AblyConfig
    rest: Any
    stats: Stats

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None: ...


class CancelListener:
    def __init__(self, mirror: Host) -> None:
        self.mirror = mirror
        self.realtime: Any = None
        self.watched: dict[str, float] = {}  # session id -> last time it was wanted
        self._attaching: dict[str, asyncio.Task[None]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        # Cancels naming a user message not seen yet: session -> message id -> (clientId, expiry).
        self.held: dict[str, dict[str, tuple[str, float]]] = {}

    def start(self) -> None:
        self.realtime = realtime_client(self.mirror.config, self.mirror.rest)

    async def stop(self) -> None:
        if self.realtime is not None:
            await self.realtime.close()

    def watch(self, session_id: str) -> None:
        """Listen on the session's channel (now, and for a while)."""
        self.watched[session_id] = time.monotonic()
        if session_id not in self._attaching and self.realtime is not None:
            self._attaching[session_id] = asyncio.create_task(self._attach(session_id))

    async def _attach(self, session_id: str) -> None:
        name = self.mirror.config.channel(session_id)
        channel = self.realtime.channels.get(name, ChannelOptions(params={"rewind": REWIND}))

        def received(message: Any) -> None:
            self.mirror.spawn(self.handle(session_id, message))

        try:
            await channel.subscribe(CANCEL, received)
        except Exception:
            logger.exception("ably: could not attach %s for cancels", name)
            self._attaching.pop(session_id, None)

    def sweep(self, active: set[str]) -> None:
        """Detach the channels of sessions idle for WATCH_SECONDS; drop expired holds."""
        now = time.monotonic()
        for session_id, last in list(self.watched.items()):
            if session_id in active:
                self.watched[session_id] = now
            elif now - last > WATCH_SECONDS:
                del self.watched[session_id]
                task = self._attaching.pop(session_id, None)
                if task is not None:
                    task.cancel()
                self.mirror.spawn(self._detach(session_id))
        for session_id, held in list(self.held.items()):
            for message_id, (_, expires) in list(held.items()):
                if expires < now:
                    del held[message_id]
            if not held:
                del self.held[session_id]

    async def _detach(self, session_id: str) -> None:
        name = self.mirror.config.channel(session_id)
        try:
            channel = self.realtime.channels.get(name)
            channel.unsubscribe()
            await channel.detach()
            self.realtime.channels.release(name)
        except Exception:
            logger.warning("ably: could not detach %s", name, exc_info=True)

    async def handle(self, session_id: str, message: Any) -> None:
        if message.id in self._seen:
            return
        self._seen[message.id] = None
        while len(self._seen) > SEEN_LIMIT:
            self._seen.popitem(last=False)
        headers = ((message.extras or {}).get("ai") or {}).get("transport") or {}
        client_id = message.client_id
        if not client_id or not isinstance(headers, dict):
            logger.warning("ably: ai-cancel on %s without a clientId: ignored", session_id)
            self.mirror.stats.add("cancels_ignored")
            return
        input_id = headers.get("input-codec-message-id")
        result = await db(cancel_from_ably)(
            session_id=session_id,
            client_id=client_id,
            run_id=headers.get("run-id"),
            input_message_id=input_id,
            filter_json=headers.get(CANCEL_FILTER_HEADER),
        )
        if result == "unknown-input" and input_id:
            result = self._hold(session_id, input_id, client_id)
        self.mirror.stats.add({"applied": "cancels_applied", "held": "cancels_held"}.get(result, "cancels_ignored"))
        logger.info("ably: ai-cancel on %s from %s: %s", session_id, client_id, result)

    def _hold(self, session_id: str, message_id: str, client_id: str) -> str:
        held = self.held.setdefault(session_id, {})
        if len(held) >= app_settings.HELD_CANCEL_LIMIT:
            return "ignored"
        held[message_id] = (client_id, time.monotonic() + app_settings.HELD_CANCEL_TTL_SECONDS)
        return "held"

    def message_seen(self, session_id: str, node: dict[str, Any]) -> None:
        """A user message arrived: apply a cancel that was waiting for it."""
        held = self.held.get(session_id)
        waiting = held.pop(node["id"], None) if held else None
        if waiting is None or not node.get("turnId"):
            return
        client_id, _ = waiting

        async def apply() -> None:
            result = await db(cancel_from_ably)(session_id=session_id, client_id=client_id, run_id=node["turnId"])
            logger.info("ably: held ai-cancel for message %s on %s: %s", node["id"], session_id, result)

        self.mirror.spawn(apply())
