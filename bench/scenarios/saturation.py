"""Saturation: the token rate the stack sustains, and the CPU each process spends per 1,000
delivered tokens, with the workload's turns (100 tokens at 50 tokens/s).

Closed loop: each of N devices sends a turn, waits for its `turn.end`, and sends the next,
for a fixed time; N ramps until the offered load (N x 50 tokens/s) is well beyond what two
cores can carry. Tokens delivered and CPU are counted in the steady window after a warm-up
(the first wave's start burst is the first-token figures' business), so turn starts are
paid for at the rate the loop needs them: one per 100 tokens.
"""

from __future__ import annotations

import asyncio
import time

from bench.harness import (
    RATE,
    BenchStack,
    CpuMeter,
    TurnResult,
    close_all,
    connect,
    ms,
    new_sessions,
    percentile,
    run_turns_closed_loop,
)
from bench.scenarios import Figure, Measured, Scenario, at_least

PROCESSES = ("daphne", "celery worker", "redis-server", "bench client")
WARM_UP = 3.0  # seconds before counting: every device's first turn has started by then


def levels(quick: bool) -> list[int]:
    return [200] if quick else [150, 200, 300]


def window(quick: bool) -> float:
    return 5.0 if quick else 8.0


def figures(quick: bool) -> list[Figure]:
    out = [
        Figure("saturation_tps", "saturation: tokens/s delivered (best level)", "tokens/s", ">= 6000", at_least(6000))
    ]
    for n in levels(quick):
        out.append(
            Figure(
                f"saturation_tps@{n}", f"tokens/s delivered, {n} devices in a loop ({n * RATE:g} offered)", "tokens/s"
            )
        )
    out += [
        Figure(f"saturation_cpu_per_1k:{name}", f"CPU per 1k tokens at saturation: {name}", "CPU ms")
        for name in PROCESSES
    ]
    return out


async def run(bench: BenchStack, quick: bool) -> Measured:
    measured = Measured()
    client = (await bench.login())[0]
    best = 0.0
    for n in levels(quick):
        sessions = await new_sessions(client, n)
        devices = await connect(client, sessions)
        meter = CpuMeter(bench.pids)
        started = time.time()
        measure_from, measure_until = started + WARM_UP, started + WARM_UP + window(quick)

        metering = asyncio.create_task(meter_window(meter, measure_from, measure_until))
        results, timed_out = await run_turns_closed_loop(devices, f"sat{n}", until=measure_until)
        await metering
        await close_all(devices)
        measured.details[f"level {n}"] = level_details(n, results, timed_out, meter, measure_from, measure_until)
        details = measured.details[f"level {n}"]
        tps = details["tokens_per_s"]
        measured.figures[f"saturation_tps@{n}"] = tps
        lost = details["lost_or_doubled"]
        if lost or timed_out:
            measured.problems.append(f"saturation {n} devices: {lost} tokens lost/doubled, {timed_out} turns not ended")
        if tps > best:
            best = tps
            for name in PROCESSES:
                measured.figures[f"saturation_cpu_per_1k:{name}"] = measured.details[f"level {n}"]["cpu_ms_per_1k"][
                    name
                ]
    measured.figures["saturation_tps"] = best
    return measured


async def meter_window(meter: CpuMeter, start: float, end: float) -> None:
    """CPU of each process between the wall-clock times `start` and `end`."""
    await asyncio.sleep(start - time.time())
    meter.start()
    await asyncio.sleep(end - time.time())
    meter.stop()


def level_details(
    n: int, results: list[TurnResult], timed_out: int, meter: CpuMeter, start: float, end: float
) -> dict[str, object]:
    in_window = [
        (t, latency)
        for r in results
        for t, latency in zip(r.receive_times, r.latencies, strict=True)
        if start <= t < end
    ]
    delivered = len(in_window)
    latencies = [ms(latency) for _, latency in in_window]
    firsts = [ms(r.first_token) for r in results if r.first_token is not None]
    return {
        "devices": n,
        "offered_tokens_per_s": n * RATE,
        "turns": len(results),
        "tokens_in_window": delivered,
        "window_s": round(end - start, 3),
        "tokens_per_s": round(delivered / (end - start), 1),
        "lost_or_doubled": sum(r.lost + r.doubled for r in results),
        "timed_out": timed_out,
        "token_p50_ms": percentile(latencies, 50),
        "token_p99_ms": percentile(latencies, 99),
        "first_token_p50_ms": percentile(firsts, 50),
        "first_token_p99_ms": percentile(firsts, 99),
        "cpu_s": meter.used,
        "cpu_ms_per_1k": {k: v * 1000 * 1000 / delivered if delivered else float("nan") for k, v in meter.used.items()},
        "cpu_utilisation_cores": {k: round(v / (end - start), 2) for k, v in meter.used.items()},
    }


SCENARIO = Scenario("saturation", "Saturation throughput and CPU per 1k tokens", figures, run)
