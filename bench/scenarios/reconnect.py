"""Reconnect: a device drops, at least 1,000 events accumulate (a turn of 1,000 tokens at
500 tokens/s streamed alone, so about one delta per token), and the device reconnects with
`after=last_seq`: time from the reconnect to the last missed event received."""

from __future__ import annotations

import time

from bench.harness import BenchStack, close_all, connect, ms, new_sessions
from bench.scenarios import Figure, Measured, Scenario

MISSED = 1000
OPTIONS = {"tokens": 1000, "rate": 500, "stamp": True}


def figures(quick: bool) -> list[Figure]:
    return [
        Figure("reconnect_1000_ms", f"reconnect: receive {MISSED} missed events", "ms", "(no target given)"),
        Figure("reconnect_problems", "reconnect: gaps + duplicates", "events", "0"),
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
    return measured


SCENARIO = Scenario("reconnect", "Reconnect and catch up 1,000 missed events", figures, run)
