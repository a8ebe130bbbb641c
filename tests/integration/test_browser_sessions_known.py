"""A browser session a web process remembers (decision 049) ends in every process the moment
its logout answers: a browser logged out through one Daphne is refused by another that had
just answered it from memory."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.test_ws_revoked_and_routes import Browser, watch_subscribed


@pytest.fixture(scope="module")
def second_web_url(stack: Any) -> str:
    """A second Daphne on the shared stack: the logouts go through the first."""
    return stack.start_web("web-known-sessions-2")


async def test_a_browser_logged_out_through_one_web_process_is_refused_by_another_at_once(
    stack: Any, second_web_url: str, create_user: Any
) -> None:
    username = create_user("known")
    async with httpx.AsyncClient(base_url=second_web_url) as two:
        for attempt in range(10):
            browser = await Browser(stack.base_url).log_in(username)
            try:
                assert (await two.get("/api/models", headers=browser.headers())).status_code == 200
                if attempt == 0:
                    await watch_subscribed(stack, "web-known-sessions-2")
                # Known to the second process now, and answered from what it remembers.
                assert (await two.get("/api/models", headers=browser.headers())).status_code == 200
                headers = browser.headers()

                await browser.log_out()

                refused = await two.get("/api/models", headers=headers)
                assert refused.status_code == 401, f"attempt {attempt}"
            finally:
                await browser.http.aclose()
