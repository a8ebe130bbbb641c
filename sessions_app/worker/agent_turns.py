"""Running a turn an agent owns: the worker swaps in the agent's model, system prompt,
options and tools (its configuration, read when the turn runs), and an orchestrator's turn
first waits for its sub-agents and sees their answers (orchestrator.py).

A turn an agent runs records the model `agent:<name>` (sessions_app/agents/config.py); every
other turn passes through unchanged. The rest of the run is any turn's: the same stream,
abort, tools, coalescing and end (turn_stream.py).
"""

from __future__ import annotations

from dataclasses import replace

from django.utils.module_loading import import_string

from sessions_app.agents.config import Agent, agent, agent_name
from sessions_app.turns.types import ClaimedTurn
from sessions_app.worker import orchestrator
from sessions_app.worker.providers.base import ProviderError
from sessions_app.worker.providers.tools import Tool


async def as_agent(turn: ClaimedTurn) -> tuple[ClaimedTurn, dict[str, Tool] | None]:
    """The turn as its model call needs it, and the tools its agent offers (None: the TOOLS
    setting's). For an orchestrator this returns once its sub-agents' turns have ended."""
    name = agent_name(turn.model)
    if name is None:
        return turn, None
    configured = agent(name)
    if configured is None:
        raise ProviderError("model_not_configured", f"agent {name!r} is not configured")
    context = turn.context
    if configured.orchestrates:
        results = await orchestrator.sub_agent_results(turn)
        context = orchestrator.with_results(context, results)
    ran = replace(turn, model=configured.model, model_options=configured.model_options(), context=context)
    return ran, _tools(configured)


def _tools(configured: Agent) -> dict[str, Tool] | None:
    if configured.tools is None:
        return None
    tools: dict[str, Tool] = {}
    for path in configured.tools:
        tool = import_string(path)
        if not isinstance(tool, Tool):
            raise ProviderError("model_not_configured", f"agent tool {path} is not a Tool")
        tools[tool.name] = tool
    return tools
