"""Running one turn: read the model's stream, coalesce deltas, publish them, stop at once
on abort, and end the turn with its reason.

Hot path: a token costs an append to an in-memory buffer. A flusher task publishes the
buffer in one Redis call per window (see `DeltaCoalescer`); the cancel flag is an
in-memory event set by the engine's cancel listener, checked on every chunk.

A turn is one or more model calls: when the model calls server-side tools, the worker runs
them (inside the same cancellable task, so an abort reaches the tool), publishes the call
and the result as parts of the answer, and calls the model again with them. A model call
that fails before it streamed anything may be retried (PROVIDER_RETRIES, with backoff);
once it streamed, a failure ends the turn and keeps the partial answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any, Literal

from django.utils.module_loading import import_string

from sessions_app.conf import app_settings
from sessions_app.events import build
from sessions_app.infra import live_state
from sessions_app.infra.live_state import Event
from sessions_app.models import TurnStatus
from sessions_app.turns.types import ClaimedTurn, TurnOutcome
from sessions_app.worker.agent_turns import as_agent
from sessions_app.worker.providers.base import (
    Finish,
    ModelRequest,
    Provider,
    ProviderError,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    Usage,
)
from sessions_app.worker.providers.config import tuning
from sessions_app.worker.providers.context import trim
from sessions_app.worker.providers.registry import resolve
from sessions_app.worker.providers.tools import ToolContext, call_part, configured_tools, run_tool

logger = logging.getLogger(__name__)

PUBLISH_RETRY_SECONDS = 0.2
# Told of each batch published: the session, the events and their frames (for the archive).
OnPublished = Callable[[str, list[Event], list[str]], None]
TextKind = Literal["text", "reasoning"]  # the streamed parts of an answer
CLOSE_ATTEMPTS = 4  # the end of an answer is retried a little longer than other batches


class DeltaCoalescer:
    """Buffers one turn's deltas and publishes them in batches.

    Leading edge: a delta arriving after a quiet spell longer than the window is published
    at once; during a burst, deltas wait at most `window()` seconds and go out together.
    """

    def __init__(
        self,
        turn: ClaimedTurn,
        window: Callable[[], float],
        on_published: OnPublished,
    ):
        self.turn = turn
        self.window = window
        self.on_published = on_published  # the events and their frames, for the archive
        # The answer's parts in order: ("text" | "reasoning", [chunks]) or ("part", tool part).
        self._ordered: list[tuple[str, Any]] = []
        self.last_seq = 0
        self._pending: list[tuple[TextKind, str]] = []
        self._written: dict[str, int] = {}  # bytes of each part published (the live texts')
        self._publishing = asyncio.Lock()  # keeps seq order between the flusher and tool parts
        self._has_data = asyncio.Event()
        self._last_flush = -math.inf  # the first delta never waits, whatever the loop clock reads
        self._closed = False
        self._task = asyncio.create_task(self._flush_loop())

    def add(self, part: TextKind, text: str) -> None:
        if not text:
            return
        if self._ordered and self._ordered[-1][0] == part:
            self._ordered[-1][1].append(text)
        else:
            self._ordered.append((part, [text]))
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
            try:
                await self._publish()
            except Exception:
                # Redis is unreachable: the batch went back to the buffer; try again soon.
                logger.warning("turn %s: publishing deltas failed; retrying", self.turn.turn_id, exc_info=True)
                await asyncio.sleep(PUBLISH_RETRY_SECONDS)
            self._last_flush = loop.time()

    async def _publish(self, extra: list[Event] | None = None) -> None:
        async with self._publishing:
            self._has_data.clear()
            batch, self._pending = self._pending, []
            turn = self.turn
            batch_events = [build.delta(turn.turn_id, turn.assistant_message_id, text, part) for part, text in batch]
            batch_events.extend(extra or [])
            if not batch_events:
                return
            # The floor and what was written let Redis's numbering and the answer's live text
            # survive Redis losing them (live_state.py).
            live = live_state.LiveWrites(dict(self._written), self._text_so_far)
            try:
                frames = await live_state.publish_async(turn.session_id, batch_events, floor=self.last_seq, live=live)
            except Exception:
                self._pending[:0] = batch  # not sent: keep it, in order, for the next flush
                self._has_data.set()
                raise
            self.last_seq = live_state.seq_of(frames[-1])
            for part, text in batch:
                self._written[part] = self._written.get(part, 0) + len(text.encode())
            self.on_published(turn.session_id, batch_events, frames)

    def _text_so_far(self, part: str, size: int) -> bytes:
        """The first `size` bytes of the answer's `part` text, as published."""
        return "".join(t for kind, chunks in self._ordered if kind == part for t in chunks).encode()[:size]

    async def add_part(self, build: Callable[[str, str, dict[str, Any]], Event], part: dict[str, Any]) -> None:
        """Append a whole part (a tool call or result) and publish it now, after the deltas
        before it, with the event `build(turnId, messageId, part)`."""
        self._ordered.append(("part", part))
        await self._publish([build(self.turn.turn_id, self.turn.assistant_message_id, part)])

    async def close(self) -> None:
        """Publish what is left, now."""
        self._closed = True
        async with self._publishing:  # never cancel the flusher mid-publish: its batch would be lost
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for attempt in range(CLOSE_ATTEMPTS):
            try:
                await self._publish()
                return
            except Exception:
                if attempt == CLOSE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(PUBLISH_RETRY_SECONDS * 2**attempt)

    async def discard(self) -> None:
        """Stop, publishing nothing more (the turn's session was deleted)."""
        self._closed = True
        async with self._publishing:  # a publish under way ends first
            self._task.cancel()
            self._pending = []
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def parts(self) -> list[dict[str, Any]]:
        return [value if kind == "part" else {"type": kind, "text": "".join(value)} for kind, value in self._ordered]


