"""Saturation: tokens per second delivered to devices while pushing many turns at once
(ramp of concurrent turns, each 50 tokens at a high rate: 200 tokens/s), and CPU seconds per 1,000
delivered tokens for each process."""

from __future__ import annotations

import time

from bench.harness import (
    BenchStack,
    CpuMeter,
    close_all,
    connect,
    ms,
    new_sessions,
    percentile,
    run_turns,
)
from bench.scenarios import Figure, Measured, Scenario, at_least

TOKENS = 50
RATE = 200.0
OPTIONS = {"tokens": TOKENS, "rate": RATE, "stamp": True}
PROCESSES = ("daphne", "celery worker", "redis-server", "bench client")


def levels(quick: bool) -> list[int]:
    return [200] if quick else [200, 300, 400]


def figures(quick: bool) -> list[Figure]:
    out = [
        Figure("saturation_tps", "saturation: tokens/s delivered (best level)", "tokens/s", ">= 6000", at_least(6000))
    ]
    for n in levels(quick):
        out.append(Figure(f"saturation_tps@{n}", f"tokens/s delivered, {n} turns at {RATE:g} tokens/s", "tokens/s"))
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
        sessions = await new_sessions(client, n, OPTIONS)
        devices = await connect(client, sessions)
        meter = CpuMeter(bench.pids).start()
        started = time.time()
        results, timed_out = await run_turns(devices, f"sat{n}", timeout=90, tokens=TOKENS)
        meter.stop()
        await close_all(devices)
        receive_times = [t for r in results for t in r.receive_times]
        delivered = len(receive_times)
        span = (max(receive_times) - started) if receive_times else float("nan")
        tps = delivered / span if receive_times else 0.0
        measured.figures[f"saturation_tps@{n}"] = tps
        lost = sum(r.lost + r.doubled for r in results)
        latencies = [ms(x) for r in results for x in r.latencies]
        measured.details[f"level {n}"] = {
            "turns": n,
            "tokens_delivered": delivered,
            "seconds": round(span, 3),
            "tokens_per_s": round(tps, 1),
            "offered_tokens_per_s": n * RATE,
            "lost_or_doubled": lost,
            "timed_out": timed_out,
            "token_p50_ms": percentile(latencies, 50),
            "token_p99_ms": percentile(latencies, 99),
            "cpu_s": meter.used,
            "cpu_s_per_1k_tokens": meter.per_thousand(delivered),
            "cpu_utilisation_cores": {k: v / span for k, v in meter.used.items()},
        }
        if lost or timed_out:
            measured.problems.append(
                f"saturation {n} turns: {lost} tokens lost/doubled, {timed_out} turns not ended in 90 s"
            )
        if tps > best:
            best = tps
            for name in PROCESSES:
                measured.figures[f"saturation_cpu_per_1k:{name}"] = (
                    meter.per_thousand(delivered).get(name, float("nan")) * 1000
                )
    measured.figures["saturation_tps"] = best
    return measured


SCENARIO = Scenario("saturation", "Saturation throughput and CPU per 1k tokens", figures, run)
