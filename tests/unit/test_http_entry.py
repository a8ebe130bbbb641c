"""The API's requests through the ASGI handler Daphne runs (web/http_entry.py), in process:
a path's kept match gives each request its own arguments, a new urlconf is obeyed, a path
that names no endpoint answers the envelope, and a receiver a site connects to
`request_started` still runs for API requests."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import orjson
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core import signals
from django.urls import clear_url_caches

from sessions_app.events import emit
from sessions_app.sessions.services import session_create
from sessions_app.web import commands, tokens
from sessions_app.web.http_entry import HttpHandler
from sessions_app.web.hub import hub

# A loop of its own: the database threads it leaves connected end with it, not carried
# into later tests on the session's loop (where a test without database access would trip
# over their connections).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="function")]


class Asgi:
    """Requests to one HttpHandler with a user's token, as Daphne makes them."""

    def __init__(self, token: str) -> None:
        self.handler = HttpHandler()
        self.token = token

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.request("GET", path)

    async def request(
        self, method: str, path: str, body: Any = None, on_message: Any = None, leave: asyncio.Event | None = None
    ) -> tuple[int, Any]:
        """(status, JSON answer); with `leave`, the client disconnects once it is set (then
        (0, None) if nothing was answered)."""
        raw = b"" if body is None else orjson.dumps(body)
        headers = [(b"host", b"testserver"), (b"authorization", f"Token {self.token}".encode())]
        if body is not None:
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 5000),
            "server": ("testserver", 80),
        }
        received = False

        async def receive() -> dict[str, Any]:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": raw, "more_body": False}
            await (leave or asyncio.Event()).wait()  # the client stays connected until it leaves
            return {"type": "http.disconnect"}

        messages: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)
            if on_message is not None:
                on_message(message)

        await self.handler(scope, receive, send)
        if not messages:
            return 0, None
        body_bytes = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        return messages[0]["status"], orjson.loads(body_bytes)


@pytest.fixture
def owner() -> Any:
    return get_user_model().objects.create_user(username=f"entry-{uuid.uuid4().hex[:8]}", password="pw")


@pytest.fixture
def asgi(owner: Any) -> Asgi:
    return Asgi(tokens.issue(owner))


def new_session(owner: Any, title: str) -> str:
    return str(session_create(owner=owner, title=title).pk)


async def test_each_request_of_a_kept_path_gets_its_own_arguments(owner, asgi):
    first, second = [await sync_to_async(new_session)(owner, title) for title in ("first", "second")]
    for _ in range(2):  # the second round is answered from the kept matches
        assert (await asgi.get(f"/api/sessions/{first}"))[1]["title"] == "first"
        assert (await asgi.get(f"/api/sessions/{second}"))[1]["title"] == "second"
        assert (await asgi.get(f"/api/sessions/{second}/"))[1]["title"] == "second"


async def test_an_http_send_is_answered_before_its_events_go_out(owner, asgi, monkeypatch):
    """The work after a send's commit (its events, its turn handed to a worker) waits for
    the HTTP answer to be written, so that the two do not compete (decision 033)."""
    session = await sync_to_async(new_session)(owner, "first")
    order: list[str] = []
    publish, out = emit.many_now, threading.Event()

    def published(batches: Any) -> Any:
        order.append("events")
        out.set()
        return publish(batches)

    monkeypatch.setattr(emit, "many_now", published)
    monkeypatch.setattr(commands, "ANSWERS_FIRST_SECONDS", 30.0)  # only the answer lets them go
    body = {"messages": [{"id": str(uuid.uuid4()), "role": "user", "parts": [{"type": "text", "text": "hi"}]}]}

    def on_message(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            order.append("answer")

    status, answer = await asgi.request("POST", f"/api/sessions/{session}/turns", body, on_message)
    assert status == 202 and answer["status"] == "active"
    assert await asyncio.to_thread(out.wait, 30)
    assert order == ["answer", "events"]


async def test_a_client_that_leaves_stops_its_request_and_gets_no_answer(owner, asgi, monkeypatch):
    """A wait for a streaming turn (up to 60 s) stops as soon as its client disconnects:
    the view is cancelled, its listener on the session's feed removed, nothing answered."""
    session = await sync_to_async(new_session)(owner, "left")
    body = {"messages": [{"id": str(uuid.uuid4()), "role": "user", "parts": [{"type": "text", "text": "hi"}]}]}
    status, sent = await asgi.request("POST", f"/api/sessions/{session}/turns", body)
    assert status == 202 and sent["status"] == "active"  # no worker here: it stays in flight
    feed, subscribed, leave = hub(), asyncio.Event(), asyncio.Event()
    subscribe = feed.subscribe

    async def subscribe_and_tell(session_id: str, listener: Any) -> None:
        await subscribe(session_id, listener)
        subscribed.set()

    monkeypatch.setattr(feed, "subscribe", subscribe_and_tell)
    wait = {"filter": {"turnId": sent["turnId"]}, "timeout": 60}
    waiting = asyncio.ensure_future(asgi.request("POST", f"/api/sessions/{session}/wait", wait, leave=leave))
    await subscribed.wait()  # the view waits on the session's feed for the turn's end
    assert session in feed.feeds
    leave.set()
    assert await waiting == (0, None)
    assert session not in feed.feeds  # its listener gone with it


async def test_an_api_path_that_names_no_endpoint_answers_the_envelope(asgi):
    for path in ("/api/no-such-endpoint", "/api/sessions/x/y/z"):
        status, answer = await asgi.get(path)
        assert (status, answer["error"]["code"]) == (404, "not_found")


class SendsItsFirstRequestElsewhere:
    """A site's view middleware that rewrites the view arguments of the first request it
    sees to `target` (a class attribute the test sets)."""

    target = ""
    rewritten = 0

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        return self.get_response(request)

    def process_view(self, request: Any, view: Any, args: Any, kwargs: dict[str, Any]) -> None:
        if not type(self).rewritten:
            type(self).rewritten += 1
            kwargs["session_id"] = self.target


async def test_a_view_middleware_changing_its_arguments_changes_no_other_request(owner, asgi, settings):
    asked, elsewhere = [await sync_to_async(new_session)(owner, title) for title in ("asked", "elsewhere")]
    SendsItsFirstRequestElsewhere.target = elsewhere
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, f"{__name__}.SendsItsFirstRequestElsewhere"]
    asgi.handler = HttpHandler()  # loads the middleware
    assert (await asgi.get(f"/api/sessions/{asked}"))[1]["title"] == "elsewhere"
    assert (await asgi.get(f"/api/sessions/{asked}"))[1]["title"] == "asked"


async def test_a_new_urlconf_is_obeyed(asgi, settings):
    assert (await asgi.get("/api/models"))[0] == 200
    settings.ROOT_URLCONF = "tests.unit.urls_without_api"
    clear_url_caches()
    try:
        status, _ = await asgi.get("/api/models")
        assert status == 404
    finally:
        settings.ROOT_URLCONF = "config.urls"
        clear_url_caches()
    assert (await asgi.get("/api/models"))[0] == 200


async def test_a_sites_request_started_receiver_runs_for_api_requests(asgi):
    heard: list[str] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        heard.append(kwargs["scope"]["path"])

    signals.request_started.connect(receiver)
    try:
        assert (await asgi.get("/api/models"))[0] == 200
    finally:
        signals.request_started.disconnect(receiver)
    assert heard == ["/api/models"]
    assert (await asgi.get("/api/models"))[0] == 200
    assert heard == ["/api/models"]  # disconnected: not heard again
