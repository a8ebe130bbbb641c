"""A harmless example tool: counts the words and characters of a text. Enable it with
`SESSIONS_APP["TOOLS"] = ["sessions_app.worker.providers.tools_example.word_count"]` (or
CHAT_TOOLS=sessions_app.worker.providers.tools_example.word_count)."""

from __future__ import annotations

from typing import Any

from sessions_app.worker.providers.tools import Tool, ToolContext


def _count(arguments: dict[str, Any], context: ToolContext) -> dict[str, int]:
    text = str(arguments["text"])
    return {"words": len(text.split()), "characters": len(text)}


word_count = Tool(
    name="word_count",
    description="Count the words and characters of a text.",
    parameters={
        "type": "object",
        "properties": {"text": {"type": "string", "description": "The text to count."}},
        "required": ["text"],
        "additionalProperties": False,
    },
    fn=_count,
)
