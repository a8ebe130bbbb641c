"""The chat page once its connection has ended for good (the member left on another device:
4403; the session was deleted: 4404): nothing can be sent any more, so the page takes
nothing, says why, and leaves no message waiting for a connection that never comes back.
Also: the interrupt notice only when the sender had an answer to interrupt, and the session
menu reachable on a small phone. Waits are Playwright's expectations (the conftest's timeout)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import open_chat
from tests.browser.page import answers, shared_session, type_and_send, user_messages

expect = pytest.importorskip("playwright.async_api", reason="playwright is not installed").expect

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

SMALL_PHONE = {"viewport": {"width": 360, "height": 640}, "is_mobile": True, "has_touch": True}
LONG = {"tokens": 400, "rate": 20}  # streams for twenty seconds: still running while the test acts
QUICK = {"tokens": 12, "rate": 60}
CLOSED = "The connection is closed. Reload the page."
# A send given now: refused at once (settled before the next task), or "kept" for a connection
# that never comes back.
LATE_SEND = """async () => {
  let outcome = "kept";
  window.chat.send("too late").then(() => (outcome = "sent"), (error) => (outcome = error.code));
  await new Promise((resolve) => setTimeout(resolve));
  return outcome;
}"""


async def expect_all_disabled(buttons: Any, count: int) -> None:
    await expect(buttons).to_have_count(count)
    for i in range(count):
        await expect(buttons.nth(i)).to_be_disabled()


async def test_leaving_on_another_device_ends_the_page_and_refuses_what_it_can_no_longer_send(
    person: Any, device: Any
) -> None:
    alice, bob, sid = await shared_session(person, "Left", QUICK)
    page = await open_chat(await device(bob), sid)
    await type_and_send(page, "first")
    await expect(answers(page).last).to_have_attribute("data-status", "complete")
    await alice.api.request("PATCH", f"/api/sessions/{sid}", json={"modelOptions": LONG})
    await type_and_send(page, "second")
    await expect(answers(page).last).to_have_attribute("data-status", "streaming")

    await bob.api.request("DELETE", f"/api/sessions/{sid}/members")  # bob leaves, elsewhere

    await expect(page.locator("#connection")).to_have_attribute("data-state", "closed")
    assert await page.evaluate("() => window.chat.closeCode") == 4403
    # its `member.left` comes before the close (one subscription, in order): said, not talked over
    await expect(page.get_by_role("alert")).to_have_text("You left this session on another device.")
    await expect(page.locator("#composer")).to_have_js_property("inert", True)
    await expect_all_disabled(page.locator("#messages .act-edit"), 2)
    await expect_all_disabled(page.locator("#messages .act-regenerate"), 1)
    await expect_all_disabled(page.locator("#messages .act-stop"), 1)  # its end will never reach here
    assert await page.evaluate(LATE_SEND) == "closed"
    await expect(page.locator("#messages .msg-pending")).to_have_count(0)
    # Esc still asks to stop bob's answer on screen: refused at once, with the reason
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("alert")).to_have_text(CLOSED)
    await alice.api.cancel(sid, all=True)


async def test_a_deleted_session_offers_no_regenerate_or_edit_and_refuses_sends(person: Any, device: Any) -> None:
    alice, bob, sid = await shared_session(person, "Deleted", QUICK)
    page = await open_chat(await device(bob), sid)
    await type_and_send(page, "hello")
    await expect(answers(page).last).to_have_attribute("data-status", "complete")
    await user_messages(page).get_by_role("button", name="Edit").click()  # an edit begun before

    await alice.api.delete_session(sid)

    await expect(page.get_by_role("alert")).to_have_text(f"This session was deleted by {alice.username}.")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "closed")
    await expect(page.locator("#composer")).to_have_js_property("inert", True)
    await expect_all_disabled(page.locator("#messages .act-regenerate"), 1)
    assert await page.evaluate(LATE_SEND) == "closed"
    await page.get_by_label("Edit your message").fill("hello again")
    await page.get_by_role("button", name="Send edit").click()
    await expect(page.get_by_role("alert")).to_have_text(CLOSED)
    await expect(page.locator("#messages .msg-pending")).to_have_count(0)
    await expect(page.get_by_label("Edit your message")).to_have_value("hello again")  # kept, not lost
    await page.locator("#messages .act-cancel-edit").click()
    await expect_all_disabled(page.locator("#messages .act-edit"), 1)


async def test_interrupt_notice_only_when_the_sender_had_an_answer_running(person: Any, device: Any) -> None:
    alice, bob, sid = await shared_session(person, "Interrupts", LONG)
    page = await open_chat(await device(alice), sid)
    bobs = await open_chat(await device(bob), sid)
    policy = page.get_by_label("If answers are running")
    notice = page.locator("#notice")
    await type_and_send(bobs, "bob's long question")
    await expect(answers(page).last).to_have_attribute("data-status", "streaming")
    await policy.select_option(label="Queue after them")
    await type_and_send(page, "alice waits her turn")
    await expect(answers(page).last).to_have_attribute("data-status", "queued")

    # alice has nothing running (only a queued message): her interrupt interrupts nothing
    await policy.select_option(label="Interrupt my answer")
    await type_and_send(page, "alice interrupts nothing")
    await expect(user_messages(page).last.locator(".body")).to_have_text("alice interrupts nothing")
    await page.wait_for_function("() => window.chat.outbox.size === 0")  # answered: the notice is decided
    assert await notice.is_hidden(), await notice.text_content()

    # with an answer of her own running, the notice says hers stopped and bob's keeps going
    await alice.api.cancel(sid, own=True)
    await expect(page.locator('#messages .msg-assistant[data-status="streaming"]')).to_have_count(1)
    await policy.select_option(label="Send alongside")
    await type_and_send(page, "alice asks alongside")
    await expect(page.locator('#messages .msg-assistant[data-status="streaming"]')).to_have_count(2)
    await policy.select_option(label="Interrupt my answer")
    await type_and_send(page, "alice interrupts hers")
    await expect(notice).to_have_text(
        "Your running answers were interrupted; answers of others keep going (Interrupt stops only your own)."
    )
    await alice.api.cancel(sid, all=True)


async def test_the_owner_reaches_invite_in_the_session_menu_on_a_small_phone(person: Any, device: Any) -> None:
    alice, bob = await person("alice"), await person("bob")
    sid = (await alice.api.create_session(title="Pocket"))["id"]
    page = await open_chat(await device(alice, **SMALL_PHONE), sid)
    await page.locator("#session-menu summary").click()
    invite = page.get_by_role("button", name="Invite")
    await invite.scroll_into_view_if_needed()
    await expect(invite).to_be_in_viewport()
    await page.get_by_label("Invite by username").fill(bob.username)
    await invite.click()
    await expect(page.get_by_role("alert")).to_have_text(f"{bob.username} is a member now and can open this session.")
