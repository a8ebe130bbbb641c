"""Token latency (model emit -> device receive) at 1, 10, 100 and 200 concurrent turns, one
session and one device per turn, all turns sent together; also send -> first token for the
turns starting together, tokens lost or doubled, and CPU seconds per 1,000 tokens."""

from __future__ import annotations

import time

from bench.harness import (
    TOKENS,
    BenchStack,
    CpuMeter,
    close_all,
    connect,
    ms,
    new_sessions,
    percentile,
    run_turns,
)
from bench.scenarios import Figure, Measured, Scenario, at_most

TOKEN_TARGETS = {1: 8, 10: 15, 100: 60, 200: 150}
FIRST_TOKEN_TARGETS = {100: 100}
CPU_LEVEL = 100  # CPU per 1k tokens is reported at this level


def levels(quick: bool) -> list[int]:
    return [1, 10, 100] if quick else [1, 10, 100, 200]


def figures(quick: bool) -> list[Figure]:
    out: list[Figure] = []
    for n in levels(quick):
        target = TOKEN_TARGETS.get(n)
        out += [
            Figure(f"token_p50@{n}", f"token latency p50, {n} turns", "ms"),
            Figure(
                f"token_p99@{n}",
                f"token latency p99, {n} turns",
                "ms",
                f"<= {target} ms" if target else "",
                at_most(target) if target else None,
            ),
            Figure(f"lost_or_doubled@{n}", f"tokens lost or doubled, {n} turns", "tokens", "0", at_most(0)),
        ]
        if n >= 10:
            ft = FIRST_TOKEN_TARGETS.get(n)
            out.append(
                Figure(
                    f"first_token_p99@{n}",
                    f"send -> first token p99, {n} turns starting together",
                    "ms",
                    f"<= {ft} ms" if ft else "",
                    at_most(ft) if ft else None,
                )
            )
    return out


async def run(bench: BenchStack, quick: bool) -> Measured:
    measured = Measured()
    client = (await bench.login())[0]
    for n in levels(quick):
        sessions = await new_sessions(client, n)
        devices = await connect(client, sessions)
        meter = CpuMeter(bench.pids).start()
        started = time.time()
        results, timed_out = await run_turns(devices, f"lat{n}", timeout=60)
        elapsed = time.time() - started
        meter.stop()
        await close_all(devices)
        latencies = [ms(x) for r in results for x in r.latencies]
        firsts = [ms(r.first_token) for r in results if r.first_token is not None]
        lost = sum(r.lost for r in results)
        doubled = sum(r.doubled for r in results)
        bad = [r for r in results if not r.text_ok]
        delivered = len(latencies)
        measured.figures[f"token_p50@{n}"] = percentile(latencies, 50)
        measured.figures[f"token_p99@{n}"] = percentile(latencies, 99)
        measured.figures[f"lost_or_doubled@{n}"] = lost + doubled
        if n >= 10:
            measured.figures[f"first_token_p99@{n}"] = percentile(firsts, 99)
        measured.details[f"level {n}"] = {
            "turns": n,
            "tokens_delivered": delivered,
            "expected_tokens": n * TOKENS,
            "lost": lost,
            "doubled": doubled,
            "wrong_text": len(bad),
            "timed_out": timed_out,
            "reasons": sorted({str(r.reason) for r in results}),
            "elapsed_s": round(elapsed, 3),
            "token_max_ms": max(latencies, default=float("nan")),
            "first_token_p50_ms": percentile(firsts, 50),
            "first_token_max_ms": max(firsts, default=float("nan")),
            "ack_p50_ms": percentile([ms(r.ack) for r in results if r.ack is not None], 50),
            "ack_max_ms": max((ms(r.ack) for r in results if r.ack is not None), default=float("nan")),
            "deltas": sum(r.deltas for r in results),
            "cpu_s": meter.used,
            "cpu_s_per_1k_tokens": meter.per_thousand(delivered),
        }
        if n == CPU_LEVEL:
            for name, value in meter.per_thousand(delivered).items():
                measured.figures[f"cpu_per_1k@{n}:{name}"] = value * 1000
        if lost or doubled or bad or timed_out:
            measured.problems.append(
                f"{n} turns: {lost} lost, {doubled} doubled, {len(bad)} wrong answers, {timed_out} not ended "
                f"in 60 s; reasons {sorted({str(r.reason) for r in results})}; "
                f"missing token indices {[(r.turn_id, r.missing) for r in results if r.missing][:5]}; "
                f"seq gaps {[(r.turn_id, r.gaps) for r in results if r.gaps][:5]}"
            )
    return measured


def cpu_figures() -> list[Figure]:
    return [
        Figure(f"cpu_per_1k@{CPU_LEVEL}:{name}", f"CPU per 1k tokens at {CPU_LEVEL} turns: {name}", "CPU ms")
        for name in ("daphne", "celery worker", "redis-server", "bench client")
    ]


SCENARIO = Scenario(
    "latency",
    "Token latency and losses at 1/10/100/200 concurrent turns",
    lambda quick: figures(quick) + cpu_figures(),
    run,
)
