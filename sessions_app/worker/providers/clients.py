"""One SDK client per configuration and event loop, so turns share keep-alive connections.

An HTTP client belongs to the loop that opened its connections; the worker runs one loop
per process, tests run theirs, so clients are kept per loop (and dropped with it).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from sessions_app.worker.providers.config import VendorConfig, tuning

C = TypeVar("C")

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, Any]] = weakref.WeakKeyDictionary()


def sdk_client(client_class: Callable[..., C], timeout_class: Callable[..., Any], config: VendorConfig) -> C:
    """This loop's client of a vendor SDK for `config` (`openai.AsyncOpenAI` and
    `anthropic.AsyncAnthropic` take the same arguments): no SDK retries (the runner retries,
    before the first token only); the read timeout bounds every silence of the stream,
    first token included."""
    read, connect = float(tuning("PROVIDER_TIMEOUT_SECONDS")), float(tuning("PROVIDER_CONNECT_TIMEOUT_SECONDS"))
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    key = (client_class, config, read, connect)
    if key not in per_loop:
        per_loop[key] = client_class(
            api_key=config.api_key or "no-key",
            base_url=config.base_url,
            max_retries=0,
            timeout=timeout_class(read, connect=connect),
        )
    client: C = per_loop[key]
    return client
