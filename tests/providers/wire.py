"""The vendors' streaming wire formats, as they send them: OpenAI Chat Completions chunks
(`data: {chunk}` ... usage chunk ... `data: [DONE]`) and Anthropic Messages events
(`event: <type>` + `data: {json}`), and their HTTP error bodies."""

from __future__ import annotations

import json
from typing import Any

from tests.providers.fakes import Reply, Step

# --- OpenAI ------------------------------------------------------------------------------


def _openai_chunk(
    delta: dict[str, Any] | None,
    finish: str | None = None,
    usage: dict[str, Any] | None = None,
    model: str = "gpt-test",
) -> bytes:
    chunk = {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion.chunk",
        "created": 1741569952,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_eb9dce56a8",
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def openai_text(*texts: str, reasoning: tuple[str, ...] = (), reasoning_field: str = "reasoning_content") -> list[Step]:
    """Reasoning (as vLLM or Ollama stream it), then text, one chunk each; no end."""
    steps: list[Step] = [_openai_chunk({"role": "assistant", "content": "", "refusal": None})]
    steps += [_openai_chunk({reasoning_field: r}) for r in reasoning]
    steps += [_openai_chunk({"content": t}) for t in texts]
    return steps


def openai_tool_call(call_id: str, name: str, arguments: str, pieces: int = 3) -> list[Step]:
    """A tool call whose arguments arrive in fragments, as OpenAI streams them."""
    size = max(1, -(-len(arguments) // pieces))
    steps: list[Step] = [
        _openai_chunk(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
                ],
                "refusal": None,
            }
        )
    ]
    steps += [
        _openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[i : i + size]}}]})
        for i in range(0, len(arguments), size)
    ]
    return steps


def openai_end(finish: str = "stop", prompt_tokens: int = 11, completion_tokens: int = 7) -> list[Step]:
    """The finish chunk, the usage chunk (stream_options.include_usage) and [DONE]."""
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    return [_openai_chunk({}, finish=finish), _openai_chunk(None, usage=usage), b"data: [DONE]\n\n"]


def openai_error(status: int, message: str, type_: str, code: str | None = None) -> Reply:
    return Reply(
        status,
        {"error": {"message": message, "type": type_, "param": None, "code": code}},
        headers={"x-request-id": "req_fake"},
    )


# --- Anthropic ---------------------------------------------------------------------------


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data}, separators=(',', ':'))}\n\n".encode()


def anthropic_start(input_tokens: int = 25, model: str = "claude-test") -> list[Step]:
    return [
        _event(
            "message_start",
            {
                "message": {
                    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": model,
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": input_tokens,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                        "output_tokens": 1,
                        "service_tier": "standard",
                    },
                }
            },
        ),
        _event("ping", {}),
    ]


def anthropic_thinking(index: int, *pieces: str) -> list[Step]:
    return [
        _event(
            "content_block_start",
            {"index": index, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
        ),
        *(
            _event("content_block_delta", {"index": index, "delta": {"type": "thinking_delta", "thinking": p}})
            for p in pieces
        ),
        _event(
            "content_block_delta",
            {"index": index, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"}},
        ),
        _event("content_block_stop", {"index": index}),
    ]


def anthropic_text_open(index: int, *pieces: str) -> list[Step]:
    return [
        _event("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}}),
        *(_event("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": p}}) for p in pieces),
    ]


def anthropic_block_stop(index: int) -> list[Step]:
    return [_event("content_block_stop", {"index": index})]


def anthropic_tool_use(index: int, tool_id: str, name: str, arguments: str, pieces: int = 3) -> list[Step]:
    size = max(1, -(-len(arguments) // pieces))
    return [
        _event(
            "content_block_start",
            {"index": index, "content_block": {"type": "tool_use", "id": tool_id, "name": name, "input": {}}},
        ),
        _event("content_block_delta", {"index": index, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        *(
            _event(
                "content_block_delta",
                {"index": index, "delta": {"type": "input_json_delta", "partial_json": arguments[i : i + size]}},
            )
            for i in range(0, len(arguments), size)
        ),
        _event("content_block_stop", {"index": index}),
    ]


def anthropic_end(stop_reason: str = "end_turn", output_tokens: int = 15) -> list[Step]:
    return [
        _event(
            "message_delta",
            {"delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": {"output_tokens": output_tokens}},
        ),
        _event("message_stop", {}),
    ]


def anthropic_stream_error(type_: str, message: str) -> list[Step]:
    return [_event("error", {"error": {"type": type_, "message": message}})]


def anthropic_error(status: int, type_: str, message: str) -> Reply:
    return Reply(
        status,
        {"type": "error", "error": {"type": type_, "message": message}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"},
        headers={"request-id": "req_011CSHoEeqs5"},
    )
