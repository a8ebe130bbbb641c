"""Two checkouts side by side, alternating: one Daphne process's GETs per second and its
bursts of 100 HTTP sends. Does a change make the web process cheaper?

    python -m bench.compare_bursts OTHER_CHECKOUT [--rounds 8] [--devices]

Each round, for each side in alternating order: `wrk` (50 connections, 2 s) on
`GET /api/models` where wrk is installed; then 100 sends to 100 sessions released together
over warm connections, then their 100 cancels. Reported, medians over the rounds and
this/other: GETs per second, the Daphne process's CPU during the burst (until every send
is accepted; with `--devices`, a device watching each session, until every device has its
first token) and the burst's accepted p99. The CPU is the steadier figure: on a 2-core
machine the burst lasts as long as Daphne's CPU for it, and the machine's slow and fast
phases move both sides alike. Decision 034's figures were taken with it.

OTHER_CHECKOUT and `--other-python` as for bench.compare (a checkout that imports this one's
dependencies; the other stack's interpreter).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import psutil

from bench.compare import ROOT, Side, start_side, stop_sides
from bench.harness import (
    PASSWORD,
    BenchDevice,
    close_all,
    connect,
    cpu_seconds,
    ms,
    new_prompt,
    new_sessions,
    percentile,
)
from bench.scenarios.http import Api, first_delta_index, run_wrk
from chat_client import ChatClient

TURNS = 100


@dataclass
class BurstSide:
    side: Side
    api: Api
    client: ChatClient
    daphne: int  # its pid
    sessions: list[str]
    devices: list[BenchDevice]
    gets_per_second: list[float] = field(default_factory=list)
    burst_cpu_ms: list[float] = field(default_factory=list)
    accepted_p99_ms: list[float] = field(default_factory=list)


def daphne_of(side: Side) -> int:
    for child in psutil.Process(side.process.pid).children(recursive=True):
        if "config.serve" in " ".join(child.cmdline()):
            return child.pid
    raise RuntimeError(f"no Daphne process under the stack of {side.name}")


async def open_side(side: Side, devices: bool) -> BurstSide:
    client = await ChatClient.login(side.base_url, "bench", PASSWORD)
    assert client.token is not None
    api = Api(side.base_url, client.token)
    sessions = await new_sessions(client, TURNS)
    await api.http.connections(TURNS)
    watching = await connect(client, sessions) if devices else []
    return BurstSide(side, api, client, daphne_of(side), sessions, watching)


async def burst(side: BurstSide) -> None:
    """100 sends released together (their first tokens, with devices), then their cancels."""
    release = asyncio.Event()

    async def one(index: int) -> tuple[float, str]:
        body = side.api.send_body(new_prompt("compare"))
        await release.wait()
        elapsed, answer = await side.api.call("POST", f"/api/sessions/{side.sessions[index]}/turns", body)
        if side.devices:
            device = side.devices[index]
            await device.wait_for(partial(first_delta_index, device, answer["turnId"]), 60)
        return ms(elapsed), answer["turnId"]

    tasks = [asyncio.create_task(one(index)) for index in range(TURNS)]
    await asyncio.sleep(0.2)  # every request built and waiting on the release
    before = cpu_seconds(side.daphne)
    release.set()
    results = await asyncio.gather(*tasks)
    side.burst_cpu_ms.append(1000 * (cpu_seconds(side.daphne) - before))
    side.accepted_p99_ms.append(percentile([accepted for accepted, _ in results], 99))
    cancels = [
        side.api.call("POST", f"/api/sessions/{session}/cancel", {"turnId": turn_id})
        for session, (_, turn_id) in zip(side.sessions, results, strict=True)
    ]
    await asyncio.gather(*cancels)
    for device, (_, turn_id) in zip(side.devices, results, strict=False):
        await device.wait_turn_end(turn_id, 60)
    await asyncio.sleep(0.3)  # the cancels' after-work done before the next side's round


async def compare(sides: list[Side], rounds: int, devices: bool) -> None:
    opened = [await open_side(side, devices) for side in sides]
    wrk = shutil.which("wrk") is not None
    try:
        for side in opened:  # warm-up
            await burst(side)
            side.burst_cpu_ms.clear()
            side.accepted_p99_ms.clear()
        for number in range(rounds):
            order = opened if number % 2 == 0 else opened[::-1]
            for side in order:
                if wrk:
                    rate, _ = await asyncio.to_thread(
                        run_wrk, side.side.base_url.rstrip("/"), side.api.token, "GET", ["/api/models"], None, 2, 50
                    )
                    side.gets_per_second.append(rate)
            for side in order:
                await burst(side)
    finally:
        for side in opened:
            await close_all(side.devices)
            await side.api.http.aclose()
            await side.client.aclose()
    report(opened, rounds, devices)


def report(sides: list[BurstSide], rounds: int, devices: bool) -> None:
    this, other = sides
    watched = ", a device watching each session" if devices else ""
    print(f"{rounds} alternating rounds{watched}; medians")
    print(f"{'figure':<26} {'other':>10} {'this':>10} {'this/other':>11}")
    for name, attribute in (
        ("GETs per second", "gets_per_second"),
        ("Daphne CPU per burst, ms", "burst_cpu_ms"),
        ("burst accepted p99, ms", "accepted_p99_ms"),
    ):
        a, b = getattr(other, attribute), getattr(this, attribute)
        if a and b:
            ratio = statistics.median(b) / statistics.median(a)
            print(f"{name:<26} {statistics.median(a):>10.1f} {statistics.median(b):>10.1f} {ratio:>11.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("other", type=Path, help="the checkout to compare this one with")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--devices", action="store_true", help="a device watching each session")
    parser.add_argument("--other-python", default=sys.executable, help="the interpreter of the other stack")
    args = parser.parse_args(argv)
    sides = [start_side("this", ROOT), start_side("other", args.other.resolve(), args.other_python)]
    started = time.perf_counter()
    try:
        asyncio.run(compare(sides, args.rounds, args.devices))
    finally:
        stop_sides(sides)
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
