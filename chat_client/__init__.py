"""A Python asyncio client of the protocol (docs/protocol.md).

    client = await ChatClient.login("http://127.0.0.1:8000", "demo", "demo-password")
    session = await client.create_session(title="Trip")
    phone = await client.connect(session["id"])
    turn = await phone.send("Plan a 3 day trip")
    async for text in turn.stream():
        print(text, end="")
    await phone.close()

A `Device` is one websocket connection: it keeps the session's state (the tree, turns,
active turns) by applying events in `seq` order, resumes after a drop from the last seq it
saw (`reconnect()`, or automatically), and records every gap or duplicate it would have
seen in `gaps` / `duplicates` (both stay empty when the server keeps its promise).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import websockets

Event = dict[str, Any]


class ChatClientError(Exception):
    """An error answer: `code` is the protocol's error code."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status = code, message, status


def new_id() -> str:
    return str(uuid.uuid4())


def user_message(text: str, message_id: str | None = None) -> dict[str, Any]:
    return {"id": message_id or new_id(), "role": "user", "parts": [{"type": "text", "text": text}]}


def _filter(own: bool, turn_id: str | None, client_id: str | None, all_: bool) -> dict[str, Any]:
    if turn_id is not None:
        return {"turnId": turn_id}
    if client_id is not None:
        return {"clientId": client_id}
    if all_:
        return {"all": True}
    return {"own": True}


class ChatClient:
    """The HTTP side of the protocol, and a factory of devices."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.client_id: str | None = None
        headers = {"Authorization": f"Token {token}"} if token else {}
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=90)

    @classmethod
    async def login(cls, base_url: str, username: str, password: str) -> ChatClient:
        async with httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=30) as http:
            response = await http.post("/api/auth/token", json={"username": username, "password": password})
        body = _answer(response)
        client = cls(base_url, body["token"])
        client.client_id = body.get("clientId", username)
        return client

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return _answer(await self.http.request(method, path, **kwargs))

    async def create_session(
        self,
        *,
        title: str = "",
        model: str | None = None,
        model_options: dict[str, Any] | None = None,
        policy: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"title": title, "modelOptions": model_options or {}}
        if model:
            body["model"] = model
        if policy:
            body["policy"] = policy
        return await self.request("POST", "/api/sessions", json=body)  # type: ignore[no-any-return]

    async def session(self, session_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/api/sessions/{session_id}")  # type: ignore[no-any-return]

    async def add_member(self, session_id: str, username: str) -> dict[str, Any]:
        return await self.request("POST", f"/api/sessions/{session_id}/members", json={"username": username})  # type: ignore[no-any-return]

    async def send(self, session_id: str, text: str | None = None, **body: Any) -> dict[str, Any]:
        """Send over HTTP (`messages`, `turnId`, `parent`, `forkOf`, `regenerate`, `policy`)."""
        if text is not None:
            body["messages"] = [user_message(text)]
        return await self.request("POST", f"/api/sessions/{session_id}/turns", json=body)  # type: ignore[no-any-return]

    async def cancel(
        self,
        session_id: str,
        *,
        own: bool = True,
        turn_id: str | None = None,
        client_id: str | None = None,
        all: bool = False,
    ) -> dict[str, Any]:
        flt = _filter(own, turn_id, client_id, all)
        return await self.request("POST", f"/api/sessions/{session_id}/cancel", json=flt)  # type: ignore[no-any-return]

    async def wait(self, session_id: str, flt: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        body = {"filter": flt or {"own": True}, "timeout": timeout}
        return await self.request("POST", f"/api/sessions/{session_id}/wait", json=body)  # type: ignore[no-any-return]

    async def turn(self, session_id: str, turn_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/api/sessions/{session_id}/turns/{turn_id}")  # type: ignore[no-any-return]

    async def turns(self, session_id: str, status: str | None = None) -> list[dict[str, Any]]:
        params = {"status": status} if status else {}
        return (await self.request("GET", f"/api/sessions/{session_id}/turns", params=params))["results"]  # type: ignore[no-any-return]

    async def messages(self, session_id: str, before: str | None = None, limit: int = 50) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if before:
            params["before"] = before
        return await self.request("GET", f"/api/sessions/{session_id}/messages", params=params)  # type: ignore[no-any-return]

    async def events(self, session_id: str, after: int = 0, limit: int = 1000) -> dict[str, Any]:
        params = {"after": after, "limit": limit}
        return await self.request("GET", f"/api/sessions/{session_id}/events", params=params)  # type: ignore[no-any-return]

    async def connect(self, session_id: str, *, after: int | None = None, auto_reconnect: bool = False) -> Device:
        device = Device(self, session_id, auto_reconnect=auto_reconnect)
        await device.open(after=after)
        return device


def _answer(response: httpx.Response) -> Any:
    if response.status_code == 204:
        return None
    body = response.json() if response.content else {}
    if response.status_code >= 400:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        raise ChatClientError(error.get("code", "unknown"), error.get("message", response.text), response.status_code)
    return body


class TurnHandle:
    """A turn as one device sees it: its stream of deltas and its end."""

    def __init__(self, device: Device, ack: dict[str, Any]) -> None:
        self.device = device
        self.ack = ack
        self.turn_id: str = ack["turnId"]
        self.status: str = ack["status"]

    async def stream(self, timeout: float = 60) -> AsyncIterator[str]:
        """Yield this turn's text deltas as they arrive, until its `turn.end`."""
        index = 0
        while True:
            events = self.device.turn_events(self.turn_id)
            while index < len(events):
                event = events[index]
                index += 1
                if event["type"] == "delta" and event.get("part") is None:
                    yield event["text"]
                elif event["type"] == "turn.end":
                    return
            await self.device.next_event(timeout)

    async def end(self, timeout: float = 60) -> Event:
        return await self.device.wait_turn_end(self.turn_id, timeout)

    async def cancel(self) -> dict[str, Any]:
        return await self.device.cancel(turn_id=self.turn_id)


