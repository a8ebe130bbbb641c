"""Ably tokens for members: `POST /api/sessions/{id}/ably-token` signs a token request for
the caller's clientId, good for the session's channel only: subscribe, history and publish
(cancels), nothing else. Exercised through the official SDK against the local Ably, which
checks the request's HMAC and enforces the capability as Ably does."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from ably import AblyException, AblyRest
from ably.types.message import Message

from chat_client.protocol import ChatClientError
from tests.ably.fake_ably import FakeAblyThread
from tests.ably.helpers import MemberAbly, channel_of, wait_run_end
from tests.stack import Stack


async def test_a_member_gets_a_token_for_the_sessions_channel_only(
    ably_client: Any, ably_stack: Stack, fake_ably: FakeAblyThread, mirror: Any
) -> None:
    alice, bob = await ably_client("alice"), await ably_client("bob")
    mine = await alice.create_session(title="mine")
    theirs = await bob.create_session(title="theirs")
    request = await alice.request("POST", f"/api/sessions/{mine['id']}/ably-token")
    assert request["keyName"] == fake_ably.key.split(":")[0]
    assert request["clientId"] == alice.client_id
    assert json.loads(request["capability"]) == {channel_of(mine["id"]): ["history", "publish", "subscribe"]}
    assert request["ttl"] == 3_600_000
    assert fake_ably.key.split(":")[1] not in json.dumps(request)  # the secret stays on the server

    # Anyone else is refused; the caller must be authenticated; the session must exist.
    async with httpx.AsyncClient(base_url=ably_stack.base_url) as anonymous:
        refused = await anonymous.post(f"/api/sessions/{mine['id']}/ably-token")
    assert refused.status_code == 401
    with pytest.raises(ChatClientError) as forbidden:
        await bob.request("POST", f"/api/sessions/{mine['id']}/ably-token")
    assert forbidden.value.code == "forbidden"
    with pytest.raises(ChatClientError) as missing:
        await alice.request("POST", "/api/sessions/00000000-0000-0000-0000-000000000000/ably-token")
    assert missing.value.code == "not_found"

    # A request altered on its way is refused by Ably: the MAC covers clientId and capability.
    rest = AblyRest(key=fake_ably.key, endpoint="127.0.0.1", port=fake_ably.port, tls=False, use_token_auth=True)
    forged = {**request, "clientId": bob.client_id}
    with pytest.raises(AblyException) as bad_mac:
        await rest.auth.request_token(auth_callback=_returning(forged))
    assert bad_mac.value.code == 40101
    await rest.close()

    alices = MemberAbly(alice, mine["id"], fake_ably.port)
    try:
        channel = alices.rest.channels.get(channel_of(mine["id"]))
        # What the token allows: history, publish (under her own clientId), subscribe.
        await channel.publish(Message(name="ai-cancel", extras={"ai": {"transport": {"run-id": "none"}}}))
        history = await channel.history()
        assert [(m.name, m.client_id) for m in history.items][:1] == [("ai-cancel", alice.client_id)]
        await alices.realtime.channels.get(channel_of(mine["id"])).attach()

        # What it does not: another session's channel, another clientId, touching messages.
        other = alices.rest.channels.get(channel_of(theirs["id"]))
        for attempt in (other.history(), other.publish(Message(name="ai-cancel"))):
            with pytest.raises(AblyException) as denied:
                await attempt
            assert denied.value.code == 40160
        with pytest.raises(AblyException) as impersonating:
            await channel.publish(Message(name="ai-cancel", client_id=bob.client_id))
        assert impersonating.value.code == 40012
        sent = await alice.send(mine["id"], "ours to edit, not yours")
        server_message = wait_run_end(fake_ably, mine["id"], sent["turnId"])[-1]
        for edit in (channel.update_message, channel.append_message):
            with pytest.raises(AblyException) as not_yours:
                await edit(Message(serial=server_message["serial"], data="forged"))
            assert not_yours.value.code == 40160
        with pytest.raises(AblyException):
            await alices.realtime.channels.get(channel_of(theirs["id"])).attach()
    finally:
        await alices.close()


def _returning(value: Any) -> Any:
    async def callback(_params: Any) -> Any:
        return value

    return callback


@pytest.mark.django_db
def test_without_an_api_key_there_is_no_ably_token(settings: Any, django_user_model: Any) -> None:
    from sessions_app.ably.tokens import ably_token_request
    from sessions_app.errors import NotFound
    from sessions_app.sessions.services import session_create

    settings.ABLY_API_KEY = ""
    owner = django_user_model.objects.create_user(username="owner-no-ably", password="pw")
    session = session_create(owner=owner, title="no ably")
    with pytest.raises(NotFound):
        ably_token_request(session_id=session.pk, user=owner)
