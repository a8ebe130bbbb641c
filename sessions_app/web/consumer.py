"""The session websocket: authenticate, join the session's feed, start the device from a
snapshot or from the events it missed, relay live events, and hand commands to services.

Protocol: docs/protocol.md. The consumer holds no logic of its own beyond ordering: every
command is one service call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import orjson
from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer

from sessions_app.conf import app_settings
from sessions_app.errors import Forbidden, Invalid, NotFound, TooLarge
from sessions_app.events import build, emit
from sessions_app.infra import live_state
from sessions_app.infra.db_threads import db
from sessions_app.schemas import WsCancel, WsClose, WsPing, WsSend
from sessions_app.sessions import selectors
from sessions_app.sessions.services import require_member
from sessions_app.web import commands
from sessions_app.web.errors import INTERNAL, describe
from sessions_app.web.hub import hub

logger = logging.getLogger(__name__)

COMMANDS: dict[str, type[Any]] = {"send": WsSend, "cancel": WsCancel, "close": WsClose, "ping": WsPing}


class SessionConsumer(AsyncWebsocketConsumer):
    # Events reach connections through the process's hub, not a channel per connection:
    # no channel-layer alias means no SUBSCRIBE and no receive task per websocket.
    channel_layer_alias = "sessions-app-no-layer"
    session_id: str
    connection_id: str

    async def connect(self) -> None:
        # Accept first, then close with a code the client can read (4401/4403/4404).
        await self.accept()
        self.connection_id = uuid.uuid4().hex
        self.session_id = str(self.scope["url_route"]["kwargs"]["session_id"])
        self.user = self.scope.get("user")
        self.delivered = 0
        self.catching_up = True
        self.buffer: list[tuple[int, str]] = []
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.subscribed = False
        if self.user is None or not self.user.is_authenticated:
            await self.close(code=4401)
            return
        try:
            await db(require_member)(session_id=self.session_id, user=self.user)
        except NotFound:
            await self.close(code=4404)
            return
        except Forbidden:
            await self.close(code=4403)
            return
        self.writer = asyncio.create_task(self._write_loop())
        await hub().subscribe(self.session_id, self)
        self.subscribed = True
        await self._presence(+1)  # before the hello, which lists this user as online
        await self._start(after=self._after())

    def _after(self) -> int | None:
        from urllib.parse import parse_qs

        value = parse_qs(self.scope.get("query_string", b"").decode()).get("after", [None])[0]
        try:
            return int(value) if value not in (None, "") else None
        except ValueError:
            return None

    async def _start(self, *, after: int | None, hello: bool = True) -> None:
        """Bring this device to the present (events live meanwhile wait in `buffer`)."""
        last_seq = await live_state.last_seq(self.session_id)
        missed = (
            None
            if after is None
            else await selectors.missed_frames(session_id=self.session_id, after=after, last_seq=last_seq)
        )
        if missed is None:
            nodes, turns, active = await db(selectors.snapshot_rows)(session_id=self.session_id)
            snapshot = await selectors.build_snapshot(
                session_id=self.session_id, last_seq=last_seq, nodes=nodes, turns=turns
            )
            frames = [orjson.dumps(snapshot).decode()]
        else:
            session = await db(require_member)(session_id=self.session_id, user=self.user)
            active = await db(selectors.active_turns_map)(session=session)
            frames = missed
        if hello:
            self.outbox.put_nowait(
                orjson.dumps(
                    {
                        "type": "hello",
                        "clientId": self.user.get_username(),
                        "connectionId": self.connection_id,
                        "lastSeq": last_seq,
                        "activeTurns": active,
                        "resumed": missed is not None,
                        "online": await live_state.online(self.session_id),
                    }
                ).decode()
            )
        for frame in frames:
            self.outbox.put_nowait(frame)
        self.delivered = last_seq
        self.catching_up = False
        buffered, self.buffer = self.buffer, []
        for seq, frame in buffered:
            self.offer(seq, frame)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without its `aclose_old_connections()` before every message:
        that is a hop to Django's one sync thread and back for each frame (~0.5 ms of a
        send's path, and a queue through that thread for a burst of frames). This consumer
        uses the database only through `db()`, which cleans the connection of the thread
        that runs each query (decision 016)."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    # --- Listener (called by the hub, in seq order) ---

    def offer(self, seq: int, frame: str) -> None:
        if self.catching_up:
            self.buffer.append((seq, frame))
        elif seq > self.delivered:
            self.delivered = seq
            self.outbox.put_nowait(frame)

    def resync(self) -> None:
        self.catching_up = True
        asyncio.get_running_loop().create_task(self._start(after=None, hello=False))

    async def _write_loop(self) -> None:
        while True:
            frame = await self.outbox.get()
            if frame is None:
                return
            await self.send(text_data=frame)

    # --- commands ---

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raw = text_data if text_data is not None else (bytes_data or b"").decode("utf-8", "replace")
        ref = None
        try:
            if len(raw.encode()) > app_settings.MAX_FRAME_BYTES:
                raise TooLarge(f"a frame holds at most {app_settings.MAX_FRAME_BYTES} bytes")
            try:
                frame = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise Invalid("frames are JSON objects") from exc
            if not isinstance(frame, dict):
                raise Invalid("frames are JSON objects")
            ref = frame.get("ref")
            schema = COMMANDS.get(frame.get("type"))  # type: ignore[arg-type]
            if schema is None:
                raise Invalid(f"unknown frame type {frame.get('type')!r}")
            command = schema.model_validate(frame)  # a ValidationError answers `invalid`
            await self._handle(command)
        except Exception as exc:
            error = describe(exc)  # the same mapping as HTTP's (web/errors.py)
            if error is None:
                logger.exception("websocket command failed")
                error = INTERNAL
            await self._reply({"type": "error", **error.as_dict(), "ref": ref})

    async def _handle(self, command: Any) -> None:
        if isinstance(command, WsPing):
            await self._reply({"type": "pong", "ref": command.ref})
        elif isinstance(command, WsSend):
            result = await commands.send(session_id=self.session_id, user=self.user, body=command)
            await self._reply({"type": "ack", "ref": command.ref, **result.as_dict()})
        elif isinstance(command, WsCancel):
            outcome = await commands.cancel(session_id=self.session_id, user=self.user, flt=command.filter)
            await self._reply({"type": "ack", "ref": command.ref, **outcome.as_dict()})
        elif isinstance(command, WsClose):
            reply: dict[str, Any] = {"type": "ack", "ref": command.ref}
            if command.cancel is not None:
                outcome = await commands.cancel(session_id=self.session_id, user=self.user, flt=command.cancel)
                reply.update(outcome.as_dict())
            await self._reply(reply)
            await self._drain_and_close()

    async def _reply(self, payload: dict[str, Any]) -> None:
        self.outbox.put_nowait(orjson.dumps(payload).decode())

    async def _drain_and_close(self) -> None:
        self.outbox.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer, timeout=5)
        await self.close(code=1000)

    async def _presence(self, delta: int) -> None:
        """Announce when this user's first device connects or their last one leaves."""
        changed, online = await live_state.presence_change(self.session_id, self.user.get_username(), delta)
        if changed:
            await emit.now_async(self.session_id, [build.presence(online)])

    async def disconnect(self, code: int) -> None:
        if getattr(self, "subscribed", False):
            self.subscribed = False
            await hub().unsubscribe(self.session_id, self)
            with contextlib.suppress(Exception):
                await self._presence(-1)
        writer = getattr(self, "writer", None)
        if writer is not None and not writer.done():
            writer.cancel()
