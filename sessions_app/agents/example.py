"""The shipped example: a panel that answers a question with two sub-agents working in
parallel, a researcher and a critic, then writes a summary that draws on both.

Enable it with `SESSIONS_APP["AGENTS"] = "example"` (or the environment variable
`CHAT_AGENTS=example`; `make run` sets it by default), then add the agent `panel` to a
session. `example:<model>` runs the three on another model, for instance
`CHAT_AGENTS=example:openai:gpt-4.1-mini`.
"""

from __future__ import annotations

from typing import Any

RESEARCHER = (
    "You are the researcher of a small panel. Answer the user's question with the facts it "
    "needs: short bullet points, most important first, saying where you are unsure."
)
CRITIC = (
    "You are the critic of a small panel. Do not answer the question yourself: list the "
    "risks, gaps, hidden assumptions and counter-arguments a careful answer must address."
)
PANEL = (
    "You lead a panel of a researcher and a critic. You receive the user's question followed "
    "by their answers. Write the final answer for the user: use the researcher's facts, "
    "address the critic's points, and keep it short."
)


def example_agents(model: str = "demo") -> list[dict[str, Any]]:
    """The example's agent list, every agent on `model`. On the demo model each answers at
    its own pace (words a second), so their streams visibly interleave."""
    demo = model == "demo"

    def options(rate: int) -> dict[str, Any]:
        return {"rate": rate} if demo else {}

    return [
        {
            "name": "researcher",
            "model": model,
            "system": RESEARCHER,
            "options": options(24),
            "description": "Gathers the facts a question needs.",
        },
        {
            "name": "critic",
            "model": model,
            "system": CRITIC,
            "options": options(18),
            "description": "Points out risks, gaps and counter-arguments.",
        },
        {
            "name": "panel",
            "model": model,
            "system": PANEL,
            "options": options(30),
            "sub_agents": ["researcher", "critic"],
            "description": "Asks the researcher and the critic in parallel, then sums up their answers.",
        },
    ]
