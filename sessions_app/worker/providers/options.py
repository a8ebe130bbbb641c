"""A session's modelOptions, checked once per turn for the real vendors.

Known keys: `system` (system prompt; else the SYSTEM_PROMPT setting), `temperature`,
`maxTokens`, `topP`, `reasoningEffort` (OpenAI: minimal/low/medium/high), `thinkingBudget`
(Anthropic extended thinking, tokens >= 1024), `tools` (false: offer no tools). An unknown
key or a bad value ends the turn with `provider_bad_request`, before any model call, so a
typo never silently costs a full-price answer with the wrong settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sessions_app.worker.providers.base import ProviderError
from sessions_app.worker.providers.config import tuning

KNOWN = {"system", "temperature", "maxTokens", "topP", "reasoningEffort", "thinkingBudget", "tools"}
EFFORTS = ("minimal", "low", "medium", "high")


@dataclass(frozen=True)
class Options:
    system: str
    temperature: float | None
    max_tokens: int | None
    top_p: float | None
    reasoning_effort: str | None
    thinking_budget: int | None
    tools: bool


def _bad(message: str) -> ProviderError:
    return ProviderError("provider_bad_request", message)


def _number(raw: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _bad(f"option {key} must be a number from {low:g} to {high:g}")
    return float(value)


def _integer(raw: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(f"option {key} must be a whole number from {low} to {high}")
    return value


def parse_options(raw: dict[str, Any]) -> Options:
    unknown = sorted(set(raw) - KNOWN)
    if unknown:
        raise _bad(f"unknown model option(s): {', '.join(unknown)} (known: {', '.join(sorted(KNOWN))})")
    system = raw.get("system", tuning("SYSTEM_PROMPT")) or ""
    if not isinstance(system, str):
        raise _bad("option system must be a string")
    effort = raw.get("reasoningEffort")
    if effort is not None and effort not in EFFORTS:
        raise _bad(f"option reasoningEffort must be one of {', '.join(EFFORTS)}")
    tools = raw.get("tools", True)
    if not isinstance(tools, bool):
        raise _bad("option tools must be true or false")
    return Options(
        system=system,
        temperature=_number(raw, "temperature", 0, 2),
        max_tokens=_integer(raw, "maxTokens", 1, 1_000_000),
        top_p=_number(raw, "topP", 0, 1),
        reasoning_effort=effort,
        thinking_budget=_integer(raw, "thinkingBudget", 1024, 1_000_000),
        tools=tools,
    )
