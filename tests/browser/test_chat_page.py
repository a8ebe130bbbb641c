"""The chat page in a real browser: several devices of one user and another member, against
the real stack. Each test names the behaviour it checks; waits are Playwright's auto-waiting
expectations on what the page shows (with the conftest's timeout), never a fixed pause: a
response that a test holds back and releases is waited for until the page shows what it
applied from it."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from tests.browser.conftest import TIMEOUT_MS, open_chat
from tests.browser.page import answers, choose_policy, message_box, shared_session, type_and_send, user_messages

expect = pytest.importorskip("playwright.async_api", reason="playwright is not installed").expect

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
# Answers slow enough to act on while they stream, short enough to keep the suite quick.
SLOW = {"tokens": 80, "rate": 16}
QUICK = {"tokens": 12, "rate": 60}

ANSWER_TEXT = """() => {
  const node = window.chat.tree.branch().filter((n) => n.role === "assistant").at(-1);
  return node ? node.parts.filter((p) => p.type === "text").map((p) => p.text).join("") : null;
}"""


async def as_rendered(page: Any, markdown: str) -> str:
    """The text the page's Markdown renderer shows for `markdown` (what an answer's body reads)."""
    return str(
        await page.evaluate(
            """async (text) => {
              const { renderMarkdown } = await import("/static/chat/markdown.js");
              const box = document.createElement("div");
              box.append(renderMarkdown(text));
              return box.textContent;
            }""",
            markdown,
        )
    )


async def test_answer_streams_to_two_devices_of_one_user_and_to_another_member(person: Any, device: Any) -> None:
    alice, bob = await person("alice"), await person("bob")
    session = await alice.api.create_session(title="Three devices", model_options=SLOW)
    await alice.api.add_member(session["id"], bob.username)
    laptop, phone, other = await device(alice), await device(alice, **PHONE), await device(bob)
    pages = [await open_chat(d, session["id"]) for d in (laptop, phone, other)]
    alice_there = pages[2].locator(f'#members li[data-user="{alice.username}"]')
    await expect(alice_there).to_have_attribute("data-online", "true")

    await type_and_send(pages[0], "Tell me a story")

    for page in pages:  # every device sees the question, the answer streaming, and who asked
        await expect(user_messages(page).last).to_contain_text("Tell me a story")
        await expect(answers(page).last).to_have_attribute("data-status", "streaming")
        await expect(answers(page).last.locator(".body")).to_have_text(re.compile(r"\w+"))
    await expect(pages[1].locator("#activity")).to_have_text("You are getting an answer")
    await expect(pages[2].locator("#activity")).to_have_text(f"{alice.username} is getting an answer")
    await expect(pages[1].get_by_role("button", name="Stop my answer", exact=True)).to_be_visible()
    await expect(pages[2].get_by_role("button", name="Send message")).to_be_disabled()

    turn_id = await pages[0].evaluate("() => window.chat.inFlight({own: true})[0].turnId")
    final = await alice.api.wait(session["id"], {"turnId": turn_id}, timeout=30)
    assert final["turns"][0]["status"] == "complete"
    content = (await alice.api.turn(session["id"], turn_id))["content"]
    for page in pages:
        await expect(answers(page).last).to_have_attribute("data-status", "complete")
        assert await page.evaluate(ANSWER_TEXT) == content
        await expect(answers(page).last.locator(".body")).to_have_text(await as_rendered(page, content))
        await expect(page.locator("#activity")).to_have_text("")
    assert not (laptop.errors or phone.errors or other.errors)


async def test_stop_on_one_device_stops_a_turn_started_on_another(person: Any, device: Any) -> None:
    alice, bob = await person("alice"), await person("bob")
    session = await alice.api.create_session(title="Stop", model_options={"tokens": 400, "rate": 10})
    await alice.api.add_member(session["id"], bob.username)
    laptop, phone, other = await device(alice), await device(alice, **PHONE), await device(bob)
    first, second, third = [await open_chat(d, session["id"]) for d in (laptop, phone, other)]

    await type_and_send(first, "A long answer please")
    await expect(answers(second).last).to_have_attribute("data-status", "streaming")
    await second.get_by_role("button", name="Stop my answer", exact=True).click()  # the Send/Stop toggle

    for page in (first, second):
        await expect(answers(page).last).to_have_attribute("data-status", "cancelled")
        await expect(answers(page).last.locator(".badge")).to_have_text("Stopped by you")
    await expect(answers(third).last.locator(".badge")).to_have_text(f"Stopped by {alice.username}")
    await expect(first.get_by_role("button", name="Send message")).to_be_visible()
    turns = await alice.api.turns(session["id"])
    assert [t["status"] for t in turns] == ["cancelled"]

    # Another member stops one answer with its own Stop control (cancel by turnId); Esc stops
    # the user's own answers from the keyboard.
    await type_and_send(first, "Another one")
    await expect(answers(third).last).to_have_attribute("data-status", "streaming")
    await third.get_by_role("button", name="Stop this answer").click()
    await expect(answers(first).last).to_have_attribute("data-status", "cancelled")
    await expect(answers(first).last.locator(".badge")).to_have_text(f"Stopped by {bob.username}")
    await type_and_send(second, "And a third")
    await expect(answers(second).last).to_have_attribute("data-status", "streaming")
    await message_box(second).press("Escape")
    await expect(answers(first).last).to_have_attribute("data-status", "cancelled")
    assert [t["status"] for t in await alice.api.turns(session["id"])] == ["cancelled"] * 3


async def test_queue_then_cancel_queued_and_interrupt(person: Any, device: Any) -> None:
    alice = await person("alice")
    sid = (await alice.api.create_session(title="Queue", model_options={"tokens": 120, "rate": 15}))["id"]

    async def next_answers(options: dict[str, Any]) -> None:
        # A turn takes the session's model options when it is created: the owner switches
        # them between sends so that one answer is long enough to act on and others are quick.
        await alice.api.request("PATCH", f"/api/sessions/{sid}", json={"modelOptions": options})

    laptop, phone = await device(alice), await device(alice, **PHONE)
    page = await open_chat(laptop, sid)
    await choose_policy(page, "Queue after them")
    other = await open_chat(phone, sid)
    # the choice is this device's, for its next messages: the session's default stays
    await expect(other.get_by_label("If answers are running")).to_have_value("concurrent")
    await expect(page.locator("#policy-note")).to_contain_text("Only for your messages here")
    assert (await alice.api.session(sid))["policy"] == "concurrent"

    await type_and_send(page, "first")
    await expect(answers(page).last).to_have_attribute("data-status", "streaming")
    await next_answers(QUICK)
    await type_and_send(page, "second")
    queued = answers(other).last
    await expect(queued).to_have_attribute("data-status", "queued")
    await expect(queued.locator(".badge")).to_have_text(re.compile(r"^Queued"))
    await queued.get_by_role("button", name="Cancel this queued message").click()
    await expect(answers(page).last).to_have_attribute("data-status", "cancelled")

    await type_and_send(page, "third")  # queued behind "first", starts when it ends
    await expect(answers(page).last).to_have_attribute("data-status", "queued")
    await expect(answers(page).nth(0)).to_have_attribute("data-status", "streaming")
    await expect(answers(page).last).to_have_attribute("data-status", "complete")
    assert [t["status"] for t in await alice.api.turns(sid)] == ["complete", "cancelled", "complete"]

    await choose_policy(page, "Interrupt my answer")
    await next_answers({"tokens": 120, "rate": 15})
    await type_and_send(page, "fourth")
    await expect(answers(other).last).to_have_attribute("data-status", "streaming")
    await next_answers(QUICK)
    await type_and_send(page, "fifth, instead")
    # fourth's partial answer is kept, marked interrupted, and fifth follows it
    for shown in (page, other):
        await expect(user_messages(shown).last).to_contain_text("fifth, instead")
        await expect(answers(shown).nth(-2).locator(".badge")).to_have_text("Interrupted by your next message")
        await expect(answers(shown).last).to_have_attribute("data-status", "complete")
    statuses = [t["status"] for t in await alice.api.turns(sid)]
    assert statuses == ["complete", "cancelled", "complete", "cancelled", "complete"]


async def test_queued_messages_show_their_place_as_the_queue_moves_and_after_a_reload(person: Any, device: Any) -> None:
    # `turn.queued` gives a turn's place when it is queued; the page counts it anew as the
    # turns ahead start or go, and after a reload (a snapshot carries no places).
    alice = await person("alice")
    sid = (await alice.api.create_session(title="Queue places", model_options={"tokens": 400, "rate": 20}))["id"]
    page = await open_chat(await device(alice), sid)
    running = await alice.api.send(sid, "running")
    queued = [await alice.api.send(sid, f"queued {n}", policy="queue") for n in (1, 2, 3)]
    badges = page.locator('#messages .msg-assistant[data-status="queued"] .badge')
    await expect(badges).to_have_text(["Queued (#1)", "Queued (#2)", "Queued (#3)"])

    await alice.api.cancel(sid, turn_id=running["turnId"])  # the first queued one starts
    await expect(badges).to_have_text(["Queued (#1)", "Queued (#2)"])
    await alice.api.cancel(sid, turn_id=queued[1]["turnId"])  # one leaves the middle of the queue
    await expect(badges).to_have_text(["Queued (#1)"])
    await page.reload()
    await expect(badges).to_have_text(["Queued (#1)"])
    await alice.api.cancel(sid, all=True)


async def test_the_transcript_shows_answers_rendered_as_the_chat_page_does(person: Any, device: Any) -> None:
    alice = await person("alice")
    sid = (await alice.api.create_session(title="Transcript", model_options=QUICK))["id"]
    dev = await device(alice)
    page = await open_chat(dev, sid)
    await type_and_send(page, "a few words **to** answer")
    await expect(answers(page).last).to_have_attribute("data-status", "complete")
    in_chat = await answers(page).last.locator(".body").inner_html()

    await page.goto(f"/sessions/{sid}/transcript")
    body = page.locator(".msg-assistant .body")
    await expect(body).to_have_count(1)
    await expect(body.locator("p").first).to_be_visible()
    assert await body.inner_html() == in_chat


async def test_a_policy_picked_while_the_page_loads_is_not_undone_by_the_load_nor_saved(
    person: Any, device: Any
) -> None:
    alice, bob = await person("alice"), await person("bob")
    session = await alice.api.create_session(title="Quick pick")
    # bob is a member who stays offline: the page lists him only from the load's answer, in
    # the same step that applies the answer's policy; so his name shows the load was applied.
    await alice.api.add_member(session["id"], bob.username)
    dev = await device(alice)
    held: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def hold_the_first_load(route: Any) -> None:
        if route.request.method == "GET" and not held.done():
            # Read now, delivered only after the pick below: a load that was slow to answer.
            held.set_result((route, await route.fetch()))
        else:
            await route.continue_()

    await dev.page.route(f"**/api/sessions/{session['id']}", hold_the_first_load)
    page = await open_chat(dev, session["id"])
    route, response = await asyncio.wait_for(held, TIMEOUT_MS / 1000)
    assert (await response.json())["policy"] != "reject"  # read before the pick
    await choose_policy(page, "Don't send")
    loaded = f"/api/sessions/{session['id']}"
    async with page.expect_response(lambda r: r.request.method == "GET" and r.url.endswith(loaded)):
        await route.fulfill(response=response)  # the policy from before the pick
    await expect(page.locator(f'#members li[data-user="{bob.username}"]')).to_have_count(1)  # applied
    await expect(page.get_by_label("If answers are running")).to_have_value("reject")
    assert (await alice.api.session(session["id"]))["policy"] == "concurrent"  # a pick is not the default


async def test_busy_is_explained_and_the_message_is_kept(person: Any, device: Any) -> None:
    alice = await person("alice")
    session = await alice.api.create_session(title="Busy", model_options={"tokens": 200, "rate": 10})
    page = await open_chat(await device(alice), session["id"])
    await choose_policy(page, "Don't send")
    await type_and_send(page, "first")
    await expect(answers(page).last).to_have_attribute("data-status", "streaming")
    await type_and_send(page, "second")
    await expect(page.get_by_role("alert")).to_contain_text("Not sent: you chose “Don't send”")
    await expect(message_box(page)).to_have_value("second")
    await expect(user_messages(page)).to_have_count(1)


async def test_a_refused_edit_opens_again_with_what_was_written(person: Any, device: Any) -> None:
    alice = await person("alice")
    session = await alice.api.create_session(title="Busy edit", model_options={"tokens": 200, "rate": 10})
    page = await open_chat(await device(alice), session["id"])
    await type_and_send(page, "first")
    await expect(answers(page).last).to_have_attribute("data-status", "streaming")
    await choose_policy(page, "Don't send")

    await user_messages(page).first.get_by_role("button", name="Edit").click()
    await page.get_by_label("Edit your message").fill("first, said better")
    await page.get_by_label("Edit your message").press("Enter")

    await expect(page.get_by_role("alert")).to_contain_text("Not sent: you chose “Don't send”")
    await expect(page.get_by_label("Edit your message")).to_have_value("first, said better")
    await expect(user_messages(page)).to_have_count(1)
    await alice.api.cancel(session["id"])


@pytest.fixture(scope="module")
def owner_only_url(stack: Any) -> str:
    """A second Daphne on the shared stack whose authoriser lets only a turn's owner cancel it."""
    return str(
        stack.start_web(
            "web-owner-only-browser",
            {"CHAT_CANCEL_AUTHORISER": "sessions_app.cancellation.authorisers.turn_owner_only"},
        )
    )


