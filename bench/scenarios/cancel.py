"""Cancel -> `turn.end` at the device, one turn at a time: while tokens flow (cancel after
10 tokens) and while the model is silent (it pauses after 5 tokens; cancel 100 ms into the
pause). Also counts the deltas of the turn the device receives after the cancel's ack."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.harness import (
    WORKLOAD,
    BenchDevice,
    BenchStack,
    close_all,
    connect,
    ms,
    new_prompt,
    new_sessions,
    percentile,
)
from bench.scenarios import Figure, Measured, Scenario, at_most

SILENT = {**WORKLOAD, "pauseAfter": 5, "pauseSeconds": 10}


def figures(quick: bool) -> list[Figure]:
    out: list[Figure] = []
    # The HTTP API's targets hold over the websocket too (issue 13, docs/performance.md):
    # they replaced the first, laxer ones (p50 <= 10 ms, p99 <= 25 ms).
    for mode in ("flowing", "silent"):
        out += [
            Figure(f"cancel_p50:{mode}", f"cancel -> turn.end p50, model {mode}", "ms", "<= 5 ms", at_most(5)),
            Figure(f"cancel_p99:{mode}", f"cancel -> turn.end p99, model {mode}", "ms", "<= 10 ms", at_most(10)),
            Figure(
                f"cancel_late_deltas:{mode}",
                f"deltas after the cancel's ack (max), model {mode}",
                "deltas",
                "<= 1",
                at_most(1),
            ),
        ]
    return out


def tokens_seen(device: BenchDevice, turn_id: str) -> int:
    return sum(e["text"].count("<") for e in device.turn_events(turn_id) if e["type"] == "delta")


async def one_cancel(device: BenchDevice, tag: str, after_tokens: int, settle: float) -> dict[str, Any]:
    handle = await device.send(new_prompt(tag))
    await device.wait_for(lambda: tokens_seen(device, handle.turn_id) >= after_tokens, 30)
    if settle:
        await asyncio.sleep(settle)
    cancelled_at = time.time()
    await device.cancel(turn_id=handle.turn_id)
    ack_at, ack_index, _ = device.acks[-1]
    end = await device.wait_turn_end(handle.turn_id, 30)
    end_index = device.index_of(end)
    late = sum(
        1 for e in device.events[ack_index:end_index] if e["type"] == "delta" and e.get("turnId") == handle.turn_id
    )
    return {
        "latency_ms": ms(device.receive_times[end_index] - cancelled_at),
        "ack_ms": ms(ack_at - cancelled_at),
        "late": late,
        "reason": end["reason"],
    }


async def run(bench: BenchStack, quick: bool) -> Measured:
    measured = Measured()
    samples = 10 if quick else 25
    client = (await bench.login())[0]
    for mode, options, after_tokens, settle in (("flowing", WORKLOAD, 10, 0.0), ("silent", SILENT, 5, 0.1)):
        [session] = await new_sessions(client, 1, options)
        [device] = await connect(client, [session])
        rows = []
        try:
            for i in range(samples):
                rows.append(await one_cancel(device, f"cancel-{mode}-{i}", after_tokens, settle))
                await asyncio.sleep(0.05)
        finally:
            await close_all([device])
        latencies = [r["latency_ms"] for r in rows]
        measured.figures[f"cancel_p50:{mode}"] = percentile(latencies, 50)
        measured.figures[f"cancel_p99:{mode}"] = percentile(latencies, 99)
        measured.figures[f"cancel_late_deltas:{mode}"] = max(r["late"] for r in rows)
        measured.details[mode] = {
            "samples": samples,
            "max_ms": max(latencies),
            "ack_p50_ms": percentile([r["ack_ms"] for r in rows], 50),
            "late_deltas_total": sum(r["late"] for r in rows),
            "reasons": sorted({r["reason"] for r in rows}),
        }
        if any(r["reason"] != "cancelled" for r in rows):
            measured.problems.append(f"cancel ({mode}): turn.end reasons {sorted({r['reason'] for r in rows})}")
    return measured


SCENARIO = Scenario("cancel", "Cancel to turn.end", figures, run)
