"""Server-side tools: Python callables with a JSON schema, listed in the TOOLS setting
(dotted paths of `Tool` objects), offered to models that support tools and run by the
worker inside the turn's consume task.

Abort reaches a tool two ways: an async tool is cancelled (CancelledError at its next
await), and every tool can poll `context.aborted()` (a sync tool runs in a thread, where
cancellation cannot reach it). Either way the turn ends `cancelled` at once.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.utils.module_loading import import_string

from sessions_app.worker.providers.base import ToolCall, ToolSpec
from sessions_app.worker.providers.config import tuning


@dataclass(frozen=True)
class ToolContext:
    """What a running tool knows of its turn."""

    session_id: str
    turn_id: str
    abort: asyncio.Event

    def aborted(self) -> bool:
        return self.abort.is_set()


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object
    fn: Callable[[dict[str, Any], ToolContext], Any]  # returns a JSON-able value, or awaitable of one

    def spec(self) -> ToolSpec:
        return ToolSpec(name=self.name, description=self.description, parameters=self.parameters)


def configured_tools() -> dict[str, Tool]:
    tools: dict[str, Tool] = {}
    for path in tuning("TOOLS"):
        tool = import_string(path)
        if not isinstance(tool, Tool):
            raise TypeError(f"TOOLS entry {path} is not a sessions_app.worker.providers.tools.Tool")
        tools[tool.name] = tool
    return tools


def call_part(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool-call", "id": call.id, "name": call.name, "arguments": call.arguments}


def _missing(tool: Tool, arguments: dict[str, Any]) -> list[str]:
    return [key for key in tool.parameters.get("required", []) if key not in arguments]


async def run_tool(tools: dict[str, Tool], call: ToolCall, context: ToolContext) -> dict[str, Any]:
    """The tool-result part of a call. A tool's failure is the model's to see (isError),
    not the turn's end; cancellation propagates."""
    tool = tools.get(call.name)
    result: Any
    is_error = True
    if tool is None:
        result = f"unknown tool {call.name!r}"
    elif missing := _missing(tool, call.arguments):
        result = f"missing arguments: {', '.join(missing)}"
    else:
        try:
            if inspect.iscoroutinefunction(tool.fn):
                result = await tool.fn(call.arguments, context)
            else:
                result = await asyncio.to_thread(tool.fn, call.arguments, context)
            is_error = False
        except Exception as exc:
            result = f"{type(exc).__name__}: {exc}"
    return {"type": "tool-result", "id": call.id, "name": call.name, "result": result, "isError": is_error}
