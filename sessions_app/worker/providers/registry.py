"""Which models a session may use, and the provider behind each model string.

A model string is `demo` or `<provider>:<model>` (for instance `openai:gpt-4.1-mini`).
`openai` and `anthropic` exist only when configured in the environment (a key or a base
URL; see config.py), read at each call so a deployment's env is the single source. A
vendor's module (and its SDK, seconds to import) loads only once that vendor is used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.utils.module_loading import import_string

from sessions_app.worker.providers.base import Provider
from sessions_app.worker.providers.config import vendor_config
from sessions_app.worker.providers.demo import DemoProvider, parse_demo_options
from sessions_app.worker.providers.options import parse_options

_DEMO = DemoProvider()
# name -> (environment prefix, provider class)
VENDORS = {
    "openai": ("OPENAI", "sessions_app.worker.providers.openai_provider.OpenAIProvider"),
    "anthropic": ("ANTHROPIC", "sessions_app.worker.providers.anthropic_provider.AnthropicProvider"),
}
# provider name -> the check its `stream()` makes of a turn's options first, before any
# call: it needs neither the vendor nor its configuration, so a session's options are judged
# also while its model is not configured here.
OPTION_CHECKS: dict[str, Callable[[dict[str, Any]], object]] = {
    "demo": parse_demo_options,
    "openai": parse_options,
    "anthropic": parse_options,
}
_loaded: dict[str, Provider] = {}


def _vendor(name: str) -> Provider:
    if name not in _loaded:
        _loaded[name] = import_string(VENDORS[name][1])()
    return _loaded[name]


def resolve(model: str) -> tuple[Provider, str]:
    """The provider of a model string and the provider's own model name (KeyError if the
    provider is not configured, or the model is not one of its listed models)."""
    if model == "demo":
        return _DEMO, model
    name, _, model_name = model.partition(":")
    config = vendor_config(VENDORS[name][0]) if name in VENDORS else None
    if config is None or not model_name or (config.models and model_name not in config.models):
        raise KeyError(model)
    return _vendor(name), model_name


def check_options(model: str, options: dict[str, Any]) -> None:
    """Refuse, as the model's provider will when a turn runs (ProviderError
    `provider_bad_request`, its message naming the option), options it can judge without
    its vendor: a session's settings are checked when they are set, not at every turn.
    Whatever only the vendor can judge (a model that takes no `temperature`) is still
    found when a turn runs."""
    check = OPTION_CHECKS.get(model.partition(":")[0])
    if check is not None:
        check(options)


def is_configured(model: str) -> bool:
    try:
        resolve(model)
    except KeyError:
        return False
    return True


def available_models() -> list[str]:
    """`demo`, then each configured vendor's listed models (OPENAI_MODELS, ANTHROPIC_MODELS)."""
    models = ["demo"]
    for name, (prefix, _) in VENDORS.items():
        config = vendor_config(prefix)
        if config is not None:
            models.extend(f"{name}:{m}" for m in config.models)
    return models
