"""The runner with real providers: retry before the first token only, the tool loop (both
vendors' tool-call wire formats), abort during a tool and during a silent model, the
context budget. In process: the runner publishes to the test Redis; the vendor is fake."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest

from sessions_app.events.types import validate_event
from sessions_app.turns.types import ClaimedTurn, TurnOutcome
from sessions_app.worker.providers.demo import DemoProvider
from sessions_app.worker.providers.tools import Tool, ToolContext
from sessions_app.worker.turn_stream import TurnRunner
from tests.providers.fakes import DROP, HANG, FakeVendor, Reply
from tests.providers.wire import (
    anthropic_block_stop,
    anthropic_end,
    anthropic_error,
    anthropic_start,
    anthropic_stream_error,
    anthropic_text_open,
    anthropic_tool_use,
    openai_end,
    openai_error,
    openai_text,
    openai_tool_call,
)

WORD_COUNT = "sessions_app.worker.providers.tools_example.word_count"


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"type": "text", "text": text}]}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "parts": [{"type": "text", "text": text}]}


def claimed(model: str, context: list[dict[str, Any]] | None = None, **options: Any) -> ClaimedTurn:
    return ClaimedTurn(
        pk=0,
        session_id=str(uuid.uuid4()),
        turn_id=f"t-{uuid.uuid4().hex[:8]}",
        client_id="tester",
        model=model,
        model_options=options,
        assistant_message_id=f"a-{uuid.uuid4().hex[:8]}",
        cancel_requested=False,
        context=context or [user("Count the words of: one two three")],
    )


class Run:
    """A TurnRunner in a task, with the events it published."""

    def __init__(self, turn: ClaimedTurn) -> None:
        self.abort = asyncio.Event()
        self.events: list[dict[str, Any]] = []
        self.published = asyncio.Event()
        self.runner = TurnRunner(turn, self.abort, lambda: 0.0, self._on_frames)
        self.task = asyncio.create_task(self.runner.run())

    def _on_frames(self, session_id: str, events: list[dict[str, Any]], frames: list[str]) -> None:
        self.events.extend(orjson.loads(f) for f in frames)
        self.published.set()

    async def outcome(self, timeout: float = 10) -> TurnOutcome:
        return await asyncio.wait_for(self.task, timeout)


@pytest.fixture
def quick_retries(settings: Any) -> None:
    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "PROVIDER_RETRIES": 2, "PROVIDER_RETRY_BACKOFF_SECONDS": 0.01}


async def test_failure_before_the_first_token_is_retried_with_backoff(fake: FakeVendor, quick_retries: None):
    fake.script(
        openai_error(503, "The engine is currently overloaded.", "server_error"),
        openai_error(429, "Rate limit reached.", "requests", "rate_limit_exceeded"),
        Reply(stream=[*openai_text("at ", "last"), *openai_end("stop", 5, 2)]),
    )

    outcome = await Run(claimed("openai:gpt-test")).outcome()

    assert outcome.status == "complete" and outcome.parts == [{"type": "text", "text": "at last"}]
    assert outcome.usage == {"inputTokens": 5, "outputTokens": 2} and outcome.finish_reason == "stop"
    assert len(fake.requests) == 3


async def test_retries_exhausted_end_the_turn_with_the_code(fake: FakeVendor, quick_retries: None):
    fake.script(*[anthropic_error(529, "overloaded_error", "Overloaded")] * 3)

    outcome = await Run(claimed("anthropic:claude-test")).outcome()

    assert (outcome.status, outcome.error_code, outcome.error_message) == (
        "error",
        "provider_unavailable",
        "Overloaded",
    )
    assert len(fake.requests) == 3


async def test_failure_after_tokens_is_not_retried_and_keeps_the_partial_answer(fake: FakeVendor, quick_retries: None):
    fake.script(
        Reply(
            stream=[
                *anthropic_start(),
                *anthropic_text_open(0, "Half ", "an answer"),
                *anthropic_stream_error("overloaded_error", "Overloaded"),
            ]
        ),
        Reply(stream=[*anthropic_start(), *anthropic_text_open(0, "second try"), *anthropic_end()]),
    )

    run = Run(claimed("anthropic:claude-test"))
    outcome = await run.outcome()

    assert (outcome.status, outcome.error_code) == ("error", "provider_unavailable")
    assert outcome.parts == [{"type": "text", "text": "Half an answer"}]
    assert len(fake.requests) == 1


async def test_dropped_connection_keeps_the_partial_answer(fake: FakeVendor, quick_retries: None):
    fake.script(Reply(stream=[*openai_text("kept "), DROP]))

    outcome = await Run(claimed("openai:gpt-test")).outcome()

    assert (outcome.status, outcome.error_code) == ("error", "provider_unavailable")
    assert outcome.parts == [{"type": "text", "text": "kept "}]


def tool_round(vendor: str) -> list[Reply]:
    arguments = '{"text": "one two three"}'
    if vendor == "openai":
        return [
            Reply(stream=[*openai_tool_call("call_1", "word_count", arguments), *openai_end("tool_calls", 10, 5)]),
            Reply(stream=[*openai_text("Three words."), *openai_end("stop", 30, 3)]),
        ]
    return [
        Reply(
            stream=[
                *anthropic_start(10),
                *anthropic_tool_use(0, "toolu_1", "word_count", arguments),
                *anthropic_end("tool_use", 5),
            ]
        ),
        Reply(
            stream=[
                *anthropic_start(30),
                *anthropic_text_open(0, "Three words."),
                *anthropic_block_stop(0),
                *anthropic_end("end_turn", 3),
            ]
        ),
    ]


@pytest.mark.parametrize("model", ["openai:gpt-test", "anthropic:claude-test"])
async def test_tool_call_runs_the_tool_streams_both_parts_and_feeds_the_result_back(
    fake: FakeVendor, settings: Any, model: str
):
    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "TOOLS": [WORD_COUNT]}
    vendor = model.split(":")[0]
    fake.script(*tool_round(vendor))

    run = Run(claimed(model))
    outcome = await run.outcome()

    call_id = "call_1" if vendor == "openai" else "toolu_1"
    call = {"type": "tool-call", "id": call_id, "name": "word_count", "arguments": {"text": "one two three"}}
    result = {
        "type": "tool-result",
        "id": call_id,
        "name": "word_count",
        "result": {"words": 3, "characters": 13},
        "isError": False,
    }
    assert outcome.status == "complete"
    assert outcome.parts == [call, result, {"type": "text", "text": "Three words."}]
    assert outcome.usage == {"inputTokens": 40, "outputTokens": 8}
    kinds = [e["type"] for e in run.events]
    assert kinds == ["tool.call", "tool.result", "delta"]
    assert run.events[0]["part"] == call and run.events[1]["part"] == result
    for event in run.events:
        validate_event(event)
    assert outcome.content_seq == run.events[-1]["seq"]
    second = fake.requests[1].json["messages"]
    if vendor == "openai":
        assert second[-2] == {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "word_count", "arguments": '{"text": "one two three"}'},
                }
            ],
        }
        assert second[-1] == {"role": "tool", "tool_call_id": "call_1", "content": '{"words": 3, "characters": 13}'}
    else:
        assert second[-2] == {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "word_count", "input": {"text": "one two three"}}
            ],
        }
        assert second[-1] == {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": '{"words": 3, "characters": 13}',
                    "is_error": False,
                }
            ],
        }


class SlowTool:
    """A tool that waits until cancelled, recording that it saw the abort."""

    started = asyncio.Event()
    saw_abort = False

    @classmethod
    async def run(cls, arguments: dict[str, Any], context: ToolContext) -> str:
        cls.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cls.saw_abort = context.aborted()
            raise
        return "never"


SLOW = Tool(name="slow", description="Waits.", parameters={"type": "object"}, fn=SlowTool.run)


async def test_cancel_while_a_tool_runs_ends_cancelled_and_the_tool_sees_the_abort(fake: FakeVendor, settings: Any):
    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "TOOLS": ["tests.providers.test_runner.SLOW"]}
    SlowTool.started, SlowTool.saw_abort = asyncio.Event(), False
    fake.script(Reply(stream=[*openai_tool_call("call_9", "slow", "{}"), *openai_end("tool_calls")]))

    run = Run(claimed("openai:gpt-test"))
    await asyncio.wait_for(SlowTool.started.wait(), 10)
    run.abort.set()
    outcome = await run.outcome(timeout=2)

    assert outcome.status == "cancelled" and SlowTool.saw_abort
    assert [p["type"] for p in outcome.parts] == ["tool-call"]
    assert len(fake.requests) == 1


async def test_abort_while_the_model_is_silent_closes_the_upstream_stream(fake: FakeVendor):
    fake.script(Reply(stream=[*anthropic_start(), *anthropic_text_open(0, "Thinking about it"), HANG]))

    run = Run(claimed("anthropic:claude-test"))
    await asyncio.wait_for(run.published.wait(), 10)
    recorded = await fake.request(0)
    run.abort.set()
    outcome = await run.outcome(timeout=2)

    await asyncio.wait_for(recorded.closed.wait(), 1.0)
    assert outcome.status == "cancelled"
    assert outcome.parts == [{"type": "text", "text": "Thinking about it"}]


async def test_context_is_trimmed_to_the_budget_from_the_newest_message(fake: FakeVendor, settings: Any):
    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "CONTEXT_BUDGET_CHARS": 25}
    context = [
        user("first question"),
        assistant("first answer"),
        user("second q"),
        assistant("second a"),
        user("third q"),
    ]
    fake.script(Reply(stream=[*openai_text("ok"), *openai_end()]))

    outcome = await Run(claimed("openai:gpt-test", context)).outcome()

    assert outcome.status == "complete"
    assert fake.requests[0].json["messages"] == [
        {"role": "user", "content": "second q"},
        {"role": "assistant", "content": "second a"},
        {"role": "user", "content": "third q"},
    ]


async def test_concurrent_turns_each_send_their_own_branch(fake: FakeVendor):
    root = [user("root"), assistant("answer")]
    fake.script(*[Reply(stream=[*openai_text("x"), *openai_end()])] * 2)

    runs = [Run(claimed("openai:gpt-test", [*root, user(f"branch {b}")])) for b in "AB"]
    outcomes = await asyncio.gather(*(r.outcome() for r in runs))

    assert [o.status for o in outcomes] == ["complete", "complete"]
    sent = sorted(r.json["messages"][-1]["content"] for r in fake.requests)
    assert sent == ["branch A", "branch B"]
    assert all(
        r.json["messages"][:2] == [{"role": "user", "content": "root"}, {"role": "assistant", "content": "answer"}]
        for r in fake.requests
    )


async def test_an_unexpected_failure_ends_the_turn_internal_and_tells_members_nothing_of_its_cause(
    monkeypatch: pytest.MonkeyPatch,
):
    """What members see of a turn that failed on the server: `internal` and a fixed message,
    never the exception's text (a path, a key, a provider's internals), which goes to the
    log only."""

    async def failing(self: DemoProvider, request: Any) -> Any:
        raise RuntimeError("secret-internal-detail")
        yield  # an async generator, as a provider's stream is

    monkeypatch.setattr(DemoProvider, "stream", failing)
    run = Run(claimed("demo"))

    outcome = await run.outcome()

    assert (outcome.status, outcome.error_code) == ("error", "internal")
    assert "secret" not in outcome.error_message and "secret" not in orjson.dumps(run.events).decode()
