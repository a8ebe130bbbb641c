"""Cancels from Ably clients: `ai-cancel` published on a session's channel by a member's
Ably client (official SDK, token from our endpoint) cancels through the same service and
authoriser as the HTTP API, with the clientId Ably verified as the identity."""

from __future__ import annotations

import json
from typing import Any

from ably import AblyRealtime, AblyRest
from ably.types.message import Message

from tests.ably.fake_ably import FakeAblyThread
from tests.ably.helpers import MemberAbly, channel_of, transport, wait_run_end
from tests.ably.test_mirror import eventually

SLOW = {"tokens": 200, "rate": 20}  # ten seconds: cancelled long before its end


async def test_a_members_ai_cancel_stops_the_turn_it_names(
    ably_client: Any, fake_ably: FakeAblyThread, mirror: Any
) -> None:
    alice, bob = await ably_client("alice"), await ably_client("bob")
    session = await alice.create_session(title="cancel from ably", model_options=SLOW)
    await alice.add_member(session["id"], bob.client_id)
    bobs = MemberAbly(bob, session["id"], fake_ably.port)
    try:
        sent = await alice.send(session["id"], "a long answer")
        fake_ably.wait_for(
            lambda f: any(op.kind == "append" and op.channel == channel_of(session["id"]) for op in f.operations)
        )
        await bobs.cancel(channel_of(session["id"]), run_id=sent["turnId"])
        ended = await alice.wait(session["id"], {"turnId": sent["turnId"]}, timeout=30)
        assert ended["turns"][0]["reason"] == "cancelled"
        turn = await alice.turn(session["id"], sent["turnId"])
        assert turn["cancelledBy"] == bob.client_id  # the identity Ably verified, not a claim
        messages = wait_run_end(fake_ably, session["id"], sent["turnId"])
        end = next(m for m in messages if m["name"] == "ai-run-end")
        assert transport(end)["run-reason"] == "cancelled"
    finally:
        await bobs.close()


async def test_an_ai_cancel_from_a_non_member_is_ignored(
    ably_client: Any, fake_ably: FakeAblyThread, mirror: Any
) -> None:
    """Bob took a token, then left the session: his token still lets him publish on the
    channel until it expires, but he is no member, so his cancel does nothing. Neither does
    one from a clientId that is no user at all (a token signed with the key elsewhere)."""
    alice, bob = await ably_client("alice"), await ably_client("bob")
    session = await alice.create_session(title="not yours", model_options={"tokens": 60, "rate": 30})
    channel = channel_of(session["id"])
    await alice.add_member(session["id"], bob.client_id)
    bobs = MemberAbly(bob, session["id"], fake_ably.port)
    rest = AblyRest(key=fake_ably.key, endpoint="127.0.0.1", port=fake_ably.port, tls=False, use_token_auth=True)

    async def mallory_token(_params: Any) -> Any:
        return await rest.auth.request_token({"client_id": "mallory"})

    mallory = AblyRealtime(auth_callback=mallory_token, endpoint=f"127.0.0.1:{fake_ably.port}", tls=False)
    try:
        await bobs.realtime.channels.get(channel).attach()  # his token, while a member
        await bob.request("DELETE", f"/api/sessions/{session['id']}/members")
        before = mirror.stats()["cancels_ignored"]
        sent = await alice.send(session["id"], "carry on")
        await bobs.cancel(channel, run_id=sent["turnId"])
        transport_headers = {"run-id": sent["turnId"], "event-id": "mallory-1"}
        await mallory.channels.get(channel).publish(
            Message(name="ai-cancel", extras={"ai": {"transport": transport_headers}})
        )
        await eventually(lambda: mirror.stats()["cancels_ignored"] >= before + 2)
        ended = await alice.wait(session["id"], {"turnId": sent["turnId"]}, timeout=30)
        assert ended["turns"][0]["reason"] == "complete"
        wait_run_end(fake_ably, session["id"], sent["turnId"])
    finally:
        await bobs.close()
        await mallory.close()
        await rest.close()


async def test_an_ai_cancel_for_a_turn_not_seen_yet_is_held_until_it_comes(
    ably_client: Any, fake_ably: FakeAblyThread, mirror: Any
) -> None:
    """A client that chooses its turnId (or its message id) cancels before its send reaches
    the server: the turn ends cancelled the moment it is created, by run-id (held by the
    cancel service) or by input-codec-message-id (held by the mirror)."""
    alice = await ably_client("alice")
    session = await alice.create_session(title="early", model_options=SLOW)
    channel = channel_of(session["id"])
    alices = MemberAbly(alice, session["id"], fake_ably.port)
    try:
        before = mirror.stats()["cancels_held"]
        await alices.cancel(channel, run_id="t-not-yet")
        await alices.cancel(channel, input_codec_message_id="m-not-yet")
        await eventually(lambda: mirror.stats()["cancels_held"] >= before + 2)

        by_run = await alice.send(session["id"], "first", turnId="t-not-yet")
        ended = await alice.wait(session["id"], {"turnId": "t-not-yet"}, timeout=30)
        assert ended["turns"][0]["reason"] == "cancelled"
        message = {"id": "m-not-yet", "role": "user", "parts": [{"type": "text", "text": "second"}]}
        by_input = await alice.send(session["id"], messages=[message])
        ended = await alice.wait(session["id"], {"turnId": by_input["turnId"]}, timeout=30)
        assert ended["turns"][0]["reason"] == "cancelled"
        messages = wait_run_end(fake_ably, session["id"], by_run["turnId"], by_input["turnId"])
        for turn in (by_run, by_input):
            end = next(m for m in messages if m["name"] == "ai-run-end" and transport(m)["run-id"] == turn["turnId"])
            assert transport(end)["run-reason"] == "cancelled"
    finally:
        await alices.close()


async def test_an_ai_cancel_may_carry_one_of_our_filters(
    ably_client: Any, fake_ably: FakeAblyThread, mirror: Any
) -> None:
    """Our extension: `cancel-filter` holds a filter of docs/protocol.md ({"clientId"} here),
    decided as the HTTP API decides it."""
    alice, bob = await ably_client("alice"), await ably_client("bob")
    session = await alice.create_session(title="filters", model_options=SLOW)
    await alice.add_member(session["id"], bob.client_id)
    bobs = MemberAbly(bob, session["id"], fake_ably.port)
    try:
        alices_turns = [await alice.send(session["id"], f"alice {i}") for i in range(2)]
        bobs_turn = await bob.send(session["id"], "bob's own")
        await bobs.cancel(channel_of(session["id"]), cancel_filter=json.dumps({"clientId": alice.client_id}))
        for turn in alices_turns:
            ended = await alice.wait(session["id"], {"turnId": turn["turnId"]}, timeout=30)
            assert ended["turns"][0]["reason"] == "cancelled"
        assert (await bob.turn(session["id"], bobs_turn["turnId"]))["status"] == "active"
        await bob.cancel(session["id"], turn_id=bobs_turn["turnId"])
    finally:
        await bobs.close()
