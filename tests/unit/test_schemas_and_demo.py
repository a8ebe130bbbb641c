"""Command validation at the edge, and the demo model's contract."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sessions_app.schemas import CancelFilter, SendBody
from sessions_app.worker.providers.base import ModelRequest, ProviderError, TextDelta, Usage
from sessions_app.worker.providers.demo import DemoProvider, demo_tokens


def test_an_empty_filter_means_own():
    assert CancelFilter.model_validate({}).as_dict() == {"own": True}


@pytest.mark.parametrize(
    "raw",
    [
        {"own": True, "all": True},
        {"turnId": "a", "clientId": "b"},
        {"own": False},
        {"all": False},
        {"all": "yes"},
        {"turnId": ""},
        {"nope": 1},
    ],
)
def test_a_filter_holds_exactly_one_valid_scope(raw):
    with pytest.raises(ValidationError):
        CancelFilter.model_validate(raw)


@pytest.mark.parametrize(
    "raw",
    [
        {"messages": []},
        {"messages": [{"id": "m", "role": "assistant", "parts": [{"type": "text", "text": "x"}]}]},
        {"messages": [{"id": "m", "role": "user", "parts": []}]},
        {"messages": [{"id": "has space", "role": "user", "parts": [{"type": "text", "text": "x"}]}]},
        {"regenerate": "a1", "messages": [{"id": "m", "role": "user", "parts": [{"type": "text", "text": "x"}]}]},
        {"regenerate": "a1", "parent": "p"},
        {"messages": [{"id": "m", "role": "user", "parts": [{"type": "text", "text": "x"}]}], "extra": 1},
    ],
)
def test_malformed_sends_are_refused(raw):
    with pytest.raises(ValidationError):
        SendBody.model_validate(raw)


def test_a_send_reads_the_protocols_camel_case_fields():
    body = SendBody.model_validate(
        {
            "turnId": "t",
            "forkOf": "u",
            "policy": "queue",
            "messages": [{"id": "m", "role": "user", "parts": [{"type": "text", "text": "x"}]}],
        }
    )
    assert (body.turn_id, body.fork_of, body.policy) == ("t", "u", "queue")


def test_demo_answers_are_a_function_of_the_prompt():
    assert demo_tokens("hello", 5) == demo_tokens("hello", 5)
    assert demo_tokens("hello", 5) != demo_tokens("goodbye", 5)
    assert all(token.endswith(" ") for token in demo_tokens("x", 30))


def request(**options):
    return ModelRequest(
        model="demo", messages=[{"role": "user", "parts": [{"type": "text", "text": "hi there"}]}], options=options
    )


async def test_demo_streams_its_tokens_then_usage():
    items = [item async for item in DemoProvider().stream(request(tokens=4, rate=10_000))]
    assert [i.text for i in items if isinstance(i, TextDelta)] == demo_tokens("hi there", 4)
    assert Usage(input_tokens=2, output_tokens=4) in items


async def test_demo_fails_after_the_asked_number_of_tokens():
    seen = []
    with pytest.raises(ProviderError) as failure:
        async for item in DemoProvider().stream(request(tokens=10, rate=10_000, failAfter=3)):
            seen.append(item)
    assert len(seen) == 3 and failure.value.code == "provider_unavailable"


@pytest.mark.parametrize("options", [{"tokens": "many"}, {"failAfter": "abc"}, {"pauseAfter": "x"}])
async def test_demo_rejects_options_that_are_not_numbers(options):
    """A bad option is the client's (`provider_bad_request`), never a server error."""
    with pytest.raises(ProviderError) as refused:
        async for _ in DemoProvider().stream(request(**options)):
            pass
    assert refused.value.code == "provider_bad_request"
