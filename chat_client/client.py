"""The HTTP side of the protocol (docs/protocol.md, "HTTP"), and the factory of devices."""

from __future__ import annotations

from typing import Any

import httpx

from chat_client.device import Device
from chat_client.protocol import ChatClientError, filter_of, user_message


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

    async def delete_session(self, session_id: str) -> None:
        """Delete the session (its owner only): its turns stop, and every device gets
        `session.deleted`, then its connection closes with 4404."""
        await self.request("DELETE", f"/api/sessions/{session_id}")

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
        flt = filter_of(own, turn_id, client_id, all)
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
        try:
            await device.open(after=after)
        except BaseException:
            await device.close()  # the caller never gets it: nothing of it may go on reconnecting
            raise
        return device


def _answer(response: httpx.Response) -> Any:
    if response.status_code == 204:
        return None
    body = response.json() if response.content else {}
    if response.status_code >= 400:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        raise ChatClientError(error.get("code", "unknown"), error.get("message", response.text), response.status_code)
    return body
