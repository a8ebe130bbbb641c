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
from urllib.parse import parse_qs

import orjson
from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer

from sessions_app.conf import app_settings
from sessions_app.errors import Forbidden, Invalid, NotFound, RateLimited, TooLarge
from sessions_app.infra import live_state
from sessions_app.infra.db_threads import db
from sessions_app.ops import metrics
from sessions_app.schemas import MAX_SEQ, WsCancel, WsClose, WsPing, WsSend, echoable_ref, is_whole_number
from sessions_app.sessions import selectors
from sessions_app.sessions.services import require_member
from sessions_app.web import backpressure, commands, open_sockets
from sessions_app.web.errors import INTERNAL, WireError, describe
from sessions_app.web.hub import hub

logger = logging.getLogger(__name__)

try:  # Daphne's websockets are autobahn's: a frame sent after the client left raises this
    from autobahn.exception import Disconnected

    CLIENT_GONE: tuple[type[BaseException], ...] = (OSError, Disconnected)
except ImportError:  # another server: ASGI asks it to raise an OSError then
    CLIENT_GONE = (OSError,)

COMMANDS: dict[str, type[Any]] = {"send": WsSend, "cancel": WsCancel, "close": WsClose, "ping": WsPing}

# Close codes beyond the handshake's 4401/4403/4404 (docs/protocol.md, "Websocket"). An
# application may close only with 1000 or 3000-4999 (Daphne's autobahn refuses others), so
# these follow the HTTP statuses they mirror.
CLOSE_INVALID = 4400  # the URL's `after` is not a sequence number
CLOSE_UNAUTHENTICATED = 4401  # no credential at the handshake, or the one used ended since (web/open_sockets.py)
CLOSE_BEHIND = 4408  # the client stopped reading: reconnect with ?after= when it reads again
CLOSE_RATE_LIMITED = 4429  # too many connections of this user, or frames far beyond the rate
CLOSE_SERVER_ERROR = 4500  # the server could not send a frame (never the client's fault)
CLOSE_NO_SESSION = 4404  # no such session: at the handshake, or deleted since (after `session.deleted`)
# Frames small enough that a refused one is still parsed for its `ref`.
REF_PARSE_BYTES = 4096


def canonical_session_id(raw: str) -> str | None:
    """A session id as the server keys everything by it: a UUID's canonical text (so that
    an upper-case or braced spelling reaches the same feed); None for anything else."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None


def parse_after(raw: str | None) -> int | None:
    """The URL's `after`: absent or empty for a snapshot, else a seq from 0 to 2^62."""
    if raw is None or raw == "":
        return None
    if not is_whole_number(raw, 0, MAX_SEQ):
        raise Invalid(f"after is a whole number from 0 to {MAX_SEQ}")
    return int(raw)


def frame_type_error(kind: Any) -> str:
    """What a frame whose `type` names no command is told, in the protocol's words (a
    client author reads it; Python's names for JSON values mean nothing to them)."""
    accepted = ", ".join(COMMANDS)
    if kind is None:
        return f'a frame needs a "type": one of {accepted}'
    if not isinstance(kind, str):
        return f'a frame\'s "type" is a string: one of {accepted}'
    shown = kind if len(kind) <= 40 else f"{kind[:40]}..."  # the answer stays small
    return f"unknown frame type {shown!r}; one of {accepted}"


class FrameBudget:
    """FRAMES_PER_MINUTE frames a connection may send in each minute (a fixed window)."""

    def __init__(self, per_minute: int) -> None:
        self.limit = per_minute
        self.window = 0.0
        self.used = 0

    def take(self, now: float) -> int:
        """Count one frame; how far over the limit this minute is (0: within it)."""
        if now - self.window >= 60:
            self.window, self.used = now, 0
        self.used += 1
        return max(0, self.used - self.limit) if self.limit else 0


# The connections of each user in this process (MAX_CONNECTIONS_PER_USER).
_connections: dict[Any, set[Any]] = {}


