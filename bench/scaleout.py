"""Scale-out benchmark: N web (Daphne) and M worker (Celery) processes on one machine,
sharing one Redis and one database, driven by client processes on the same machine.

    python -m bench.scaleout [--levels 1x1,2x2,4x4,6x6] [--databases sqlite,postgres]
                             [--window 8] [--out DIR] [--profile SECONDS]

For each database and each level (webs x workers), a fresh stack: its own redis-server, a
database of its own (a temporary SQLite file, or a new database on the PostgreSQL server of
--postgres, with synchronous_commit off), the web and worker processes. Devices (one per
session) are spread over the web processes and run closed loops: send a turn (100 tokens at
50 tokens/s), wait for its `turn.end`, send the next. The number of devices steps up past
what the level can carry (--steps, times --per-pair tokens/s per web+worker pair), and each
step counts, in a steady window after a warm-up:

- tokens/s delivered to devices (every token checked: none lost or doubled, no seq gap);
- send acknowledgement latency (send frame to its `ack`), p50 and p99;
- CPU of every process (per 1,000 tokens, and the busiest worker in cores) and how busy the
  whole machine was.

Saturation: the best step's tokens/s. Results: DIR/scaleout-<time>.json and .md (printed).
With --profile, py-spy samples one web and one worker process during the top step of each
level (raw stacks in DIR/profile-*.txt; the functions with the most own samples in the
report).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

from bench.harness import PASSWORD, RATE, TOKENS, expected_answer, percentile
from bench.profile import hotspots
from tests.stack import ROOT, RedisServer, Stack, start_stack

WORKLOAD: dict[str, Any] = {"tokens": TOKENS, "rate": RATE, "stamp": True}
_STAMP = re.compile(r"<(\d+)@(\d+\.\d+)>")
WARM_UP = 3.0  # seconds of each step before counting: every device's first turn runs by then
TURN_TIMEOUT = 60.0


@dataclass(frozen=True)
class Level:
    webs: int
    workers: int

    @property
    def name(self) -> str:
        return f"{self.webs}+{self.workers}"


def parse_levels(text: str) -> list[Level]:
    levels = []
    for item in text.split(","):
        webs, _, workers = item.strip().partition("x")
        levels.append(Level(int(webs), int(workers or webs)))
    return levels


# --- the client processes ------------------------------------------------------------------


@dataclass
class TurnTrack:
    prompt: str
    sent_at: float
    counts: dict[int, int] = field(default_factory=dict)
    text: list[str] = field(default_factory=list)
    ended: asyncio.Future[str] | None = None


class LeanDevice:
    """One websocket to one session, keeping only what the figures need (a device of the
    Python client keeps every event: too heavy for thousands of them in one process)."""

    def __init__(self, ws: Any, stats: Stats) -> None:
        self.ws = ws
        self.stats = stats
        self.last_seq: int | None = None
        self.acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.turns: dict[str, TurnTrack] = {}
        # Events of a turn whose ack has not come yet (an ack may come after the first
        # events of its turn): applied once it is tracked.
        self.early: dict[str, list[tuple[dict[str, Any], float]]] = {}
        self.ready = asyncio.get_running_loop().create_future()
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                self._on(orjson.loads(raw), time.time())

    def _on(self, frame: dict[str, Any], now: float) -> None:
        kind = frame.get("type")
        if kind == "snapshot":
            self.last_seq = frame["lastSeq"]
            if not self.ready.done():
                self.ready.set_result(None)
            return
        if kind in ("ack", "error"):
            future = self.acks.pop(str(frame.get("ref")), None)
            if future is not None and not future.done():
                future.set_result(frame)
            return
        seq = frame.get("seq")
        if seq is None:
            return
        if self.last_seq is not None:
            if seq <= self.last_seq:
                self.stats.duplicates += 1
                return
            if seq != self.last_seq + 1:
                self.stats.gaps += 1
        self.last_seq = seq
        turn_id = frame.get("turnId")
        if not turn_id:
            return
        turn = self.turns.get(turn_id)
        if turn is None:
            self.early.setdefault(turn_id, []).append((frame, now))
            return
        self._apply(turn, frame, now)

    def _apply(self, turn: TurnTrack, frame: dict[str, Any], now: float) -> None:
        kind = frame["type"]
        if kind == "delta" and frame.get("part") is None:
            text = frame["text"]
            turn.text.append(text)
            for match in _STAMP.finditer(text):
                index = int(match.group(1))
                turn.counts[index] = turn.counts.get(index, 0) + 1
                self.stats.token(now, now - float(match.group(2)))
        elif kind == "turn.end" and turn.ended is not None and not turn.ended.done():
            turn.ended.set_result(frame["reason"])

    async def turn(self, prompt: str) -> None:
        ref = uuid.uuid4().hex
        ack: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.acks[ref] = ack
        sent_at = time.time()
        message = {"id": uuid.uuid4().hex, "role": "user", "parts": [{"type": "text", "text": prompt}]}
        await self.ws.send(orjson.dumps({"type": "send", "ref": ref, "messages": [message]}).decode())
        reply = await asyncio.wait_for(ack, TURN_TIMEOUT)
        acked_at = time.time()
        if reply["type"] != "ack":
            self.stats.errors.append(str(reply.get("code")))
            return
        self.stats.ack(sent_at, acked_at - sent_at)
        track = TurnTrack(prompt, sent_at, ended=asyncio.get_running_loop().create_future())
        self.turns[reply["turnId"]] = track
        for frame, at in self.early.pop(reply["turnId"], []):
            self._apply(track, frame, at)
        self.early.clear()  # anything else is of no turn of this device's (a presence)
        try:
            reason = await asyncio.wait_for(track.ended, TURN_TIMEOUT)  # type: ignore[arg-type]
        except TimeoutError:
            self.stats.timed_out += 1
            return
        finally:
            self.turns.pop(reply["turnId"], None)
        self.stats.turns += 1
        missing = sum(1 for i in range(TOKENS) if i not in track.counts)
        doubled = sum(count - 1 for count in track.counts.values())
        plain = _STAMP.sub("", "".join(track.text))
        if reason != "complete" or missing or doubled or plain != expected_answer(prompt, TOKENS):
            self.stats.lost += missing
            self.stats.doubled += doubled
            self.stats.wrong_turns += 1


@dataclass
class Stats:
    """What one client process saw in one step."""

    window: tuple[float, float] = (0.0, 0.0)
    tokens: int = 0
    token_latencies: list[float] = field(default_factory=list)  # a sample: every 10th token
    acks: list[float] = field(default_factory=list)
    turns: int = 0
    lost: int = 0
    doubled: int = 0
    gaps: int = 0
    duplicates: int = 0
    timed_out: int = 0
    wrong_turns: int = 0
    errors: list[str] = field(default_factory=list)

    def token(self, at: float, latency: float) -> None:
        if self.window[0] <= at < self.window[1]:
            self.tokens += 1
            if self.tokens % 10 == 0:
                self.token_latencies.append(latency)

    def ack(self, at: float, latency: float) -> None:
        if self.window[0] <= at < self.window[1]:
            self.acks.append(latency)


async def _client(pipe: Connection, webs: list[str], username: str, devices_wanted: int, index: int) -> None:
    async with httpx.AsyncClient(base_url=webs[0], timeout=120) as http:
        login = await http.post("/api/auth/token", json={"username": username, "password": PASSWORD})
        token = login.json()["token"]
    headers = {"Authorization": f"Token {token}"}
    import websockets

    stats = Stats()
    clients = [httpx.AsyncClient(base_url=url, headers=headers, timeout=120) for url in webs]
    opening = asyncio.Semaphore(32)

    async def open_device(number: int) -> LeanDevice:
        web = (index + number) % len(webs)  # spread over the web processes
        async with opening:
            created = await clients[web].post("/api/sessions", json={"title": "bench", "modelOptions": WORKLOAD})
            session_id = created.json()["id"]
            url = webs[web].replace("http", "ws", 1) + f"/ws/sessions/{session_id}/"
            ws = await websockets.connect(url, additional_headers=headers, max_size=None, open_timeout=120)
            device = LeanDevice(ws, stats)
            await asyncio.wait_for(device.ready, 120)
            return device

    devices = list(await asyncio.gather(*(open_device(n) for n in range(devices_wanted))))
    pipe.send(("ready", len(devices)))
    while True:
        command = await asyncio.to_thread(pipe.recv)
        if command[0] == "stop":
            break
        _, active, start_at, measure_from, until = command
        stats = Stats(window=(measure_from, until))
        for device in devices:
            device.stats = stats
        await asyncio.sleep(max(start_at - time.time(), 0))

        async def loop(number: int, device: LeanDevice, until: float = until) -> None:
            count = 0
            # Stagger the first sends over a second: the figures are of a steady state.
            await asyncio.sleep((number % 100) / 100)
            while time.time() < until:
                await device.turn(f"bench {index}-{number}-{count} {uuid.uuid4().hex[:8]}")
                count += 1

        await asyncio.gather(*(loop(n, d) for n, d in enumerate(devices[:active])))
        result = {k: v for k, v in vars(stats).items() if k != "window"}
        pipe.send(("step", result))
    for device in devices:
        with contextlib.suppress(Exception):
            await device.ws.close()
    for client in clients:
        await client.aclose()


def client_main(pipe: Connection, webs: list[str], username: str, devices: int, index: int) -> None:
    """A client process (multiprocessing's spawn: a fresh interpreter, no Django)."""
    try:
        asyncio.run(_client(pipe, webs, username, devices, index))
    except Exception as exc:  # told to the orchestrator, which stops the run
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))


