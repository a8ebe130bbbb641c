"""`anthropic:<model>`: Messages streaming through the official `anthropic` SDK.

The stream is a sequence of typed events: `message_start` (input usage), content blocks
(`text`, `thinking`, `tool_use`) opened, filled by deltas (`text_delta`, `thinking_delta`,
`input_json_delta`) and closed, then `message_delta` (stop reason, output usage) and
`message_stop`. An `error` event inside the stream ends the turn like an HTTP error.
The SDK's own retries are off: the runner retries, and only before the first token.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic

from sessions_app.worker.providers import errors
from sessions_app.worker.providers.base import (
    Finish,
    ModelRequest,
    ProviderError,
    ReasoningDelta,
    StreamItem,
    TextDelta,
    ToolCall,
    ToolSpec,
    Usage,
)
from sessions_app.worker.providers.clients import sdk_client
from sessions_app.worker.providers.config import VendorConfig, vendor_config
from sessions_app.worker.providers.context import Message, rounds, text
from sessions_app.worker.providers.options import Options, parse_options

DEFAULT_MAX_TOKENS = 4096  # the Messages API requires max_tokens


def to_anthropic_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Tree nodes as Messages: per round, an assistant message (text and tool_use blocks)
    and a user message of tool_result blocks. Reasoning is not sent back (the API drops
    earlier turns' thinking anyway). Consecutive same-role messages are merged by the API."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message["role"] != "assistant":
            said = text(message["parts"])
            if said:
                out.append({"role": "user", "content": [{"type": "text", "text": said}]})
            continue
        for round_ in rounds(message["parts"]):
            blocks: list[dict[str, Any]] = []
            for part in round_.said:
                if part.get("type") == "text" and part.get("text"):
                    blocks.append({"type": "text", "text": part["text"]})
                elif part.get("type") == "tool-call":
                    blocks.append(
                        {"type": "tool_use", "id": part["id"], "name": part["name"], "input": part.get("arguments", {})}
                    )
            if blocks:
                out.append({"role": "assistant", "content": blocks})
            if round_.results:
                out.append(
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": r["id"],
                                "content": json.dumps(r.get("result"), default=str),
                                "is_error": bool(r.get("isError")),
                            }
                            for r in round_.results
                        ],
                    }
                )
    return out


def to_anthropic_tools(tools: tuple[ToolSpec, ...]) -> list[dict[str, Any]]:
    return [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools]


class _Reader:
    """Turns stream events into stream items, keeping usage, stop reason and open tool blocks."""

    def __init__(self) -> None:
        self.input_tokens = 0
        self.output_tokens = 0
        self.stop_reason: str | None = None
        self.stopped = False
        self.tools: dict[int, dict[str, str]] = {}

    def read(self, event: Any) -> list[StreamItem]:
        kind = event.type
        if kind == "message_start":
            usage = event.message.usage
            self.input_tokens = sum(
                int(getattr(usage, f, None) or 0)
                for f in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
            )
            self.output_tokens = int(usage.output_tokens or 0)
        elif kind == "content_block_start" and event.content_block.type == "tool_use":
            block = event.content_block
            self.tools[event.index] = {"id": block.id, "name": block.name, "json": ""}
        elif kind == "content_block_delta":
            return self._delta(event.index, event.delta)
        elif kind == "content_block_stop" and event.index in self.tools:
            return [self._tool_call(self.tools.pop(event.index))]
        elif kind == "message_delta":
            self.stop_reason = event.delta.stop_reason or self.stop_reason
            self.output_tokens = int(event.usage.output_tokens or self.output_tokens)
        elif kind == "message_stop":
            self.stopped = True
        return []

    def _delta(self, index: int, delta: Any) -> list[StreamItem]:
        if delta.type == "text_delta":
            return [TextDelta(delta.text)] if delta.text else []
        if delta.type == "thinking_delta":
            return [ReasoningDelta(delta.thinking)] if delta.thinking else []
        if delta.type == "input_json_delta" and index in self.tools:
            self.tools[index]["json"] += delta.partial_json
        return []  # signature_delta, citations_delta

    @staticmethod
    def _tool_call(block: dict[str, str]) -> ToolCall:
        try:
            arguments = json.loads(block["json"] or "{}")
        except ValueError as exc:
            raise errors.bad_response(f"tool call {block['name']!r} has input that is not JSON") from exc
        if not isinstance(arguments, dict):
            raise errors.bad_response(f"tool call {block['name']!r} has input that is not an object")
        return ToolCall(id=block["id"], name=block["name"], arguments=arguments)


class AnthropicProvider:
    name = "anthropic"
    supports_tools = True

    def config(self) -> VendorConfig | None:
        return vendor_config("ANTHROPIC")

    @staticmethod
    def _arguments(request: ModelRequest, options: Options) -> dict[str, Any]:
        max_tokens = options.max_tokens or DEFAULT_MAX_TOKENS + (options.thinking_budget or 0)
        kwargs: dict[str, Any] = {
            "model": request.model,
            "stream": True,
            "max_tokens": max_tokens,
            "messages": to_anthropic_messages(request.messages),
        }
        if options.system:
            kwargs["system"] = options.system
        # This SDK no longer lists the sampling parameters (newer models refuse them); models
        # that take them still get them, others answer provider_bad_request.
        sampling = {k: v for k, v in (("temperature", options.temperature), ("top_p", options.top_p)) if v is not None}
        if sampling:
            kwargs["extra_body"] = sampling
        if options.thinking_budget is not None:
            kwargs["thinking"] = {"type": "enabled", "budget_tokens": options.thinking_budget}
        if request.tools and options.tools:
            kwargs["tools"] = to_anthropic_tools(request.tools)
        return kwargs

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        options = parse_options(request.options)
        config = self.config()
        if config is None:
            raise ProviderError("model_not_configured", "anthropic is not configured (set ANTHROPIC_API_KEY)")
        try:
            upstream = await sdk_client(anthropic.AsyncAnthropic, anthropic.Timeout, config).messages.create(
                **self._arguments(request, options)
            )
        except Exception as exc:
            raise errors.mapped(exc, anthropic) from exc
        reader = _Reader()
        async with upstream:  # closes the HTTP stream on cancel, error or end
            async for event in errors.stream_items(upstream, anthropic):
                try:
                    items = reader.read(event)
                except (AttributeError, TypeError, KeyError) as exc:
                    raise errors.bad_response(f"unexpected event ({exc})") from exc
                for item in items:
                    yield item
        if not reader.stopped or reader.stop_reason is None:
            raise errors.bad_response("the stream ended before the model finished")
        yield Usage(input_tokens=reader.input_tokens, output_tokens=reader.output_tokens)
        yield Finish(reader.stop_reason)