class TurnRunner:
    def __init__(
        self,
        turn: ClaimedTurn,
        abort: asyncio.Event,
        window: Callable[[], float],
        on_published: OnPublished,
        session_gone: Callable[[], bool] = lambda: False,
    ):
        self.turn = turn
        self.abort = abort
        self.session_gone = session_gone  # asked once aborted: its session was deleted
        self.coalescer = DeltaCoalescer(turn, window, on_published)
        self.usage: dict[str, Any] = {}
        self.finish_reason = ""
        self.tokens_seen = 0

    async def run(self) -> TurnOutcome:
        """Stream the answer; returns how the turn ended."""
        status, error_code, error_message = TurnStatus.COMPLETE, "", ""
        if self.turn.cancel_requested:
            self.abort.set()
        else:
            try:
                await self._stream_until_abort()
            except ProviderError as exc:
                status, error_code, error_message = TurnStatus.ERROR, exc.code, exc.message
            except Exception:
                # The cause goes to the log only: its text (a provider's internals, a path, a
                # key) would reach every member of the session in the turn's error.
                logger.exception("turn %s failed", self.turn.turn_id)
                status, error_code, error_message = TurnStatus.ERROR, "internal", "the turn failed on the server"
        if self.abort.is_set():
            status, error_code, error_message = TurnStatus.CANCELLED, "", ""
            if self.session_gone():
                # Nothing more to say to a session that is gone: no onAbort, and what waits
                # in the buffer is dropped (the devices had `session.deleted` and closed).
                await self.coalescer.discard()
                return self._outcome(status, error_code, error_message)
            await self._on_abort()
        try:
            await self.coalescer.close()
        except Exception as exc:
            # The end of the answer could not be published (Redis unreachable): the turn
            # still ends, with the whole answer saved in the tree for snapshots.
            logger.exception("turn %s: publishing the end of the answer failed", self.turn.turn_id)
            if status != TurnStatus.CANCELLED:
                status, error_code, error_message = TurnStatus.ERROR, "internal", f"publishing failed: {exc}"
        return self._outcome(status, error_code, error_message)

    def _outcome(self, status: str, error_code: str, error_message: str) -> TurnOutcome:
        return TurnOutcome(
            turn_pk=self.turn.pk,
            session_id=self.turn.session_id,
            message_id=self.turn.assistant_message_id,
            status=status,
            parts=self.coalescer.parts(),
            content_seq=self.coalescer.last_seq,
            error_code=error_code,
            error_message=error_message,
            usage=self.usage,
            finish_reason=self.finish_reason,
        )

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
        """Call the model, run the tools it calls, and call it again, until it answers."""
        # An agent's turn runs its agent's model, prompt and tools; an orchestrator's waits
        # here (abortable) for its sub-agents and sees their answers (agent_turns.py).
        turn, agent_tools = await as_agent(self.turn)
        try:
            provider, model_name = resolve(turn.model)
        except KeyError:
            raise ProviderError("model_not_configured", f"model {turn.model!r} is not configured") from None
        tools = (configured_tools() if agent_tools is None else agent_tools) if provider.supports_tools else {}
        context = trim(turn.context, int(tuning("CONTEXT_BUDGET_CHARS")))
        specs = tuple(tool.spec() for tool in tools.values())
        tool_context = ToolContext(session_id=self.turn.session_id, turn_id=self.turn.turn_id, abort=self.abort)
        for round_ in range(max(int(tuning("TOOL_ROUNDS")), 1)):
            answer = [{"role": "assistant", "parts": self.coalescer.parts()}] if round_ else []
            request = ModelRequest(
                model=model_name,
                messages=context + answer,
                options=turn.model_options,
                tools=specs,
                turn_id=self.turn.turn_id,
            )
            calls = await self._call_model(provider, request)
            if not calls or self.abort.is_set():
                return
            for call in calls:
                await self.coalescer.add_part(build.tool_result, await run_tool(tools, call, tool_context))
        raise ProviderError("tool_rounds_exceeded", f"the model was still calling tools after {round_ + 1} rounds")

    async def _call_model(self, provider: Provider, request: ModelRequest) -> list[ToolCall]:
        """One model call, streamed; retried with backoff while it failed before streaming
        anything. Returns the tools it called."""
        retries = int(tuning("PROVIDER_RETRIES"))
        backoff = float(tuning("PROVIDER_RETRY_BACKOFF_SECONDS"))
        for attempt in range(retries + 1):
            calls: list[ToolCall] = []
            streamed = False
            stream = provider.stream(request)
            try:
                async for item in stream:
                    if self.abort.is_set():
                        return []
                    streamed = self._take(item) or streamed
                    if isinstance(item, ToolCall):
                        calls.append(item)
                        await self.coalescer.add_part(build.tool_call, call_part(item))
                return calls
            except ProviderError as exc:
                if streamed or not exc.retryable or attempt >= retries:
                    raise
                logger.warning(
                    "turn %s: model call failed before its first token (%s), retrying", self.turn.turn_id, exc.code
                )
            finally:
                await stream.aclose()  # type: ignore[attr-defined]
            await asyncio.sleep(backoff * 2**attempt)  # an abort cancels this task, sleep included
        raise AssertionError("unreachable")

    def _take(self, item: object) -> bool:
        """Apply a stream item; True if it is part of the answer (no retry after that)."""
        if isinstance(item, TextDelta):
            self.tokens_seen += 1
            self.coalescer.add("text", item.text)
            return True
        if isinstance(item, ReasoningDelta):
            self.coalescer.add("reasoning", item.text)
            return True
        if isinstance(item, Usage):
            self.usage = {
                "inputTokens": self.usage.get("inputTokens", 0) + item.input_tokens,
                "outputTokens": self.usage.get("outputTokens", 0) + item.output_tokens,
            }
        elif isinstance(item, Finish):
            self.finish_reason = item.reason
        return isinstance(item, ToolCall)

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