# --- the stack of one level ---------------------------------------------------------------


@dataclass
class LevelStack:
    redis: RedisServer
    stack: Stack
    database: str
    workdir: Path
    drop: str | None  # the PostgreSQL database to drop afterwards (admin URL, name)

    @property
    def webs(self) -> list[str]:
        return [self.stack.web_url(name) for name in self.stack.web_ports]

    def pids(self) -> dict[str, int]:
        pids = {name: process.pid for name, process in self.stack.processes.items()}
        if self.redis.process is not None:
            pids["redis"] = self.redis.process.pid
        return pids

    def stop(self) -> None:
        self.stack.stop()
        self.redis.stop()
        if self.drop:
            import psycopg

            admin_url, name = self.drop.rsplit("|", 1)
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                    " AND pid <> pg_backend_pid()",
                    [name],
                )
                admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_level(level: Level, database_kind: str, postgres: str, concurrency: int) -> LevelStack:
    workdir = Path(tempfile.mkdtemp(prefix="chat-scaleout-"))
    redis = RedisServer.start()
    drop = None
    if database_kind == "postgres":
        import psycopg

        name = f"chat_scaleout_{uuid.uuid4().hex[:8]}"
        admin_url = f"{postgres.rstrip('/')}/postgres"
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
            # Durability off, as the figures of the issue: a commit does not wait for the disk.
            admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit TO off')
        database = f"{postgres.rstrip('/')}/{name}"
        drop = f"{admin_url}|{name}"
    else:
        database = f"sqlite:///{workdir / 'bench.sqlite3'}"
    prefix = f"so{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": database,
        "REDIS_URL": redis.url,
        "CHAT_KEY_PREFIX": prefix,
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=env, cwd=ROOT, check=True, timeout=300)
    subprocess.run(
        [*manage, "ensure_demo_user", "--username", "bench", "--password", PASSWORD],
        env=env,
        cwd=ROOT,
        check=True,
        timeout=120,
        stdout=subprocess.DEVNULL,
    )
    stack = start_stack(
        database=database,
        key_prefix=prefix,
        concurrency=concurrency,
        extra_env={"DJANGO_SETTINGS_MODULE": "bench.settings", "REDIS_URL": redis.url, "LOG_LEVEL": "WARNING"},
    )
    # The other processes start together: each takes seconds to import Django.
    starts: list[Callable[[], object]] = [
        partial(stack.start_worker, f"worker-{i + 1}", concurrency=concurrency) for i in range(1, level.workers)
    ]
    starts += [partial(stack.start_web, f"web-{i + 1}") for i in range(1, level.webs)]
    try:
        with ThreadPoolExecutor(max_workers=max(len(starts), 1)) as pool:
            for started in [pool.submit(start) for start in starts]:
                started.result()
    except Exception:
        stack.stop()
        redis.stop()
        raise
    return LevelStack(redis=redis, stack=stack, database=database, workdir=workdir, drop=drop)