async def test_full_queue_and_refused_cancel_are_explained(person: Any, device: Any, owner_only_url: str) -> None:
    alice, bob, sid = await shared_session(person, "Limits", {"tokens": 300, "rate": 10})
    page = await open_chat(await device(alice), sid)

    # Refused cancel: bob's device talks to a web process whose authoriser refuses to cancel
    # turns of others; the server's `rejected` answer must reach him as a clear message.
    bob_device = await device(bob, base_url=owner_only_url)
    other = await open_chat(bob_device, sid)
    await type_and_send(page, "first")
    await expect(answers(other).last).to_have_attribute("data-status", "streaming")
    await other.get_by_role("button", name="Stop this answer").click()
    await expect(other.get_by_role("alert")).to_contain_text("Not stopped")
    await expect(answers(page).last).to_have_attribute("data-status", "streaming")  # still running

    # Full queue: the session queues at most 10 turns (the default QUEUE_LIMIT).
    for n in range(10):
        await alice.api.send(sid, f"queued {n}", policy="queue")
    await expect(page.locator("#activity")).to_contain_text("10 queued")
    await choose_policy(page, "Queue after them")
    await type_and_send(page, "one too many")
    await expect(page.get_by_role("alert")).to_contain_text("Not sent: the queue is full")
    await expect(message_box(page)).to_have_value("one too many")  # kept, to send later
    await alice.api.cancel(sid, all=True)
    await expect(page.locator("#activity")).to_have_text("")


