"""The agents a deployment configures (`SESSIONS_APP["AGENTS"]`), read and checked once per
value of the setting.

An agent is a name, the model it calls, its system prompt, model options and tools, and,
for an orchestrator, the sub-agents it fans a message out to. Its clientId is
`agent:<name>`: a username cannot contain ":" (Django's username validator allows letters,
digits and @.+-_ only), and a user whose username starts with the prefix anyway is refused
wherever a user acts (`cancellation.services.client_id_of`), so no user can pass for an
agent. A turn an agent runs records the model `agent:<name>`; the worker resolves the
agent's configuration when it runs the turn (sessions_app/worker/agent_turns.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from sessions_app.conf import app_settings

AGENT_PREFIX = "agent:"
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,49}$")
_KEYS = {"name", "model", "system", "options", "tools", "sub_agents", "description"}


@dataclass(frozen=True)
class Agent:
    """One configured agent."""

    name: str
    model: str = "demo"
    system: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)  # modelOptions of its turns
    tools: tuple[str, ...] | None = None  # dotted paths of Tool objects; None: the TOOLS setting
    sub_agents: tuple[str, ...] = ()  # an orchestrator's sub-agents, answering in parallel
    description: str = ""

    @property
    def client_id(self) -> str:
        return client_id_for(self.name)

    @property
    def turn_model(self) -> str:
        """The model recorded on the agent's turns (resolved by the worker)."""
        return client_id_for(self.name)

    @property
    def orchestrates(self) -> bool:
        return bool(self.sub_agents)

    def model_options(self) -> dict[str, Any]:
        """Options of the agent's model calls: its options and its system prompt."""
        options = dict(self.options)
        if self.system:
            options["system"] = self.system
        return options

    def public(self) -> dict[str, Any]:
        """What members may see of it (GET /api/agents): not its prompt or tools."""
        return {
            "name": self.name,
            "clientId": self.client_id,
            "model": self.model,
            "subAgents": list(self.sub_agents),
            "description": self.description,
        }


def client_id_for(name: str) -> str:
    return f"{AGENT_PREFIX}{name}"


def agent_name(client_id_or_model: str) -> str | None:
    """The agent a clientId (or a turn's model) names, or None for a user (or a model)."""
    if client_id_or_model.startswith(AGENT_PREFIX):
        return client_id_or_model[len(AGENT_PREFIX) :]
    return None


def configured_agents() -> dict[str, Agent]:
    """The deployment's agents by name (ImproperlyConfigured if the setting is wrong)."""
    raw = app_settings.AGENTS
    return _parse(raw if isinstance(raw, str) else json.dumps(raw, sort_keys=True))


def agent(name: str) -> Agent | None:
    return configured_agents().get(name)


def orchestrator_of(session_agents: Sequence[str]) -> Agent | None:
    """The first orchestrating agent among a session's agents (names no longer configured
    are skipped: removing an agent from the settings retires it everywhere)."""
    if not session_agents:
        return None  # most sessions: no agent, and nothing to read on a send's path
    agents = configured_agents()
    for name in session_agents:
        found = agents.get(name)
        if found is not None and found.orchestrates:
            return found
    return None


@lru_cache(maxsize=8)
def _parse(raw: str) -> dict[str, Agent]:
    entries = _entries(raw)
    agents: dict[str, Agent] = {}
    for entry in entries:
        parsed = _agent(entry)
        if parsed.name in agents:
            raise ImproperlyConfigured(f"AGENTS: the name {parsed.name!r} is used twice")
        agents[parsed.name] = parsed
    for parsed in agents.values():
        for sub in parsed.sub_agents:
            if sub not in agents:
                raise ImproperlyConfigured(
                    f"AGENTS: {parsed.name!r} names the sub-agent {sub!r}, which is not configured"
                )
            if agents[sub].orchestrates or sub == parsed.name:
                raise ImproperlyConfigured(
                    f"AGENTS: the sub-agent {sub!r} of {parsed.name!r} orchestrates agents itself"
                )
    return agents


def _entries(raw: str) -> list[Any]:
    text = raw.strip()
    if not text:
        return []
    if text == "example" or text.startswith("example:"):
        from sessions_app.agents.example import example_agents

        return example_agents(text.partition(":")[2] or "demo")
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImproperlyConfigured(f"AGENTS is neither a list, JSON text of one, nor 'example': {exc}") from exc
    if not isinstance(entries, list):
        raise ImproperlyConfigured("AGENTS is a list of agents")
    return entries


def _agent(entry: Any) -> Agent:
    if not isinstance(entry, dict):
        raise ImproperlyConfigured(f"AGENTS: each agent is a dict, not {entry!r}")
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise ImproperlyConfigured(f"AGENTS: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ImproperlyConfigured(
            f"AGENTS: name {name!r} must be 1 to 50 of a-z 0-9 _ . - (starting with a letter or digit)"
        )
    text_fields = {
        key: entry.get(key, default) for key, default in (("model", "demo"), ("system", ""), ("description", ""))
    }
    for key, value in text_fields.items():
        if not isinstance(value, str) or (key == "model" and not value):
            raise ImproperlyConfigured(f"AGENTS: {key} of {name!r} must be a string")
    options = entry.get("options", {})
    if not isinstance(options, dict):
        raise ImproperlyConfigured(f"AGENTS: options of {name!r} must be a dict")
    tools = entry.get("tools")
    sub_agents = entry.get("sub_agents", [])
    for key, value in (("tools", tools if tools is not None else []), ("sub_agents", sub_agents)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ImproperlyConfigured(f"AGENTS: {key} of {name!r} must be a list of strings")
    return Agent(
        name=name,
        model=text_fields["model"],
        system=text_fields["system"],
        options=dict(options),
        tools=tuple(tools) if tools is not None else None,
        sub_agents=tuple(sub_agents),
        description=text_fields["description"],
    )
