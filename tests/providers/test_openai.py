"""The `openai` provider against a local server speaking the Chat Completions SSE format,
through the official SDK."""

from __future__ import annotations

import asyncio

import pytest

from sessions_app.worker.providers.base import Finish, ReasoningDelta, TextDelta, ToolCall, ToolSpec, Usage
from sessions_app.worker.providers.openai_provider import OpenAIProvider
from tests.providers.conftest import collect, request
from tests.providers.fakes import DROP, HANG, FakeVendor, Pause, Reply
from tests.providers.wire import openai_end, openai_error, openai_text, openai_tool_call

provider = OpenAIProvider()


async def test_streams_text_usage_and_finish_with_options_on_the_wire(fake: FakeVendor):
    fake.script(Reply(stream=[*openai_text("Hel", "lo", "!"), *openai_end("length", 12, 3)]))

    items, error = await collect(provider.stream(request(system="Be brief.", temperature=0.2, maxTokens=50)))

    assert error is None
    assert items == [TextDelta("Hel"), TextDelta("lo"), TextDelta("!"), Usage(12, 3), Finish("length")]
    sent = fake.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test-key"
    assert sent.json["stream"] is True and sent.json["stream_options"] == {"include_usage": True}
    assert sent.json["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    assert sent.json["temperature"] == 0.2 and sent.json["max_tokens"] == 50


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_deltas_of_compatible_servers_become_reasoning_parts(fake: FakeVendor, field: str):
    fake.script(Reply(stream=[*openai_text("42", reasoning=("Think", "ing"), reasoning_field=field), *openai_end()]))

    items, error = await collect(provider.stream(request()))

    assert error is None
    assert items[:3] == [ReasoningDelta("Think"), ReasoningDelta("ing"), TextDelta("42")]


async def test_tool_call_fragments_become_one_tool_call_and_tools_are_offered(fake: FakeVendor):
    fake.script(
        Reply(
            stream=[*openai_tool_call("call_abc", "word_count", '{"text": "one two three"}'), *openai_end("tool_calls")]
        )
    )
    spec = ToolSpec(name="word_count", description="Count words.", parameters={"type": "object"})
    base = request()
    items, error = await collect(provider.stream(type(base)(model=base.model, messages=base.messages, tools=(spec,))))

    assert error is None
    assert items[0] == ToolCall(id="call_abc", name="word_count", arguments={"text": "one two three"})
    assert items[-1] == Finish("tool_calls")
    assert fake.requests[0].json["tools"] == [
        {
            "type": "function",
            "function": {"name": "word_count", "description": "Count words.", "parameters": {"type": "object"}},
        }
    ]


@pytest.mark.parametrize(
    ("reply", "code", "retryable"),
    [
        (
            openai_error(401, "Incorrect API key provided: sk-test.", "invalid_request_error", "invalid_api_key"),
            "provider_auth",
            False,
        ),
        (
            openai_error(
                429, "Rate limit reached for gpt-test on requests per min (RPM).", "requests", "rate_limit_exceeded"
            ),
            "provider_rate_limited",
            True,
        ),
        (
            openai_error(500, "The server had an error while processing your request.", "server_error"),
            "provider_unavailable",
            True,
        ),
        (
            openai_error(503, "The engine is currently overloaded, please try again later.", "server_error"),
            "provider_unavailable",
            True,
        ),
        (openai_error(504, "Gateway timeout.", "server_error"), "provider_timeout", True),
        (openai_error(400, "Invalid value for 'temperature'.", "invalid_request_error"), "provider_bad_request", False),
    ],
)
async def test_http_errors_end_with_a_specific_code_and_the_vendors_message(fake: FakeVendor, reply, code, retryable):
    fake.script(reply)

    items, error = await collect(provider.stream(request()))

    assert items == [] and error is not None
    assert (error.code, error.retryable) == (code, retryable)
    assert error.message == reply.body["error"]["message"]


async def test_error_inside_the_stream_ends_with_the_vendors_message(fake: FakeVendor):
    error_chunk = b'data: {"error":{"message":"The server had an error.","type":"server_error","code":null}}\n\n'
    fake.script(Reply(stream=[*openai_text("partial"), error_chunk]))

    items, error = await collect(provider.stream(request()))

    assert items == [TextDelta("partial")]
    assert error is not None and error.code == "provider_unavailable" and error.message == "The server had an error."


async def test_malformed_stream_is_a_bad_response(fake: FakeVendor):
    fake.script(Reply(stream=[*openai_text("ok"), b'data: {"choices": [{"delta\n\n']))

    items, error = await collect(provider.stream(request()))

    assert items == [TextDelta("ok")]
    assert error is not None and error.code == "provider_bad_response"


async def test_stream_ending_before_a_finish_reason_is_a_bad_response(fake: FakeVendor):
    fake.script(Reply(stream=[*openai_text("cut")]))

    items, error = await collect(provider.stream(request()))

    assert items == [TextDelta("cut")]
    assert error is not None and error.code == "provider_bad_response"


async def test_connection_dropped_mid_stream_is_unavailable_after_the_partial_answer(fake: FakeVendor):
    fake.script(Reply(stream=[*openai_text("half an "), DROP]))

    items, error = await collect(provider.stream(request()))

    assert items == [TextDelta("half an ")]
    assert error is not None and error.code == "provider_unavailable"


async def test_slow_first_token_within_the_timeout_streams(fake: FakeVendor):
    fake.script(Reply(stream=[Pause(0.4), *openai_text("late"), *openai_end()]))

    items, error = await collect(provider.stream(request()))

    assert error is None and items[0] == TextDelta("late")


async def test_first_token_slower_than_the_timeout_is_provider_timeout(fake: FakeVendor, settings):
    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "PROVIDER_TIMEOUT_SECONDS": 0.3}
    fake.script(Reply(stream=[HANG]))

    items, error = await asyncio.wait_for(collect(provider.stream(request())), 5)

    assert items == [] and error is not None
    assert (error.code, error.retryable) == ("provider_timeout", True)


async def test_bad_option_fails_before_any_request(fake: FakeVendor):
    items, error = await collect(provider.stream(request(temprature=0.2)))

    assert items == [] and error is not None
    assert error.code == "provider_bad_request" and "temprature" in error.message
    assert fake.requests == []


@pytest.mark.parametrize("silent", [False, True], ids=["mid-stream", "while-silent"])
async def test_cancel_closes_the_upstream_connection_at_once(fake: FakeVendor, silent: bool):
    tail = [HANG] if silent else [*(openai_text(*["word "] * 2000)[1:]), Pause(0.01), HANG]
    fake.script(Reply(stream=[*openai_text("first "), *tail]))
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in provider.stream(request()):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 5)
    recorded = await fake.request(0)
    assert not recorded.closed.is_set()
    cancelled_at = asyncio.get_running_loop().time()
    task.cancel()

    await asyncio.wait_for(recorded.closed.wait(), 1.0)
    assert recorded.closed_at is not None and recorded.closed_at - cancelled_at < 1.0
    assert not recorded.completed.is_set()