async def test_branches_after_double_texting_edit_and_regenerate(person: Any, device: Any) -> None:
    alice = await person("alice")
    session = await alice.api.create_session(title="Branches", model_options=QUICK)
    page = await open_chat(await device(alice), session["id"])

    await type_and_send(page, "one")
    await expect(answers(page).last).to_have_attribute("data-status", "complete")

    # edit: a sibling of "one", shown at once, with ‹ 2/2 ›
    await user_messages(page).first.get_by_role("button", name="Edit").click()
    editor = page.get_by_label("Edit your message")
    await expect(editor).to_be_focused()
    await editor.fill("uno")
    await editor.press("Enter")
    first = user_messages(page).first
    await expect(first.locator(".body")).to_have_text("uno")
    await expect(first.locator(".sib-count")).to_have_text("2/2")
    await expect(answers(page).last).to_have_attribute("data-status", "complete")

    previous = first.get_by_role("button", name="Previous version")
    await previous.click()
    await expect(first.locator(".body")).to_have_text("one")
    await expect(first.locator(".sib-count")).to_have_text("1/2")
    await expect(first.get_by_role("button", name="Next version")).to_be_focused()  # focus stays on the control

    # regenerate: a new answer beside the old one
    await answers(page).last.get_by_role("button", name="Regenerate").click()
    await expect(answers(page).last.locator(".sib-count")).to_have_text("2/2")
    await expect(answers(page).last).to_have_attribute("data-status", "complete")
    await answers(page).last.get_by_role("button", name="Previous version").click()
    await expect(answers(page).last.locator(".sib-count")).to_have_text("1/2")
    await expect(first.locator(".body")).to_have_text("one")

    # double texting under "send alongside": both exchanges show, one after the other, no pager
    session2 = await alice.api.create_session(title="Double", model_options={"tokens": 60, "rate": 15})
    await page.goto(f"/s/{session2['id']}/")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    await type_and_send(page, "a")
    await expect(answers(page).last).to_have_attribute("data-status", "streaming")
    await type_and_send(page, "b")
    await expect(user_messages(page).locator(".body")).to_have_text(["a", "b"])
    await expect(answers(page)).to_have_count(2)
    await expect(page.locator("#messages .siblings:visible")).to_have_count(0)
    await expect(page.locator("#activity")).to_have_text("You are getting 2 answers")
    await expect(page.get_by_role("button", name="Stop my 2 answers")).to_be_visible()


