"""The `anthropic` provider against a local server speaking the Messages SSE format,
through the official SDK."""

from __future__ import annotations

import asyncio

import pytest

from sessions_app.worker.providers.anthropic_provider import AnthropicProvider
from sessions_app.worker.providers.base import (
    Finish,
    ModelRequest,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolSpec,
    Usage,
)
from tests.providers.conftest import collect, request
from tests.providers.fakes import DROP, HANG, FakeVendor, Pause, Reply
from tests.providers.wire import (
    anthropic_block_stop,
    anthropic_end,
    anthropic_error,
    anthropic_start,
    anthropic_stream_error,
    anthropic_text_open,
    anthropic_thinking,
    anthropic_tool_use,
)

provider = AnthropicProvider()


def claude(**options) -> ModelRequest:
    return request("claude-test", **options)


async def test_streams_thinking_text_usage_and_stop_reason_with_options_on_the_wire(fake: FakeVendor):
    fake.script(
        Reply(
            stream=[
                *anthropic_start(input_tokens=25),
                *anthropic_thinking(0, "Let me ", "think."),
                *anthropic_text_open(1, "Hi", " there"),
                *anthropic_block_stop(1),
                *anthropic_end("max_tokens", 15),
            ]
        )
    )

    items, error = await collect(provider.stream(claude(system="Be brief.", temperature=0.5, thinkingBudget=2048)))

    assert error is None
    assert items == [
        ReasoningDelta("Let me "),
        ReasoningDelta("think."),
        TextDelta("Hi"),
        TextDelta(" there"),
        Usage(25, 15),
        Finish("max_tokens"),
    ]
    sent = fake.requests[0]
    assert sent.path == "/v1/messages" and sent.headers["authorization"] == "Bearer sk-ant-test-key"
    assert sent.json["stream"] is True and sent.json["system"] == "Be brief."
    assert sent.json["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert sent.json["max_tokens"] == 4096 + 2048 and sent.json["temperature"] == 0.5
    assert sent.json["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]


async def test_tool_use_json_fragments_become_one_tool_call_and_tools_are_offered(fake: FakeVendor):
    fake.script(
        Reply(
            stream=[
                *anthropic_start(),
                *anthropic_text_open(0, "Counting."),
                *anthropic_block_stop(0),
                *anthropic_tool_use(1, "toolu_01A09q90qw90lq917835lq9", "word_count", '{"text": "one two"}'),
                *anthropic_end("tool_use", 40),
            ]
        )
    )
    spec = ToolSpec(name="word_count", description="Count words.", parameters={"type": "object"})
    base = claude()

    items, error = await collect(provider.stream(ModelRequest(model=base.model, messages=base.messages, tools=(spec,))))

    assert error is None
    assert items[1] == ToolCall(id="toolu_01A09q90qw90lq917835lq9", name="word_count", arguments={"text": "one two"})
    assert items[-1] == Finish("tool_use")
    assert fake.requests[0].json["tools"] == [
        {"name": "word_count", "description": "Count words.", "input_schema": {"type": "object"}}
    ]


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (anthropic_error(401, "authentication_error", "invalid x-api-key"), "provider_auth"),
        (
            anthropic_error(
                429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"
            ),
            "provider_rate_limited",
        ),
        (anthropic_error(500, "api_error", "Internal server error"), "provider_unavailable"),
        (anthropic_error(529, "overloaded_error", "Overloaded"), "provider_unavailable"),
        (anthropic_error(504, "timeout_error", "Request timed out"), "provider_timeout"),
        (anthropic_error(400, "invalid_request_error", "max_tokens: Field required"), "provider_bad_request"),
    ],
)
async def test_http_errors_end_with_a_specific_code_and_the_vendors_message(fake: FakeVendor, reply, code):
    fake.script(reply)

    items, error = await collect(provider.stream(claude()))

    assert items == [] and error is not None
    assert error.code == code and error.message == reply.body["error"]["message"]


async def test_overloaded_error_event_inside_the_stream_keeps_what_streamed(fake: FakeVendor):
    fake.script(
        Reply(
            stream=[
                *anthropic_start(),
                *anthropic_text_open(0, "Part"),
                *anthropic_stream_error("overloaded_error", "Overloaded"),
            ]
        )
    )

    items, error = await collect(provider.stream(claude()))

    assert items == [TextDelta("Part")]
    assert error is not None and (error.code, error.message) == ("provider_unavailable", "Overloaded")


async def test_malformed_event_is_a_bad_response(fake: FakeVendor):
    fake.script(Reply(stream=[*anthropic_start(), b'event: content_block_delta\ndata: {"index": 0, "del\n\n']))

    items, error = await collect(provider.stream(claude()))

    assert items == [] and error is not None and error.code == "provider_bad_response"


async def test_stream_ending_without_message_stop_is_a_bad_response(fake: FakeVendor):
    fake.script(Reply(stream=[*anthropic_start(), *anthropic_text_open(0, "cut")]))

    items, error = await collect(provider.stream(claude()))

    assert items == [TextDelta("cut")]
    assert error is not None and error.code == "provider_bad_response"


async def test_connection_dropped_mid_stream_is_unavailable_after_the_partial_answer(fake: FakeVendor):
    fake.script(Reply(stream=[*anthropic_start(), *anthropic_text_open(0, "half"), DROP]))

    items, error = await collect(provider.stream(claude()))

    assert items == [TextDelta("half")]
    assert error is not None and error.code == "provider_unavailable"


async def test_slow_first_token_within_the_timeout_streams(fake: FakeVendor):
    fake.script(
        Reply(
            stream=[
                Pause(0.4),
                *anthropic_start(),
                *anthropic_text_open(0, "late"),
                *anthropic_block_stop(0),
                *anthropic_end(),
            ]
        )
    )

    items, error = await collect(provider.stream(claude()))

    assert error is None and items[0] == TextDelta("late")


async def test_first_token_slower_than_the_timeout_is_provider_timeout(fake: FakeVendor, settings):
    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "PROVIDER_TIMEOUT_SECONDS": 0.3}
    fake.script(Reply(stream=[*anthropic_start(), HANG]))

    items, error = await asyncio.wait_for(collect(provider.stream(claude())), 5)

    assert items == [] and error is not None and error.code == "provider_timeout"


@pytest.mark.parametrize("silent", [False, True], ids=["mid-stream", "while-silent"])
async def test_cancel_closes_the_upstream_connection_at_once(fake: FakeVendor, silent: bool):
    tail = [HANG] if silent else [*anthropic_text_open(1, *["word "] * 2000)[1:], Pause(0.01), HANG]
    fake.script(Reply(stream=[*anthropic_start(), *anthropic_text_open(0, "first "), *tail]))
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in provider.stream(claude()):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 5)
    recorded = await fake.request(0)
    cancelled_at = asyncio.get_running_loop().time()
    task.cancel()

    await asyncio.wait_for(recorded.closed.wait(), 1.0)
    assert recorded.closed_at is not None and recorded.closed_at - cancelled_at < 1.0
    assert not recorded.completed.is_set()