class SessionConsumer(AsyncWebsocketConsumer):
    # Events reach connections through the process's hub, not a channel per connection:
    # no channel-layer alias means no SUBSCRIBE and no receive task per websocket.
    channel_layer_alias = "sessions-app-no-layer"
    session_id: str
    connection_id: str

    async def connect(self) -> None:
        # Accept first, then close with a code the client can read (4401/4403/4404, 4400,
        # 4429). Every side effect (the user's connection count, the hub, presence) is
        # undone by _release(), which runs on every way out: a refusal, a failure, a close.
        await self.accept()
        self.connection_id = uuid.uuid4().hex
        raw_id = str(self.scope["url_route"]["kwargs"]["session_id"])
        canonical = canonical_session_id(raw_id)
        self.session_id = canonical or raw_id[:100]
        self.user = self.scope.get("user")
        self.delivered = 0
        self.catching_up = True
        self.buffer: list[tuple[int, str]] = []
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.outbox_bytes = 0
        self.catch_up_bytes = 0  # of outbox_bytes, those of a (re)connect's catch-up
        self.overflowed = False
        self.closing = False
        self.budget = FrameBudget(int(app_settings.FRAMES_PER_MINUTE))
        self.flow: backpressure.TransportFlow | None = None
        self.counted = self.subscribed = self.present = False
        self.credentials: open_sockets.OpenSockets | None = None  # where its credential is checked again
        self.writer: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        if self.user is None or not self.user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if canonical is None:  # no session has this id: nothing to subscribe to or count
            await self.close(code=CLOSE_NO_SESSION)
            return
        try:
            after = parse_after(parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get("after", [None])[0])
        except Invalid as exc:
            await self._refuse(describe(exc) or INTERNAL, CLOSE_INVALID)
            return
        if not self._count_connection():
            limit = app_settings.MAX_CONNECTIONS_PER_USER
            error = RateLimited(f"at most {limit} connections per user; close one and try again")
            await self._refuse(describe(error) or INTERNAL, CLOSE_RATE_LIMITED)
            return
        try:
            # Listen before checking membership: a membership that ends after the check
            # then reaches this listener (web/hub.py), and closes it.
            await hub().subscribe(self.session_id, self)
            self.subscribed = True
            metrics.WEBSOCKETS.inc()
            try:
                await db(require_member)(session_id=self.session_id, user=self.user)
            except NotFound:
                await self._refuse(None, CLOSE_NO_SESSION)
                return
            except Forbidden:
                await self._refuse(None, 4403)
                return
            credential = self.scope.get("credential")
            if credential is not None:
                # From here on, a revocation (or a logout, a password change) closes it with
                # 4401; one since the handshake read the generation is caught by the first check.
                self.credentials = open_sockets.for_this_loop()
                self.credentials.add(self, credential)
            self.flow = backpressure.attach(self.base_send)
            self.writer = asyncio.create_task(self._write_loop())
            self.present = True
            await self._presence(+1)  # before the hello, which lists this user as online
            await self._start(after=after)
        except Exception as exc:
            unavailable = describe(exc)
            if unavailable is not None and unavailable.code == "unavailable":
                # The database or Redis is away for a moment: the client tries again.
                logger.warning("websocket connect: %s", exc)
                await self._refuse(unavailable, 1013)  # "try again later"
                return
            # Undo what connect did, then let Daphne close with 1011 and log the failure.
            await self._release()
            raise

    def _count_connection(self) -> bool:
        limit = int(app_settings.MAX_CONNECTIONS_PER_USER)
        mine = _connections.setdefault(self.user.pk, set())
        if limit and len(mine) >= limit:
            return False
        mine.add(self)
        self.counted = True
        return True

    async def _refuse(self, error: WireError | None, code: int) -> None:
        """Answer `error` (if any) and close with `code`, undoing what connect did."""
        await self._release()
        with contextlib.suppress(Exception):
            if error is not None:
                await self.send(text_data=orjson.dumps({"type": "error", **error.as_dict(), "ref": None}).decode())
            await self.close(code=code)

    async def _start(self, *, after: int | None, hello: bool = True) -> None:
        """Bring this device to the present (events live meanwhile wait in `buffer`)."""
        last_seq = await live_state.last_seq(self.session_id)
        missed = (
            None
            if after is None
            else await selectors.missed_frames(session_id=self.session_id, after=after, last_seq=last_seq)
        )
        if missed is None:
            nodes, turns, active = await selectors.snapshot_rows_shared(self.session_id)
            snapshot = await selectors.build_snapshot(
                session_id=self.session_id, last_seq=last_seq, nodes=nodes, turns=turns
            )
            frames = [orjson.dumps(snapshot).decode()]
        else:
            # A resume comes only from connect, which has just checked the membership (and
            # listens for its end): the active turns are all there is to read.
            active = await db(selectors.active_turns_map)(session_id=self.session_id)
            frames = missed
        if hello:
            self._enqueue(
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
            self._enqueue(frame, catching_up=True)
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
            self._enqueue(frame)

    def resync(self) -> None:
        self.catching_up = True
        self._spawn(self._start(after=None, hello=False))

    def membership_ended(self, user_id: str) -> None:
        """The hub heard that a membership of this session ended: if it is this user's,
        close (4403, as for a non-member's handshake); no further event or command."""
        if str(self.user.pk) == user_id and not self.closing:
            self._close_soon(4403)

    def session_deleted(self) -> None:
        """The hub heard that the session was deleted: `session.deleted`, offered before,
        goes out with what was queued ahead of it, then the connection closes (4404, as for
        a handshake to no session); no further event or command."""
        if not self.closing:
            self.closing = True
            self._spawn(self._drain_and_close(CLOSE_NO_SESSION))

    def credentials_revoked(self) -> None:
        """The credential this websocket was opened with ended (revoked, expired, logged out
        of, its user's password changed: web/open_sockets.py): close with 4401; no further event or
        command."""
        if not self.closing:
            logger.info("websocket %s: its credential ended; closing", self.connection_id)
            self._close_soon(CLOSE_UNAUTHENTICATED)

    def _enqueue(self, frame: str, *, catching_up: bool = False) -> None:
        """Queue a frame for the writer. Live frames beyond MAX_OUTBOX_BYTES waiting for a
        client that does not read close the connection (4408): it resumes with ?after=
        once it reads again, rather than the server buffering for it without bound. The
        catch-up frames of a (re)connect (a snapshot, the missed events: bounded by the log)
        are let in whole and do not count against the bound while they wait."""
        if self.overflowed or self.closing:
            return
        self.outbox.put_nowait(frame)
        self.outbox_bytes += len(frame)
        if catching_up:
            self.catch_up_bytes += len(frame)
            return
        limit = int(app_settings.MAX_OUTBOX_BYTES)
        if limit and self.outbox_bytes - self.catch_up_bytes > limit:
            self.overflowed = True
            logger.warning(
                "websocket %s of session %s: %d bytes wait for a client that does not read; closing",
                self.connection_id,
                self.session_id,
                self.outbox_bytes,
            )
            self._close_soon(CLOSE_BEHIND)

    def _close_soon(self, code: int) -> None:
        self.closing = True
        self._spawn(self._close_now(code))

    async def _close_now(self, code: int) -> None:
        await self._release()
        with contextlib.suppress(Exception):
            await self.close(code=code)

    async def _write_loop(self) -> None:
        while True:
            frame = await self.outbox.get()
            if frame is None:
                return
            self.outbox_bytes -= len(frame)
            # The catch-up goes out first (it was queued before the live frames after it).
            self.catch_up_bytes = max(0, self.catch_up_bytes - len(frame))
            if self.flow is not None:
                await self.flow.writable()  # the socket's buffer is full: wait here
            try:
                await self.send(text_data=frame)
            except CLIENT_GONE:
                # The client closed or dropped the connection before its close reached this
                # consumer (a close right after a command): nothing is wrong with the server.
                if not self.closing:
                    logger.debug(
                        "websocket %s: its client left before a frame of %d characters was sent",
                        self.connection_id,
                        len(frame),
                    )
                    self.closing = True
                return
            except Exception:
                if not self.closing:  # not a client that left: the server cannot send it
                    logger.exception(
                        "websocket %s: a frame of %d characters could not be sent", self.connection_id, len(frame)
                    )
                    self._close_soon(CLOSE_SERVER_ERROR)
                return

    # --- commands ---

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return  # closing (membership ended, or too far behind): no more commands
        if self.credentials is not None and not await self.credentials.trusted(self):
            return  # its credential ended (a free look unless credentials changed): closing with 4401
        raw = text_data if text_data is not None else (bytes_data or b"").decode("utf-8", "replace")
        over = self.budget.take(asyncio.get_running_loop().time())
        if over:
            await self._over_budget(raw, over)
            return
        ref = None
        try:
            if len(raw) > app_settings.MAX_FRAME_BYTES or len(raw.encode()) > app_settings.MAX_FRAME_BYTES:
                raise TooLarge(f"a frame holds at most {app_settings.MAX_FRAME_BYTES} bytes")
            try:
                frame = orjson.loads(raw)  # refuses nesting deeper than 1024
            except orjson.JSONDecodeError as exc:
                raise Invalid("frames are JSON objects") from exc
            if not isinstance(frame, dict):
                raise Invalid("frames are JSON objects")
            ref = echoable_ref(frame.get("ref"))
            kind = frame.get("type")
            schema = COMMANDS.get(kind) if isinstance(kind, str) else None
            if schema is None:
                raise Invalid(frame_type_error(kind))
            command = schema.model_validate(frame)  # a ValidationError answers `invalid`
            await self._handle(command)
        except Exception as exc:
            error = describe(exc)  # the same mapping as HTTP's (web/errors.py)
            if error is None:
                logger.exception("websocket command failed")
                error = INTERNAL
            metrics.ERRORS.labels("websocket", error.code).inc()
            await self._reply({"type": "error", **error.as_dict(), "ref": ref})

    async def _over_budget(self, raw: str, over: int) -> None:
        """A frame beyond FRAMES_PER_MINUTE: answered `rate_limited` (with its ref, if it
        is small enough to read cheaply); once as many again were refused, the client is
        not listening: close with 4429."""
        if over > self.budget.limit:
            self._close_soon(CLOSE_RATE_LIMITED)
            return
        ref = None
        if len(raw) <= REF_PARSE_BYTES:
            with contextlib.suppress(orjson.JSONDecodeError):
                frame = orjson.loads(raw)
                ref = echoable_ref(frame.get("ref")) if isinstance(frame, dict) else None
        error = RateLimited(f"at most {self.budget.limit} frames a minute")
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
            await self._drain_and_close(1000)

    async def _reply(self, payload: dict[str, Any]) -> None:
        self._enqueue(orjson.dumps(payload).decode())

    async def _drain_and_close(self, code: int) -> None:
        """Let the writer send what is queued (5 s at most), then close with `code`."""
        self.outbox.put_nowait(None)
        if self.writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.writer, timeout=5)
        await self._release()
        with contextlib.suppress(Exception):
            await self.close(code=code)

    async def _presence(self, delta: int) -> None:
        """Count this device in or out of its user's presence in this process (web/hub.py:
        a change is announced at once on the way in, in the background on the way out)."""
        if delta > 0:
            await hub().presence_join(self.session_id, self.user.get_username())
        else:
            hub().presence_leave(self.session_id, self.user.get_username())

    def _spawn(self, coro: Any) -> None:
        """A task of this connection's: cancelled and awaited when it ends (_release)."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # Daphne cancels a connection it gave up on (its client left long ago, or the server
        # stops): the clean-up runs then too, so no task of the connection is left behind.
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._release()

    async def disconnect(self, code: int) -> None:
        await self._release()

    async def _release(self) -> None:
        """Undo what connect did, once, whichever way the connection ends."""
        self.closing = True
        credentials = getattr(self, "credentials", None)
        if credentials is not None:
            self.credentials = None
            credentials.discard(self)
        if getattr(self, "counted", False):
            self.counted = False
            mine = _connections.get(self.user.pk)
            if mine is not None:
                mine.discard(self)
                if not mine:
                    del _connections[self.user.pk]
        if getattr(self, "subscribed", False):
            self.subscribed = False
            metrics.WEBSOCKETS.dec()
            with contextlib.suppress(Exception):
                await hub().unsubscribe(self.session_id, self)
        if getattr(self, "present", False):
            self.present = False
            with contextlib.suppress(Exception):
                await self._presence(-1)
        current = asyncio.current_task()
        owned = [t for t in (getattr(self, "writer", None), *getattr(self, "tasks", ())) if t is not None]
        owned = [t for t in owned if t is not current and not t.done()]
        for task in owned:
            task.cancel()
        if owned:
            await asyncio.gather(*owned, return_exceptions=True)
        if getattr(self, "flow", None) is not None:
            backpressure.detach(self.base_send, self.flow)
            self.flow = None