async def test_device_taken_offline_resumes_with_the_exact_text(person: Any, device: Any) -> None:
    alice = await person("alice")
    session = await alice.api.create_session(title="Offline", model_options={"tokens": 90, "rate": 18})
    laptop, phone = await device(alice), await device(alice, **PHONE)
    page, mobile = await open_chat(laptop, session["id"]), await open_chat(phone, session["id"])

    await type_and_send(page, "Keep going while my phone is in a tunnel")
    await expect(answers(mobile).last.locator(".body")).to_have_text(re.compile(r"\w+ \w+"))
    await phone.context.set_offline(True)
    await expect(mobile.locator("#connection")).to_have_attribute("data-state", "reconnecting")
    await expect(answers(page).last).to_have_attribute("data-status", "complete")
    turn_id = await page.evaluate("() => window.chat.turns.keys().next().value")
    content = (await alice.api.turn(session["id"], turn_id))["content"]
    partial = await mobile.evaluate(ANSWER_TEXT)
    assert len(partial) < len(content) and content.startswith(partial)

    await phone.context.set_offline(False)
    await expect(mobile.locator("#connection")).to_have_attribute("data-state", "open")
    await expect(answers(mobile).last).to_have_attribute("data-status", "complete")
    assert await mobile.evaluate(ANSWER_TEXT) == content
    await expect(answers(mobile).last.locator(".body")).to_have_text(await as_rendered(mobile, content))
    stats = await mobile.evaluate("() => window.chat.stats")
    assert stats["resumes"] >= 1 and stats["gaps"] == 0 and stats["duplicates"] == 0, stats
    assert stats["snapshots"] == 1, stats  # resumed by seq, not by a fresh snapshot


XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>[click](javascript:window.__xss=3)'


async def test_xss_in_a_user_message_and_in_a_model_answer_stays_inert(person: Any, device: Any) -> None:
    alice, bob = await person("alice"), await person("bob")
    session = await alice.api.create_session(title="XSS", model_options=QUICK)
    await alice.api.add_member(session["id"], bob.username)
    page = await open_chat(await device(alice), session["id"])
    other = await open_chat(await device(bob), session["id"])

    await type_and_send(page, XSS)
    for shown in (page, other):
        await expect(user_messages(shown).last.locator(".body")).to_have_text(XSS)  # shown as typed
        await expect(answers(shown).last).to_have_attribute("data-status", "complete")

    # A model answer carrying the payload: the demo model cannot be made to say it, so a
    # crafted delta goes through the transport's own event application, as a real one would.
    answer = (
        "**bold** " + XSS + " [ok](https://example.com/x) `<b>code</b>`\n\n```\n<script>window.__xss=4</script>\n```"
    )
    await other.evaluate(
        """(text) => {
          const node = window.chat.tree.branch().at(-1);
          window.chat.applyEvent({seq: window.chat.lastSeq + 1, type: "delta", turnId: node.turnId,
                                  messageId: node.id, text});
        }""",
        answer,
    )
    body = answers(other).last.locator(".body")
    await expect(body.locator("strong").last).to_have_text("bold")  # after the demo answer's own
    await expect(body).to_contain_text('<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>')
    await expect(body.locator("code").first).to_have_text("<b>code</b>")
    await expect(body.locator("a")).to_have_count(1)  # the javascript: link stays text
    await expect(body.locator("a")).to_have_attribute("href", "https://example.com/x")
    await expect(body.locator("a")).to_have_attribute("rel", "noopener noreferrer nofollow")
    for shown in (page, other):
        assert await shown.locator("#messages img, #messages script, #messages b, #messages [onerror]").count() == 0
        assert await shown.evaluate("() => window.__xss") is None

    # The renderer on its own, with payloads that target parsers rather than text.
    rendered = await other.evaluate(
        """async (payloads) => {
          const { renderMarkdown } = await import("/static/chat/markdown.js");
          return payloads.map((text) => {
            const box = document.createElement("div");
            box.append(renderMarkdown(text));
            return {html: box.innerHTML, elements: [...box.querySelectorAll("*")].map((e) => e.tagName.toLowerCase()),
                    hrefs: [...box.querySelectorAll("a")].map((a) => a.getAttribute("href")),
                    attrs: [...box.querySelectorAll("*")].flatMap((e) => e.getAttributeNames())};
          });
        }""",
        [
            '<svg onload="window.__xss=5">',
            "[x](javascript:alert(1)) [y](data:text/html,hi) [z](JaVaScRiPt:alert(1))",
            '[a](https://ok.example/"onmouseover="alert(1))',
            '```js" onclick="alert(1)\n<iframe src=x>\n```',
            "*<i>em</i>* **<u>strong</u>** &lt;escaped&gt; &amp;",
            "https://example.com/<img>",
        ],
    )
    allowed_tags = {"p", "br", "strong", "em", "code", "pre", "a", "ul", "ol", "li", "blockquote", "h3", "h4", "h5"}
    allowed_attrs = {"href", "rel", "target", "class", "start"}
    for result in rendered:
        assert set(result["elements"]) <= allowed_tags, result
        assert set(result["attrs"]) <= allowed_attrs, result
        assert all(h.startswith(("http://", "https://")) and '"' not in h for h in result["hrefs"]), result
    assert "&amp;lt;escaped&amp;gt;" in rendered[4]["html"]  # entities are text, not markup
    assert await other.evaluate("() => window.__xss") is None


