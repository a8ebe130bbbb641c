"""Which models exist depends on the environment only; options are checked up front."""

from __future__ import annotations

import pytest

from sessions_app.worker.providers import registry
from sessions_app.worker.providers.base import ProviderError
from sessions_app.worker.providers.context import rounds, trim
from sessions_app.worker.providers.options import parse_options


@pytest.fixture
def no_vendors(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI", "ANTHROPIC"):
        for suffix in ("API_KEY", "BASE_URL", "MODELS"):
            monkeypatch.delenv(f"{name}_{suffix}", raising=False)


def test_vendors_are_offered_only_when_configured(no_vendors: None, monkeypatch: pytest.MonkeyPatch):
    assert registry.available_models() == ["demo"]
    assert not registry.is_configured("openai:gpt-4.1-mini")
    assert not registry.is_configured("demo:gpt-5") and not registry.is_configured("demo:")  # one demo model

    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")  # a keyless local server
    monkeypatch.setenv("OPENAI_MODELS", "llama3.2, qwen3")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-x")

    assert registry.available_models() == ["demo", "openai:llama3.2", "openai:qwen3"]
    assert registry.is_configured("openai:qwen3") and not registry.is_configured("openai:gpt-4.1")
    assert registry.is_configured("anthropic:claude-sonnet-4-5")  # no list: any model
    assert not registry.is_configured("anthropic:") and not registry.is_configured("other:model")


@pytest.mark.parametrize(
    "options",
    [
        {"temperature": 3},
        {"temperature": "hot"},
        {"maxTokens": 0},
        {"maxTokens": 1.5},
        {"system": 5},
        {"reasoningEffort": "extreme"},
        {"thinkingBudget": 10},
        {"tools": "yes"},
        {"tokens": 5},
    ],
)
def test_bad_options_are_refused_with_a_clear_code(options):
    with pytest.raises(ProviderError) as raised:
        parse_options(options)
    assert raised.value.code == "provider_bad_request" and next(iter(options)) in raised.value.message


def test_trim_keeps_the_prompt_even_over_budget_and_starts_with_a_user_message():
    def node(role: str, text: str) -> dict:
        return {"role": role, "parts": [{"type": "text", "text": text}]}

    messages = [node("user", "a" * 10), node("assistant", "b" * 10), node("user", "c" * 50)]
    assert trim(messages, 5) == [messages[-1]]
    assert trim(messages, 65) == [messages[-1]]  # an answer alone never leads
    assert trim(messages, 70) == messages


def test_rounds_split_an_answer_at_each_batch_of_tool_results():
    call = {"type": "tool-call", "id": "1", "name": "t", "arguments": {}}
    result = {"type": "tool-result", "id": "1", "name": "t", "result": 1, "isError": False}
    text = {"type": "text", "text": "done"}
    split = rounds([call, result, text])
    assert [(r.said, r.results) for r in split] == [([call], [result]), ([text], [])]
