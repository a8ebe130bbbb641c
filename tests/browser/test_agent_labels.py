"""Agents on the chat page: a message to a session with an orchestrating agent, watched in
headless Chromium against the real stack of tests/integration/test_agents.py. The browser
transport keeps the agents in its active-turns map under their clientIds, and each answer is
labelled with the agent that wrote it: the sub-agents' answers and the orchestrator's summary
all show, one after the other, under the message (they ran concurrently)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.browser.conftest import open_chat
from tests.integration.test_agents import agent_stack, vendor  # noqa: F401  (fixtures of this module too)
from tests.stack import Stack

expect = pytest.importorskip("playwright.async_api", reason="playwright is not installed").expect

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def test_each_answer_shows_the_agent_that_wrote_it_and_agents_are_in_the_active_turns_map(
    browser: Any,
    agent_stack: Stack,  # noqa: F811
    person: Callable[..., Any],
    device: Callable[..., Any],
) -> None:
    alice = await person("agents", base_url=agent_stack.base_url)
    session = await alice.api.create_session(title="panel")
    await alice.api.request("POST", f"/api/sessions/{session['id']}/agents", json={"name": "panel"})
    dev = await device(alice, base_url=agent_stack.base_url)
    page = await open_chat(dev, session["id"])

    box = page.get_by_label("Message", exact=True)
    await box.fill("Plan a weekend in Lisbon")
    await box.press("Enter")

    # Both sub-agents generate at once, in the transport's map under their clientIds.
    await page.wait_for_function(
        """() => ["agent:researcher", "agent:critic"].every((c) => window.chat.activeTurns.has(c))"""
    )
    answer = page.locator("#messages .msg-assistant").last
    await expect(answer).to_have_attribute("data-status", "complete")
    await expect(answer).to_have_attribute("data-agent", "panel")
    await expect(answer.locator(".who")).to_have_text("panel · agent")
    # The sub-agents' answers ran concurrently (siblings without forkOf): all shown, in the
    # order they were made, each labelled; no version pager (decision 021).
    answers = page.locator("#messages .msg-assistant")
    await expect(answers).to_have_count(3)
    await expect(page.locator("#messages .siblings:visible")).to_have_count(0)
    labels = await answers.locator(".who").all_inner_texts()
    assert sorted(labels[:2]) == ["critic · agent", "researcher · agent"] and labels[2] == "panel · agent"
    assert await page.evaluate("() => window.chat.activeTurns.size") == 0
    assert dev.errors == []
