"""HEAD on the API's GET endpoints answers as GET does (status, headers, authentication and
checks) without the body, through the API's own entry (web/http_entry.py); a 405 names HEAD
wherever it names GET; a 204 carries no body, no Content-Type and no Content-Length.
Through the ASGI application Daphne runs, in process: what is checked is what the
application hands the server, whether or not the server would strip a body itself."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from sessions_app.agents.services import session_agent_add
from sessions_app.models import ChatSession
from sessions_app.sessions.services import member_add, session_create
from sessions_app.web import http_entry, tokens
from tests.unit.asgi_calls import call

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="function")]


def new_user(prefix: str) -> Any:
    return get_user_model().objects.create_user(username=f"{prefix}-{uuid.uuid4().hex[:8]}", password="pw")


@pytest.fixture
def owner() -> Any:
    return new_user("owner")


@pytest.fixture
def token(owner: Any) -> str:
    return tokens.issue(owner)


@pytest.fixture
def session_id(owner: Any) -> str:
    return str(session_create(owner=owner, title="head").pk)


async def test_head_answers_as_get_does_without_the_body(token, session_id):
    for path in (
        "/api/models",
        "/api/models/",
        "/api/agents",
        "/api/sessions",
        f"/api/sessions/{session_id}",
        f"/api/sessions/{session_id}/turns",
        f"/api/sessions/{session_id}/messages",
        f"/api/sessions/{session_id}/events",
        f"/api/sessions/{session_id}/agents",
        "/api/schema",
        "/api/docs",
    ):
        got = await call("GET", path, token)
        head = await call("HEAD", path, token)

        assert got.status == 200 and got.body, (path, got)
        assert (head.status, head.body) == (200, b""), (path, head)
        assert head.headers == got.headers, path
        assert int(head.headers["content-length"]) == len(got.body), path


async def test_head_is_authenticated_and_checked_as_get_is(token, session_id):
    stranger = await sync_to_async(tokens.issue)(await sync_to_async(new_user)("stranger"))
    for path, as_token, status in (
        ("/api/models", None, 401),
        (f"/api/sessions/{session_id}", stranger, 403),
        (f"/api/sessions/{uuid.uuid4()}", token, 404),
        (f"/api/sessions/{session_id}/turns/no-such-turn", token, 404),
        (f"/api/sessions/{session_id}/turns/a\x00b", token, 400),  # the NUL check (a decoded path)
        ("/api/no-such-endpoint", token, 404),
    ):
        got = await call("GET", path, as_token)
        head = await call("HEAD", path, as_token)

        assert got.status == status and got.json()["error"], (path, got)
        assert (head.status, head.body) == (status, b""), (path, head)
        assert head.headers == got.headers, path
    assert (await call("HEAD", "/api/models", None)).headers["www-authenticate"] == "Token"


async def test_head_takes_the_apis_entry_and_its_kept_matches(token, monkeypatch):
    """Not Django's `handle` (a thread per request) nor a fresh URL resolution: the path
    GET takes (decisions 024 and 031)."""

    async def djangos_entry(*args: Any) -> None:
        raise AssertionError("an API request went through Django's handle")

    monkeypatch.setattr(http_entry.HttpHandler, "handle", djangos_entry)
    assert (await call("GET", "/api/models", token)).status == 200
    hits = http_entry._resolved.cache_info().hits

    assert (await call("HEAD", "/api/models", token)).status == 200
    assert http_entry._resolved.cache_info().hits == hits + 1  # GET's match, kept


async def test_a_405_names_head_wherever_it_names_get(token, session_id):
    for method, path, allowed in (
        ("DELETE", "/api/models", "GET, HEAD"),
        ("PUT", f"/api/sessions/{session_id}/turns", "GET, HEAD, POST"),
        ("POST", f"/api/sessions/{session_id}", "DELETE, GET, HEAD, PATCH"),
        ("POST", "/api/schema", "GET, HEAD"),
        ("GET", f"/api/sessions/{session_id}/cancel", "POST"),
    ):
        answer = await call(method, path, token)

        assert (answer.status, answer.json()["error"]["code"]) == (405, "invalid"), (method, path)
        assert answer.headers["allow"] == allowed, (method, path)
        assert answer.json()["error"]["message"] == f"this path takes {allowed}"

    head = await call("HEAD", f"/api/sessions/{session_id}/cancel", token)  # a path GET does not take
    assert (head.status, head.headers["allow"], head.body) == (405, "POST", b"")


async def test_a_204_carries_no_body_no_content_type_and_no_length(owner, session_id, settings):
    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "AGENTS": "example"}
    member = await sync_to_async(new_user)("member")
    session = await ChatSession.objects.aget(pk=session_id)
    await sync_to_async(member_add)(session=session, by=owner, username=member.get_username())
    await sync_to_async(session_agent_add)(session_id=session_id, by=owner, name="critic")
    issue = sync_to_async(tokens.issue)

    for method, path, as_user in (
        ("DELETE", f"/api/sessions/{session_id}/members", member),
        ("DELETE", f"/api/sessions/{session_id}/agents/critic", owner),
    ):
        answer = await call(method, path, await issue(as_user))

        assert (answer.status, answer.body) == (204, b""), (path, answer)
        assert "content-type" not in answer.headers, (path, answer.headers)
        assert "content-length" not in answer.headers, (path, answer.headers)
    detail = (await call("GET", f"/api/sessions/{session_id}", await issue(owner))).json()
    assert (detail["members"], detail["agents"]) == ([owner.get_username()], [])  # the 204s did their work

    deleted = await call("DELETE", f"/api/sessions/{session_id}", await issue(owner))  # the session itself

    assert (deleted.status, deleted.body) == (204, b"")
    assert "content-type" not in deleted.headers and "content-length" not in deleted.headers
    assert not await ChatSession.objects.filter(pk=session_id).aexists()
