"""Browser tests: Playwright (async API) driving Debian's Chromium, headless, against the
real stack (`stack` fixture: Daphne + Celery worker).

They skip, with the reason, when Playwright or Chromium is missing. Chromium is found at
$CHROMIUM_PATH, else `chromium` on PATH. Playwright's bundled browsers are never used (they
would need `playwright install`, a download).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from chat_client import ChatClient
from tests.conftest import PASSWORD
from tests.stack import Stack

try:
    from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
except ImportError:  # pragma: no cover - depends on the environment
    async_playwright = None  # type: ignore[assignment]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 20_000  # a loaded 2-core machine runs the stack and the browser together


def chromium_path() -> str | None:
    candidate = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
    return candidate if candidate and os.access(candidate, os.X_OK) else None


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    if async_playwright is None:
        pytest.skip("playwright is not installed (pip install -r requirements-dev.txt)")
    path = chromium_path()
    if path is None:
        pytest.skip("Chromium not found: apt-get install chromium, or set CHROMIUM_PATH")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        expect.set_options(timeout=TIMEOUT_MS)
        yield launched
        await launched.close()


@dataclass
class Person:
    """A user of the tests: a username and an API client (for setup and for checking the
    server's view), plus the browser devices opened for them."""

    username: str
    api: ChatClient


@dataclass
class Device:
    context: BrowserContext
    page: Page
    errors: list[str]


@pytest_asyncio.fixture(loop_scope="session")
async def person(
    browser: Browser,
    stack: Stack,
    create_user: Callable[[str], str],
) -> AsyncIterator[Callable[..., Awaitable[Person]]]:
    """`await person("alice")`: a new user with an API client. Depends on `browser` so that a
    missing Chromium skips before the stack starts."""
    made: list[Person] = []

    async def make(prefix: str = "user", base_url: str | None = None) -> Person:
        username = create_user(prefix)
        made.append(Person(username, await ChatClient.login(base_url or stack.base_url, username, PASSWORD)))
        return made[-1]

    yield make
    for one in made:
        await one.api.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def device(browser: Browser, stack: Stack) -> AsyncIterator[Callable[..., Awaitable[Device]]]:
    """`await device(person, viewport=...)`: a new browser context (a device) logged in as
    `person` through the real login page (of `base_url`, default the shared stack). Script
    errors on its pages are collected."""
    contexts: list[BrowserContext] = []

    async def open_device(who: Person, base_url: str | None = None, **options: Any) -> Device:
        context = await browser.new_context(base_url=base_url or stack.base_url, **options)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto("/login/")
        await page.get_by_label("Username").fill(who.username)
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Log in").click()
        await expect(page.get_by_role("heading", name="Your sessions")).to_be_visible()
        return Device(context, page, errors)

    yield open_device
    for context in contexts:
        await context.close()


async def open_chat(dev: Device, session_id: str) -> Page:
    """Open the chat page of a session and wait until it is live."""
    await dev.page.goto(f"/s/{session_id}/")
    await expect(dev.page.locator("#connection")).to_have_attribute("data-state", "open")
    return dev.page
