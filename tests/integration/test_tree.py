"""The conversation tree: double texting makes siblings, edit and regenerate fork, and each
turn's context is its own branch."""

from __future__ import annotations

from tests.integration.helpers import expected_answer, session_with


async def test_double_texting_makes_sibling_user_messages(make_client):
    alice, bob = await make_client("alice"), await make_client("bob")
    session = await session_with(alice, bob, tokens=10, rate=100)
    device, other = await alice.connect(session["id"]), await bob.connect(session["id"])
    root = await device.send("hello")
    await root.end()

    first = await device.send("question A")
    second = await other.send("question B")  # while A streams
    await first.end()
    await device.wait_turn_end(second.turn_id)

    nodes = device.messages
    assert nodes[first.ack["userMessageId"]]["parent"] == root.ack["assistantMessageId"]
    assert nodes[second.ack["userMessageId"]]["parent"] == root.ack["assistantMessageId"]
    # the next message continues from the newest settled answer
    after = await device.send("and then?")
    await after.end()
    assert nodes[after.ack["userMessageId"]]["parent"] == second.ack["assistantMessageId"]


async def test_edit_forks_a_sibling_and_regenerate_adds_an_answer_sibling(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=8, rate=200)
    device = await alice.connect(session["id"])
    original = await device.send("draft question")
    await original.end()

    edited = await device.send("better question", fork_of=original.ack["userMessageId"])
    await edited.end()
    regenerated = await device.send(regenerate=original.ack["assistantMessageId"])
    await regenerated.end()

    nodes = device.messages
    edit = nodes[edited.ack["userMessageId"]]
    assert edit["forkOf"] == original.ack["userMessageId"]
    assert edit["parent"] == nodes[original.ack["userMessageId"]]["parent"]
    again = nodes[regenerated.ack["assistantMessageId"]]
    assert again["parent"] == original.ack["userMessageId"] and again["forkOf"] == original.ack["assistantMessageId"]
    assert regenerated.ack["userMessageId"] == original.ack["userMessageId"]
    assert device.text_of(again["id"]) == expected_answer("draft question", 8)
    assert device.text_of(edit["id"]) == "better question"
    assert device.text_of(edited.ack["assistantMessageId"]) == expected_answer("better question", 8)


async def test_a_message_can_name_its_parent(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=4, rate=200)
    device = await alice.connect(session["id"])
    a = await device.send("a")
    await a.end()
    b = await device.send("b")
    await b.end()

    c = await device.send("c", parent=a.ack["assistantMessageId"])
    await c.end()

    assert device.messages[c.ack["userMessageId"]]["parent"] == a.ack["assistantMessageId"]
    page = await alice.messages(session["id"], limit=2)
    assert [m["id"] for m in page["results"]] == [c.ack["assistantMessageId"], c.ack["userMessageId"]]
    older = await alice.messages(session["id"], before=page["next"], limit=50)
    assert len(older["results"]) == 4 and older["next"] is None


async def test_unknown_parent_or_fork_is_not_found(make_client):
    alice = await make_client("alice")
    session = await session_with(alice)
    from chat_client import ChatClientError

    device = await alice.connect(session["id"])
    for kwargs in ({"parent": "nope"}, {"fork_of": "nope"}):
        try:
            await device.send("x", **kwargs)
        except ChatClientError as error:
            assert error.code == "not_found"
        else:
            raise AssertionError("expected not_found")
    assert await alice.turns(session["id"]) == []
