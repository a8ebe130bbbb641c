"""Screenshots of the chat page for docs/screenshots/ (desktop, phone, dark).

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


@pytest.mark.skipif(not os.environ.get("CHAT_SCREENSHOTS"), reason="set CHAT_SCREENSHOTS=1 to refresh docs/screenshots")
async def test_chat_page_screenshots(person: Any, device: Any) -> None:
    alice, bob = await person("alice"), await person("bob")
    sid = (await alice.api.create_session(title="Weekend in Lisbon", model_options={"tokens": 28, "rate": 80}))["id"]
    await alice.api.add_member(sid, bob.username)
    desktop = await device(alice, viewport={"width": 1280, "height": 1000})
    page = await open_chat(desktop, sid)
    await open_chat(await device(bob), sid)  # bob is online

    await page.get_by_label("Message", exact=True).fill("Plan a 3 day trip to Lisbon")
    await page.get_by_label("Message", exact=True).press("Enter")
    await expect(page.locator(".msg-assistant").last).to_have_attribute("data-status", "complete")
    await page.locator(".msg-user").first.get_by_role("button", name="Edit").click()
    await page.get_by_label("Edit your message").fill("Plan a 3 day trip to Lisbon, with a day in Sintra")
    await page.get_by_label("Edit your message").press("Enter")
    await expect(page.locator(".msg-user .sib-count").first).to_have_text("2/2")
    await expect(page.locator(".msg-assistant").last).to_have_attribute("data-status", "complete")

    await alice.api.request("PATCH", f"/api/sessions/{sid}", json={"modelOptions": {"tokens": 400, "rate": 6}})
    await page.get_by_label("Message", exact=True).fill("What should I pack?\nIt may rain.")
    await page.get_by_label("Message", exact=True).press("Enter")
    streaming = page.locator('.msg-assistant[data-status="streaming"] .body')
    await expect(streaming).to_have_text(re.compile(r"(\w+ ){8}"))
    await bob.api.send(sid, "And a budget for two, please", policy="queue")
    await expect(page.locator(".msg-assistant").last).to_have_attribute("data-status", "queued")
    await page.get_by_label("Message", exact=True).fill("Prefer trains to taxis")

    OUT.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(OUT / "chat-desktop.png"))
    phone = await device(alice, viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    mobile = await open_chat(phone, sid)
    await expect(mobile.locator(".msg-assistant").last).to_have_attribute("data-status", "queued")
    await mobile.screenshot(path=str(OUT / "chat-phone.png"))
    dark = await device(alice, viewport={"width": 1280, "height": 1000}, color_scheme="dark")
    night = await open_chat(dark, sid)
    await expect(night.locator(".msg-assistant").last).to_have_attribute("data-status", "queued")
    await night.screenshot(path=str(OUT / "chat-desktop-dark.png"))
    await alice.api.cancel(sid, all=True)
