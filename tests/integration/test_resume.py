"""Reconnecting: a device resumes from the last seq it saw with nothing lost or doubled; a
device joining mid-stream starts from a snapshot; lost fan-out is recovered from the log."""

from __future__ import annotations

import asyncio
import time
import uuid

from sessions_app.models import EventRecord
from tests.integration.helpers import assert_clean, expected_answer, session_with


async def test_a_device_that_drops_mid_stream_resumes_with_the_exact_text(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=80, rate=80)
    device, witness = await alice.connect(session["id"]), await alice.connect(session["id"])
    turn = await device.send("long answer")
    await device.wait_for(lambda: device.text_of(turn.ack["assistantMessageId"]).count(" ") >= 10)

    await device.drop()
    await witness.wait_for(lambda: witness.text_of(turn.ack["assistantMessageId"]).count(" ") >= 30)
    await device.open(after=device.last_seq)
    await turn.end()

    assert device.resumed is True and device.snapshots == 1
    assert device.text_of(turn.ack["assistantMessageId"]) == expected_answer("long answer", 80)
    seqs = [e["seq"] for e in device.events]
    assert seqs == list(range(seqs[0], device.last_seq + 1))
    seen_by_witness = {e["seq"]: e for e in witness.events}
    assert [e for e in device.events if e["seq"] in seen_by_witness] == [
        seen_by_witness[e["seq"]] for e in device.events if e["seq"] in seen_by_witness
    ]
    assert_clean(device, witness)


async def test_automatic_reconnect_resumes_where_it_left_off(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=60, rate=60)
    device = await alice.connect(session["id"], auto_reconnect=True)
    turn = await device.send("keep going")
    await device.wait_for(lambda: device.text_of(turn.ack["assistantMessageId"]).count(" ") >= 5)

    device.ws.transport.abort()  # the network goes away; the client reconnects by itself
    await turn.end(timeout=30)

    assert device.text_of(turn.ack["assistantMessageId"]) == expected_answer("keep going", 60)
    assert_clean(device)
    await device.close()


async def test_reconnecting_a_device_that_reconnects_by_itself_opens_one_connection(make_client):
    """`reconnect()` on an `auto_reconnect` device: its drop does not also open a connection
    of its own, which would leave two reading the same events (every frame doubled)."""
    alice = await make_client("alice")
    session = await session_with(alice, tokens=40, rate=80)
    device = await alice.connect(session["id"], auto_reconnect=True)
    turn = await device.send("once")
    await device.wait_for(lambda: device.text_of(turn.ack["assistantMessageId"]).count(" ") >= 5)

    await device.reconnect()
    await turn.end(timeout=30)

    assert device.text_of(turn.ack["assistantMessageId"]) == expected_answer("once", 40)
    assert_clean(device)  # no event arrived twice
    await device.close()


async def test_a_device_joining_mid_stream_gets_a_snapshot_then_the_rest(make_client):
    alice, bob = await make_client("alice"), await make_client("bob")
    session = await session_with(alice, bob, tokens=120, rate=120)
    device = await alice.connect(session["id"])
    turns = [await device.send("first"), await device.send("second")]
    await device.wait_for(lambda: device.text_of(turns[1].ack["assistantMessageId"]).count(" ") >= 20)

    late = await bob.connect(session["id"])
    assert late.resumed is False and late.snapshots == 1
    assert late.active_turns == {alice.client_id: {t.turn_id for t in turns}}
    for turn in turns:
        await late.wait_turn_end(turn.turn_id)

    for prompt, turn in zip(("first", "second"), turns, strict=True):
        assert late.text_of(turn.ack["assistantMessageId"]) == expected_answer(prompt, 120)
    assert_clean(late)


async def test_devices_joining_together_mid_stream_each_get_the_whole_conversation_once(make_client):
    """Devices connecting at the same moment share their snapshot's read; each still gets
    everything up to its own start in it, then the rest as events, nothing twice, also what
    was sent while they connected."""
    alice, bob = await make_client("alice"), await make_client("bob")
    session = await session_with(alice, bob, tokens=100, rate=100)
    device = await alice.connect(session["id"])
    streaming = [await device.send("first"), await device.send("second")]
    await device.wait_for(lambda: device.text_of(streaming[1].ack["assistantMessageId"]).count(" ") >= 10)

    joining = asyncio.gather(*(bob.connect(session["id"]) for _ in range(40)))
    sent_meanwhile = await device.send("third")
    late = await joining
    turns = [*streaming, sent_meanwhile]
    for turn in turns:
        await turn.end()
        for other in late:
            await other.wait_turn_end(turn.turn_id)

    for other in late:
        assert other.resumed is False and other.snapshots == 1
        for prompt, turn in zip(("first", "second", "third"), turns, strict=True):
            assert other.text_of(turn.ack["assistantMessageId"]) == expected_answer(prompt, 100)
        assert set(other.messages) == set(device.messages)
    assert_clean(*late)


