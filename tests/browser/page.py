"""What the browser tests do on the chat page and where they look, shared by the test files."""

from __future__ import annotations

from typing import Any


def message_box(page: Any) -> Any:
    return page.get_by_label("Message", exact=True)


async def type_and_send(page: Any, text: str) -> None:
    box = message_box(page)
    await box.fill(text)
    await box.press("Enter")


def answers(page: Any) -> Any:
    return page.locator("#messages .msg-assistant")


def user_messages(page: Any) -> Any:
    """The messages the server has (not those this device is still sending)."""
    return page.locator("#messages .msg-user:not(.msg-pending)")


async def choose_policy(page: Any, label: str) -> None:
    """Pick what this device's next messages do while answers run (not the session's default)."""
    await page.get_by_label("If answers are running").select_option(label=label)


async def shared_session(person: Any, title: str, model_options: dict[str, Any] | None = None) -> tuple[Any, Any, str]:
    """Two new people, alice (the owner) and bob, in a new session of hers: (alice, bob, its id)."""
    alice, bob = await person("alice"), await person("bob")
    sid = (await alice.api.create_session(title=title, model_options=model_options))["id"]
    await alice.api.add_member(sid, bob.username)
    return alice, bob, sid
