"""Provider configuration, read at use time (so tests and reloads see changes).

Credentials and endpoints come from the environment only (12-factor; never from a browser):
`OPENAI_API_KEY`, `OPENAI_BASE_URL`, `OPENAI_MODELS`, and the same for `ANTHROPIC_*`.
A vendor is configured when its key or its base URL is set (a local Ollama or vLLM server
needs no key). Tuning knobs (retries, timeouts, context budget, tools) are SESSIONS_APP
settings (conf.py); a site that leaves one out may set it as `CHAT_<KEY>` in the environment.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from sessions_app.conf import DEFAULTS, configured


@dataclass(frozen=True)
class VendorConfig:
    api_key: str
    base_url: str | None
    models: tuple[str, ...]  # the models offered; empty: any model name is accepted


def _models(raw: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in raw.split(",") if m.strip())


def vendor_config(prefix: str) -> VendorConfig | None:
    """`OPENAI` / `ANTHROPIC` settings from the environment; None when neither a key nor a
    base URL is set."""
    api_key = os.environ.get(f"{prefix}_API_KEY", "").strip()
    base_url = os.environ.get(f"{prefix}_BASE_URL", "").strip() or None
    if not api_key and not base_url:
        return None
    return VendorConfig(
        api_key=api_key,
        base_url=base_url,
        models=_models(os.environ.get(f"{prefix}_MODELS", "")),
    )


def tuning(key: str) -> Any:
    """A SESSIONS_APP setting; else `CHAT_<KEY>` from the environment; else the default."""
    site = configured()
    if key in site:
        return site[key]
    default = DEFAULTS[key]
    raw = os.environ.get(f"CHAT_{key}")
    if raw is None:
        return default
    if isinstance(default, bool):
        return raw.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int | float):
        return type(default)(raw)
    if isinstance(default, list):
        return json.loads(raw) if raw.startswith("[") else [p.strip() for p in raw.split(",") if p.strip()]
    return raw