async def wait_archived(orm, session_id: str, count: int) -> None:
    """The archive is written in the background: wait until it holds `count` events."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while orm(lambda: EventRecord.objects.filter(session_id=uuid.UUID(session_id)).count()) < count:
        assert loop.time() < deadline, "the archive did not catch up"
        await asyncio.sleep(0.05)


async def test_resume_from_further_back_than_the_live_log_gets_a_snapshot_with_the_exact_text(make_client, stack):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=30, rate=300)
    device = await alice.connect(session["id"])
    turn = await device.send("long ago")
    await turn.end()
    await device.close()
    # Forget all but the newest events (exactly: without `~`).
    stack.redis.xtrim(f"{stack.key_prefix}:{{{session['id']}}}:log", maxlen=3, approximate=False)

    late = await alice.connect(session["id"], after=2)

    assert late.resumed is False and late.snapshots == 1  # deltas are not archived: a snapshot
    assert late.text_of(turn.ack["assistantMessageId"]) == expected_answer("long ago", 30)
    assert late.messages[turn.ack["assistantMessageId"]]["status"] == "complete"
    page = await alice.events(session["id"], after=late.last_seq - 2)
    assert [e["seq"] for e in page["events"]] == [late.last_seq - 1, late.last_seq]


async def test_the_archive_serves_a_resume_whose_gap_holds_no_deltas(make_client, stack, orm):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=30, rate=300)
    device = await alice.connect(session["id"])
    await device.cancel(turn_id="never-ran")  # held: the turn ends at creation, no deltas
    turn = await device.send("too late", turn_id="never-ran")
    end = await turn.end()
    await wait_archived(orm, session["id"], end["seq"])
    stack.redis.xtrim(f"{stack.key_prefix}:{{{session['id']}}}:log", maxlen=1, approximate=False)

    page = await alice.events(session["id"], after=1)  # the events page reads the same archive
    assert [e["seq"] for e in page["events"]][: end["seq"] - 1] == list(range(2, end["seq"] + 1))
    from_archive = await alice.connect(session["id"], after=1)

    assert from_archive.resumed is True
    assert [e["seq"] for e in from_archive.events][: end["seq"] - 1] == list(range(2, end["seq"] + 1))
    assert from_archive.turns[turn.turn_id]["status"] == "cancelled"


async def test_events_lost_by_the_channel_layer_are_recovered_from_the_log(make_client, stack):
    """The channel layer is at-most-once: write an event to the log without fanning it out
    (as a dropped group message looks) and check every device still receives it."""
    alice = await make_client("alice")
    session = await session_with(alice)
    device = await alice.connect(session["id"])
    seq_key = f"{stack.key_prefix}:{{{session['id']}}}:seq"
    log_key = f"{stack.key_prefix}:{{{session['id']}}}:log"
    redis = stack.redis
    seq = int(redis.incr(seq_key))
    frame = f'{{"seq":{seq},"type":"presence","at":{int(time.time() * 1000)},"online":["ghost"]}}'
    redis.xadd(log_key, {"f": frame}, id=f"{seq}-0")

    await device.wait_for(lambda: device.last_seq == seq, timeout=5)  # the tail check finds it
    turn = await device.send("after the loss")  # and later events follow in order
    await turn.end()

    assert device.online == ["ghost"]  # the lost event was delivered, in its place
    assert_clean(device)


async def test_a_turn_streams_across_a_reconnect_of_every_device(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=50, rate=100)
    devices = [await alice.connect(session["id"]) for _ in range(3)]
    turn = await devices[0].send("all of us")
    for device in devices:
        await device.wait_for(lambda d=device: d.text_of(turn.ack["assistantMessageId"]).count(" ") >= 5)
        await device.reconnect()
    await turn.end()
    for device in devices:
        await device.wait_turn_end(turn.turn_id)
        assert device.text_of(turn.ack["assistantMessageId"]) == expected_answer("all of us", 50)
    assert_clean(*devices)
