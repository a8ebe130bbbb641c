"""A local Ably: the parts of Ably's REST API and Realtime protocol that the official SDKs
(ably-python 3.x, ably-js 2.x) use for channels, served on one port as Ably serves both.

REST: `POST /channels/{ch}/messages` (JSON or msgpack, one message or a list; message ids
make a publish idempotent), `GET /channels/{ch}/messages` (history, newest first, paged by
`Link` headers, `from_serial` for `untilAttach`; a message that was appended to or updated
comes back as `message.update` with its whole content), `GET /channels/{ch}/messages/{serial}`,
`PATCH /channels/{ch}/messages/{serial}` (append, update, delete), `POST /keys/{key}/requestToken`
(the token request's HMAC is verified) and `GET /time`.

Realtime (`ws://host:port/?key=|access_token=&format=json|msgpack`): CONNECTED, ATTACH /
ATTACHED (with the attach serial and `rewind`), DETACH, MESSAGE both ways with ACK / NACK,
HEARTBEAT, AUTH, CLOSE. A subscriber that attached after a message was created gets that
message's first append as a `message.update` with the whole content, as Ably does.

Auth and limits as Ably applies them: capabilities per channel and operation (40160), a
token's clientId stamped on and enforced for what it publishes (40012), expired tokens
(40142), a per-channel inbound message rate (429, 42913). Faults (`Fault`) simulate an
outage, a 429 spell, or a connection dropped after the operation was applied.

Runs on its own event loop in a thread (`FakeAblyThread`) so that synchronous tests, async
tests on any loop, and other processes (the mirror, node) can all reach it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import msgpack
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

# Protocol message actions and message actions (Ably's wire numbering).
HEARTBEAT, ACK, NACK, CONNECT, CONNECTED, DISCONNECT, DISCONNECTED, CLOSE, CLOSED, ERROR = range(10)
ATTACH, ATTACHED, DETACH, DETACHED, PRESENCE, MESSAGE, SYNC, AUTH = range(10, 18)
CREATE, UPDATE, DELETE, META, SUMMARY, APPEND = range(6)
ACTION_NAMES = {CREATE: "message.create", UPDATE: "message.update", DELETE: "message.delete", APPEND: "message.append"}
# Channel mode flags sent in ATTACHED.
FLAG_PRESENCE, FLAG_PUBLISH, FLAG_SUBSCRIBE, FLAG_PRESENCE_SUBSCRIBE = 1 << 16, 1 << 17, 1 << 18, 1 << 19

TOKEN_TTL_MS = 60 * 60 * 1000
TOKEN_REQUEST_MAX_AGE_MS = 10 * 60 * 1000


class AblyError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "code": self.code, "statusCode": self.status}}


# --- credentials and capabilities ----------------------------------------------------------


def capability_allows(capability: dict[str, list[str]], channel: str, operation: str) -> bool:
    """Ably's capability matching: `*` any channel, `ns:*` a namespace, else the exact name;
    `*` any operation."""
    for resource, operations in capability.items():
        matches = (
            resource == "*"
            or resource == channel
            or (resource.endswith(":*") and channel.startswith(resource[:-1]))
            or (resource.endswith("*") and channel.startswith(resource[:-1]))
        )
        if matches and ("*" in operations or operation in operations):
            return True
    return False


@dataclass
class Credentials:
    """Who is asking: a key (any clientId) or a token (its clientId, its capability)."""

    key_name: str
    capability: dict[str, list[str]]
    client_id: str | None  # None: unidentified; "*": may act as anyone
    token: str | None = None
    expires: int | None = None

    def require(self, channel: str, operation: str) -> None:
        if self.expires is not None and self.expires < now_ms():
            raise AblyError(401, 40142, "Token expired")
        if not capability_allows(self.capability, channel, operation):
            raise AblyError(401, 40160, f"Action not permitted: {operation} on channel {channel!r}")

    def stamp_client_id(self, message: dict[str, Any]) -> None:
        """A message's clientId as Ably sets it: an identified token's own id, checked."""
        wanted = message.get("clientId")
        if self.token is None or self.client_id == "*":
            return  # a key, or a wildcard token, may publish on behalf of anyone
        if self.client_id is None:
            if wanted:
                raise AblyError(400, 40012, "an unidentified client cannot publish with a clientId")
            return
        if wanted and wanted != self.client_id:
            raise AblyError(400, 40012, f"mismatched clientId {wanted!r} for a token of {self.client_id!r}")
        message["clientId"] = self.client_id


def now_ms() -> int:
    return int(time.time() * 1000)


# --- messages ------------------------------------------------------------------------------


@dataclass
class Stored:
    """A message as the channel keeps it: its latest version, in its place in history."""

    serial: str
    id: str
    name: str | None
    client_id: str | None
    connection_id: str | None
    timestamp: int
    data: str | bytes | None
    encoding: str | None
    extras: dict[str, Any] | None
    action: int = CREATE
    version: dict[str, Any] = field(default_factory=dict)

    def wire(self, *, action: int | None = None, data: Any = ..., extras: Any = ...) -> dict[str, Any]:
        message = {
            "id": self.id,
            "serial": self.serial,
            "action": self.action if action is None else action,
            "timestamp": self.timestamp,
            "version": dict(self.version),
            "name": self.name,
            "clientId": self.client_id,
            "connectionId": self.connection_id,
            "data": self.data if data is ... else data,
            "encoding": self.encoding,
            "extras": self.extras if extras is ... else extras,
        }
        return {k: v for k, v in message.items() if v is not None}


def decode_inbound(message: dict[str, Any]) -> dict[str, Any]:
    """Undo the transport's base64 (JSON clients send binary data that way)."""
    message = dict(message)
    encoding = message.get("encoding") or ""
    if encoding.endswith("base64") and isinstance(message.get("data"), str):
        message["data"] = base64.b64decode(message["data"])
        rest = encoding.rsplit("/", 1)[0] if "/" in encoding else ""
        message["encoding"] = rest or None
    return message


