"""A device: one websocket connection to a session (docs/protocol.md, "Websocket"), the
session's state as it sees it, and the commands it sends."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
import websockets

from chat_client.protocol import ChatClientError, Event, filter_of, new_id, user_message
from chat_client.state import SessionState
from chat_client.turns import TurnHandle

HELLO_TIMEOUT_SECONDS = 30.0  # a handshake's wait for the server's `hello`

# Closes a reconnect cannot mend (docs/protocol.md, "Websocket"): a bad request, no or bad
# credentials, not a member, no such session, a frame the server cannot send. A connection
# that ends with one, on its handshake or later, leaves the device closed for good (until
# the program itself opens it again): no automatic reconnect, and waits and commands raise.
FINAL_CLOSE_CODES = frozenset({4400, 4401, 4403, 4404, 4500})
SESSION_GONE = 4404

if TYPE_CHECKING:
    from chat_client.client import ChatClient


class Device(SessionState):
    """One websocket connection to a session, with the session's state as it sees it
    (`SessionState`): it resumes after a drop from the last seq it applied (`reconnect()`,
    or by itself with `auto_reconnect`), and stops at a final close code (`closed_for_good`)."""

    def __init__(self, client: ChatClient, session_id: str, *, auto_reconnect: bool = False) -> None:
        super().__init__()
        self.client = client
        self.session_id = session_id
        self.auto_reconnect = auto_reconnect
        self.ws: Any = None
        self.hello: Event | None = None
        self.client_id: str | None = None
        self.connection_id: str | None = None
        self.resumed: bool | None = None
        self.errors: list[Event] = []  # error frames that answered no command
        self.close_code: int | None = None
        self._replies: dict[str, asyncio.Future[Event]] = {}
        self._changed = asyncio.Event()
        self._ready = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._reopening = False  # reconnect() opens the next connection itself
        self._auto_reconnecting: asyncio.Task[None] | None = None
        self._closed_for_good = False

    # --- connection ---

    async def open(self, after: int | None = None) -> None:
        url = self.client.base_url.replace("http", "ws", 1) + f"/ws/sessions/{self.session_id}/"
        if after is not None:
            url += f"?after={after}"
        headers = {"Authorization": f"Token {self.client.token}"} if self.client.token else {}
        self._ready.clear()
        self.ws = await websockets.connect(url, additional_headers=headers, max_size=None, open_timeout=30)
        self._closed_for_good = False  # a connection again, whatever ended the last one
        self._reader = asyncio.create_task(self._read_loop(self.ws))
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({ready, self._reader}, timeout=HELLO_TIMEOUT_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        if not self._ready.is_set():
            ready.cancel()
            if not self._reader.done():  # no `hello` in time: give this connection up, and its reader
                reopening, self._reopening = self._reopening, True  # its end starts no reconnect
                try:
                    await self.drop()
                finally:
                    self._reopening = reopening
            raise ChatClientError("closed", f"connection closed with code {self.close_code}")

    async def reconnect(self) -> None:
        """Resume from the last seq this device saw (one connection: with `auto_reconnect`,
        the drop does not also start one of its own)."""
        self._reopening = True
        try:
            await self.drop()
        finally:
            self._reopening = False
        self._stop_auto_reconnect()
        await self.open(after=self.last_seq)

    def _stop_auto_reconnect(self) -> None:
        if self._auto_reconnecting is not None and not self._auto_reconnecting.done():
            self._auto_reconnecting.cancel()
        self._auto_reconnecting = None

    async def drop(self) -> None:
        """Lose the connection abruptly, as a network drop does (no close command)."""
        if self.ws is not None:
            with contextlib.suppress(Exception):
                self.ws.transport.abort()
        if self._reader is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._reader, 5)

    async def close(self, cancel: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Close this device; `cancel` (a filter) cancels turns on the way out."""
        self._closing = True
        self._stop_auto_reconnect()
        reply = None
        if self.ws is not None and self.close_code is None:
            frame: dict[str, Any] = {"type": "close"}
            if cancel is not None:
                frame["cancel"] = cancel
            with contextlib.suppress(Exception):
                reply = await self._command(frame, timeout=10)
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._reader, 5)
        return reply

    async def _read_loop(self, ws: Any) -> None:
        try:
            async for raw in ws:
                self._on_frame(orjson.loads(raw), time.time())
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = ws.close_code
            self._closed_for_good = self.close_code in FINAL_CLOSE_CODES
            for future in self._replies.values():
                if not future.done():
                    future.set_exception(self._closed_error())
            self._replies.clear()
            self._changed.set()
            # A reader cancelled is the program shutting down (asyncio.run cancels every task
            # left when its coroutine returns), not a network drop: a reconnect started now
            # would never run ("Task was destroyed but it is pending").
            task = asyncio.current_task()
            shutting_down = task is not None and task.cancelling() > 0
            reopen = self.auto_reconnect and not self._closing and not self._reopening and not shutting_down
            if reopen and not self._closed_for_good and self._auto_reconnecting is None:
                self._auto_reconnecting = asyncio.get_running_loop().create_task(self._auto_reconnect())

    async def _auto_reconnect(self) -> None:
        delay = 0.1
        try:
            while not self._closing:
                try:
                    await self.open(after=self.last_seq)
                    return
                except Exception:
                    if self._closed_for_good:
                        return  # the handshake was refused for good (4401, 4403, 4404, ...)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5)
        finally:
            if self._auto_reconnecting is asyncio.current_task():
                self._auto_reconnecting = None

    @property
    def closed_for_good(self) -> bool:
        """The last connection ended with a final close code (`FINAL_CLOSE_CODES`), on its
        handshake or later: no automatic reconnect follows, and waits and commands raise
        ChatClientError `closed` (until the program opens the device again)."""
        return self._closed_for_good

    def _closed_error(self) -> ChatClientError:
        return ChatClientError("closed", f"connection closed with code {self.close_code}")

    def _session_gone(self) -> bool:
        """The session was deleted: `session.deleted` arrived, or the server closed with 4404."""
        return self.deleted or (self._closed_for_good and self.close_code == SESSION_GONE)

    # --- receiving frames ---

    def _on_frame(self, frame: Event, received_at: float) -> None:
        kind = frame.get("type")
        if kind == "hello":
            self.hello = frame
            self.client_id, self.connection_id = frame["clientId"], frame["connectionId"]
            self.resumed = frame["resumed"]
            self.active_turns = {c: set(t) for c, t in frame["activeTurns"].items()}
            self.online = list(frame.get("online", []))
            if frame["resumed"]:
                self._ready.set()
        elif kind == "snapshot":
            self._apply_snapshot(frame)
            self._ready.set()
        elif kind in ("ack", "error", "pong") and frame.get("ref") is not None and str(frame["ref"]) in self._replies:
            future = self._replies.pop(str(frame["ref"]))
            if not future.done():
                future.set_result(frame)
        elif kind == "error":
            self.errors.append(frame)
        elif "seq" in frame:
            self._apply_event(frame, received_at)
        self._changed.set()

    # --- waiting ---

    async def next_event(self, timeout: float = 30) -> None:
        """Wait until anything new arrives (or the connection changes)."""
        self._changed.clear()
        await asyncio.wait_for(self._changed.wait(), timeout)

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 30) -> Any:
        """Wait until `predicate()` is truthy; returns its value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if self._closed_for_good:
                raise self._closed_error()  # nothing more will arrive: no use waiting
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout} s")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_event(self, predicate: Callable[[Event], bool], timeout: float = 30) -> Event:
        return await self.wait_for(lambda: next((e for e in self.events if predicate(e)), None), timeout)  # type: ignore[no-any-return]

    async def wait_turn_end(self, turn_id: str, timeout: float = 30) -> Event:
        """The turn's `turn.end` (`turn_end()`: at once if this device already knows that the
        turn ended, from an event or from its snapshot); ChatClientError `not_found` if the
        session is deleted first, `closed` if the device closes for good first."""

        def ended() -> Event | None:
            event = self.turn_end(turn_id)
            if event is None and self._session_gone():
                raise ChatClientError("not_found", "the session was deleted")
            return event

        return await self.wait_for(ended, timeout)  # type: ignore[no-any-return]

    # --- commands ---

    async def _command(self, frame: dict[str, Any], timeout: float = 30) -> Event:
        """Send a command and wait for its answer; ChatClientError `closed` if the connection
        is closed, or closes before the answer."""
        if self.ws is None or self._reader is None or self._reader.done():
            raise self._closed_error()  # no reader is left to answer it
        ref = new_id()
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._replies[ref] = future
        try:
            await self.ws.send(orjson.dumps({**frame, "ref": ref}).decode())
            reply = await asyncio.wait_for(future, timeout)
        except websockets.ConnectionClosed as exc:
            raise self._closed_error() from exc
        finally:
            self._replies.pop(ref, None)
        if reply["type"] == "error":
            raise ChatClientError(reply["code"], reply["message"])
        return reply

    async def send_raw(self, raw: str | bytes) -> None:
        if self.ws is None:
            raise self._closed_error()
        try:
            await self.ws.send(raw)
        except websockets.ConnectionClosed as exc:
            raise self._closed_error() from exc

    async def send(
        self,
        text: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        turn_id: str | None = None,
        parent: str | None = None,
        fork_of: str | None = None,
        regenerate: str | None = None,
        policy: str | None = None,
    ) -> TurnHandle:
        frame: dict[str, Any] = {"type": "send"}
        if text is not None:
            frame["messages"] = [user_message(text)]
        if messages is not None:
            frame["messages"] = messages
        for key, value in (
            ("turnId", turn_id),
            ("parent", parent),
            ("forkOf", fork_of),
            ("regenerate", regenerate),
            ("policy", policy),
        ):
            if value is not None:
                frame[key] = value
        return TurnHandle(self, await self._command(frame))

    async def cancel(
        self, *, own: bool = True, turn_id: str | None = None, client_id: str | None = None, all: bool = False
    ) -> dict[str, Any]:
        return await self._command({"type": "cancel", "filter": filter_of(own, turn_id, client_id, all)})

    async def ping(self) -> Event:
        return await self._command({"type": "ping"})
