"""Fan-out: one turn of the workload followed by 50 devices of one session."""

from __future__ import annotations

import time

from bench.harness import (
    TOKENS,
    BenchStack,
    CpuMeter,
    analyse_turn,
    close_all,
    connect,
    ms,
    new_prompt,
    new_sessions,
    percentile,
)
from bench.scenarios import Figure, Measured, Scenario, at_most

DEVICES = 50


def figures(quick: bool) -> list[Figure]:
    return [
        Figure("fanout_p50", f"fan-out to {DEVICES} devices: token latency p50", "ms"),
        Figure("fanout_p99", f"fan-out to {DEVICES} devices: token latency p99", "ms", "<= 30 ms", at_most(30)),
        Figure(
            "fanout_missing",
            f"fan-out to {DEVICES} devices: tokens lost or doubled (all devices)",
            "tokens",
            "0",
            at_most(0),
        ),
    ]


async def run(bench: BenchStack, quick: bool) -> Measured:
    measured = Measured()
    client = (await bench.login())[0]
    [session] = await new_sessions(client, 1)
    devices = await connect(client, [session] * DEVICES)
    prompt = new_prompt("fanout")
    meter = CpuMeter(bench.pids).start()
    try:
        sent_at = time.time()
        handle = await devices[0].send(prompt)
        for device in devices:
            try:
                await device.wait_turn_end(handle.turn_id, 60)
            except TimeoutError:
                measured.problems.append("fan-out: a device did not see turn.end within 60 s")
        meter.stop()
        results = [analyse_turn(d, handle.turn_id, prompt, sent_at) for d in devices]
    finally:
        await close_all(devices)
    latencies = [ms(x) for r in results for x in r.latencies]
    missing = sum(r.lost + r.doubled for r in results)
    wrong = sum(1 for r in results if not r.text_ok)
    measured.figures["fanout_p50"] = percentile(latencies, 50)
    measured.figures["fanout_p99"] = percentile(latencies, 99)
    measured.figures["fanout_missing"] = missing
    measured.details = {
        "devices": DEVICES,
        "tokens_delivered": len(latencies),
        "expected": DEVICES * TOKENS,
        "wrong_text_devices": wrong,
        "max_ms": max(latencies, default=float("nan")),
        "cpu_s_per_1k_tokens": meter.per_thousand(len(latencies)),
    }
    if missing or wrong:
        measured.problems.append(f"fan-out: {missing} tokens lost/doubled, {wrong} devices with a wrong answer")
    return measured


SCENARIO = Scenario("fanout", f"Fan-out, one turn to {DEVICES} devices", figures, run)
