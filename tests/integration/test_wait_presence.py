"""waitForTurn over HTTP, and who is online."""

from __future__ import annotations

import asyncio

from tests.integration.helpers import session_with


async def test_wait_returns_when_the_matching_turns_end(make_client):
    alice, bob = await make_client("alice"), await make_client("bob")
    session = await session_with(alice, bob, tokens=20, rate=100)
    mine = await alice.send(session["id"], "mine")
    theirs = await bob.send(session["id"], "theirs")

    own, everything = await asyncio.gather(
        alice.wait(session["id"], {"own": True}, timeout=20),
        alice.wait(session["id"], {"all": True}, timeout=20),
    )

    assert own == {"turns": [{"turnId": mine["turnId"], "status": "complete", "reason": "complete"}], "timedOut": False}
    assert {t["turnId"] for t in everything["turns"]} == {mine["turnId"], theirs["turnId"]}
    assert all(t["status"] == "complete" for t in everything["turns"])


async def test_wait_times_out_and_says_so(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=500, rate=20)
    turn = await alice.send(session["id"], "long")

    result = await alice.wait(session["id"], {"turnId": turn["turnId"]}, timeout=0.3)

    assert result == {"turns": [{"turnId": turn["turnId"], "status": "active", "reason": None}], "timedOut": True}
    await alice.cancel(session["id"], all=True)
    done = await alice.wait(session["id"], {"turnId": turn["turnId"]}, timeout=10)
    assert done["turns"][0]["status"] == "cancelled" and done["timedOut"] is False


async def test_wait_with_nothing_in_flight_answers_at_once(make_client):
    alice = await make_client("alice")
    session = await session_with(alice)
    assert await alice.wait(session["id"], {"own": True}, timeout=30) == {"turns": [], "timedOut": False}


async def test_members_online_are_announced_as_devices_come_and_go(make_client):
    alice, bob = await make_client("alice"), await make_client("bob")
    session = await session_with(alice, bob)
    phone = await alice.connect(session["id"])
    assert phone.online == [alice.client_id]

    laptop = await bob.connect(session["id"])
    await phone.wait_for(lambda: phone.online == sorted([alice.client_id, bob.client_id]))
    second_tab = await bob.connect(session["id"])
    await laptop.close()
    await second_tab.ping()
    assert phone.online == sorted([alice.client_id, bob.client_id])  # bob still has a device
    await second_tab.close()
    await phone.wait_for(lambda: phone.online == [alice.client_id])
