"""The demo model demonstrates: readable answers about the prompt that say they come from
a demo, a pace at which Stop can be tried, a new wording for each turn (Regenerate), and
exactly the asked words when `tokens` is set (tests and benchmarks rely on that)."""

from __future__ import annotations

from sessions_app.worker.providers.base import ModelRequest, StreamItem, TextDelta, Usage
from sessions_app.worker.providers.demo import DemoProvider, demo_answer, demo_tokens


def request(prompt: str, turn_id: str = "", **options: object) -> ModelRequest:
    messages = [{"role": "user", "parts": [{"type": "text", "text": prompt}]}]
    return ModelRequest(model="demo", messages=messages, options=options, turn_id=turn_id)


async def streamed(req: ModelRequest) -> tuple[str, list[StreamItem]]:
    items = [item async for item in DemoProvider().stream(req)]
    return "".join(i.text for i in items if isinstance(i, TextDelta)), items


async def test_the_default_answer_is_about_the_prompt_and_says_it_is_a_demo() -> None:
    text, items = await streamed(request("Plan a weekend in Lisbon with trains", "turn-1", rate=100_000))
    assert text == "".join(demo_answer("Plan a weekend in Lisbon with trains", "turn-1"))
    assert "demo model" in text and "Lisbon" in text and "“Plan a weekend in Lisbon with trains”" in text
    assert "\n- " in text  # Markdown: a list the page renders
    words = len(text.split())
    assert 80 <= words <= 160  # at the default 30 words a second: a few seconds to try Stop
    assert Usage(input_tokens=7, output_tokens=words) in items


def test_each_turn_words_its_answer_differently_and_a_turn_always_the_same_way() -> None:
    answers = {"".join(demo_answer("Tell me about owls", f"turn-{n}")) for n in range(6)}
    assert len(answers) > 1
    assert demo_answer("Tell me about owls", "turn-1") == demo_answer("Tell me about owls", "turn-1")
    assert all("owls" in answer for answer in answers)


async def test_tokens_gives_exactly_that_many_words_whatever_the_turn() -> None:
    first, _ = await streamed(request("owls", "turn-1", tokens=150, rate=100_000))
    again, _ = await streamed(request("owls", "turn-2", tokens=150, rate=100_000))
    assert first == again == "".join(demo_tokens("owls", 150))
    assert len(demo_tokens("owls", 150)) == 150 and all(t.endswith(" ") for t in demo_tokens("owls", 150))
    assert demo_tokens("owls", 150)[:40] == demo_answer("owls")[:40]  # the same answer, continued
