"""What docs/extending.md promises a site: the project's templates/ override the app's (and
the app's still serve a site without one), the error pages render with or without a
request, and the worked example, the transcript page, shows members the conversation
and no one else. Django's test client against the test database; no Daphne, no worker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.signals import request_finished
from django.template.loader import render_to_string
from django.test import Client, RequestFactory
from django.views import defaults

from sessions_app.models import ChatSession, MessageNode, NodeStatus, Role
from sessions_app.sessions.services import member_add, session_create
from sessions_app.web.request_signals import close_request_connections

pytestmark = pytest.mark.django_db

SITE_TEMPLATES = Path(settings.BASE_DIR) / "templates"
APP_TEMPLATES = Path(settings.BASE_DIR) / "sessions_app" / "templates"


def user(prefix: str) -> Any:
    return get_user_model().objects.create_user(username=f"{prefix}-{uuid.uuid4().hex[:6]}", password="x")


def logged_in(who: Any) -> Client:
    client = Client()
    client.force_login(who)
    return client


def origins(response: Any) -> list[Path]:
    """The files the response's templates were loaded from, outermost first."""
    return [Path(t.origin.name) for t in response.templates if t.origin and t.origin.name]


def node(session: ChatSession, role: str, text: str, by: str, parent: MessageNode | None = None, **kw: Any) -> Any:
    return MessageNode.objects.create(
        session=session,
        node_id=uuid.uuid4().hex,
        parent=parent,
        role=role,
        parts=[{"type": "text", "text": text}],
        client_id=by,
        **kw,
    )


@pytest.fixture(autouse=True)
def keep_the_test_connection() -> Iterator[None]:
    """The app closes every connection when a request finishes (apps.py); that would close
    the one holding this test's transaction after its first request. Django's test client
    holds off its own such receiver (close_old_connections) for the same reason."""
    uid = "sessions_app.close_request_connections"
    request_finished.disconnect(dispatch_uid=uid)
    yield
    request_finished.connect(close_request_connections, dispatch_uid=uid)


@pytest.fixture
def alice() -> Any:
    return user("alice")


@pytest.fixture
def bob() -> Any:
    return user("bob")


@pytest.fixture
def chat(alice: Any, bob: Any) -> ChatSession:
    """Alice asked, then edited her question (the edit is the newest version, the one the
    chat shows); the answer to the edit; Bob's follow-up, whose answer he stopped."""
    session = session_create(owner=alice, title="Weekend in Lisbon")
    member_add(session=session, by=alice, username=bob.username)
    first = node(session, Role.USER, "Plan a trip", alice.username)
    node(session, Role.ASSISTANT, "An answer to the first version", alice.username, first)
    edit = node(session, Role.USER, "Plan a 3 day trip to Lisbon", alice.username, fork_of=first)
    answer = node(session, Role.ASSISTANT, "Day 1: Alfama.\n\nDay 2: Sintra.", alice.username, edit)
    follow_up = node(session, Role.USER, "And a budget for two?", bob.username, answer)
    node(session, Role.ASSISTANT, "Roughly", bob.username, follow_up, status=NodeStatus.CANCELLED)
    return session


def test_a_member_sees_the_conversation_with_its_authors(chat: ChatSession, alice: Any, bob: Any) -> None:
    response = logged_in(bob).get(f"/sessions/{chat.pk}/transcript")
    page = response.content.decode()
    assert response.status_code == 200
    assert [p.name for p in origins(response)][:1] == ["transcript.html"]
    for text in ("Weekend in Lisbon", "Plan a 3 day trip to Lisbon", "Day 1: Alfama.", "And a budget for two?"):
        assert text in page
    assert f">{alice.username}</span>" in page and f">{bob.username}</span>" in page
    assert f"Assistant · for {alice.username}" in page and f"Assistant · for {bob.username}" in page
    assert ">Stopped</span>" in page
    # The branch the chat shows: the edit, not the version it replaced, nor that one's answer.
    assert "Plan a trip<" not in page and "An answer to the first version" not in page
    assert page.index("Plan a 3 day trip") < page.index("Day 1: Alfama.") < page.index("And a budget")


