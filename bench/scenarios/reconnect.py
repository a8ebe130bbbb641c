"""Reconnect: a device drops, at least 1,000 events accumulate (a turn of 1,000 tokens at
500 tokens/s streamed alone, so about one delta per token), and the device reconnects with
`after=last_seq`: time from the reconnect to the last missed event received.

And a device's first connect, which starts from a snapshot of the session: to a session of
50 messages (25 exchanges), one device at a time, then 100 at once (a shared session's page
opened everywhere, or every device of a deploy's restarted process starting afresh)."""

from __future__ import annotations

import asyncio
import time

from bench.harness import BenchDevice, BenchStack, close_all, connect, ms, new_sessions, percentile
from bench.scenarios import Figure, Measured, Scenario

MISSED = 1000
OPTIONS = {"tokens": 1000, "rate": 500, "stamp": True}
EXCHANGES = 25  # a user message and its answer each
SHORT_ANSWERS = {"tokens": 20, "rate": 100_000}
STORM = 100


def figures(quick: bool) -> list[Figure]:
    return [
        Figure("reconnect_1000_ms", f"reconnect: receive {MISSED} missed events", "ms", "(no target given)"),
        Figure("reconnect_problems", "reconnect: gaps + duplicates", "events", "0"),
        Figure("snapshot_connect_p50", f"connect to a session of {2 * EXCHANGES} messages: snapshot in, p50", "ms"),
        Figure("snapshot_storm_ms", f"{STORM} devices connecting to it at once: last snapshot in", "ms"),
    ]


async def run(bench: BenchStack, quick: bool) -> Measured:
    measured = Measured()
    client = (await bench.login())[0]
    [session] = await new_sessions(client, 1, OPTIONS)
    [device] = await connect(client, [session])
    try:
        await device.drop()
        dropped_at_seq = device.last_seq
        target = dropped_at_seq
        turns = 0
        while target - dropped_at_seq < MISSED and turns < 5:
            await client.send(session, f"reconnect {turns} {time.time()}")
            await client.wait(session, {"own": True}, timeout=30)
            target = int((await client.session(session))["lastSeq"])
            turns += 1
        missed = target - dropped_at_seq
        started = time.time()
        await device.open(after=dropped_at_seq)
        await device.wait_for(lambda: device.last_seq >= target, 60)
        caught_up = device.receive_times[-1]
        measured.figures["reconnect_1000_ms"] = ms(caught_up - started) * MISSED / missed
        measured.figures["reconnect_problems"] = len(device.gaps) + len(device.duplicates)
        measured.details = {
            "missed_events": missed,
            "turns": turns,
            "resumed": device.resumed,
            "snapshots": device.snapshots,
            "catch_up_ms_all": ms(caught_up - started),
        }
        if not device.resumed:
            measured.problems.append("reconnect: the device got a snapshot instead of the missed events")
    finally:
        await close_all([device])
    await _snapshots(bench, measured, 10 if quick else 30)
    return measured


async def _snapshots(bench: BenchStack, measured: Measured, samples: int) -> None:
    """A device's connect, from the websocket's opening to its snapshot applied."""
    client = (await bench.login())[0]
    [session] = await new_sessions(client, 1, SHORT_ANSWERS)
    for i in range(EXCHANGES):
        await client.send(session, f"snapshot {i} {time.time()}")
        await client.wait(session, {"own": True}, timeout=30)

    async def timed_open(device: BenchDevice) -> float:
        started = time.perf_counter()
        await device.open()
        return ms(time.perf_counter() - started)

    alone = []
    for _ in range(samples):
        device = BenchDevice(client, session)
        alone.append(await timed_open(device))
        if len(device.messages) != 2 * EXCHANGES:
            measured.problems.append(f"snapshot: {len(device.messages)} messages, not {2 * EXCHANGES}")
        await close_all([device])
    measured.figures["snapshot_connect_p50"] = percentile(alone, 50)
    storm = [BenchDevice(client, session) for _ in range(STORM)]
    try:
        started = time.perf_counter()
        await asyncio.gather(*(device.open() for device in storm))
        measured.figures["snapshot_storm_ms"] = ms(time.perf_counter() - started)
    finally:
        await close_all(storm)


SCENARIO = Scenario("reconnect", "Reconnect and catch up 1,000 missed events", figures, run)