def encode_outbound(message: dict[str, Any], binary: bool) -> dict[str, Any]:
    if not binary and isinstance(message.get("data"), bytes):
        message = dict(message)
        message["data"] = base64.b64encode(message["data"]).decode()
        message["encoding"] = f"{message['encoding']}/base64" if message.get("encoding") else "base64"
    return message


@dataclass
class Operation:
    """One inbound operation the fake recorded (what tests assert on)."""

    kind: str  # publish | append | update | delete
    channel: str
    at: float
    status: int
    ids: list[str] = field(default_factory=list)
    serial: str | None = None
    data: Any = None
    via: str = "rest"
    duplicate: bool = False


@dataclass
class Fault:
    """A failure the fake plays on REST writes (publish, PATCH) of matching channels.

    `unavailable`: 503 (50300) before anything is applied; `rate_limited`: 429 (42913);
    `drop_after_apply`: the operation is applied, then the connection closes without an
    answer (the client cannot tell whether it happened). `remaining` counts the requests it
    fails (None: until cleared); `every`: it fails one request in that many."""

    kind: str
    remaining: int | None = None
    channel: str | None = None
    every: int = 1
    hits: int = 0
    seen: int = 0

    def takes(self, channel: str) -> bool:
        if self.channel is not None and channel != self.channel:
            return False
        self.seen += 1
        if (self.seen - 1) % self.every:
            return False
        if self.remaining is not None:
            if self.remaining <= 0:
                return False
            self.remaining -= 1
        self.hits += 1
        return True


class Subscriber:
    """A realtime connection's view of one channel."""

    def __init__(self, connection: Connection, channel: str) -> None:
        self.connection, self.channel = connection, channel
        self.seen: set[str] = set()  # serials this subscriber holds a version of


class Channel:
    def __init__(self, name: str) -> None:
        self.name = name
        self.messages: list[Stored] = []
        self.by_serial: dict[str, Stored] = {}
        self.by_id: dict[str, list[str]] = {}  # message id -> serials of that publish
        self.subscribers: dict[int, Subscriber] = {}
        self.recent: deque[tuple[int, dict[str, Any]]] = deque(maxlen=1000)  # for rewind
        self.inbound: deque[float] = deque()  # times of accepted inbound messages (rate limit)


# --- the service ---------------------------------------------------------------------------


