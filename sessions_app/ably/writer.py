"""Publishing one channel's messages (mapping.py's operations) through the official SDK.

- Creates carry stable ids, so a publish retried after a timeout or an outage is
  deduplicated by Ably (idempotent publishing); they are retried with backoff until they
  go through, so nothing after them is published out of order.
- The deltas of streamed answers wait in their stream and go out as appends, at most one
  per `ABLY_APPEND_INTERVAL_MS` on the channel whatever the number of answers streaming
  (oldest pending first).
- Every message the channel sends takes a token from the channel's bucket (CHANNEL_RATE a
  second, bursts of CHANNEL_BURST): at most 45 in any second, under Ably's 50 per channel,
  however many turns start or end together.
- An append is not idempotent: when one fails without an answer (it may have been applied),
  the stream is set whole with an update instead of appended to again. A 429 is never
  applied, so the same append is retried.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import httpx
from ably import AblyException
from ably.types.message import Message

from sessions_app.ably.mapping import OUTPUT, Close, OutMessage, Publish, Status, Stream
from sessions_app.ably.stats import Stats

logger = logging.getLogger(__name__)

BACKOFF_FIRST, BACKOFF_MAX = 0.2, 10.0
APPEND_MAX_CHARS = 16_000  # one append stays well under Ably's 64 KiB message size
LOOKUP_PAGES = 5  # history pages searched for a create whose serial was not returned
CHANNEL_RATE, CHANNEL_BURST = 35.0, 10.0  # messages a second on one channel, and the burst


class Refused(Exception):
    """Ably refused a request for good (a 4xx other than 429)."""


class Writer:
    def __init__(self, channel: Any, interval: float, stats: Stats) -> None:
        self.channel = channel  # ably.rest.channel.Channel
        self.interval = interval
        self.stats = stats
        self.streams: dict[str, Stream] = {}  # open streams, by key
        self._next_append = 0.0  # monotonic time the channel may take its next append
        self._failures = 0  # consecutive failed stream requests (for the backoff)
        self._tokens, self._filled_at = CHANNEL_BURST, time.monotonic()

    async def _take(self, messages: int) -> None:
        """Wait until the channel may send `messages` more (a batch larger than the burst
        waits for a full bucket)."""
        while True:
            now = time.monotonic()
            self._tokens = min(CHANNEL_BURST, self._tokens + (now - self._filled_at) * CHANNEL_RATE)
            self._filled_at = now
            needed = min(float(messages), CHANNEL_BURST)
            if self._tokens >= needed:
                self._tokens -= messages
                return
            await asyncio.sleep((needed - self._tokens) / CHANNEL_RATE)

    # --- creates --------------------------------------------------------------------------

    async def publish(self, op: Publish) -> None:
        """Publish the messages (one request), retrying until Ably takes them; record the
        serials of the streams they open."""
        if op.turn_id is not None:
            await self.flush_turn(op.turn_id)
        messages = [_message(m) for m in op.messages]

        async def send() -> Any:
            await self._take(len(messages))
            return await self.channel.publish(messages=messages)

        try:
            result = await self._until_done(send)
        except Refused:
            return
        self.stats.add("messages_published", len(messages))
        serials = list(getattr(result, "serials", None) or [])
        for index, stream in op.opens.items():
            serial = serials[index] if index < len(serials) else None
            stream.serial = serial or await self._find_serial(op.messages[index].id)
            if stream.serial is not None:
                self.streams[stream.key] = stream

    async def _find_serial(self, message_id: str) -> str | None:
        """The serial of a message published before under `message_id` (a deduplicated
        retry may be answered without it)."""
        page = await self._until_done(lambda: self.channel.history(limit=100))
        for _ in range(LOOKUP_PAGES):
            for item in page.items:
                if item.id == message_id:
                    return str(item.serial)
            if not page.has_next():
                break
            page = await self._until_done(page.next)
        logger.error("ably: no serial for %s; its stream is dropped", message_id)
        return None

    # --- streams ----------------------------------------------------------------------------

    def pending(self) -> bool:
        return any(s.pending or s.needs_replace for s in self.streams.values())

    def pending_chars(self) -> int:
        return sum(len(s.pending) for s in self.streams.values())

    def next_due(self) -> float | None:
        """Seconds until the next append may go (None: nothing waits)."""
        if not self.pending():
            return None
        return max(0.0, self._next_append - time.monotonic())

    async def flush_due(self) -> None:
        """Send the oldest pending text if the channel's pace allows it now."""
        waiting = [s for s in self.streams.values() if s.pending or s.needs_replace]
        if waiting and time.monotonic() >= self._next_append:
            await self._push(min(waiting, key=lambda s: s.confirmed_seq), None)

    async def flush_turn(self, turn_id: str) -> None:
        """Send a turn's pending text now (at the channel's pace): what comes next for the
        turn must follow it."""
        for stream in [s for s in self.streams.values() if s.turn_id == turn_id]:
            while not await self._push(stream, None):
                pass

    async def close(self, op: Close) -> None:
        """The stream's last text and its final status, in one append."""
        stream = op.stream
        if stream.serial is None:
            return
        self.streams.setdefault(stream.key, stream)
        while not await self._push(stream, op.status):
            pass
        self.streams.pop(stream.key, None)

    async def replace(self, stream: Stream, text: str, status: Status) -> None:
        """Set a stream's whole text and status (an answer rewritten from its saved parts)."""
        if stream.serial is None:
            return
        stream.pending, stream.sent, stream.needs_replace = "", text, True
        await self.close(Close(stream, status))

    async def _push(self, stream: Stream, final: Status | None) -> bool:
        """One paced request for a stream: an append of its pending text (ending the stream
        when `final` is given), or an update with its whole text when Ably's copy is
        uncertain. True once nothing is left to send (and the stream ended, if asked)."""
        if not (stream.pending or stream.needs_replace or final):
            return True
        await asyncio.sleep(max(0.0, self._next_append - time.monotonic()))
        await self._take(1)
        self._next_append = time.monotonic() + self.interval
        if stream.needs_replace:
            text = stream.sent + stream.pending
            status: Status = final or "streaming"
            message = Message(name=OUTPUT, serial=stream.serial, data=text, extras=stream.headers(status))
            outcome = await self._once(lambda: self.channel.update_message(message), "updates")
            if outcome == "ok":
                stream.sent, stream.pending, stream.needs_replace = text, "", False
                stream.confirmed_seq = max(stream.confirmed_seq, stream.pending_seq)
        else:
            chunk = stream.pending[:APPEND_MAX_CHARS]
            last = len(chunk) == len(stream.pending)
            status = final if final is not None and last else "streaming"
            message = Message(serial=stream.serial, data=chunk, extras=stream.headers(status))
            outcome = await self._once(lambda: self.channel.append_message(message), "appends")
            if outcome == "ok":
                stream.sent += chunk
                stream.pending = stream.pending[len(chunk) :]
                if last:
                    stream.confirmed_seq = max(stream.confirmed_seq, stream.pending_seq)
                    return True
            elif outcome == "unknown":
                stream.needs_replace = True  # it may have been applied: never append it twice
        if outcome == "refused":
            stream.pending, stream.needs_replace = "", False  # logged and counted; nothing more to try
            return True
        return outcome == "ok" and not stream.pending and not stream.needs_replace

    # --- requests -----------------------------------------------------------------------------

    async def _once(self, call: Any, counter: str) -> str:
        """One attempt: "ok", "throttled" (not applied), "unknown" (may have been applied) or
        "refused"; a failure pushes the channel's next request back."""
        try:
            await call()
        except Exception as exc:
            outcome = self._classify(exc)
            if outcome == "refused":
                return outcome
            self.stats.add("retries")
            self._next_append = time.monotonic() + _backoff(self._failures)
            self._failures += 1
            return outcome
        self._failures = 0
        self.stats.add(counter)
        return "ok"

    async def _until_done(self, call: Any) -> Any:
        """Retry with backoff until Ably answers (safe: creates carry stable ids, reads are
        reads). Raises Refused when Ably refuses for good."""
        failures = 0
        while True:
            try:
                return await call()
            except Exception as exc:
                if self._classify(exc) == "refused":
                    raise Refused(str(exc)) from exc
                self.stats.add("retries")
                await asyncio.sleep(_backoff(failures))
                failures += 1

    def _classify(self, exc: Exception) -> str:
        if isinstance(exc, AblyException):
            status = int(exc.status_code or 500)
            if status == 429:
                self.stats.add("rate_limited")
                logger.info("ably: rate limited on %s (%s)", self.channel.name, exc.code)
                return "throttled"
            if 400 <= status < 500 and int(exc.code or 0) not in (40140, 40142, 40143):
                self.stats.add("rejected")
                logger.error("ably: %s refused a request: %s", self.channel.name, exc)
                return "refused"
        elif not isinstance(exc, httpx.HTTPError | OSError | TimeoutError):
            raise exc
        self.stats.add("unavailable")
        logger.warning("ably: request to %s failed (%s); retrying", self.channel.name, exc)
        return "unknown"


def _backoff(failures: int) -> float:
    delay = min(BACKOFF_FIRST * 2**failures, BACKOFF_MAX)
    return delay * random.uniform(0.8, 1.2)  # jitter: channels that failed together retry apart


def _message(out: OutMessage) -> Message:
    return Message(name=out.name, data=out.data, id=out.id, client_id=out.client_id, extras=out.extras())
