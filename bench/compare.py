"""Two checkouts side by side, requests alternating between them: is a change faster?

    python -m bench.compare OTHER_CHECKOUT [--rounds 60]

This machine has slow and fast phases lasting minutes (docs/performance.md, "Noise"): the
same code's figures move by up to 2x between two runs, more than most changes move them,
so two `make bench` runs one after the other cannot tell two builds apart. Here a bench
stack of each checkout runs at once, and each round takes one sample of every figure from
both, in alternating order, so that both see the same phases. The figures are the one-at-a-
time HTTP ones: a trivial GET, a session created, a send accepted, its first token at a device (less the
model's delay), a read of the turn while it streams (`GET .../turns/<turnId>`, as a client
polling it), the cancel call, and cancel -> `turn.end` with tokens flowing.

OTHER_CHECKOUT is a directory with the project (for instance `git worktree add /tmp/base
HEAD~1`) that can import its dependencies with this interpreter (a symlink to this
checkout's .venv does); it is measured as "other", this checkout as "this".
`--other-python PATH` runs the other stack on another interpreter (a virtual environment's
python with the project's requirements): `bench.compare . --other-python /tmp/venv/bin/python`
compares two interpreters on the same code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol, TypeVar

from bench.harness import PASSWORD, WORKLOAD, BenchDevice, close_all, connect, ms, new_prompt, new_sessions
from bench.scenarios.http import MODEL_DELAY_MS, Api, first_delta_index, has_tokens
from chat_client import ChatClient

ROOT = Path(__file__).resolve().parent.parent
FIGURES = (
    "GET",
    "create a session",
    "send accepted",
    "first token",
    "turn detail",
    "cancel call",
    "cancel -> turn.end",
)


# Run in each checkout's own process, with that checkout's code (the other checkout may
# predate this module): start its bench stack, print its URL, hold it until stdin closes.
SERVE = """
import json, sys
from bench.harness import start_bench_stack
bench = start_bench_stack()
try:
    print(json.dumps({"base_url": bench.base_url}), flush=True)
    sys.stdin.read()
finally:
    bench.stop()
"""


@dataclass
class Side:
    name: str
    process: subprocess.Popen[str]
    base_url: str = ""
    api: Api | None = None
    client: ChatClient | None = None
    device: BenchDevice | None = None
    session: str = ""
    samples: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in FIGURES})


def start_side(name: str, checkout: Path, python: str = sys.executable) -> Side:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    process = subprocess.Popen(
        [python, "-c", SERVE],
        cwd=checkout,
        env={**env, "PYTHONPATH": str(checkout)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"the stack of {checkout} did not start")
    return Side(name, process, json.loads(line)["base_url"])


async def open_side(side: Side) -> None:
    side.client = await ChatClient.login(side.base_url, "bench", PASSWORD)
    assert side.client.token is not None
    side.api = Api(side.base_url, side.client.token)
    [side.session] = await new_sessions(side.client, 1)
    [side.device] = await connect(side.client, [side.session])


async def one_round(side: Side) -> None:
    """One sample of each figure: five GETs (the median counts), a session created, a send,
    its first token, a read of the turn, its cancel after three tokens, and the cancel's
    `turn.end`."""
    api, device, samples = side.api, side.device, side.samples
    assert api is not None and device is not None
    gets = [ms((await api.call("GET", "/api/models"))[0]) for _ in range(5)]
    samples["GET"].append(statistics.median(gets))
    elapsed, _ = await api.call("POST", "/api/sessions", {"title": "ab", "modelOptions": WORKLOAD})
    samples["create a session"].append(ms(elapsed))
    start = len(device.events)
    sent_at = time.time()
    elapsed, answer = await api.call("POST", f"/api/sessions/{side.session}/turns", api.send_body(new_prompt("ab")))
    samples["send accepted"].append(ms(elapsed))
    turn_id = answer["turnId"]
    index = await device.wait_for(partial(first_delta_index, device, turn_id, start), 30)
    samples["first token"].append(ms(device.receive_times[index] - sent_at) - MODEL_DELAY_MS)
    elapsed, _ = await api.call("GET", f"/api/sessions/{side.session}/turns/{turn_id}")
    samples["turn detail"].append(ms(elapsed))
    await device.wait_for(partial(has_tokens, device, turn_id, 3), 30)
    cancelled_at = time.time()
    elapsed, _ = await api.call("POST", f"/api/sessions/{side.session}/cancel", {"turnId": turn_id})
    samples["cancel call"].append(ms(elapsed))
    end = await device.wait_turn_end(turn_id, 30)
    index = device.index_of(end)
    samples["cancel -> turn.end"].append(ms(device.receive_times[index] - cancelled_at))


class HasSamples(Protocol):
    samples: dict[str, list[float]]


S = TypeVar("S", bound=HasSamples)


async def alternate(
    sides: Sequence[S], one_round: Callable[[S], Awaitable[None]], rounds: int, figures: Sequence[str], warm_up: int
) -> None:
    """`warm_up` rounds of each side, thrown away, then `rounds` rounds taken from both sides
    in alternating order (which side goes first flips every round)."""
    for _ in range(warm_up):
        for side in sides:
            await one_round(side)
    for side in sides:
        side.samples = {name: [] for name in figures}
    for number in range(rounds):
        for side in sides if number % 2 == 0 else reversed(sides):
            await one_round(side)


async def compare(sides: list[Side], rounds: int) -> None:
    for side in sides:
        await open_side(side)
    try:
        await alternate(sides, one_round, rounds, FIGURES, warm_up=3)  # first queries, connections, imports
    finally:
        for side in sides:
            if side.device is not None:
                await close_all([side.device])
            if side.api is not None:
                await side.api.http.aclose()
            if side.client is not None:
                await side.client.aclose()
    report(sides, rounds, FIGURES)


def report(sides: Sequence[HasSamples], rounds: int, figures: Sequence[str]) -> None:
    """Each figure's p50 (p90) on both sides and their ratio; `sides`: this, then the other."""
    this, other = sides
    width = max(map(len, figures)) + 2
    print(f"{rounds} alternating rounds, p50 in ms (p90 in brackets)")
    print(f"{'figure':<{width}} {'other':>16} {'this':>16} {'this/other':>11}")
    for name in figures:
        a, b = other.samples[name], this.samples[name]
        print(
            f"{name:<{width}} {_p(a, 50):>7.2f} ({_p(a, 90):>6.2f}) {_p(b, 50):>7.2f} ({_p(b, 90):>6.2f})"
            f" {_p(b, 50) / _p(a, 50):>11.2f}"
        )


def _p(values: list[float], percent: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(percent / 100 * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("other", type=Path, help="the checkout to compare this one with")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--other-python", default=sys.executable, help="the interpreter of the other stack")
    args = parser.parse_args(argv)
    sides = [start_side("this", ROOT), start_side("other", args.other.resolve(), args.other_python)]
    try:
        asyncio.run(compare(sides, args.rounds))
    finally:
        stop_sides(sides)
    return 0


def stop_sides(sides: list[Side]) -> None:
    """Let each side's stack go (its process stops it when stdin closes), then wait."""
    for side in sides:
        if side.process.stdin is not None:
            side.process.stdin.close()
    for side in sides:
        side.process.wait(timeout=60)


if __name__ == "__main__":
    raise SystemExit(main())
