"""Flow control between a websocket consumer and the socket under it.

An ASGI `send` does not wait for the client: Daphne hands each frame to Twisted, which
buffers whatever the socket cannot take yet, without bound. For a client that stops reading
(a stalled phone, a hostile script) that buffer would grow with every event of the session.

Twisted's producer API is the remedy: a push producer registered on a transport is paused
when the transport's buffer is over its size (64 KiB) and resumed once it drained. The
consumer's writer waits while paused, so frames wait in its own outbox, which it bounds
(SESSIONS_APP["MAX_OUTBOX_BYTES"]). Under Daphne, the `send` a consumer gets is
`functools.partial(server.handle_reply, protocol)` (under the wrappers of middleware): the
websocket protocol (autobahn's Twisted protocol, with its public `registerProducer`) is its
first argument. Under any
other server `attach` finds none and the outbox bound alone applies.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any


class TransportFlow:
    """An IPushProducer whose state the writer waits on."""

    def __init__(self) -> None:
        self._writable = asyncio.Event()
        self._writable.set()

    @property
    def paused(self) -> bool:
        return not self._writable.is_set()

    # Called by Twisted, on the event loop's thread (Daphne runs Twisted's asyncio reactor).
    def pauseProducing(self) -> None:
        self._writable.clear()

    def resumeProducing(self) -> None:
        self._writable.set()

    def stopProducing(self) -> None:
        self._writable.set()

    async def writable(self) -> None:
        if not self._writable.is_set():
            await self._writable.wait()


def _protocol_of(send: Any) -> Any:
    """Daphne's websocket protocol under `send`: the first argument of its partial, through
    the wrappers middleware put around it (Channels' session middleware keeps the one it
    wraps as `real_send`)."""
    for _ in range(8):
        if isinstance(send, functools.partial):
            return send.args[0] if send.args else None
        wrapper = getattr(send, "__self__", None)
        send = getattr(wrapper, "real_send", None)
        if send is None:
            return None
    return None


def attach(send: Any) -> TransportFlow | None:
    """Register a TransportFlow on the websocket under `send`, if it is Daphne's."""
    protocol: Any = _protocol_of(send)
    register = getattr(protocol, "registerProducer", None)
    transport = getattr(protocol, "transport", None)
    if register is None or transport is None:
        return None
    try:
        # The HTTP channel that upgraded the connection stays registered on its transport;
        # it reads no more from it, so the websocket takes its place.
        if getattr(transport, "producer", None) is not None:
            protocol.unregisterProducer()
        flow = TransportFlow()
        register(flow, True)
    except Exception:  # not the Twisted transport this expects: the outbox bound alone
        return None
    return flow


def detach(send: Any, flow: TransportFlow | None) -> None:
    if flow is None:
        return
    protocol: Any = _protocol_of(send)
    transport = getattr(protocol, "transport", None)
    if transport is not None and getattr(transport, "producer", None) is flow:
        try:
            protocol.unregisterProducer()
        except Exception:  # noqa: S110  the connection is gone: nothing to unregister
            pass
