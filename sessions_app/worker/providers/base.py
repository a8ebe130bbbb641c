"""The provider interface.

A provider's `stream()` is an async iterator of stream items. The runner consumes it in a
task it cancels on abort, so a provider must release its upstream connection when the
iterator is closed or cancelled (an `async with` around the vendor stream does that):
cancelling a turn closes the model's HTTP stream at once, also while the model is silent.

Messages (`ModelRequest.messages`) are tree nodes, `{"role", "parts"}`, root first. Part
types: `text`, `reasoning`, `tool-call` (`id`, `name`, `arguments`) and `tool-result`
(`id`, `name`, `result`, `isError`); an assistant node holds its tool calls and their
results in order, so a trimmed context never splits a call from its result.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ToolSpec:
    """What a model is told about a server-side tool."""

    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object


@dataclass(frozen=True)
class ModelRequest:
    model: str  # the provider's own model name (after "provider:")
    messages: list[dict[str, Any]]  # [{"role", "parts"}], root first
    options: dict[str, Any] = field(default_factory=dict)
    tools: tuple[ToolSpec, ...] = ()
    turn_id: str = ""  # the turn it answers (the demo model words each turn differently)


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True)
class ToolCall:
    """A complete tool call (the provider gathers its streamed argument fragments)."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Finish:
    reason: str


StreamItem = TextDelta | ReasoningDelta | ToolCall | Usage | Finish


class ProviderError(Exception):
    """A model failure; ends only the affected turn with `error` and this code.

    `retryable` marks failures worth another attempt (rate limits, overload, timeouts),
    which the runner makes only while nothing of the answer has streamed yet.
    """

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class Provider(Protocol):
    name: str
    supports_tools: bool

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]: ...
