"""A websocket holds only while the credential it was opened with does, in every web
process (decision 029, amended; docs/security.md, "Credentials"): revoking the token
(one, or all), logging out, a password change close it with 4401, and a command that
follows is not taken. And every websocket path either reaches a consumer (the session's,
with or without its trailing slash) or is refused at the handshake without an error in the
server's log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
import websockets

from chat_client import ChatClient
from chat_client.protocol import user_message
from tests.conftest import PASSWORD
from tests.integration.helpers import session_with
from tests.integration.test_security_ws import auth, closed_code, frames_until, ws_url


@pytest.fixture(scope="module")
def second_web_url(stack: Any) -> str:
    """A second Daphne on the shared stack: the revocations go through the first."""
    return stack.start_web("web-revoke-2")


async def opened(url: str, headers: dict[str, str] | None = None) -> Any:
    """A websocket past its hello and snapshot."""
    ws = await websockets.connect(url, additional_headers=headers or {})
    await frames_until(ws, lambda f: f["type"] == "snapshot")
    return ws


async def acked_send(ws: Any, ref: str) -> dict[str, Any]:
    await ws.send(orjson.dumps({"type": "send", "ref": ref, "messages": [user_message(ref)]}).decode())
    [*_, ack] = await frames_until(ws, lambda f: f.get("ref") == ref)
    return ack


async def watch_subscribed(stack: Any, name: str) -> None:
    """The process's credentials watch is subscribed (it subscribes on its first credential)."""
    client = f"{stack.key_prefix}:credentials-watch:{stack.processes[name].pid}"
    async with asyncio.timeout(10):
        while not any(c.get("name") == client for c in stack.redis.client_list()):
            await asyncio.sleep(0.01)