def test_the_markdown_and_text_downloads(chat: ChatSession, alice: Any, bob: Any) -> None:
    client = logged_in(alice)
    markdown = client.get(f"/sessions/{chat.pk}/transcript", {"format": "md"})
    text = client.get(f"/sessions/{chat.pk}/transcript", {"format": "txt"})
    bad = client.get(f"/sessions/{chat.pk}/transcript", {"format": "pdf"})

    assert markdown.status_code == 200 and markdown["Content-Type"] == "text/markdown; charset=utf-8"
    assert markdown["Content-Disposition"] == f'attachment; filename="transcript-{chat.pk}.md"'
    body = markdown.content.decode()
    assert body.startswith("# Weekend in Lisbon\n")
    assert f"## {alice.username} · " in body and f"## Assistant · for {bob.username} · " in body
    assert "\n\nDay 1: Alfama.\n\nDay 2: Sintra.\n" in body and "\nAnd a budget for two?\n" in body
    assert " · Stopped\n" in body and "Plan a trip\n" not in body

    assert text.status_code == 200 and text["Content-Type"] == "text/plain; charset=utf-8"
    assert text.content.decode().startswith("Weekend in Lisbon\n=================\n")
    assert f"\n{bob.username} · " in text.content.decode() and "## " not in text.content.decode()
    assert bad.status_code == 400


def test_a_non_member_gets_the_site_404(chat: ChatSession) -> None:
    client = logged_in(user("mallory"))
    for path in (f"/sessions/{chat.pk}/transcript", f"/sessions/{uuid.uuid4()}/transcript", "/sessions/x/transcript"):
        response = client.get(path, {"format": "md"})
        assert response.status_code == 404, path
        assert "Page not found" in response.content.decode() and "Weekend in Lisbon" not in response.content.decode()


def test_the_anonymous_are_sent_to_log_in(chat: ChatSession) -> None:
    response = Client().get(f"/sessions/{chat.pk}/transcript")
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next=/sessions/{chat.pk}/transcript"


def test_the_chat_page_links_its_transcript(chat: ChatSession, alice: Any) -> None:
    page = logged_in(alice).get(f"/s/{chat.pk}/").content.decode()
    assert f'href="/sessions/{chat.pk}/transcript"' in page


def test_the_site_404_page_comes_from_the_project_templates() -> None:
    response = Client().get("/no-such-page/")
    assert response.status_code == 404
    assert origins(response)[0] == SITE_TEMPLATES / "404.html"
    page = response.content.decode()
    assert "Page not found" in page and "chat/style.css" in page


def test_the_login_page_is_the_sites_over_the_apps() -> None:
    response = Client().get("/login/")
    files = origins(response)
    assert response.status_code == 200
    # The site's login and layout, each extending the app's of the same name.
    assert files[0] == SITE_TEMPLATES / "sessions_app" / "login.html"
    assert SITE_TEMPLATES / "sessions_app" / "base.html" in files
    assert APP_TEMPLATES / "sessions_app" / "login.html" in files
    page = response.content.decode()
    assert "Ask whoever runs this site" in page and 'name="username"' in page and "chat/style.css" in page


def test_a_site_without_templates_gets_the_apps_own(settings: Any) -> None:
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": []}]
    response = Client().get("/login/")
    assert response.status_code == 200
    assert origins(response)[0] == APP_TEMPLATES / "sessions_app" / "login.html"
    assert 'name="username"' in response.content.decode()
    assert "Ask whoever runs this site" not in response.content.decode()


def test_the_error_pages_render_without_a_request() -> None:
    for name, marker in (("403.html", "Not allowed"), ("404.html", "Page not found"), ("500.html", "went wrong")):
        page = render_to_string(name)
        assert marker in page and "chat/style.css" in page, name


def test_the_error_handlers_use_the_site_pages() -> None:
    request = RequestFactory().get("/")  # no middleware ran: no user, no session
    denied = defaults.permission_denied(request, PermissionDenied())
    failed = defaults.server_error(request)
    assert denied.status_code == 403 and "Not allowed" in denied.content.decode()
    assert failed.status_code == 500 and "Something went wrong" in failed.content.decode()
