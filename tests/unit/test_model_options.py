"""A session's modelOptions are checked where the owner sets them (create, update), with the
check its provider makes before a turn's model call: options every turn would fail with
(`provider_bad_request`) are refused `invalid`, naming the option; the vendor is not asked."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from sessions_app.errors import Invalid
from sessions_app.models import ChatSession
from sessions_app.sessions.services import session_create, session_update
from sessions_app.worker.providers import registry
from sessions_app.worker.providers.base import Finish, ModelRequest, ProviderError, StreamItem
from sessions_app.worker.providers.demo import DemoProvider

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice() -> Any:
    return get_user_model().objects.create_user(username=f"alice-{uuid.uuid4().hex[:6]}", password="x")


class Recorder:
    """A vendor's provider that records the requests it is asked to stream."""

    name = "openai"
    supports_tools = True

    def __init__(self) -> None:
        self.requests: list[ModelRequest] = []

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        self.requests.append(request)
        yield Finish("stop")


@pytest.fixture
def openai(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """OpenAI configured, its provider a recorder: what the vendor was asked."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_MODELS", "gpt-test")
    recorder = Recorder()
    monkeypatch.setattr(registry, "_loaded", {"openai": recorder})
    return recorder


@pytest.mark.parametrize(
    ("model", "options", "named"),
    [
        ("demo", {"rate": "fast"}, "rate"),
        ("demo", {"tokens": True}, "tokens"),
        ("demo", {"tokens": -5}, "tokens"),
        ("demo", {"tokens": 1.5}, "tokens"),
        ("demo", {"tokens": 1e30}, "tokens"),
        ("demo", {"rate": 0}, "rate"),
        ("demo", {"pauseSeconds": 7200}, "pauseSeconds"),
        ("openai:gpt-test", {"temprature": 0.2}, "temprature"),
        ("openai:gpt-test", {"temperature": 3}, "temperature"),
        ("openai:gpt-test", {"reasoningEffort": "extreme"}, "reasoningEffort"),
        ("openai:gpt-test", {"tokens": 5}, "tokens"),  # the demo's option: OpenAI has no such thing
    ],
)
def test_a_session_is_not_created_with_options_its_model_refuses(alice, openai, model, options, named):
    with pytest.raises(Invalid) as refused:
        session_create(owner=alice, model=model, model_options=options)
    assert named in refused.value.message and model in refused.value.message
    assert not ChatSession.objects.filter(owner=alice).exists()
    assert openai.requests == []  # judged without asking the vendor


async def test_the_refusal_is_what_a_turn_would_have_ended_with():
    """The same check: what create refuses is what the turn's model call refused."""
    with pytest.raises(ProviderError) as at_the_turn:
        async for _ in DemoProvider().stream(ModelRequest(model="demo", messages=[], options={"rate": "fast"})):
            pass
    with pytest.raises(ProviderError) as up_front:
        registry.check_options("demo", {"rate": "fast"})
    assert (up_front.value.code, up_front.value.message) == (at_the_turn.value.code, at_the_turn.value.message)


def test_options_a_provider_takes_or_ignores_are_accepted(alice, openai):
    demo = session_create(owner=alice, model="demo", model_options={"tokens": 5, "temperature": 0.5, "custom": 1})
    assert demo.model_options == {"tokens": 5, "temperature": 0.5, "custom": 1}  # the demo ignores what it lacks
    vendor = session_create(
        owner=alice, model="openai:gpt-test", model_options={"system": "Be brief.", "temperature": 0.2, "tools": False}
    )
    assert vendor.model_options["temperature"] == 0.2
    assert openai.requests == []


def test_an_update_is_checked_with_what_it_keeps(alice, openai):
    session = session_create(owner=alice, model="demo", model_options={"tokens": 5})

    with pytest.raises(Invalid) as bad_options:
        session_update(session=session, user=alice, model_options={"rate": "slow"})
    assert "rate" in bad_options.value.message
    # A new model with the session's options, which it refuses: the message says whose they are.
    with pytest.raises(Invalid) as kept:
        session_update(session=session, user=alice, model="openai:gpt-test")
    assert "tokens" in kept.value.message and "the session's modelOptions" in kept.value.message
    stored = ChatSession.objects.get(pk=session.pk)
    assert (stored.model, stored.model_options) == ("demo", {"tokens": 5})

    session_update(session=session, user=alice, model="openai:gpt-test", model_options={"maxTokens": 200})
    stored = ChatSession.objects.get(pk=session.pk)
    assert (stored.model, stored.model_options) == ("openai:gpt-test", {"maxTokens": 200})
    assert openai.requests == []


def test_a_rename_does_not_check_options_stored_before_the_checks(alice):
    session = session_create(owner=alice, model="demo")
    ChatSession.objects.filter(pk=session.pk).update(model_options={"rate": "fast"})
    session.refresh_from_db()
    session_update(session=session, user=alice, title="renamed", policy="queue")
    assert ChatSession.objects.get(pk=session.pk).title == "renamed"