async def test_sessions_page_creates_renames_invites_and_leaves(person: Any, device: Any) -> None:
    alice, bob = await person("alice"), await person("bob")
    owner, guest = await device(alice), await device(bob)
    page = owner.page
    await page.get_by_label("New session title").fill("Weekend plans")
    await page.get_by_role("button", name="Create session").click()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    await expect(page.locator("#session-title")).to_have_text("Weekend plans")

    await page.get_by_role("link", name="All sessions").click()
    item = page.locator("#sessions li", has_text="Weekend plans")
    await item.get_by_text("Manage").click()
    rename = item.get_by_label("Rename to")
    await rename.fill("Weekend trip")
    await rename.press("Enter")
    await expect(page.get_by_role("alert")).to_have_text("Renamed to “Weekend trip”.")
    item = page.locator("#sessions li", has_text="Weekend trip")
    await item.get_by_text("Manage").click()
    invite = item.get_by_label("Invite by username")
    await invite.fill(bob.username)
    await invite.press("Enter")
    await expect(page.get_by_role("alert")).to_contain_text(f"{bob.username} can now open")

    await guest.page.reload()
    shared = guest.page.locator("#sessions li", has_text="Weekend trip")
    await expect(shared).to_contain_text(f"owner {alice.username}")
    await shared.get_by_text("Manage").click()
    guest.page.once("dialog", lambda dialog: dialog.accept())
    await shared.get_by_role("button", name="Leave session").click()
    await expect(guest.page.get_by_role("alert")).to_have_text("You left “Weekend trip”.")
    await expect(guest.page.locator("#sessions li", has_text="Weekend trip")).to_have_count(0)
    sessions = await bob.api.request("GET", "/api/sessions")
    assert sessions["results"] == []


async def test_transport_module_alone_streams_waits_and_cancels_on_close(person: Any, device: Any) -> None:
    alice = await person("alice")
    sid = (await alice.api.create_session(title="Module", model_options={"tokens": 30, "rate": 40}))["id"]
    dev = await device(alice)
    result = await dev.page.evaluate(
        """async (sid) => {
          const { ChatTransport } = await import("/static/chat/transport.js");
          const chat = new ChatTransport({ sessionId: sid });
          await chat.connect();
          const turn = await chat.send("hello", { policy: "concurrent" });
          let streamed = "";
          for await (const piece of turn.stream()) streamed += piece;
          const [ended] = await chat.waitForTurn({ turnId: turn.turnId }, { timeout: 20000 });
          const answer = chat.answerOf(turn.turnId).parts.map((p) => p.text).join("");
          let refused = null;
          try { await chat.send("x", { policy: "bogus" }); } catch (error) { refused = error.code; }
          const slow = await chat.send("a long one");
          const closed = await chat.close({ cancel: true });
          return { streamed, answer, status: ended.status, refused, state: chat.state, closed, slow: slow.turnId };
        }""",
        sid,
    )
    assert result["answer"] and result["streamed"] == result["answer"]
    assert result["status"] == "complete" and result["refused"] == "invalid"
    assert result["state"] == "closed" and result["closed"]["cancelled"] == [result["slow"]]
    final = await alice.api.wait(sid, {"turnId": result["slow"]}, timeout=20)
    assert final["turns"][0]["status"] == "cancelled"
