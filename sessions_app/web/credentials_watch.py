"""Hearing of credential changes as they happen, so that a known API token costs no Redis
read (decision 029).

Every change that can turn a token away renews the credentials generation in Redis and, in
the same MULTI/EXEC, publishes on one channel (web/token_cache.py). A web process holds one
connection subscribed to that channel and polls it without blocking as each API request
is authenticated: `heard()` is a number that changes whenever a message arrives or the
connection is new, or None while the watch cannot vouch for the connection. The
generation read from Redis stays good while `heard()` returns the number it returned
before that read. A heartbeat's answer only says that the connection is alive: it leaves
the number as it was, so the requests after it need no Redis read (they did: the first
requests of a burst after a quiet second all waited for a read of the generation).

Why a revocation is still seen at once: Redis writes the message to every subscriber's
socket in the event-loop pass that answers the revoking process. Anything that follows
that answer (the revoking request's response, a client's next request to another process)
comes later, and finds the message in that process's socket buffer, where the poll reads it
before the token is trusted. Across hosts, the message takes one network hop where the
request takes several; a lost packet could delay it by the TCP retransmission time.

A connection that goes quiet is not trusted for long: the poll sends a PING when it has
heard nothing for HEARTBEAT_SECONDS and vouches for nothing once it has heard nothing for
TRUST_SECONDS (a network partition that leaves the socket open). The event loop that polls
it also polls it every POLL_SECONDS by itself, so that a process with no requests for a
while still has a trusted watch when the next one comes. A closed or failed connection
vouches for nothing; a new one is opened on a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time

from redis.connection import ConnectionInterface

from sessions_app.infra import live_state

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 1.0
TRUST_SECONDS = 2.5
POLL_SECONDS = 0.5  # the loop's own poll, between requests
RETRY_SECONDS = 1.0  # between connection attempts while Redis cannot be reached
PONGS = (b"PONG", "PONG", [b"pong", b""], ["pong", ""])  # PING's answer, RESP3 and RESP2 (subscribed)


class CredentialsWatch:
    """One subscription to a channel, polled from one event loop's thread."""

    def __init__(self, channel: str, client_name: str) -> None:
        self.channel, self.client_name = channel, client_name  # the name shows in CLIENT LIST
        self._connection: ConnectionInterface | None = None
        self._count = itertools.count(1)  # never repeats, across connections too
        self._heard = 0
        self._heard_at = 0.0
        self._pinged_at = 0.0
        self._connecting = threading.Lock()
        self._next_attempt = 0.0
        self._polled_by: asyncio.AbstractEventLoop | None = None
        self.heartbeats_answered = 0  # PINGs answered: the connection is alive (tests read it)

    def keep_polled(self) -> None:
        """Poll from the running event loop every POLL_SECONDS as well (idempotent; a new
        loop takes over, as in tests, where each may have its own)."""
        loop = asyncio.get_running_loop()
        if self._polled_by is not loop:
            self._polled_by = loop
            loop.call_later(POLL_SECONDS, self._poll, loop)

    def _poll(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._polled_by is not loop:
            return  # another loop polls it now
        try:
            self.heard()
        finally:  # polled again whatever happened: the next poll may find a new connection
            loop.call_later(POLL_SECONDS, self._poll, loop)

    def heard(self) -> int | None:
        """Read what has arrived (never blocks). A number that changes with each message heard
        on the channel (and with each new connection); None while the watch cannot vouch that
        nothing was missed."""
        connection = self._connection
        if connection is None:
            self._connect_soon()
            return None
        now = time.monotonic()
        try:
            while connection.can_read(timeout=0):
                reply = connection.read_response(push_request=True)  # RESP3 sends messages as pushes
                if reply in PONGS:
                    self.heartbeats_answered += 1
                else:  # a message, or anything we do not expect: the generation may have changed
                    self._heard = next(self._count)
                self._heard_at = now
            if now - self._heard_at >= HEARTBEAT_SECONDS and now - self._pinged_at >= HEARTBEAT_SECONDS:
                self._pinged_at = now
                connection.send_command("PING")
        except Exception:  # closed, reset, or a reply that makes no sense: start afresh
            logger.info("the credentials watch lost its Redis connection", exc_info=True)
            self.close()
            return None
        return self._heard if now - self._heard_at < TRUST_SECONDS else None

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.disconnect()

    def _connect_soon(self) -> None:
        if time.monotonic() < self._next_attempt or not self._connecting.acquire(blocking=False):
            return
        self._next_attempt = time.monotonic() + RETRY_SECONDS
        threading.Thread(target=self._connect, name="credentials-watch", daemon=True).start()

    def _connect(self) -> None:
        try:
            pool = live_state.sync_redis().connection_pool  # its settings; the connection is not the pool's
            connection = pool.connection_class(**pool.connection_kwargs)
            connection.connect()
            connection.send_command("CLIENT", "SETNAME", self.client_name)
            connection.read_response()
            connection.send_command("SUBSCRIBE", self.channel)
            connection.read_response(push_request=True)  # the subscription is in place from here on
        except Exception:
            logger.warning("the credentials watch cannot subscribe; tokens are checked against Redis", exc_info=True)
        else:
            self._heard, self._heard_at = next(self._count), time.monotonic()
            self._connection = connection
        finally:
            self._connecting.release()
