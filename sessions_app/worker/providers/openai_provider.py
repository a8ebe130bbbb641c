"""`openai:<model>`: Chat Completions streaming through the official `openai` SDK.

Works with OpenAI and with OpenAI-compatible servers (Ollama, vLLM, llama.cpp server,
LM Studio) through OPENAI_BASE_URL. Reasoning arrives from compatible servers as
`delta.reasoning_content` (vLLM, DeepSeek) or `delta.reasoning` (Ollama, OpenRouter);
both become reasoning parts. Tool-call arguments stream as JSON fragments keyed by index
and are gathered into one ToolCall each. The SDK's own retries are off: the runner
retries, and only before the first token.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai

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

REASONING_FIELDS = ("reasoning_content", "reasoning")


def to_openai_messages(messages: list[Message], system: str) -> list[dict[str, Any]]:
    """Tree nodes as Chat Completions messages: an assistant node becomes, per round, an
    assistant message (text and tool_calls) followed by one `tool` message per result."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for message in messages:
        if message["role"] != "assistant":
            out.append({"role": message["role"], "content": text(message["parts"])})
            continue
        for round_ in rounds(message["parts"]):
            calls = [
                {
                    "id": p["id"],
                    "type": "function",
                    "function": {"name": p["name"], "arguments": json.dumps(p.get("arguments", {}))},
                }
                for p in round_.said
                if p.get("type") == "tool-call"
            ]
            said = text(round_.said)
            if said or calls:
                out.append({"role": "assistant", "content": said or None, **({"tool_calls": calls} if calls else {})})
            out.extend(
                {"role": "tool", "tool_call_id": r["id"], "content": json.dumps(r.get("result"), default=str)}
                for r in round_.results
            )
    return out


def to_openai_tools(tools: tuple[ToolSpec, ...]) -> list[dict[str, Any]]:
    return [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in tools
    ]


class _ToolCalls:
    """Tool calls gathered from their streamed fragments (by `index`)."""

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, str]] = {}

    def add(self, fragment: Any) -> None:
        call = self.calls.setdefault(fragment.index, {"id": "", "name": "", "arguments": ""})
        call["id"] = fragment.id or call["id"]
        if fragment.function is not None:
            call["name"] += fragment.function.name or ""
            call["arguments"] += fragment.function.arguments or ""

    def complete(self) -> list[ToolCall]:
        done = []
        for _, call in sorted(self.calls.items()):
            try:
                arguments = json.loads(call["arguments"] or "{}")
            except ValueError as exc:
                raise errors.bad_response(f"tool call {call['name']!r} has arguments that are not JSON") from exc
            if not call["name"] or not isinstance(arguments, dict):
                raise errors.bad_response("a tool call without a name or an arguments object")
            done.append(ToolCall(id=call["id"], name=call["name"], arguments=arguments))
        return done


class OpenAIProvider:
    name = "openai"
    supports_tools = True

    def config(self) -> VendorConfig | None:
        return vendor_config("OPENAI")

    def _arguments(self, request: ModelRequest, options: Options, config: VendorConfig) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": request.model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": to_openai_messages(request.messages, options.system),
        }
        if options.temperature is not None:
            kwargs["temperature"] = options.temperature
        if options.top_p is not None:
            kwargs["top_p"] = options.top_p
        if options.max_tokens is not None:
            # OpenAI's reasoning models take only max_completion_tokens; compatible servers
            # (a base URL is set) know max_tokens best.
            kwargs["max_tokens" if config.base_url else "max_completion_tokens"] = options.max_tokens
        if options.reasoning_effort is not None:
            kwargs["reasoning_effort"] = options.reasoning_effort
        if request.tools and options.tools:
            kwargs["tools"] = to_openai_tools(request.tools)
        return kwargs

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        options = parse_options(request.options)
        config = self.config()
        if config is None:
            raise ProviderError(
                "model_not_configured", "openai is not configured (set OPENAI_API_KEY or OPENAI_BASE_URL)"
            )
        try:
            upstream = await sdk_client(openai.AsyncOpenAI, openai.Timeout, config).chat.completions.create(
                **self._arguments(request, options, config)
            )
        except Exception as exc:
            raise errors.mapped(exc, openai) from exc
        async with upstream:  # closes the HTTP stream on cancel, error or end
            calls, usage, finish = _ToolCalls(), None, None
            async for chunk in errors.stream_items(upstream, openai):
                try:
                    items, chunk_usage, chunk_finish = _read_chunk(chunk, calls)
                except (AttributeError, TypeError, KeyError, ValueError) as exc:
                    raise errors.bad_response(f"unexpected chunk ({exc})") from exc
                usage, finish = chunk_usage or usage, chunk_finish or finish
                for item in items:
                    yield item
        if finish is None:
            raise errors.bad_response("the stream ended before the model finished")
        for call in calls.complete():
            yield call
        if usage is not None:
            yield usage
        yield Finish(finish)


def _read_chunk(chunk: Any, calls: _ToolCalls) -> tuple[list[StreamItem], Usage | None, str | None]:
    items: list[StreamItem] = []
    finish = None
    for choice in chunk.choices[:1]:
        delta = choice.delta
        extra = delta.model_extra or {}
        for field in REASONING_FIELDS:
            if isinstance(extra.get(field), str) and extra[field]:
                items.append(ReasoningDelta(extra[field]))
        if delta.content:
            items.append(TextDelta(delta.content))
        for fragment in delta.tool_calls or ():
            calls.add(fragment)
        finish = choice.finish_reason
    usage = None
    if chunk.usage is not None:
        usage = Usage(input_tokens=int(chunk.usage.prompt_tokens), output_tokens=int(chunk.usage.completion_tokens))
    return items, usage, finish
