"""The chat page as a shared room, in a real browser against the real stack: concurrent
messages of two devices of one user and of another member in one timeline, in the same order
on every screen; a fresh device opening on the newest activity; versions behind the pager and
a way back from an older one; sends while offline; the session's settings and members live
on every device; Stop that says what it stops and who stopped; the admin an operator uses.
Waits are Playwright's expectations on what the pages show (the conftest's timeout)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from sessions_app.models import Turn
from tests.browser.conftest import open_chat
from tests.browser.page import answers, message_box, shared_session, type_and_send, user_messages
from tests.conftest import PASSWORD

expect = pytest.importorskip("playwright.async_api", reason="playwright is not installed").expect

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
LONG = {"tokens": 120, "rate": 12}  # ten seconds of streaming: three sends overlap on a slow machine
QUICK = {"tokens": 12, "rate": 60}


# Each shown message as (role, its question's id for an answer): an answer must follow its own
# question directly.
SHAPE = """() => [...document.querySelectorAll("#messages .msg")].map((el) => {
  const node = window.chat.tree.get(el.dataset.id);
  return [el.dataset.role, node && node.role === "assistant" ? node.parent : el.dataset.id];
})"""


async def test_three_concurrent_sends_show_in_one_timeline_in_the_same_order_on_all_screens(
    person: Any, device: Any
) -> None:
    alice, bob = await person("alice"), await person("bob")
    session = await alice.api.create_session(title="Room", model_options=LONG)
    sid = session["id"]
    await alice.api.add_member(sid, bob.username)
    laptop, phone, other = await device(alice), await device(alice, **PHONE), await device(bob)
    pages = [await open_chat(d, sid) for d in (laptop, phone, other)]

    # Three sends within moments of each other, one from each screen.
    for page, text in zip(pages, ["From the laptop", "From the phone", "From bob"], strict=True):
        await type_and_send(page, text)
    await expect(user_messages(pages[0])).to_have_count(3)

    nodes = (await alice.api.messages(sid))["results"]
    sent_order = [n for n in reversed(nodes) if n["role"] == "user"]
    texts = [n["parts"][0]["text"] for n in sent_order]
    assert sorted(texts) == ["From bob", "From the laptop", "From the phone"]
    assert len({n["parent"] for n in sent_order}) == 1  # siblings in the tree, as the protocol says
    for page in pages:
        await expect(user_messages(page).locator(".body")).to_have_text(texts)
        await expect(page.locator('#messages .msg-assistant[data-status="streaming"]')).to_have_count(3)
        await expect(page.locator('#messages .msg-assistant[data-status="streaming"] .act-stop')).to_have_count(3)
        await expect(page.locator("#messages .siblings:visible")).to_have_count(0)  # no pager: not versions
        shape = await page.evaluate(SHAPE)
        assert [role for role, _ in shape] == ["user", "assistant"] * 3
        assert all(shape[i + 1][1] == shape[i][1] for i in range(0, 6, 2)), shape
    # who sent each, as each screen names them
    owners = [n["clientId"] for n in sent_order]
    await expect(user_messages(pages[2]).locator(".who")).to_have_text(
        [f"{o} (you)" if o == bob.username else o for o in owners]
    )
    await expect(answers(pages[0]).locator(".model")).to_have_text(["demo"] * 3)
    await expect(pages[2].locator("#activity")).to_contain_text(f"{alice.username} is getting 2 answers")
    await expect(pages[2].locator("#activity")).to_contain_text("You are getting an answer")
    await expect(pages[1].get_by_role("button", name="Stop my 2 answers")).to_be_visible()

    # bob stops alice's phone question's answer with its own Stop; the others keep streaming
    phone_answer = answers(pages[2]).nth(texts.index("From the phone"))
    await phone_answer.get_by_role("button", name="Stop this answer").click()
    for page in pages:
        stopped = answers(page).nth(texts.index("From the phone"))
        await expect(stopped).to_have_attribute("data-status", "cancelled")
    await expect(answers(pages[1]).nth(texts.index("From the phone")).locator(".badge")).to_have_text(
        f"Stopped by {bob.username}"
    )
    await alice.api.cancel(sid, all=True)
    for page in pages:
        await expect(page.locator('#messages .msg-assistant[data-status="streaming"]')).to_have_count(0)

    # the next message follows all three, on every screen, and a fresh device opens on it
    await type_and_send(pages[2], "Which of these first?")
    for page in pages:
        await expect(user_messages(page).last.locator(".body")).to_have_text("Which of these first?")
    fresh = await open_chat(await device(bob), sid)
    await expect(user_messages(fresh).locator(".body")).to_have_text([*texts, "Which of these first?"])
    for page in (laptop, phone, other):
        assert not page.errors, page.errors


async def test_a_fresh_device_opens_on_the_newest_activity_and_an_older_version_offers_the_latest(
    person: Any, device: Any
) -> None:
    alice = await person("alice")
    sid = (await alice.api.create_session(title="Versions", model_options=QUICK))["id"]
    page = await open_chat(await device(alice), sid)
    await type_and_send(page, "one")
    await expect(answers(page).last).to_have_attribute("data-status", "complete")

    # an edit is a version of the message, behind the pager
    await user_messages(page).first.get_by_role("button", name="Edit").click()
    await page.get_by_label("Edit your message").fill("uno")
    await page.get_by_label("Edit your message").press("Enter")
    first = user_messages(page).first
    await expect(first.locator(".body")).to_have_text("uno")
    await expect(first.locator(".sib-count")).to_have_text("2/2")
    await expect(answers(page).last).to_have_attribute("data-status", "complete")

    # back to the first version, and the conversation goes on there
    await first.get_by_role("button", name="Previous version").click()
    await expect(first.locator(".body")).to_have_text("one")
    await type_and_send(page, "more about one")
    await expect(user_messages(page).last.locator(".body")).to_have_text("more about one")
    await expect(answers(page).last).to_have_attribute("data-status", "complete")

    # a fresh device shows that newest activity (not the newest version of the first message)
    fresh = await open_chat(await device(alice, **PHONE), sid)
    await expect(user_messages(fresh).locator(".body")).to_have_text(["one", "more about one"])
    await expect(user_messages(fresh).first.locator(".sib-count")).to_have_text("1/2")
    await expect(fresh.locator("#newer")).to_be_hidden()

    # looking at the other version hides the newer messages: the page says so and leads back
    await user_messages(fresh).first.get_by_role("button", name="Next version").click()
    await expect(user_messages(fresh).locator(".body")).to_have_text(["uno"])
    await expect(fresh.locator("#newer")).to_be_visible()
    await expect(fresh.locator("#newer")).to_contain_text("newer messages are not shown")
    await fresh.get_by_role("button", name="Show the latest").click()
    await expect(user_messages(fresh).locator(".body")).to_have_text(["one", "more about one"])
    await expect(fresh.locator("#newer")).to_be_hidden()


async def test_a_live_answer_a_newer_version_hides_is_offered_on_every_screen(person: Any, device: Any) -> None:
    # Bob asks a follow-up; while its answer streams, alice regenerates the answer above it.
    # The regeneration is the newest version, so every screen shows it and bob's exchange goes
    # out of view: each page says an answer is being written elsewhere, and leads to it.
    alice, bob, sid = await shared_session(person, "Versions live", QUICK)
    alices, bobs = await open_chat(await device(alice), sid), await open_chat(await device(bob), sid)
    await type_and_send(alices, "one")
    await expect(answers(alices).last).to_have_attribute("data-status", "complete")
    await alice.api.request("PATCH", f"/api/sessions/{sid}", json={"modelOptions": LONG})

    await type_and_send(bobs, "and then?")
    await expect(answers(alices).last).to_have_attribute("data-status", "streaming")
    await answers(alices).first.get_by_role("button", name="Regenerate").click()

    for page in (alices, bobs):
        await expect(user_messages(page).locator(".body")).to_have_text(["one"])  # bob's question out of view
        await expect(page.locator("#newer")).to_contain_text("being written in another version")
    await bobs.get_by_role("button", name="Show it").click()
    await expect(user_messages(bobs).locator(".body")).to_have_text(["one", "and then?"])
    await expect(answers(bobs).last).to_have_attribute("data-status", "streaming")
    # now alice's regeneration is the live answer out of view on bob's screen
    await expect(bobs.locator("#newer")).to_contain_text("being written in another version")
    await alice.api.cancel(sid, all=True)


async def test_stop_all_answers_stops_everyones_and_is_offered_only_when_others_are_answered(
    person: Any, device: Any
) -> None:
    alice, bob, sid = await shared_session(person, "Stop all", LONG)
    alices, bobs = await open_chat(await device(alice), sid), await open_chat(await device(bob), sid)
    await type_and_send(alices, "mine")
    await expect(answers(alices).last).to_have_attribute("data-status", "streaming")
    await expect(alices.get_by_role("button", name="Stop all answers")).to_be_hidden()  # her own: the composer's Stop

    await type_and_send(bobs, "and mine")
    await expect(alices.locator('#messages .msg-assistant[data-status="streaming"]')).to_have_count(2)
    alices.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await alices.get_by_role("button", name="Stop all answers").click()

    for page in (alices, bobs):
        await expect(page.locator('#messages .msg-assistant[data-status="cancelled"]')).to_have_count(2)
        await expect(page.get_by_role("button", name="Stop all answers")).to_be_hidden()
    assert sorted(t["status"] for t in await alice.api.turns(sid)) == ["cancelled", "cancelled"]


async def test_a_message_sent_offline_waits_visibly_and_is_sent_once_when_back(person: Any, device: Any) -> None:
    alice = await person("alice")
    sid = (await alice.api.create_session(title="Tunnel", model_options=QUICK))["id"]
    phone = await device(alice, **PHONE)
    page = await open_chat(phone, sid)
    await phone.context.set_offline(True)
    await expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")

    await type_and_send(page, "sent from a tunnel")
    await type_and_send(page, "never mind this one")
    pending = page.locator("#messages .msg-pending")
    await expect(pending.locator(".body")).to_have_text(["sent from a tunnel", "never mind this one"])
    await expect(pending.first.locator(".badge")).to_have_text("Not sent yet: waiting for the connection")
    await expect(page.locator("#activity")).to_have_text("2 waiting to be sent")
    await expect(message_box(page)).to_have_value("")
    await pending.last.get_by_role("button", name="Do not send this message").click()  # taken back
    await expect(pending).to_have_count(1)
    await expect(message_box(page)).to_have_value("never mind this one")
    assert await alice.api.turns(sid) == []

    await phone.context.set_offline(False)
    await expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    await expect(pending).to_have_count(0)
    await expect(user_messages(page).locator(".body")).to_have_text(["sent from a tunnel"])
    await expect(answers(page).last).to_have_attribute("data-status", "complete")
    turns = await alice.api.turns(sid)
    assert len(turns) == 1 and turns[0]["status"] == "complete"  # sent once, the other never
    assert not phone.errors


async def test_settings_invitations_and_renames_reach_every_device_live(person: Any, device: Any) -> None:
    alice, bob, carol = await person("alice"), await person("bob"), await person("carol")
    sid = (await alice.api.create_session(title="Plans"))["id"]
    await alice.api.add_member(sid, bob.username)
    owner = await open_chat(await device(alice), sid)
    member = await open_chat(await device(bob, **PHONE), sid)

    # the owner renames the session and invites carol from the chat page
    await owner.locator("#session-menu summary").click()
    await owner.get_by_label("Session title").fill("Plans for June")
    await owner.get_by_role("button", name="Rename").click()
    await expect(member.locator("#session-title")).to_have_text("Plans for June")
    await owner.get_by_label("Invite by username").fill(carol.username)
    await owner.get_by_role("button", name="Invite").click()
    await expect(owner.get_by_role("alert")).to_contain_text(f"{carol.username} is a member now")
    await expect(member.locator(f'#members li[data-user="{carol.username}"]')).to_have_count(1)
    await owner.get_by_label("Invite by username").fill("nobody-by-that-name")
    await owner.get_by_role("button", name="Invite").click()
    await expect(owner.get_by_role("alert")).to_have_text("No user named “nobody-by-that-name”.")

    # only the owner sees the settings; a member reads them
    await member.locator("#session-menu summary").click()
    await expect(member.locator("#settings-form")).to_be_hidden()
    await expect(member.locator("#settings-readonly")).to_contain_text(f"Only {alice.username} (the owner)")

    # the owner sets the default and the model's options: every device follows at once
    await owner.get_by_label("Default when answers are running").select_option("queue")
    await expect(owner.get_by_label("Model", exact=True)).to_have_value("demo")
    await owner.get_by_label("Model options (JSON)").fill('{"tokens": 5, "rate": 50}')
    await owner.get_by_role("button", name="Save settings").click()
    await expect(member.get_by_label("If answers are running")).to_have_value("queue")
    await expect(member.locator("#settings-readonly")).to_contain_text("Queue after the running answers")
    session = await alice.api.session(sid)
    assert (session["policy"], session["modelOptions"]) == ("queue", {"tokens": 5, "rate": 50})
    await owner.get_by_label("Model options (JSON)").fill("{not json")
    await owner.get_by_role("button", name="Save settings").click()
    await expect(owner.get_by_role("alert")).to_contain_text("not a JSON object")

    await type_and_send(member, "short please")
    await expect(answers(owner).last).to_have_attribute("data-status", "complete")
    text = await answers(owner).last.locator(".body").inner_text()
    assert len(text.split()) == 5
    await expect(answers(owner).last.locator(".model")).to_have_text("demo")

    await carol.api.request("DELETE", f"/api/sessions/{sid}/members")
    await expect(member.locator(f'#members li[data-user="{carol.username}"]')).to_have_count(0)


async def test_a_deleted_session_shows_as_deleted_and_is_not_reconnected(person: Any, device: Any) -> None:
    alice, bob, sid = await shared_session(person, "Short-lived", LONG)
    member = await open_chat(await device(bob), sid)
    await type_and_send(member, "a long answer")
    await expect(answers(member).last).to_have_attribute("data-status", "streaming")
    await member.locator("#session-menu summary").click()
    await expect(member.get_by_role("button", name="Delete session")).to_be_hidden()  # the owner's

    # the owner deletes it from the Session menu, after saying yes
    owner = await open_chat(await device(alice), sid)
    await owner.locator("#session-menu summary").click()
    owner.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await owner.get_by_role("button", name="Delete session").click()
    await expect(owner).to_have_url(re.compile(r"/$"))

    await expect(member.get_by_role("alert")).to_have_text(f"This session was deleted by {alice.username}.")
    await expect(member.locator("#connection")).to_have_attribute("data-state", "closed")
    await expect(answers(member).last).to_have_attribute("data-status", "cancelled")
    assert await member.evaluate("() => [window.chat.closeCode, window.chat.activeTurns.size]") == [4404, 0]
    await expect(member.locator("#composer")).to_have_js_property("inert", True)


async def test_jump_to_latest_when_scrolled_up(person: Any, device: Any) -> None:
    alice, bob, sid = await shared_session(person, "Scroll", {"tokens": 300, "rate": 60})
    page = await open_chat(await device(alice, viewport={"width": 800, "height": 500}), sid)
    await type_and_send(page, "a long answer")
    await expect(answers(page).last).to_have_attribute("data-status", "complete")
    await expect(page.locator("#jump")).to_be_hidden()
    await page.locator("#messages").evaluate("(log) => { log.scrollTop = 0; }")
    await expect(page.locator("#jump")).to_have_text("↓ Jump to latest")

    await bob.api.send(sid, "meanwhile, from bob")
    await expect(page.locator("#jump")).to_have_text(re.compile(r"↓ \d+ new messages?"))
    assert await page.locator("#messages").evaluate("(log) => log.scrollTop") == 0  # not pulled away
    await page.locator("#jump").click()
    await expect(page.locator("#jump")).to_be_hidden()
    await expect(user_messages(page).last).to_be_in_viewport()


async def test_links_with_parentheses_keep_them(person: Any, device: Any) -> None:
    alice = await person("alice")
    sid = (await alice.api.create_session(title="Links"))["id"]
    page = await open_chat(await device(alice), sid)
    hrefs = await page.evaluate(
        """async () => {
          const { renderMarkdown } = await import("/static/chat/markdown.js");
          const box = document.createElement("div");
          box.append(renderMarkdown(
            "See https://example.com/a_(b) and (https://example.com/c). [Bee](https://en.wikipedia.org/wiki/Bee_(disambiguation))"));
          return [...box.querySelectorAll("a")].map((a) => [a.getAttribute("href"), a.textContent]);
        }"""
    )
    assert hrefs == [
        ["https://example.com/a_(b)", "https://example.com/a_(b)"],
        ["https://example.com/c", "https://example.com/c"],
        ["https://en.wikipedia.org/wiki/Bee_(disambiguation)", "Bee"],
    ]


async def admin_page(device: Any, browser_user: Any) -> Any:
    dev = await device(browser_user)
    page = dev.page
    await page.goto("/admin/login/?next=/admin/")
    if await page.locator("#id_username").count():
        await page.fill("#id_username", browser_user.username)
        await page.fill("#id_password", PASSWORD)
        await page.get_by_role("button", name="Log in").click()
    return page


async def test_the_admin_shows_turns_read_only_and_cancels_through_the_service(
    person: Any, device: Any, orm: Any
) -> None:
    alice = await person("alice")
    operator = await person("operator")
    viewer = await person("viewer")

    def staff() -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Permission

        users = get_user_model().objects
        users.filter(username=operator.username).update(is_staff=True, is_superuser=True)
        looker = users.get(username=viewer.username)
        looker.is_staff = True
        looker.save()
        looker.user_permissions.set(Permission.objects.filter(codename__in=["view_turn", "view_chatsession"]))

    orm(staff)
    sid = (await alice.api.create_session(title="Operated", model_options={"tokens": 2000, "rate": 20}))["id"]
    turn = await alice.api.send(sid, "keep talking until an operator stops you")
    pk = orm(lambda: Turn.objects.get(turn_id=turn["turnId"]).pk)

    looker = await admin_page(device, viewer)
    await looker.goto(f"/admin/sessions_app/turn/{pk}/change/")
    await expect(looker.locator("#content")).to_contain_text("keep talking until an operator stops you")
    await expect(looker.get_by_role("button", name="Cancel this turn")).to_have_count(0)
    await expect(looker.locator('input[name="status"], select[name="status"]')).to_have_count(0)

    admin = await admin_page(device, operator)
    await admin.goto(f"/admin/sessions_app/turn/{pk}/change/")
    await expect(admin.locator('select[name="status"], input[name="status"], input[name="turn_id"]')).to_have_count(0)
    await expect(admin.locator('input[name="_save"]')).to_have_count(0)
    await admin.get_by_role("button", name="Cancel this turn").click()
    await expect(admin.locator(".messagelist")).to_contain_text("is being cancelled")
    ended = await alice.api.wait(sid, {"turnId": turn["turnId"]}, timeout=30)
    assert ended["turns"][0]["status"] == "cancelled"
    await admin.goto(f"/admin/sessions_app/chatsession/{sid}/change/")
    await expect(admin.locator("#content")).to_contain_text("keep talking until an operator stops you")
    await expect(admin.locator('input[name="title"]')).to_have_count(0)
