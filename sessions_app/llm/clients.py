"""One SDK client per configuration and event loop, so turns share keep-alive connections.

An HTTP client belongs to the loop that opened its connections; the worker runs one loop
per process, tests run theirs, so clients are kept per loop (and dropped with it).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from sessions_app.llm.config import tuning

C = TypeVar("C")

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, Any]] = weakref.WeakKeyDictionary()


def timeouts() -> tuple[float, float]:
    """(read, connect) seconds: read bounds every silence of the stream, first token included."""
    return float(tuning("PROVIDER_TIMEOUT_SECONDS")), float(tuning("PROVIDER_CONNECT_TIMEOUT_SECONDS"))


def client_for(key: Hashable, make: Callable[[], C]) -> C:
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    if key not in per_loop:
        per_loop[key] = make()
    client: C = per_loop[key]
    return client
