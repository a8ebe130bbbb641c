"""The context a model sees: the branch's messages (root to the turn's user message, built
by services/turns.py), trimmed to a character budget, and the assistant node split into
the vendor-neutral rounds that both vendors' message formats are built from."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

Part = dict[str, Any]
Message = dict[str, Any]


def part_chars(part: Part) -> int:
    if part.get("type") in ("text", "reasoning"):
        return len(part.get("text", ""))
    return len(json.dumps(part.get("arguments", part.get("result")), default=str))


def message_chars(message: Message) -> int:
    return sum(part_chars(p) for p in message.get("parts", []))


def trim(messages: list[Message], budget_chars: int) -> list[Message]:
    """The newest messages that fit `budget_chars`, starting with a user message (both
    vendors want that). The last message (the turn's prompt) always goes, even over budget:
    the vendor then answers with a clear error rather than the prompt being dropped."""
    kept: list[Message] = []
    used = 0
    for message in reversed(messages):
        used += message_chars(message)
        if kept and used > budget_chars:
            break
        kept.append(message)
    kept.reverse()
    while len(kept) > 1 and kept[0].get("role") != "user":
        kept.pop(0)
    return kept


def text(parts: list[Part], kind: str = "text") -> str:
    return "".join(p.get("text", "") for p in parts if p.get("type") == kind)


@dataclass
class Round:
    """One model call's output within an assistant node: what it said and the tools it
    called, then the results of those calls."""

    said: list[Part] = field(default_factory=list)
    results: list[Part] = field(default_factory=list)


def rounds(parts: list[Part]) -> list[Round]:
    """Split an assistant node's ordered parts at each batch of tool results."""
    out = [Round()]
    for part in parts:
        if part.get("type") == "tool-result":
            out[-1].results.append(part)
        else:
            if out[-1].results:
                out.append(Round())
            out[-1].said.append(part)
    return [r for r in out if r.said or r.results]
