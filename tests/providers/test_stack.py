"""End to end: the real stack (Daphne + Celery worker) configured by environment to reach
a fake vendor in this test process, driven by the protocol client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from chat_client import ChatClient
from tests.conftest import PASSWORD
from tests.integration.helpers import assert_clean
from tests.providers.fakes import HANG, FakeVendor, Reply
from tests.providers.test_runner import tool_round
from tests.providers.wire import anthropic_start, anthropic_text_open, openai_error
from tests.stack import Stack


@pytest.fixture(scope="session")
def provider_stack(stack_factory: Callable[..., Stack], vendor_server: FakeVendor) -> Stack:
    return stack_factory(
        {
            "OPENAI_API_KEY": "sk-test-key",
            "OPENAI_BASE_URL": f"{vendor_server.url}/v1",
            "OPENAI_MODELS": "gpt-test",
            "ANTHROPIC_API_KEY": "sk-ant-test-key",
            "ANTHROPIC_BASE_URL": vendor_server.url,
            "ANTHROPIC_MODELS": "claude-test",
            "CHAT_TOOLS": "sessions_app.worker.providers.tools_example.word_count",
            "CHAT_PROVIDER_RETRIES": "0",
        }
    )


@pytest_asyncio.fixture
async def client(
    provider_stack: Stack, vendor_server: FakeVendor, create_user: Callable[[str], str]
) -> AsyncIterator[ChatClient]:
    vendor_server.script()
    chat = await ChatClient.login(provider_stack.base_url, create_user("prov"), PASSWORD)
    yield chat
    await chat.aclose()


async def test_models_list_the_configured_vendors(client: ChatClient):
    models = (await client.request("GET", "/api/models"))["results"]

    assert models == ["demo", "openai:gpt-test", "anthropic:claude-test"]


async def test_openai_turn_streams_text_and_tool_parts_to_every_device(client: ChatClient, vendor_server: FakeVendor):
    vendor_server.script(*tool_round("openai"))
    session = await client.create_session(model="openai:gpt-test", model_options={"system": "Be brief."})
    phone, laptop = await asyncio.gather(client.connect(session["id"]), client.connect(session["id"]))

    turn = await phone.send("Count: one two three")
    streamed = "".join([text async for text in turn.stream()])
    await laptop.wait_turn_end(turn.turn_id)

    assert streamed == "Three words."
    for device in (phone, laptop):
        kinds = [e["type"] for e in device.turn_events(turn.turn_id)]
        assert kinds.index("tool.call") < kinds.index("tool.result") < kinds.index("delta")
        assert device.turns[turn.turn_id]["status"] == "complete"
    assert_clean(phone, laptop)
    detail = await client.turn(session["id"], turn.turn_id)
    assert detail["status"] == "complete" and detail["content"] == "Three words."
    assert detail["usage"] == {"inputTokens": 40, "outputTokens": 8}
    answer = next(m for m in (await client.messages(session["id"]))["results"] if m["role"] == "assistant")
    assert [p["type"] for p in answer["parts"]] == ["tool-call", "tool-result", "text"]
    assert vendor_server.requests[0].json["messages"][0] == {"role": "system", "content": "Be brief."}
    await asyncio.gather(phone.close(), laptop.close())


async def test_cancel_while_the_model_is_silent_closes_the_upstream_stream(
    client: ChatClient, vendor_server: FakeVendor
):
    vendor_server.script(Reply(stream=[*anthropic_start(), *anthropic_text_open(0, "Let me see"), HANG]))
    session = await client.create_session(model="anthropic:claude-test")
    device = await client.connect(session["id"])

    turn = await device.send("Something slow")
    await device.wait_event(lambda e: e["type"] == "delta" and e.get("turnId") == turn.turn_id)
    recorded = await vendor_server.request(0)
    await turn.cancel()
    end = await turn.end(timeout=10)

    await asyncio.wait_for(recorded.closed.wait(), 2.0)
    assert end["reason"] == "cancelled"
    assert device.text_of(turn.ack["assistantMessageId"]) == "Let me see"
    await device.close()


async def test_vendor_error_ends_only_that_turn_with_its_code(client: ChatClient, vendor_server: FakeVendor):
    vendor_server.script(openai_error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"))
    session = await client.create_session(model="openai:gpt-test")
    device = await client.connect(session["id"])

    turn = await device.send("Hello")
    end: dict[str, Any] = await turn.end(timeout=10)

    assert end["reason"] == "error"
    assert end["error"] == {"code": "provider_auth", "message": "Incorrect API key provided."}
    await device.close()
