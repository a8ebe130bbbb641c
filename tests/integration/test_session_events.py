"""Session and member events: a rename, the owner's new settings, an invitation and a leave
reach every device of the session live (no reload), and only the owner changes what decides
everyone's messages."""

from __future__ import annotations

from chat_client import ChatClientError
from tests.integration.helpers import assert_clean, session_with


async def test_settings_and_members_reach_every_device_live(make_client):
    alice, bob, carol = await make_client("alice"), await make_client("bob"), await make_client("carol")
    session = await session_with(alice, bob)
    sid = session["id"]
    laptop, phone, other = await alice.connect(sid), await alice.connect(sid), await bob.connect(sid)

    await bob.request("PATCH", f"/api/sessions/{sid}", json={"title": "Renamed by bob"})
    for device in (laptop, phone, other):
        event = await device.wait_event(lambda e: e["type"] == "session.updated")
        assert (event["title"], event["clientId"], event["policy"]) == ("Renamed by bob", bob.client_id, "concurrent")

    await alice.request("PATCH", f"/api/sessions/{sid}", json={"policy": "queue", "modelOptions": {"tokens": 3}})
    for device in (laptop, other):
        event = await device.wait_event(lambda e: e["type"] == "session.updated" and e["policy"] == "queue")
        assert event["modelOptions"] == {"tokens": 3} and event["title"] == "Renamed by bob"

    await alice.add_member(sid, carol.client_id)
    joined = await other.wait_event(lambda e: e["type"] == "member.joined")
    assert (joined["clientId"], joined["role"], joined["by"]) == (carol.client_id, "member", alice.client_id)
    await alice.add_member(sid, carol.client_id)  # already a member: nothing new to announce

    await carol.request("DELETE", f"/api/sessions/{sid}/members")
    left = await laptop.wait_event(lambda e: e["type"] == "member.left")
    assert left["clientId"] == carol.client_id
    assert [e["clientId"] for e in laptop.events_of("member.joined")] == [carol.client_id]
    assert_clean(laptop, phone, other)


async def test_only_the_owner_changes_the_default_policy_and_the_model(make_client):
    alice, bob = await make_client("alice"), await make_client("bob")
    session = await session_with(alice, bob)
    for change in ({"policy": "reject"}, {"model": "demo"}, {"modelOptions": {"rate": 5}}):
        try:
            await bob.request("PATCH", f"/api/sessions/{session['id']}", json=change)
        except ChatClientError as error:
            assert (error.status, error.code) == (403, "forbidden")
        else:
            raise AssertionError(f"a member changed {change}")
    assert (await bob.session(session["id"]))["policy"] == "concurrent"


async def test_a_new_session_answers_as_its_detail_reads(make_client):
    """The create answer is built from what the creation wrote: it must be the session a
    GET shows, members, seq and turns included."""
    alice = await make_client("alice")
    created = await alice.create_session(title="fresh", model_options={"tokens": 2}, policy="queue")
    detail = await alice.request("GET", f"/api/sessions/{created['id']}")
    assert created == detail
    assert (created["members"], created["lastSeq"], created["owner"]) == ([alice.client_id], 0, alice.client_id)


async def test_a_session_detail_shows_its_members_and_turns_in_flight(make_client):
    alice, bob = await make_client("alice"), await make_client("bob")
    session = await session_with(alice, bob, tokens=2000, rate=20)  # a turn that streams on
    sid = session["id"]
    first = await bob.send(sid, "long one")
    mine = await alice.send(sid, "alongside")
    waiting = await alice.send(sid, "after them", policy="queue")

    detail = await bob.request("GET", f"/api/sessions/{sid}")

    assert (detail["owner"], detail["members"]) == (alice.client_id, [alice.client_id, bob.client_id])
    assert detail["activeTurns"] == {bob.client_id: [first["turnId"]], alice.client_id: [mine["turnId"]]}
    assert [t["turnId"] for t in detail["turns"]] == [first["turnId"], mine["turnId"]]
    assert [t["turnId"] for t in detail["queuedTurns"]] == [waiting["turnId"]]
    assert detail["lastSeq"] > 0
    await alice.request("POST", f"/api/sessions/{sid}/cancel", json={"all": True})