class Device:
    """One websocket connection to a session, with the session's state as it sees it."""

    def __init__(self, client: ChatClient, session_id: str, *, auto_reconnect: bool = False) -> None:
        self.client = client
        self.session_id = session_id
        self.auto_reconnect = auto_reconnect
        self.ws: Any = None
        self.hello: Event | None = None
        self.client_id: str | None = None
        self.connection_id: str | None = None
        self.last_seq = 0
        self.resumed: bool | None = None
        self.snapshots = 0
        self.messages: dict[str, dict[str, Any]] = {}
        self.turns: dict[str, dict[str, Any]] = {}
        self.active_turns: dict[str, set[str]] = {}
        self.online: list[str] = []
        self.events: list[Event] = []
        self.receive_times: list[float] = []
        self.errors: list[Event] = []
        self.gaps: list[tuple[int, int]] = []
        self.duplicates: list[int] = []
        self.close_code: int | None = None
        self._by_turn: dict[str, list[Event]] = {}
        self._replies: dict[str, asyncio.Future[Event]] = {}
        self._changed = asyncio.Event()
        self._ready = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._closing = False

    # --- connection ---

    async def open(self, after: int | None = None) -> None:
        url = self.client.base_url.replace("http", "ws", 1) + f"/ws/sessions/{self.session_id}/"
        if after is not None:
            url += f"?after={after}"
        headers = {"Authorization": f"Token {self.client.token}"} if self.client.token else {}
        self._ready.clear()
        self.ws = await websockets.connect(url, additional_headers=headers, max_size=None, open_timeout=30)
        self._reader = asyncio.create_task(self._read_loop(self.ws))
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({ready, self._reader}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if not self._ready.is_set():
            ready.cancel()
            raise ChatClientError("closed", f"connection closed with code {self.close_code}")

    async def reconnect(self) -> None:
        """Resume from the last seq this device saw."""
        await self.drop()
        await self.open(after=self.last_seq)

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
            for future in self._replies.values():
                if not future.done():
                    future.set_exception(ChatClientError("closed", "connection closed"))
            self._replies.clear()
            self._changed.set()
            if self.auto_reconnect and not self._closing and self.close_code not in (4401, 4403, 4404):
                asyncio.get_running_loop().create_task(self._auto_reconnect())

    async def _auto_reconnect(self) -> None:
        delay = 0.1
        while not self._closing:
            try:
                await self.open(after=self.last_seq)
                return
            except Exception:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)

    # --- applying frames ---

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

    def _apply_snapshot(self, snapshot: Event) -> None:
        self.snapshots += 1
        self.last_seq = snapshot["lastSeq"]
        self.messages = {m["id"]: {**m, "parts": list(m["parts"])} for m in snapshot["messages"]}
        self.turns = {t["turnId"]: dict(t) for t in snapshot["turns"]}
        self.active_turns = {}
        for turn in snapshot["turns"]:
            if turn["status"] == "active":
                self.active_turns.setdefault(turn["clientId"], set()).add(turn["turnId"])

    def _apply_event(self, event: Event, received_at: float) -> None:
        seq = event["seq"]
        if seq <= self.last_seq:
            self.duplicates.append(seq)
            return
        if seq != self.last_seq + 1:
            self.gaps.append((self.last_seq, seq))
        self.last_seq = seq
        self.events.append(event)
        self.receive_times.append(received_at)
        kind = event["type"]
        turn_id = event.get("turnId") or (event.get("message") or {}).get("turnId")
        if turn_id:
            self._by_turn.setdefault(turn_id, []).append(event)
        if kind == "message":
            node = {**event["message"], "parts": list(event["message"]["parts"])}  # events stay as received
            known = self.messages.get(node["id"])
            if known is not None and known.get("contentSeq", 0) > node.get("contentSeq", 0):
                node = {**node, "parts": known["parts"], "contentSeq": known["contentSeq"]}
            self.messages[node["id"]] = node
        elif kind == "delta":
            self._apply_delta(event)
        elif kind == "presence":
            self.online = list(event["online"])
        elif kind in ("tool.call", "tool.result"):
            answer = self.messages.get(event["messageId"])
            if answer is not None and event["seq"] > answer.get("contentSeq", 0):
                answer["parts"] = [*answer["parts"], event["part"]]
                answer["contentSeq"] = event["seq"]
        elif kind == "turn.queued":
            self.turns.setdefault(event["turnId"], {}).update(
                turnId=event["turnId"], clientId=event["clientId"], status="queued"
            )
        elif kind == "turn.start":
            self.turns.setdefault(event["turnId"], {}).update(
                turnId=event["turnId"], clientId=event["clientId"], status="active"
            )
            self.active_turns.setdefault(event["clientId"], set()).add(event["turnId"])
        elif kind == "turn.end":
            self.turns.setdefault(event["turnId"], {}).update(
                turnId=event["turnId"], clientId=event["clientId"], status=event["reason"], reason=event["reason"]
            )
            owned = self.active_turns.get(event["clientId"], set())
            owned.discard(event["turnId"])
            if not owned:
                self.active_turns.pop(event["clientId"], None)
            for node in self.messages.values():
                if (
                    node.get("turnId") == event["turnId"]
                    and node["role"] == "assistant"
                    and node["status"] in ("streaming", "queued")
                ):
                    node["status"] = event["reason"]

    def _apply_delta(self, event: Event) -> None:
        node = self.messages.get(event["messageId"])
        if node is None:
            node = self.messages[event["messageId"]] = {
                "id": event["messageId"],
                "role": "assistant",
                "parts": [],
                "turnId": event["turnId"],
                "status": "streaming",
                "contentSeq": 0,
            }
        if event["seq"] <= node.get("contentSeq", 0):
            return  # already in the snapshot's text
        part_type = event.get("part") or "text"
        parts = node["parts"]
        if parts and parts[-1]["type"] == part_type:
            parts[-1] = {**parts[-1], "text": parts[-1]["text"] + event["text"]}
        else:
            parts.append({"type": part_type, "text": event["text"]})
        node["contentSeq"] = event["seq"]

    # --- reading state ---

    def text_of(self, message_id: str) -> str:
        node = self.messages.get(message_id, {})
        return "".join(p.get("text", "") for p in node.get("parts", []) if p.get("type") == "text")

    def turn_events(self, turn_id: str) -> list[Event]:
        return self._by_turn.get(turn_id, [])

    def events_of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e["type"] == kind]

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
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout} s")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_event(self, predicate: Callable[[Event], bool], timeout: float = 30) -> Event:
        return await self.wait_for(lambda: next((e for e in self.events if predicate(e)), None), timeout)  # type: ignore[no-any-return]

    async def wait_turn_end(self, turn_id: str, timeout: float = 30) -> Event:
        return await self.wait_event(lambda e: e["type"] == "turn.end" and e["turnId"] == turn_id, timeout)

    # --- commands ---

    async def _command(self, frame: dict[str, Any], timeout: float = 30) -> Event:
        ref = new_id()
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._replies[ref] = future
        await self.ws.send(orjson.dumps({**frame, "ref": ref}).decode())
        reply = await asyncio.wait_for(future, timeout)
        if reply["type"] == "error":
            raise ChatClientError(reply["code"], reply["message"])
        return reply

    async def send_raw(self, raw: str | bytes) -> None:
        await self.ws.send(raw)

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
        return await self._command({"type": "cancel", "filter": _filter(own, turn_id, client_id, all)})

    async def ping(self) -> Event:
        return await self._command({"type": "ping"})