# --- measuring ----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return float("nan")
    return float(times.user + times.system)


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far."""
    times = psutil.cpu_times()
    total = float(sum(times))
    return total - float(times.idle) - float(getattr(times, "iowait", 0.0)), total


def merge(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"acks": [], "token_latencies": [], "errors": []}
    for result in results:
        for key, value in result.items():
            if isinstance(value, list):
                merged.setdefault(key, []).extend(value)
            else:
                merged[key] = merged.get(key, 0) + value
    return merged


def profile(pid: int, seconds: float, path: Path) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return None
    return subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "100",
            "--gil",  # only the thread holding the GIL: where the process's CPU goes
            "--format",
            "raw",
            "--output",
            str(path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def run_level(level: Level, database_kind: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    steps = [float(s) for s in args.steps.split(",")]
    device_counts = [max(int(step * args.per_pair * level.webs / RATE), 1) for step in steps]
    most = max(device_counts)
    concurrency = max(int(most / level.workers * 1.5), 200)
    print(f"[{database_kind} {level.name}] starting: devices per step {device_counts}", flush=True)
    started = time.monotonic()
    stack = start_level(level, database_kind, args.postgres, concurrency)
    clients: list[tuple[Any, Connection]] = []
    report: dict[str, Any] = {"level": level.name, "webs": level.webs, "workers": level.workers, "steps": []}
    try:
        context = multiprocessing.get_context("spawn")
        count = args.clients or max(2, min(8, (os.cpu_count() or 2) // 3))
        for index in range(count):
            mine = most // count + (1 if index < most % count else 0)
            parent, child = context.Pipe()
            process = context.Process(target=client_main, args=(child, stack.webs, "bench", mine, index), daemon=True)
            process.start()
            clients.append((process, parent))
        for _, pipe in clients:
            reply = pipe.recv()
            if reply[0] != "ready":
                raise RuntimeError(f"a client failed: {reply}")
        report["setup_s"] = round(time.monotonic() - started, 1)
        for step_index, devices in enumerate(device_counts):
            start_at = time.time() + 0.5
            measure_from = start_at + args.warm_up
            until = measure_from + args.window
            shares = [devices // count + (1 if i < devices % count else 0) for i in range(count)]
            for (_, pipe), share in zip(clients, shares, strict=True):
                pipe.send(("step", share, start_at, measure_from, until))
            time.sleep(max(measure_from - time.time(), 0))
            pids = stack.pids()
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            busy_before, total_before = machine_busy()
            spies = []
            profiled = args.profile and (not args.profile_levels or level.name in args.profile_levels.split(","))
            if profiled and step_index == len(device_counts) - 1:
                for name in ("web", "worker"):
                    path = out / f"profile-{database_kind}-{level.name}-{name}.txt"
                    spy = profile(pids[name], min(args.profile, args.window), path)
                    if spy is not None:
                        spies.append((name, path, spy))
            time.sleep(max(until - time.time(), 0))
            used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
            busy_after, total_after = machine_busy()
            results = []
            for _, pipe in clients:
                reply = pipe.recv()
                if reply[0] != "step":
                    raise RuntimeError(f"a client failed: {reply}")
                results.append(reply[1])
            for name, path, spy in spies:
                with contextlib.suppress(Exception):
                    spy.wait(timeout=30)
                    samples, own, _ = hotspots(path, top=25)
                    report.setdefault("profile", {})[name] = {"samples": samples, "own": own}
            merged = merge(results)
            tokens_per_s = merged["tokens"] / args.window
            workers = [v for k, v in used.items() if k.startswith("worker")]
            webs = [v for k, v in used.items() if k.startswith("web")]
            step = {
                "devices": devices,
                "offered_tokens_per_s": devices * RATE,
                "tokens_per_s": round(tokens_per_s, 1),
                "turns": merged["turns"],
                "ack_p50_ms": round(percentile(merged["acks"], 50) * 1000, 1),
                "ack_p99_ms": round(percentile(merged["acks"], 99) * 1000, 1),
                "token_p50_ms": round(percentile(merged["token_latencies"], 50) * 1000, 1),
                "token_p99_ms": round(percentile(merged["token_latencies"], 99) * 1000, 1),
                "lost": merged["lost"],
                "doubled": merged["doubled"],
                "gaps": merged["gaps"],
                "duplicates": merged["duplicates"],
                "timed_out": merged["timed_out"],
                "wrong_turns": merged["wrong_turns"],
                "errors": sorted(set(merged["errors"]))[:5],
                "machine_busy": round((busy_after - busy_before) / max(total_after - total_before, 1e-9), 3),
                "cpu_cores": {k: round(v / args.window, 2) for k, v in used.items()},
                "busiest_worker_cores": round(max(workers) / args.window, 2) if workers else None,
                "busiest_web_cores": round(max(webs) / args.window, 2) if webs else None,
                "worker_cpu_ms_per_1k": round(sum(workers) * 1e6 / merged["tokens"], 1) if merged["tokens"] else None,
                "web_cpu_ms_per_1k": round(sum(webs) * 1e6 / merged["tokens"], 1) if merged["tokens"] else None,
                "worker_cpu_ms_per_turn": round(sum(workers) * 1e3 / merged["turns"], 2) if merged["turns"] else None,
            }
            report["steps"].append(step)
            print(
                f"[{database_kind} {level.name}] {devices} devices: {step['tokens_per_s']:.0f} tokens/s, "
                f"ack p50/p99 {step['ack_p50_ms']}/{step['ack_p99_ms']} ms, machine {step['machine_busy']:.0%}, "
                f"busiest worker {step['busiest_worker_cores']} cores, lost {step['lost']}, doubled {step['doubled']}, "
                f"timed out {step['timed_out']}",
                flush=True,
            )
        for _, pipe in clients:
            pipe.send(("stop",))
    finally:
        for process, _ in clients:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
        problems = [line for name in stack.stack.processes for line in _log_problems(stack.stack, name)]
        report["log_problems"] = problems[-20:]
        stack.stop()
    best = max(report["steps"], key=lambda s: s["tokens_per_s"])
    report["best_tokens_per_s"] = best["tokens_per_s"]
    report["best_step"] = best
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def _log_problems(stack: Stack, name: str) -> list[str]:
    words = ("ERROR", "Traceback", "Task was destroyed", "took too long")
    return [f"{name}: {line}" for line in stack.log_text(name).splitlines() if any(w in line for w in words)]


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Scale-out benchmark ({report['started']})",
        "",
        f"Machine: {report['machine']['cpus']} CPUs ({report['machine']['cpu_model']}); clients on the same "
        f"machine; workload: {TOKENS}-token turns at {RATE:g} tokens/s, closed loops, one device per session; "
        f"window {report['window']} s per step.",
        "",
    ]
    for database, levels in report["databases"].items():
        if not levels:
            continue
        base = levels[0]["best_tokens_per_s"] or 1
        lines += [
            f"## {database}",
            "",
            "| web + worker | best tokens/s (vs first) | machine busy | busiest worker (cores)"
            " | ack p50 / p99 at best (ms) | worker CPU ms per 1k tokens | web CPU ms per 1k tokens"
            " | worker CPU ms per turn | lost / doubled |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for level in levels:
            best = level["best_step"]
            lines.append(
                f"| {level['level']} | {best['tokens_per_s']:.0f} ({best['tokens_per_s'] / base:.1f}x) | "
                f"{best['machine_busy']:.0%} | {best['busiest_worker_cores']} | "
                f"{best['ack_p50_ms']} / {best['ack_p99_ms']} | "
                f"{best['worker_cpu_ms_per_1k']} | {best['web_cpu_ms_per_1k']} | {best['worker_cpu_ms_per_turn']} | "
                f"{sum(s['lost'] for s in level['steps'])} / {sum(s['doubled'] for s in level['steps'])} |"
            )
        lines += ["", "Every step:", "", "| level | devices | offered | tokens/s | ack p50 / p99 (ms) | machine busy |"]
        lines += ["| --- | ---: | ---: | ---: | ---: | ---: |"]
        for level in levels:
            for step in level["steps"]:
                lines.append(
                    f"| {level['level']} | {step['devices']} | {step['offered_tokens_per_s']:.0f} | "
                    f"{step['tokens_per_s']:.0f} | {step['ack_p50_ms']} / {step['ack_p99_ms']} | "
                    f"{step['machine_busy']:.0%} |"
                )
        problems = [p for level in levels for p in level.get("log_problems", [])]
        if problems:
            lines += ["", "Log problems:", ""] + [f"- `{p[:200]}`" for p in problems[:10]]
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scaleout", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", default="1x1,2x2", help="web x worker processes, e.g. 1x1,2x2,4x4,6x6")
    parser.add_argument("--databases", default="sqlite", help="sqlite, postgres, or both: sqlite,postgres")
    parser.add_argument("--postgres", default=os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432"))
    parser.add_argument("--window", type=float, default=8.0, help="seconds counted per step")
    parser.add_argument("--warm-up", type=float, default=WARM_UP, help="seconds of each step before counting")
    parser.add_argument("--steps", default="0.8,1.4,2.2", help="offered load per step, times --per-pair per web")
    parser.add_argument(
        "--per-pair", type=float, default=10_000, help="tokens/s one web+worker pair is expected to carry"
    )
    parser.add_argument("--clients", type=int, default=0, help="client processes (default: a quarter of the CPUs)")
    parser.add_argument("--profile", type=float, default=0, help="py-spy samples of the top step, seconds")
    parser.add_argument("--profile-levels", default="", help="levels to profile (default: all), e.g. 6+6")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from bench.run import machine

    report: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "window": args.window,
        "databases": {},
    }
    clock = time.monotonic()
    stamp = report["started"].replace(":", "").replace("-", "")
    for database in args.databases.split(","):
        report["databases"][database] = []
        for level in parse_levels(args.levels):
            try:
                report["databases"][database].append(run_level(level, database, args, out))
            except Exception as exc:
                print(f"[{database} {level.name}] failed: {type(exc).__name__}: {exc}", flush=True)
                report.setdefault("failures", []).append(f"{database} {level.name}: {type(exc).__name__}: {exc}")
            # Written after every level: a run cut short still leaves what it measured.
            report["seconds"] = round(time.monotonic() - clock, 1)
            (out / f"scaleout-{stamp}.json").write_text(json.dumps(report, indent=2, default=str))
            (out / f"scaleout-{stamp}.md").write_text(markdown(report))
    print()
    print(markdown(report))
    return 1 if report.get("failures") else 0


if __name__ == "__main__":
    sys.exit(main())