class FakeAbly:
    def __init__(self, keys: dict[str, str] | None = None, rate_limit: int = 50) -> None:
        self.keys = keys or {"fakeapp.fakekey": "fake-secret"}
        self.rate_limit = rate_limit  # inbound messages per second per channel (Ably: 50)
        self.mutable_namespaces: set[str] | None = None  # None: every channel allows appends
        self.channels: dict[str, Channel] = {}
        self.tokens: dict[str, Credentials] = {}
        self.nonces: set[tuple[str, str]] = set()
        self.operations: list[Operation] = []
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, int]] = []
        self.connections: dict[int, Connection] = {}
        self._serials = itertools.count(1)
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self.port = 0
        self.changed = asyncio.Condition()

    @property
    def key(self) -> str:
        name, secret = next(iter(self.keys.items()))
        return f"{name}:{secret}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = await asyncio.start_server(self._serve, host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for connection in list(self.connections.values()):
            connection.close_transport()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def channel(self, name: str) -> Channel:
        if name not in self.channels:
            self.channels[name] = Channel(name)
        return self.channels[name]

    def new_serial(self) -> str:
        # Lexicographically ordered like Ably's: time, then a counter that never goes back.
        return f"{now_ms():014d}-{next(self._serials):010d}@fake"

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    # --- authentication --------------------------------------------------------------------

    def credentials_from_header(self, header: str | None) -> Credentials:
        if not header:
            raise AblyError(401, 40101, "no credentials")
        kind, _, value = header.partition(" ")
        if kind.lower() == "basic":
            try:
                decoded = base64.b64decode(value).decode()
            except ValueError as exc:
                raise AblyError(401, 40101, "invalid credentials") from exc
            return self.credentials_for_key(decoded)
        if kind.lower() == "bearer":
            token = value
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                decoded = base64.b64decode(value, validate=True).decode()
                if decoded in self.tokens:
                    token = decoded
            return self.credentials_for_token(token)
        raise AblyError(401, 40101, "unsupported authorization")

    def credentials_for_key(self, key: str) -> Credentials:
        name, _, secret = key.partition(":")
        if self.keys.get(name) != secret:
            raise AblyError(401, 40101, "invalid key")
        return Credentials(key_name=name, capability={"*": ["*"]}, client_id="*")

    def credentials_for_token(self, token: str) -> Credentials:
        credentials = self.tokens.get(token)
        if credentials is None:
            raise AblyError(401, 40140, "token not recognised")
        if credentials.expires is not None and credentials.expires < now_ms():
            raise AblyError(401, 40142, "Token expired")
        return credentials

    def request_token(self, key_name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Exchange a signed token request for a token (its MAC is checked against the key)."""
        secret = self.keys.get(key_name)
        if secret is None or body.get("keyName") != key_name:
            raise AblyError(404, 40400, "no such key")
        ttl, capability, client_id = body.get("ttl"), body.get("capability"), body.get("clientId")
        timestamp, nonce, mac = body.get("timestamp"), body.get("nonce"), body.get("mac")
        if not isinstance(nonce, str) or not isinstance(mac, str) or not isinstance(timestamp, int):
            raise AblyError(400, 40001, "a token request needs nonce, timestamp and mac")
        sign_text = "\n".join(
            str(v) for v in (key_name, ttl or "", capability or "", client_id or "", timestamp, nonce, "")
        )
        expected = base64.b64encode(hmac.new(secret.encode(), sign_text.encode(), hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(expected, mac):
            raise AblyError(401, 40101, "token request MAC does not match")
        if abs(now_ms() - timestamp) > TOKEN_REQUEST_MAX_AGE_MS:
            raise AblyError(401, 40104, "token request timestamp not current")
        if (key_name, nonce) in self.nonces:
            raise AblyError(401, 40105, "token request nonce reused")
        self.nonces.add((key_name, nonce))
        granted = json.loads(capability) if capability else {"*": ["*"]}
        issued = now_ms()
        expires = issued + int(ttl or TOKEN_TTL_MS)
        token = f"fake-token-{secrets.token_urlsafe(16)}"
        self.tokens[token] = Credentials(
            key_name=key_name, capability=granted, client_id=client_id or None, token=token, expires=expires
        )
        details = {
            "token": token,
            "keyName": key_name,
            "issued": issued,
            "expires": expires,
            "capability": json.dumps(granted),
            "clientId": client_id,
        }
        return {k: v for k, v in details.items() if v is not None}

    # --- channel operations (shared by REST and realtime) ----------------------------------

    def _fault(self, channel: str) -> Fault | None:
        for fault in self.faults:
            if fault.takes(channel):
                return fault
        return None

    def _rate_check(self, channel: Channel, count: int) -> None:
        now = time.monotonic()
        while channel.inbound and channel.inbound[0] < now - 1.0:
            channel.inbound.popleft()
        if len(channel.inbound) + count > self.rate_limit:
            raise AblyError(429, 42913, f"rate limit exceeded: more than {self.rate_limit} messages/s on channel")
        channel.inbound.extend([now] * count)

    def publish(
        self,
        credentials: Credentials,
        name: str,
        messages: list[dict[str, Any]],
        *,
        connection: Connection | None = None,
        via: str = "rest",
    ) -> list[str]:
        """Publish (create) messages; the serials in order. A publish whose message ids were
        all seen before is a no-op answered with the original serials (idempotency)."""
        credentials.require(name, "publish")
        channel = self.channel(name)
        messages = [decode_inbound(m) for m in messages]
        for message in messages:
            credentials.stamp_client_id(message)
        ids = [m.get("id") for m in messages]
        if ids and all(i and i in channel.by_id for i in ids):
            first_serials = [channel.by_id[str(i)][0] for i in ids]
            self.operations.append(
                Operation(
                    "publish",
                    name,
                    time.monotonic(),
                    200,
                    [str(i) for i in ids],
                    first_serials[0],
                    via=via,
                    duplicate=True,
                )
            )
            return first_serials
        self._rate_check(channel, len(messages))
        base = f"fake{next(self._ids)}"
        serials: list[str] = []
        wires = []
        for index, message in enumerate(messages):
            serial = self.new_serial()
            stored = Stored(
                serial=serial,
                id=message.get("id") or f"{base}:{index}",
                name=message.get("name"),
                client_id=message.get("clientId"),
                connection_id=connection.id if connection else None,
                timestamp=now_ms(),
                data=message.get("data"),
                encoding=message.get("encoding"),
                extras=message.get("extras"),
            )
            stored.version = {"serial": serial, "timestamp": stored.timestamp}
            channel.messages.append(stored)
            channel.by_serial[serial] = stored
            channel.by_id.setdefault(stored.id, []).append(serial)
            serials.append(serial)
            wires.append(stored)
        self.operations.append(
            Operation("publish", name, time.monotonic(), 201, [w.id for w in wires], serials[0], via=via)
        )
        self._deliver(channel, [(w, CREATE, w.data, w.extras) for w in wires], origin=connection)
        return serials

    def mutate(
        self, credentials: Credentials, name: str, serial: str, body: dict[str, Any], *, via: str = "rest"
    ) -> str:
        """PATCH a message: append to its data, replace it (update), or delete it. Returns
        the new version serial."""
        channel = self.channel(name)
        stored = channel.by_serial.get(serial)
        if stored is None:
            raise AblyError(404, 40400, f"no message with serial {serial}")
        if self.mutable_namespaces is not None and name.split(":", 1)[0] not in self.mutable_namespaces:
            raise AblyError(400, 93002, "appends, updates and deletes need the mutableMessages rule")
        body = decode_inbound(body)
        action = int(body.get("action", UPDATE))
        if action not in (UPDATE, DELETE, APPEND):
            raise AblyError(400, 40003, f"unsupported action {action}")
        own = credentials.client_id not in (None, "*") and stored.client_id == credentials.client_id
        verb = "delete" if action == DELETE else "update"
        if credentials.client_id != "*" and not (
            capability_allows(credentials.capability, name, f"message-{verb}-any")
            or (own and capability_allows(credentials.capability, name, f"message-{verb}-own"))
        ):
            raise AblyError(401, 40160, f"Action not permitted: message-{verb} on channel {name!r}")
        self._rate_check(channel, 1)
        version = {"serial": self.new_serial(), "timestamp": now_ms()}
        operation = body.get("version") or {}
        for key in ("clientId", "description", "metadata"):
            if operation.get(key) is not None:
                version[key] = operation[key]
        kind = {APPEND: "append", UPDATE: "update", DELETE: "delete"}[action]
        data = body.get("data")
        if action == APPEND:
            if not isinstance(stored.data, str | None) or not isinstance(data, str | None):
                raise AblyError(400, 40000, "only string data can be appended")
            stored.data = (stored.data or "") + (data or "")
            if "extras" in body:
                stored.extras = body["extras"]  # an append replaces extras, as Ably's does
            stored.action = UPDATE
        elif action == UPDATE:
            stored.data, stored.encoding = data, body.get("encoding")
            stored.extras = body.get("extras")
            if body.get("name") is not None:
                stored.name = body["name"]
            stored.action = UPDATE
        else:
            stored.data, stored.encoding, stored.extras, stored.action = None, None, body.get("extras"), DELETE
        stored.version = version
        self.operations.append(Operation(kind, name, time.monotonic(), 200, [], serial, data, via=via))
        self._deliver(channel, [(stored, action, data, body.get("extras"))])
        return str(version["serial"])

    def history(
        self, credentials: Credentials, name: str, params: dict[str, str]
    ) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
        """Latest versions, newest first (or oldest first with direction=forwards); the
        params of the next page, if any."""
        credentials.require(name, "history")
        channel = self.channel(name)
        limit = min(int(params.get("limit", 100)), 1000)
        forwards = params.get("direction") == "forwards"
        items = list(channel.messages)
        if params.get("from_serial"):
            items = [m for m in items if m.serial <= params["from_serial"]]
        if params.get("start"):
            items = [m for m in items if m.timestamp >= int(params["start"])]
        if params.get("end"):
            items = [m for m in items if m.timestamp <= int(params["end"])]
        if not forwards:
            items.reverse()
        if params.get("cursor"):
            cursor = params["cursor"]
            items = [m for m in items if (m.serial > cursor if forwards else m.serial < cursor)]
        page, rest = items[:limit], items[limit:]
        following = {**params, "cursor": page[-1].serial} if rest and page else None
        return [m.wire() for m in page], following

    def get_message(self, credentials: Credentials, name: str, serial: str) -> dict[str, Any]:
        credentials.require(name, "history")
        stored = self.channel(name).by_serial.get(serial)
        if stored is None:
            raise AblyError(404, 40400, f"no message with serial {serial}")
        return stored.wire()

    def _deliver(
        self,
        channel: Channel,
        changes: list[tuple[Stored, int, Any, Any]],
        origin: Connection | None = None,
    ) -> None:
        """Send each change to the channel's subscribers. The first append a subscriber gets
        for a message it never saw is sent as an update with the whole message."""
        for stored, action, data, extras in changes:
            wire = stored.wire(action=action, data=data, extras=extras)
            channel.recent.append((now_ms(), stored.wire() if action != APPEND else wire))
            for subscriber in list(channel.subscribers.values()):
                connection = subscriber.connection
                if connection is origin and not connection.echo:
                    continue
                if not capability_allows(connection.credentials.capability, channel.name, "subscribe"):
                    continue
                message = wire
                if action == APPEND and stored.serial not in subscriber.seen:
                    message = stored.wire(action=UPDATE)
                subscriber.seen.add(stored.serial)
                connection.send_messages(channel.name, [message], origin)
        asyncio.get_running_loop().create_task(self._notify())

    # --- HTTP ------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        key, _, value = line.partition(":")
                        headers[key.strip().lower()] = value.strip()
                if headers.get("upgrade", "").lower() == "websocket":
                    await Connection(self, reader, writer).run(head)
                    return
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                keep_open = await self._http(method, target, headers, body, writer)
                if not keep_open or headers.get("connection", "").lower() == "close":
                    return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _http(
        self, method: str, target: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        url = urlsplit(target)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        binary = "msgpack" in headers.get("accept", "") or params.get("format") == "msgpack"
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        status, extra = 200, {}
        payload: Any = None
        drop = False
        try:
            if method == "GET" and parts == ["time"]:
                payload = [now_ms()]
            elif method == "POST" and len(parts) == 3 and parts[0] == "keys" and parts[2] == "requestToken":
                payload = self.request_token(parts[1], self._decode_body(headers, body))
            elif parts[:1] == ["channels"] and len(parts) >= 3 and parts[2] == "messages":
                credentials = self.credentials_from_header(headers.get("authorization"))
                name = parts[1]
                if method == "POST" and len(parts) == 3:
                    fault = self._fault(name)
                    drop = self._raise_fault(fault)
                    decoded = self._decode_body(headers, body)
                    messages = decoded if isinstance(decoded, list) else [decoded]
                    serials = self.publish(credentials, name, messages)
                    status, payload = 201, {"channel": name, "messageId": messages[0].get("id"), "serials": serials}
                elif method == "GET" and len(parts) == 3:
                    items, following = self.history(credentials, name, params)
                    payload = [encode_outbound(m, binary) for m in items]
                    if following is not None:
                        extra["Link"] = f'<./messages?{urlencode(following)}>; rel="next"'
                elif method == "GET" and len(parts) == 4:
                    payload = encode_outbound(self.get_message(credentials, name, parts[3]), binary)
                elif method == "PATCH" and len(parts) == 4:
                    fault = self._fault(name)
                    drop = self._raise_fault(fault)
                    version_serial = self.mutate(credentials, name, parts[3], self._decode_body(headers, body))
                    payload = {"versionSerial": version_serial}
                else:
                    raise AblyError(404, 40400, f"no route {method} {url.path}")
            else:
                raise AblyError(404, 40400, f"no route {method} {url.path}")
        except AblyError as error:
            status, payload = error.status, error.body()
            extra["X-Ably-Errorcode"] = str(error.code)
        except (ValueError, KeyError, msgpack.UnpackException) as exc:
            status, payload = 400, AblyError(400, 40000, f"bad request: {exc}").body()
        self.requests.append((method, url.path, status))
        await self._notify()
        if drop:
            return False  # applied, then the connection goes before any answer
        content = msgpack.packb(payload, use_bin_type=True) if binary else json.dumps(payload).encode()
        content_type = "application/x-msgpack" if binary else "application/json"
        head = [f"HTTP/1.1 {status} {'OK' if status < 400 else 'Error'}", f"Content-Type: {content_type}"]
        head += [f"Content-Length: {len(content)}", *(f"{k}: {v}" for k, v in extra.items())]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + content)
        await writer.drain()
        return True

    @staticmethod
    def _raise_fault(fault: Fault | None) -> bool:
        """Raise the fault's error; True when the request must be applied then dropped."""
        if fault is None:
            return False
        if fault.kind == "unavailable":
            raise AblyError(503, 50300, "service unavailable (fake outage)")
        if fault.kind == "rate_limited":
            raise AblyError(429, 42913, "rate limit exceeded (fake spell)")
        return fault.kind == "drop_after_apply"

    @staticmethod
    def _decode_body(headers: dict[str, str], body: bytes) -> Any:
        if headers.get("content-type", "").startswith("application/x-msgpack"):
            return msgpack.unpackb(body, raw=False)
        return json.loads(body or b"null")


# --- realtime ------------------------------------------------------------------------------


class Connection:
    """One realtime connection (a websocket)."""

    _numbers = itertools.count(1)

    def __init__(self, fake: FakeAbly, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.fake, self.reader, self.writer = fake, reader, writer
        self.number = next(self._numbers)
        self.id = f"fakeconn{self.number}"
        self.protocol = ServerProtocol(max_size=None)
        self.binary = False
        self.echo = True
        self.credentials = Credentials(key_name="", capability={}, client_id=None)
        self.attached: dict[str, Subscriber] = {}
        self._messages = itertools.count(1)

    async def run(self, head: bytes) -> None:
        self.protocol.receive_data(head)
        request = next(e for e in self.protocol.events_received() if isinstance(e, Request))
        self.protocol.send_response(self.protocol.accept(request))
        self._flush()
        params = {k: v[-1] for k, v in parse_qs(urlsplit(request.path).query).items()}
        self.binary = params.get("format") == "msgpack"
        self.echo = params.get("echo", "true") != "false"
        try:
            token = params.get("access_token") or params.get("accessToken")  # ably-js, ably-python
            if token:
                self.credentials = self.fake.credentials_for_token(token)
            elif "key" in params:
                self.credentials = self.fake.credentials_for_key(params["key"])
            else:
                raise AblyError(401, 40101, "no credentials")
        except AblyError as error:
            self.send({"action": ERROR, "error": error.body()["error"]})
            self.protocol.send_close()
            self._flush()
            return
        self.fake.connections[self.number] = self
        client_id = self.credentials.client_id if self.credentials.client_id != "*" else params.get("clientId")
        details = {
            "clientId": client_id,
            "connectionKey": f"{self.id}!key",
            "maxMessageSize": 65536,
            "maxInboundRate": self.fake.rate_limit,
            "maxFrameSize": 262144,
            "connectionStateTtl": 120000,
            "serverId": "fake-ably",
        }
        self.send(
            {
                "action": CONNECTED,
                "connectionId": self.id,
                "connectionKey": details["connectionKey"],
                "connectionDetails": {k: v for k, v in details.items() if v is not None},
            }
        )
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                self.protocol.receive_data(data)
                for frame in self.protocol.events_received():
                    if isinstance(frame, Frame) and frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                        raw = bytes(frame.data)
                        message = msgpack.unpackb(raw, raw=False) if self.binary else json.loads(raw)
                        self._on_message(message)
                self._flush()
                if self.protocol.close_expected():
                    break
        except ConnectionError:
            pass
        finally:
            self._detach_all()

    def _detach_all(self) -> None:
        for name in list(self.attached):
            self.fake.channel(name).subscribers.pop(self.number, None)
        self.attached.clear()
        self.fake.connections.pop(self.number, None)

    def close_transport(self) -> None:
        """Cut the connection (the fake going away)."""
        self._detach_all()
        with contextlib.suppress(Exception):
            self.writer.close()

    def _flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.writer.write(chunk)

    def send(self, message: dict[str, Any]) -> None:
        if self.binary:
            self.protocol.send_binary(msgpack.packb(message, use_bin_type=True))
        else:
            self.protocol.send_text(json.dumps(message).encode())
        self._flush()

    def send_messages(self, channel: str, messages: list[dict[str, Any]], origin: Connection | None) -> None:
        self.send(
            {
                "action": MESSAGE,
                "channel": channel,
                "id": f"{self.id}-msg{next(self._messages)}",
                "connectionId": origin.id if origin else None,
                "channelSerial": messages[-1].get("version", {}).get("serial") or messages[-1]["serial"],
                "timestamp": now_ms(),
                "messages": [encode_outbound(m, self.binary) for m in messages],
            }
        )

    def _on_message(self, message: dict[str, Any]) -> None:
        action = message.get("action")
        if action == HEARTBEAT:
            self.send({"action": HEARTBEAT, "id": message.get("id")})
        elif action == ATTACH:
            self._attach(message)
        elif action == DETACH:
            name = message["channel"]
            self.attached.pop(name, None)
            self.fake.channel(name).subscribers.pop(self.number, None)
            self.send({"action": DETACHED, "channel": name})
        elif action == MESSAGE:
            self._publish(message)
        elif action == AUTH:
            token = (message.get("auth") or {}).get("accessToken")
            try:
                self.credentials = self.fake.credentials_for_token(token or "")
            except AblyError as error:
                self.send({"action": ERROR, "error": error.body()["error"]})
                return
            self.send(
                {
                    "action": CONNECTED,
                    "connectionId": self.id,
                    "connectionDetails": {"clientId": self.credentials.client_id, "connectionKey": f"{self.id}!key"},
                }
            )
        elif action in (CLOSE, DISCONNECT):
            self.send({"action": CLOSED if action == CLOSE else DISCONNECTED})
            self.protocol.send_close()
            self._flush()

    def _attach(self, message: dict[str, Any]) -> None:
        name = message["channel"]
        capability = self.credentials.capability
        operations = ["subscribe", "publish", "presence", "history"]
        allowed = [op for op in operations if capability_allows(capability, name, op)]
        if not allowed:
            error = AblyError(401, 40160, f"Action not permitted: attach to channel {name!r}")
            self.send({"action": ERROR, "channel": name, "error": error.body()["error"]})
            return
        channel = self.fake.channel(name)
        subscriber = Subscriber(self, name)  # sees no message yet: a first append comes whole
        flags = 0
        flags |= FLAG_SUBSCRIBE if "subscribe" in allowed else 0
        flags |= FLAG_PUBLISH if "publish" in allowed else 0
        flags |= FLAG_PRESENCE | FLAG_PRESENCE_SUBSCRIBE if "presence" in allowed else 0
        params = message.get("params") or {}
        reply: dict[str, Any] = {
            "action": ATTACHED,
            "channel": name,
            "channelSerial": self.fake.new_serial(),
            "flags": flags,
        }
        if params:
            reply["params"] = params
        self.send(reply)
        self.attached[name] = subscriber
        channel.subscribers[self.number] = subscriber
        rewind = params.get("rewind")
        if rewind and "subscribe" in allowed:
            replay = self._rewound(channel, str(rewind))
            if replay:
                self.send_messages(name, replay, None)

    @staticmethod
    def _rewound(channel: Channel, rewind: str) -> list[dict[str, Any]]:
        recent = list(channel.recent)
        if rewind.endswith(("s", "m")):
            seconds = float(rewind[:-1]) * (60 if rewind.endswith("m") else 1)
            since = now_ms() - seconds * 1000
            return [m for at, m in recent if at >= since]
        return [m for _, m in recent[-int(rewind) :]]

    def _publish(self, message: dict[str, Any]) -> None:
        name, serial = message["channel"], message.get("msgSerial", 0)
        try:
            items = message.get("messages") or []
            if items and items[0].get("action") in (UPDATE, DELETE, APPEND):
                versions = [self.fake.mutate(self.credentials, name, m["serial"], m, via="realtime") for m in items]
                self.send({"action": ACK, "msgSerial": serial, "count": 1, "res": [{"serials": versions}]})
                return
            serials = self.fake.publish(self.credentials, name, items, connection=self, via="realtime")
        except AblyError as error:
            self.send({"action": NACK, "msgSerial": serial, "count": 1, "error": error.body()["error"]})
            return
        self.send({"action": ACK, "msgSerial": serial, "count": 1, "res": [{"serials": serials}]})


# --- running it beside the tests ------------------------------------------------------------


class FakeAblyThread:
    """The fake on its own event loop in a daemon thread; every control method is safe to
    call from any thread."""

    def __init__(self, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.fake = FakeAbly(**options)
        self._thread = threading.Thread(target=self.loop.run_forever, name="fake-ably", daemon=True)

    def start(self) -> FakeAblyThread:
        self._thread.start()
        self.call(self.fake.start())
        return self

    def stop(self) -> None:
        self.call(self.fake.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def call(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the fake's loop (the state is only touched there)."""

        async def call() -> Any:
            return fn()

        return self.call(call())

    @property
    def port(self) -> int:
        return self.fake.port

    @property
    def key(self) -> str:
        return self.fake.key

    def env(self) -> dict[str, str]:
        """The settings that point the product at this fake."""
        return {
            "ABLY_API_KEY": self.key,
            "ABLY_REST_HOST": "127.0.0.1",
            "ABLY_REALTIME_HOST": "127.0.0.1",
            "ABLY_PORT": str(self.port),
            "ABLY_TLS": "false",
        }

    def add_fault(self, fault: Fault) -> Fault:
        self.run(lambda: self.fake.faults.append(fault))
        return fault

    def clear_faults(self) -> None:
        self.run(self.fake.faults.clear)

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """The channel's history, oldest first, latest versions (as a late joiner reads it)."""
        return self.run(lambda: [m.wire() for m in self.fake.channel(channel).messages])

    def operations(self, channel: str | None = None) -> list[Operation]:
        return self.run(lambda: [op for op in self.fake.operations if channel is None or op.channel == channel])

    def wait_for(self, predicate: Callable[[FakeAbly], bool], timeout: float = 30) -> None:
        """Wait (bounded) until `predicate(fake)` holds, re-checked on every change."""

        async def wait() -> None:
            async with self.fake.changed:
                await asyncio.wait_for(self.fake.changed.wait_for(lambda: predicate(self.fake)), timeout)

        try:
            self.call(wait(), timeout + 5)
        except TimeoutError as exc:
            raise AssertionError(f"fake Ably: condition not met within {timeout}s") from exc
