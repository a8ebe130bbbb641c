"""The built-in `demo` model: deterministic and offline.

modelOptions: `tokens` (how many, default 24), `rate` (tokens per second, default 30),
`pauseAfter` and `pauseSeconds` (go silent mid-answer), `failAfter` (raise a provider error
after that many tokens), `stamp` (prefix each token with its emit time, for benchmarks).
The answer is a function of the prompt and the options only: see `demo_tokens`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

from sessions_app.worker.providers.base import Finish, ModelRequest, ProviderError, StreamItem, TextDelta, Usage

WORDS = (
    "the quick brown fox jumps over a lazy dog while streams of tokens flow to every "
    "device in the session and nothing is lost or shown twice"
).split()


def _prompt_of(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message["role"] == "user":
            return "".join(p.get("text", "") for p in message["parts"] if p.get("type") == "text")
    return ""


def demo_tokens(prompt: str, count: int) -> list[str]:
    """The tokens the demo model answers `prompt` with (each a word and a space)."""
    digest = _digest(prompt)
    return [_token(digest, index) for index in range(count)]


def _digest(prompt: str) -> hashlib.blake2b:
    return hashlib.blake2b(prompt.encode(), digest_size=16)


def _token(digest: hashlib.blake2b, index: int) -> str:
    # Each word depends on the prompt and its position, so different prompts give
    # different answers (tests tell concurrent turns apart by their text).
    token = digest.copy()
    token.update(index.to_bytes(4, "big"))
    return f"{WORDS[int.from_bytes(token.digest()[:4], 'big') % len(WORDS)]} "


def _number(options: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProviderError("provider_bad_request", f"demo option {key} must be a number")
    return min(max(float(value), low), high)


class DemoProvider:
    name = "demo"
    supports_tools = False

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        options = request.options
        count = int(_number(options, "tokens", 24, 0, 100_000))
        rate = _number(options, "rate", 30, 0.01, 100_000)
        pause_after = options.get("pauseAfter")
        pause_seconds = _number(options, "pauseSeconds", 0, 0, 3600)
        fail_after = options.get("failAfter")
        stamp = bool(options.get("stamp"))
        # Each token is made when it is due, not all before the first: a burst of 100 turns
        # spent ~6 ms of the worker's loop making answers before any first token went out.
        prompt = _prompt_of(request.messages)
        digest = _digest(prompt)
        loop = asyncio.get_running_loop()
        due = loop.time()
        for index in range(count):
            if fail_after is not None and index >= int(fail_after):
                raise ProviderError("provider_unavailable", f"demo model failed after {index} tokens (failAfter)")
            if pause_after is not None and index == int(pause_after) and pause_seconds:
                await asyncio.sleep(pause_seconds)
                due = loop.time()
            due += 1 / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            token = _token(digest, index)
            yield TextDelta(f"<{index}@{time.time():.6f}>{token}" if stamp else token)
        if fail_after is not None and int(fail_after) == count:
            raise ProviderError("provider_unavailable", f"demo model failed after {count} tokens (failAfter)")
        yield Usage(input_tokens=len(prompt.split()), output_tokens=count)
        yield Finish("stop")
