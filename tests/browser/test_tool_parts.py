"""Tool parts on the chat page: a turn whose model calls a server-side tool, against the real
stack configured as the provider tests configure it (the fake OpenAI-compatible server of
tests/providers and the example tool `word_count`), watched live in headless Chromium."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.browser.conftest import open_chat
from tests.providers.conftest import vendor_server  # noqa: F401  (a fixture of this module too)
from tests.providers.fakes import FakeVendor, Pause, Reply
from tests.providers.test_stack import provider_stack  # noqa: F401  (a fixture of this module too)
from tests.providers.wire import openai_end, openai_text, openai_tool_call
from tests.stack import Stack

expect = pytest.importorskip("playwright.async_api", reason="playwright is not installed").expect

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

# The model's arguments carry markup: the page must show it as the characters it is.
COUNTED = "<img src=x onerror=window.__xss=1> one two"
ARGUMENTS = json.dumps({"text": COUNTED})

# Every state the newest answer's body goes through, as the kinds of its children in order:
# "tool-call" / "tool-result" (data-part), "typing", or "text" (what the Markdown made).
WATCH_BODIES = """() => {
  window.__bodies = [];
  const shape = () => {
    const answer = [...document.querySelectorAll("#messages .msg-assistant")].at(-1);
    if (!answer) return null;
    const kinds = [...answer.querySelector(".body").children].map((child) =>
      child.dataset.part || (child.classList.contains("typing") ? "typing" : "text"));
    return {status: answer.dataset.status, kinds: kinds.filter((k, i) => k !== kinds[i - 1]).join(",")};
  };
  new MutationObserver(() => {
    const seen = shape();
    const last = window.__bodies.at(-1);
    if (seen && (!last || last.kinds !== seen.kinds || last.status !== seen.status)) window.__bodies.push(seen);
  }).observe(document.getElementById("messages"), {subtree: true, childList: true, characterData: true,
                                                   attributes: true, attributeFilter: ["data-status"]});
}"""

BODY_KINDS = """(body) => [...body.children].map((child) => child.dataset.part || child.tagName.toLowerCase())"""


def tool_turn() -> list[Reply]:
    """Text, then a call of word_count; after the tool's result (and a short silence), more text."""
    return [
        Reply(
            stream=[
                *openai_text("Let me count. "),
                *openai_tool_call("call_1", "word_count", ARGUMENTS),
                *openai_end("tool_calls", 10, 5),
            ]
        ),
        Reply(stream=[Pause(0.5), *openai_text("Five ", "words."), *openai_end("stop", 30, 3)]),
    ]


async def test_tool_call_and_result_show_live_in_order_with_the_text(
    browser: Any,
    provider_stack: Stack,  # noqa: F811
    vendor_server: FakeVendor,  # noqa: F811
    person: Callable[..., Any],
    device: Callable[..., Any],
) -> None:
    alice = await person("tools", base_url=provider_stack.base_url)
    session = await alice.api.create_session(model="openai:gpt-test")
    dev = await device(alice, base_url=provider_stack.base_url)
    page = await open_chat(dev, session["id"])
    await page.evaluate("() => { window.__sameDocument = true; }")  # gone if the page reloads
    await page.evaluate(WATCH_BODIES)
    vendor_server.script(*tool_turn())

    box = page.get_by_label("Message", exact=True)
    await box.fill("Count: " + COUNTED)
    await box.press("Enter")

    answer = page.locator("#messages .msg-assistant").last
    call = answer.locator('.body .tool-part[data-part="tool-call"]')
    result = answer.locator('.body .tool-part[data-part="tool-result"]')
    await expect(call).to_contain_text("Tool call")
    await expect(call.locator(".tool-name")).to_have_text("word_count")
    await expect(call.locator(".tool-value")).to_contain_text(COUNTED)  # the markup, as text
    await expect(result).to_contain_text("Tool result")
    await expect(result.locator(".tool-value")).to_contain_text('"words": 5')
    await expect(result).to_have_attribute("data-error", "false")
    await expect(call).to_have_attribute("data-tool-id", "call_1")
    await expect(answer).to_have_attribute("data-status", "complete")
    await expect(answer.locator(".body")).to_contain_text("Five words.")

    # In order with the text: the text before the call, the call, its result, the text after.
    body = answer.locator(".body")
    assert await body.evaluate(BODY_KINDS) == ["p", "tool-call", "tool-result", "p"]
    assert (await body.locator("p").first.text_content() or "").strip() == "Let me count."
    assert await body.locator("img").count() == 0
    assert await page.evaluate("() => window.__xss") is None

    # Live: while the model was still answering after the result, the page already showed
    # the call and the result (then "…"), and it never reloaded or resynced.
    bodies = await page.evaluate("() => window.__bodies")
    assert {"status": "streaming", "kinds": "text,tool-call,tool-result,typing"} in bodies, bodies
    assert bodies[-1] == {"status": "complete", "kinds": "text,tool-call,tool-result,text"}, bodies
    assert await page.evaluate("() => window.__sameDocument") is True
    stats = await page.evaluate("() => window.chat.stats")
    assert stats == {"snapshots": 1, "resumes": 0, "gaps": 0, "duplicates": 0}

    # The transport's parts are the server's (what a snapshot or a reload would give).
    turn_id = await page.evaluate("() => [...window.chat.turns.keys()].at(-1)")
    live_parts = await page.evaluate(f"() => window.chat.answerOf({json.dumps(turn_id)}).parts")
    stored = next(m for m in (await alice.api.messages(session["id"]))["results"] if m["role"] == "assistant")
    assert [p["type"] for p in stored["parts"]] == ["text", "tool-call", "tool-result", "text"]
    assert live_parts == stored["parts"]
    assert stored["parts"][2]["result"] == {"words": 5, "characters": len(COUNTED)}
    assert dev.errors == []