class Browser:
    """A browser logged in through the login page: its session cookie opens websockets."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, follow_redirects=True, timeout=30)

    def csrf(self) -> str:
        return str(self.http.cookies["csrftoken"])  # Django takes the cookie's value as the form's token

    async def log_in(self, username: str) -> Browser:
        await self.http.get("/login/")  # sets the csrftoken cookie
        form = {"username": username, "password": PASSWORD, "csrfmiddlewaretoken": self.csrf()}
        await self.http.post("/login/", data=form)
        assert "sessionid" in self.http.cookies
        return self

    def headers(self) -> dict[str, str]:
        return {"Cookie": f"sessionid={self.http.cookies['sessionid']}"}

    async def log_out(self) -> None:
        answer = await self.http.post("/logout/", data={"csrfmiddlewaretoken": self.csrf()})
        assert answer.status_code == 200, answer.status_code

    async def ws_ticket(self) -> str:
        answer = await self.http.post("/api/auth/ws-ticket", headers={"X-CSRFToken": self.csrf()})
        return str(answer.json()["ticket"])


@pytest_asyncio.fixture
async def browsers(stack: Any) -> AsyncIterator[Callable[[str], Any]]:
    opened_browsers: list[Browser] = []

    async def open_browser(username: str) -> Browser:
        browser = await Browser(stack.base_url).log_in(username)
        opened_browsers.append(browser)
        return browser

    yield open_browser
    for browser in opened_browsers:
        await browser.http.aclose()


# --- revocation ----------------------------------------------------------------------------


async def test_revoking_all_tokens_closes_their_websockets_in_every_process(make_client, stack, second_web_url):
    alice = await make_client("alice")
    session = await session_with(alice)
    here = await opened(ws_url(stack.base_url, session["id"]), auth(alice))
    there = await opened(ws_url(second_web_url, session["id"]), auth(alice))
    assert (await acked_send(there, "before"))["type"] == "ack"  # the socket works
    await watch_subscribed(stack, "web-revoke-2")

    answer = await alice.request("POST", "/api/auth/token/revoke", json={"all": True})
    assert answer == {"revoked": 1}

    # Neither socket sends a command: each process closes it by itself (at its next look,
    # every 0.5 s; how soon is a figure, not asserted here).
    assert await asyncio.gather(closed_code(here), closed_code(there)) == [4401, 4401]
    async with httpx.AsyncClient(base_url=second_web_url) as http:
        assert (await http.get("/api/sessions", headers=auth(alice))).status_code == 401


async def test_a_command_right_after_a_revocation_is_not_taken(make_client, stack, second_web_url, orm):
    from sessions_app.models import Turn

    alice = await make_client("alice")
    session = await session_with(alice)
    ws = await opened(ws_url(second_web_url, session["id"]), auth(alice))
    assert (await acked_send(ws, "before"))["type"] == "ack"
    await watch_subscribed(stack, "web-revoke-2")

    # Revoked through the first process; at once, the socket on the second sends.
    assert await alice.request("POST", "/api/auth/token/revoke") == {"revoked": 1}
    await ws.send(orjson.dumps({"type": "send", "ref": "after", "messages": [user_message("after")]}).decode())
    await ws.send(orjson.dumps({"type": "ping", "ref": "ping-after"}).decode())

    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        try:
            while True:
                seen.append(orjson.loads(await ws.recv()))
        except websockets.ConnectionClosed:
            pass
    assert ws.close_code == 4401
    assert not [f for f in seen if f.get("ref") in ("after", "ping-after")], seen
    assert orm(lambda: Turn.objects.filter(session_id=session["id"]).count()) == 1  # "before"'s only


async def test_revoking_one_token_closes_only_the_websockets_opened_with_it(make_client, stack, create_user):
    username = create_user("two-logins")
    laptop = await ChatClient.login(stack.base_url, username, PASSWORD)
    phone = await ChatClient.login(stack.base_url, username, PASSWORD)
    try:
        session = await session_with(laptop)
        on_laptop = await opened(ws_url(stack.base_url, session["id"]), auth(laptop))
        on_phone = await opened(ws_url(stack.base_url, session["id"]), auth(phone))

        assert await phone.request("POST", "/api/auth/token/revoke") == {"revoked": 1}

        # The look that closed the phone's socket judged the laptop's too (a process checks
        # all its websockets at once when credentials change): it stays open.
        assert await closed_code(on_phone) == 4401
        await on_laptop.send(orjson.dumps({"type": "ping", "ref": "still"}).decode())
        await frames_until(on_laptop, lambda f: f.get("ref") == "still")
        assert on_laptop.close_code is None
        await on_laptop.close()
    finally:
        await laptop.aclose()
        await phone.aclose()


async def test_a_password_change_closes_token_ticket_and_browser_websockets(make_client, stack, orm, browsers):
    alice = await make_client("alice")
    session = await session_with(alice)
    url = ws_url(stack.base_url, session["id"])
    ticket = (await alice.request("POST", "/api/auth/ws-ticket"))["ticket"]
    browser = await browsers(alice.client_id)
    sockets = [
        await opened(url, auth(alice)),
        await opened(ws_url(stack.base_url, session["id"], f"ticket={ticket}")),
        await opened(url, browser.headers()),
    ]

    def change_password() -> None:
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.get(username=alice.client_id)
        user.set_password("a-new-password")
        user.save()

    orm(change_password)

    assert [await closed_code(ws) for ws in sockets] == [4401, 4401, 4401]


async def test_logging_out_closes_that_browsers_websockets_and_the_tickets(make_client, stack, browsers):
    alice = await make_client("alice")
    session = await session_with(alice)
    url = ws_url(stack.base_url, session["id"])
    leaving, staying = await browsers(alice.client_id), await browsers(alice.client_id)
    ticket = await leaving.ws_ticket()
    leaving_ws = await opened(url, leaving.headers())
    ticket_ws = await opened(ws_url(stack.base_url, session["id"], f"ticket={ticket}"))
    staying_ws = await opened(url, staying.headers())

    await leaving.log_out()

    assert await closed_code(leaving_ws) == 4401
    assert await closed_code(ticket_ws) == 4401  # a logout revokes all the user's tokens: its tickets too
    await staying_ws.send(orjson.dumps({"type": "ping", "ref": "still"}).decode())
    await frames_until(staying_ws, lambda f: f.get("ref") == "still")  # another browser's session holds
    assert staying_ws.close_code is None
    await staying_ws.close()


# --- routes --------------------------------------------------------------------------------

TROUBLE = ("No route found", "Exception inside application", "Traceback", "ERROR")


async def test_a_session_url_without_its_trailing_slash_reaches_the_session(make_client, stack):
    alice = await make_client("alice")
    session = await session_with(alice)
    url = ws_url(stack.base_url, session["id"]).rstrip("/")
    assert url.endswith(session["id"])
    async with websockets.connect(url, additional_headers=auth(alice)) as ws:
        [hello, *_] = await frames_until(ws, lambda f: f["type"] == "snapshot")
        assert (hello["type"], hello["clientId"]) == ("hello", alice.client_id)
        assert (await acked_send(ws, "no-slash"))["type"] == "ack"


async def test_a_websocket_path_nothing_serves_is_refused_without_an_error(make_client, stack):
    alice = await make_client("alice")
    session = await session_with(alice)
    base = stack.base_url.replace("http", "ws", 1)
    log_before = len(stack.log_text("web"))

    for path in ("/ws/other/", "/ws/sessions/", f"/ws/sessions/{session['id']}/extra", "/", "/api/sessions"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(base + path, additional_headers=auth(alice))
        assert refused.value.response.status_code == 403, path

    # Still served, and nothing in the log but the refusals.
    async with websockets.connect(ws_url(stack.base_url, session["id"]), additional_headers=auth(alice)) as ws:
        await frames_until(ws, lambda f: f["type"] == "snapshot")
    written = stack.log_text("web")[log_before:]
    assert not [line for line in written.splitlines() if any(t in line for t in TROUBLE)], written[-3000:]
