"""Running one turn: read the model's stream, coalesce deltas, publish them, stop at once
on abort, and end the turn with its reason.

Hot path: a token costs an append to an in-memory buffer. A flusher task publishes the
buffer in one Redis call per window (see `DeltaCoalescer`); the cancel flag is an
in-memory event set by the engine's cancel listener, checked on every chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from django.utils.module_loading import import_string

from sessions_app import events, live
from sessions_app.conf import app_settings
from sessions_app.llm.base import Finish, ModelRequest, ProviderError, ReasoningDelta, TextDelta, Usage
from sessions_app.llm.registry import resolve
from sessions_app.models import TurnStatus
from sessions_app.services.turns import ClaimedTurn

logger = logging.getLogger(__name__)


class DeltaCoalescer:
    """Buffers one turn's deltas and publishes them in batches.

    Leading edge: a delta arriving after a quiet spell longer than the window is published
    at once; during a burst, deltas wait at most `window()` seconds and go out together.
    """

    def __init__(self, turn: ClaimedTurn, window: Callable[[], float], on_frames: Callable[[str, list[str]], None]):
        self.turn = turn
        self.window = window
        self.on_frames = on_frames
        self.content: dict[str, list[str]] = {"reasoning": [], "text": []}
        self.last_seq = 0
        self._pending: list[tuple[str, str]] = []
        self._has_data = asyncio.Event()
        self._last_flush = 0.0
        self._closed = False
        self._task = asyncio.create_task(self._flush_loop())

    def add(self, part: str, text: str) -> None:
        if not text:
            return
        self.content[part].append(text)
        if self._pending and self._pending[-1][0] == part:
            self._pending[-1] = (part, self._pending[-1][1] + text)
        else:
            self._pending.append((part, text))
        self._has_data.set()

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            await self._has_data.wait()
            wait = self._last_flush + self.window() - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._publish()
            self._last_flush = loop.time()

    async def _publish(self) -> None:
        self._has_data.clear()
        batch, self._pending = self._pending, []
        if not batch:
            return
        turn = self.turn
        frames = await live.publish_async(
            turn.session_id,
            [events.delta(turn.turn_id, turn.assistant_message_id, text, part) for part, text in batch],
        )
        self.last_seq = live.seq_of(frames[-1])
        self.on_frames(turn.session_id, frames)

    async def close(self) -> None:
        """Publish what is left, now."""
        self._closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._publish()

    def parts(self) -> list[dict[str, str]]:
        return [{"type": part, "text": "".join(chunks)} for part, chunks in
                (("reasoning", self.content["reasoning"]), ("text", self.content["text"])) if chunks]


class TurnRunner:
    def __init__(self, turn: ClaimedTurn, abort: asyncio.Event, window: Callable[[], float],
                 on_frames: Callable[[str, list[str]], None]):
        self.turn = turn
        self.abort = abort
        self.coalescer = DeltaCoalescer(turn, window, on_frames)
        self.usage: dict[str, Any] = {}
        self.finish_reason = ""
        self.tokens_seen = 0

    async def run(self) -> dict[str, Any]:
        """Stream the answer; returns the keyword arguments of `turn_finish`."""
        status, error_code, error_message = TurnStatus.COMPLETE, "", ""
        if self.turn.cancel_requested:
            self.abort.set()
        else:
            try:
                await self._stream_until_abort()
            except ProviderError as exc:
                status, error_code, error_message = TurnStatus.ERROR, exc.code, exc.message
            except Exception as exc:
                logger.exception("turn %s failed", self.turn.turn_id)
                status, error_code, error_message = TurnStatus.ERROR, "internal", str(exc) or type(exc).__name__
        if self.abort.is_set():
            status, error_code, error_message = TurnStatus.CANCELLED, "", ""
            await self._on_abort()
        await self.coalescer.close()
        return {
            "turn_pk": self.turn.pk, "status": status, "parts": self.coalescer.parts(),
            "content_seq": self.coalescer.last_seq, "error_code": error_code, "error_message": error_message,
            "usage": self.usage, "finish_reason": self.finish_reason,
        }

    async def _stream_until_abort(self) -> None:
        consume = asyncio.create_task(self._consume())
        aborted = asyncio.create_task(self.abort.wait())
        try:
            await asyncio.wait({consume, aborted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (consume, aborted):
                if not task.done():
                    task.cancel()  # closes the provider's stream (and its HTTP connection)
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if consume.done() and not consume.cancelled() and consume.exception() is not None:
            raise consume.exception()  # type: ignore[misc]

    async def _consume(self) -> None:
        provider, model_name = resolve(self.turn.model)
        request = ModelRequest(model=model_name, messages=self.turn.context, options=self.turn.model_options)
        stream = provider.stream(request)
        try:
            async for item in stream:
                if self.abort.is_set():
                    return
                if isinstance(item, TextDelta):
                    self.tokens_seen += 1
                    self.coalescer.add("text", item.text)
                elif isinstance(item, ReasoningDelta):
                    self.coalescer.add("reasoning", item.text)
                elif isinstance(item, Usage):
                    self.usage = {"inputTokens": item.input_tokens, "outputTokens": item.output_tokens}
                elif isinstance(item, Finish):
                    self.finish_reason = item.reason
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    async def _on_abort(self) -> None:
        """The site's onAbort hook may write final deltas, e.g. "[Response cancelled]"."""
        path = app_settings.ON_ABORT
        if not path:
            return
        hook = import_string(path)
        try:
            result = hook(lambda text: self.coalescer.add("text", text), self.turn)
            if asyncio.iscoroutine(result):
                await result
        except Exception:
            logger.exception("onAbort hook %s failed", path)
