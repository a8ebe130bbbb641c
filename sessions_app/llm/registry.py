"""Which models a session may use, and the provider behind each model string.

A model string is `demo` or `<provider>:<model>` (for instance `openai:gpt-4.1-mini`).
"""

from __future__ import annotations

from sessions_app.llm.base import Provider
from sessions_app.llm.demo import DemoProvider

_PROVIDERS: dict[str, Provider] = {"demo": DemoProvider()}


def resolve(model: str) -> tuple[Provider, str]:
    """The provider of a model string and the provider's own model name."""
    name, _, model_name = model.partition(":")
    provider = _PROVIDERS.get(name)
    if provider is None:
        raise KeyError(model)
    return provider, model_name or name


def is_configured(model: str) -> bool:
    try:
        resolve(model)
    except KeyError:
        return False
    return True


def available_models() -> list[str]:
    return ["demo"]
