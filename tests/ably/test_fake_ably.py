"""The local Ably speaks Ably's protocols as the official SDK expects them: checked through
ably-python 3.x itself (REST in JSON and msgpack, realtime), so the mirror's tests stand on
a server the SDK cannot tell from Ably for what they use."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ably import AblyException, AblyRealtime, AblyRest
from ably.types.message import Message

from tests.ably.fake_ably import FakeAblyThread


def rest(fake: FakeAblyThread, *, binary: bool = True, **options: Any) -> AblyRest:
    return AblyRest(
        key=fake.key,
        endpoint="127.0.0.1",
        port=fake.port,
        tls=False,
        use_token_auth=True,
        use_binary_protocol=binary,
        **{"client_id": "*", **options},
    )


@pytest.mark.parametrize("binary", [True, False], ids=["msgpack", "json"])
async def test_publish_is_idempotent_by_id_and_history_pages_newest_first(
    fake_ably: FakeAblyThread, binary: bool
) -> None:
    client = rest(fake_ably, binary=binary)
    channel = client.channels.get(f"fake:publish-{binary}")
    first = await channel.publish(Message(name="a", data="one", id=f"id-{binary}-1", client_id="alice"))
    again = await channel.publish(Message(name="a", data="one", id=f"id-{binary}-1", client_id="alice"))
    assert again.serials == first.serials  # the same id: not published twice
    await channel.publish(messages=[Message(name="b", data={"n": 2}), Message(name="c", data=b"\x00\x01")])
    page = await channel.history(limit=2)
    assert [(m.name, m.data) for m in page.items] == [("c", b"\x00\x01"), ("b", {"n": 2})]
    older = await page.next()
    assert [(m.name, m.data, m.client_id) for m in older.items] == [("a", "one", "alice")]
    assert not older.has_next()
    await client.close()


async def test_appends_grow_a_message_and_history_gives_it_whole_as_an_update(fake_ably: FakeAblyThread) -> None:
    client = rest(fake_ably)
    channel = client.channels.get("fake:appends")
    created = await channel.publish(Message(name="ai-output", data="", extras={"ai": {"transport": {"s": "1"}}}))
    serial = created.serials[0]
    versions = []
    for piece in ("Hel", "lo"):
        result = await channel.append_message(
            Message(serial=serial, data=piece, extras={"ai": {"transport": {"s": "2"}}})
        )
        versions.append(result.version_serial)
    assert versions == sorted(versions) and versions[0] > serial  # versions are ordered after the serial
    [whole] = (await channel.history()).items
    assert (whole.data, whole.action.name, whole.serial, whole.version.serial) == (
        "Hello",
        "MESSAGE_UPDATE",
        serial,
        versions[-1],
    )
    assert whole.extras == {"ai": {"transport": {"s": "2"}}}  # an append replaces extras
    await channel.update_message(Message(name="ai-output", serial=serial, data="Bye"))
    assert (await channel.get_message(serial)).data == "Bye"
    await client.close()


async def test_a_token_request_is_checked_and_the_token_bounds_what_it_may_do(fake_ably: FakeAblyThread) -> None:
    signer = rest(fake_ably, client_id=None)
    request = await signer.auth.create_token_request(
        {"client_id": "bob", "capability": {"fake:bob": ["publish", "subscribe"]}}
    )
    details = await signer.auth.request_token(auth_callback=lambda _p: _done(request.to_dict()))
    assert details.client_id == "bob"
    replayed = AblyRest(
        auth_callback=lambda _p: _done(request.to_dict()), endpoint="127.0.0.1", port=fake_ably.port, tls=False
    )
    with pytest.raises(AblyException) as nonce:
        await replayed.auth.authorize()
    assert nonce.value.code == 40105  # a token request is good once

    bob = AblyRest(token_details=details, endpoint="127.0.0.1", port=fake_ably.port, tls=False)
    await bob.channels.get("fake:bob").publish(Message(name="x", data="y"))
    with pytest.raises(AblyException) as history:
        await bob.channels.get("fake:bob").history()
    assert history.value.code == 40160
    with pytest.raises(AblyException) as elsewhere:
        await bob.channels.get("fake:alice").publish(Message(name="x", data="y"))
    assert elsewhere.value.code == 40160
    for client in (signer, replayed, bob):
        await client.close()


async def test_realtime_subscribers_get_creates_and_appends_and_late_ones_get_it_whole(
    fake_ably: FakeAblyThread,
) -> None:
    client = rest(fake_ably)
    channel = client.channels.get("fake:realtime")
    created = await channel.publish(Message(name="ai-output", data=""))

    async def token(_params: Any) -> Any:
        return await client.auth.request_token({"client_id": "watcher"})

    realtime = AblyRealtime(auth_callback=token, endpoint=f"127.0.0.1:{fake_ably.port}", tls=False)
    received: asyncio.Queue[Any] = asyncio.Queue()
    await realtime.channels.get("fake:realtime").subscribe(received.put_nowait)
    await channel.append_message(Message(serial=created.serials[0], data="late"))
    await channel.append_message(Message(serial=created.serials[0], data=" joiner"))
    first, second = [await asyncio.wait_for(received.get(), 10) for _ in range(2)]
    # Attached after the create: the first append arrives as the whole message, then appends.
    assert (first.action.name, first.data) == ("MESSAGE_UPDATE", "late")
    assert (second.action.name, second.data) == ("MESSAGE_APPEND", " joiner")
    await realtime.channels.get("fake:realtime").publish("ai-cancel", None)
    mine = await asyncio.wait_for(received.get(), 10)
    assert (mine.name, mine.client_id, mine.action.name) == ("ai-cancel", "watcher", "MESSAGE_CREATE")
    await realtime.close()
    await client.close()


async def _done(value: Any) -> Any:
    return value
