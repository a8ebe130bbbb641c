"""Screenshots of the chat page for docs/screenshots/ (desktop, three concurrent answers,
phone, dark).

Skipped unless CHAT_SCREENSHOTS=1, because it writes into the repository:

    CHAT_SCREENSHOTS=1 .venv/bin/python -m pytest tests/browser/test_screenshots.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import open_chat

expect = pytest.importorskip("playwright.async_api", reason="playwright is not installed").expect

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DESKTOP = {"viewport": {"width": 1280, "height": 1000}}
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True}


async def send(page: Any, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    await box.fill(text)
    await box.press("Enter")


@pytest.mark.skipif(not os.environ.get("CHAT_SCREENSHOTS"), reason="set CHAT_SCREENSHOTS=1 to refresh docs/screenshots")
async def test_chat_page_screenshots(person: Any, device: Any) -> None:
    alice, bob = await person("alice"), await person("bob")
    sid = (await alice.api.create_session(title="Weekend in Lisbon", model_options={"rate": 120}))["id"]
    await alice.api.add_member(sid, bob.username)
    laptop = await open_chat(await device(alice, **DESKTOP), sid)
    phone = await open_chat(await device(alice, **PHONE), sid)
    other = await open_chat(await device(bob, **DESKTOP), sid)

    # A first exchange, and an edit of it: a version behind the pager.
    await send(laptop, "Plan a 3 day trip to Lisbon")
    await expect(laptop.locator(".msg-assistant").last).to_have_attribute("data-status", "complete")
    await laptop.locator(".msg-user").first.get_by_role("button", name="Edit").click()
    await laptop.get_by_label("Edit your message").fill("Plan a 3 day trip to Lisbon, with a day in Sintra")
    await laptop.get_by_label("Edit your message").press("Enter")
    await expect(laptop.locator(".msg-user .sib-count").first).to_have_text("2/2")
    await expect(laptop.locator(".msg-assistant").last).to_have_attribute("data-status", "complete")

    # Three messages at once, from alice's laptop and phone and from bob: one timeline.
    await alice.api.request("PATCH", f"/api/sessions/{sid}", json={"modelOptions": {"rate": 4}})
    await send(laptop, "What should I pack? It may rain.")
    await send(other, "And a budget for two, please")
    await send(phone, "Prefer trains to taxis")
    streaming = laptop.locator('.msg-assistant[data-status="streaming"]')
    await expect(streaming).to_have_count(3)
    for index in range(3):
        await expect(streaming.nth(index).locator(".body")).to_have_text(re.compile(r"(\S+\s+){10}"))
    await laptop.get_by_label("Message", exact=True).fill("Which museum first?")

    OUT.mkdir(parents=True, exist_ok=True)
    await laptop.locator("#messages").evaluate("(log) => { log.scrollTop = log.scrollHeight; }")
    await laptop.screenshot(path=str(OUT / "chat-concurrent.png"))
    await laptop.locator("#messages").evaluate("(log) => { log.scrollTop = 0; }")
    await laptop.screenshot(path=str(OUT / "chat-desktop.png"))
    await phone.locator("#messages").evaluate("(log) => { log.scrollTop = log.scrollHeight; }")
    await phone.screenshot(path=str(OUT / "chat-phone.png"))
    dark = await open_chat(await device(bob, **DESKTOP, color_scheme="dark"), sid)
    await expect(dark.locator('.msg-assistant[data-status="streaming"]')).to_have_count(3)
    await dark.locator("#session-menu summary").click()
    await dark.screenshot(path=str(OUT / "chat-desktop-dark.png"))
    await alice.api.cancel(sid, all=True)
