"""The benchmark harness: a real stack (Daphne, Celery worker with a threads pool, Redis,
a database of its own), logged-in protocol clients, devices that note when each frame
arrives, per-process CPU accounting, and the parsing of the demo model's emit stamps.

Everything runs on this machine and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

from chat_client import ChatClient, Device
from sessions_app.worker.providers.demo import demo_tokens
from tests.stack import Stack, start_stack

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench-password"
T = TypeVar("T")

# The workload of every figure (issue 5): 100 tokens per answer at 50 tokens per second.
TOKENS = 100
RATE = 50.0
WORKLOAD: dict[str, Any] = {"tokens": TOKENS, "rate": RATE, "stamp": True}
FIRST_TOKEN_DELAY = 1 / RATE  # the model's own delay before its first token

_STAMP = re.compile(r"<(\d+)@(\d+\.\d+)>")


# --- statistics ---


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) with linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(seconds: float) -> float:
    return seconds * 1000


# --- stamps ---


def parse_stamps(text: str) -> tuple[list[tuple[int, float]], str]:
    """The (index, emit time) of every stamped token in a delta's text, and the text
    without its stamps."""
    stamps = [(int(m.group(1)), float(m.group(2))) for m in _STAMP.finditer(text)]
    return stamps, _STAMP.sub("", text)


def expected_answer(prompt: str, tokens: int = TOKENS) -> str:
    return "".join(demo_tokens(prompt, tokens))


# --- devices ---


class BenchDevice(Device):
    """A device that also notes when each ack arrived and how many events it had by then."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acks: list[tuple[float, int, dict[str, Any]]] = []

    def _on_frame(self, frame: dict[str, Any], received_at: float) -> None:
        if frame.get("type") == "ack":
            self.acks.append((received_at, len(self.events), frame))
        super()._on_frame(frame, received_at)

    def index_of(self, event: dict[str, Any]) -> int:
        """The index of an event this device received (the newest such), for its receive time."""
        return next(i for i in range(len(self.events) - 1, -1, -1) if self.events[i] is event)


@dataclass
class TurnResult:
    """One turn as one device saw it."""

    turn_id: str
    prompt: str
    sent_at: float
    reason: str | None = None
    first_token_at: float | None = None  # receive time of the delta holding token 0
    first_emit_at: float | None = None  # the model's emit time of token 0
    latencies: list[float] = field(default_factory=list)  # seconds, one per token received
    receive_times: list[float] = field(default_factory=list)  # one per token received
    lost: int = 0
    doubled: int = 0
    text_ok: bool = False
    deltas: int = 0
    missing: list[int] = field(default_factory=list)  # indices of tokens never received
    gaps: list[tuple[int, int]] = field(default_factory=list)  # the device's seq gaps
    ack: float | None = None  # send to the send's ack, seconds (the web process's part)

    @property
    def first_token(self) -> float | None:
        """Send to first token at the device, minus the model's own first-token delay."""
        if self.first_token_at is None:
            return None
        return self.first_token_at - self.sent_at - FIRST_TOKEN_DELAY


def analyse_turn(
    device: Device, turn_id: str, prompt: str, sent_at: float, tokens: int = TOKENS, *, complete: bool = True
) -> TurnResult:
    """Read one turn's deltas from a device: latencies, first token, lost/doubled tokens.
    `complete`: the turn should hold the whole answer (not cancelled)."""
    result = TurnResult(turn_id=turn_id, prompt=prompt, sent_at=sent_at)
    seen: dict[int, int] = {}
    text: list[str] = []
    for event, received in zip(device.events, device.receive_times, strict=True):
        if event.get("turnId") != turn_id:
            continue
        if event["type"] == "turn.end":
            result.reason = event["reason"]
        elif event["type"] == "delta" and event.get("part") is None:
            result.deltas += 1
            stamps, plain = parse_stamps(event["text"])
            text.append(plain)
            for index, emitted in stamps:
                seen[index] = seen.get(index, 0) + 1
                result.latencies.append(received - emitted)
                result.receive_times.append(received)
                if index == 0:
                    result.first_token_at, result.first_emit_at = received, emitted
    result.gaps = list(device.gaps)
    result.doubled = sum(count - 1 for count in seen.values()) + len(device.duplicates)
    if complete:
        result.missing = [i for i in range(tokens) if i not in seen]
        result.lost = len(result.missing) + len(device.gaps)
        result.text_ok = "".join(text) == expected_answer(prompt, tokens) and result.reason == "complete"
    else:
        result.lost = len(device.gaps)
        result.text_ok = expected_answer(prompt, tokens).startswith("".join(text))
    return result


async def bounded_gather(items: Iterable[T], fn: Callable[[T], Awaitable[Any]], limit: int = 20) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def one(item: T) -> Any:
        async with semaphore:
            return await fn(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


# --- processes ---


def cpu_seconds(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return float("nan")
    return float(times.user + times.system)


@dataclass
class CpuMeter:
    """CPU seconds (user + system) each process used between start() and stop()."""

    pids: dict[str, int]
    before: dict[str, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)

    def start(self) -> CpuMeter:
        self.before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return self

    def stop(self) -> dict[str, float]:
        self.used = {name: cpu_seconds(pid) - self.before[name] for name, pid in self.pids.items()}
        return self.used

    def per_thousand(self, tokens: int) -> dict[str, float]:
        return {name: used * 1000 / tokens if tokens else float("nan") for name, used in self.used.items()}


# --- the stack ---


@dataclass
class BenchStack:
    stack: Stack
    redis_pid: int | None
    workdir: Path
    base_url: str
    users: list[str]
    _embedded: Any = None
    clients: list[ChatClient] = field(default_factory=list)

    @property
    def pids(self) -> dict[str, int]:
        pids = {"daphne": self.stack.processes["web"].pid, "celery worker": self.stack.processes["worker"].pid}
        if self.redis_pid is not None:
            pids["redis-server"] = self.redis_pid
        pids["bench client"] = os.getpid()
        return pids

    async def login(self) -> list[ChatClient]:
        if not self.clients:
            self.clients = [await ChatClient.login(self.base_url, user, PASSWORD) for user in self.users]
        return self.clients

    def log_excerpt(self, lines: int = 30) -> dict[str, str]:
        return {name: self.stack.log_tail(name, lines) for name in ("web", "worker")}

    def log_problems(self, limit: int = 20) -> list[str]:
        """Lines of the stack's logs that report errors or warnings."""
        found: list[str] = []
        for name in ("web", "worker"):
            path = self.stack.logs / f"{name}.log"
            if not path.exists():
                continue
            for line in path.read_text(errors="replace").splitlines():
                if "Unauthorized: /api/models" in line:  # the stack's own readiness probe
                    continue
                if any(word in line for word in ("ERROR", "WARNING", "Traceback", "Error")):
                    found.append(f"{name}: {line}")
        return found[-limit:]

    async def aclose(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.aclose()
        self.clients = []

    def stop(self) -> None:
        self.stack.stop()
        if self._embedded is not None:
            self._embedded.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _redis_pid(url: str) -> int | None:
    """The pid of a local redis-server listening on the URL's port, if we can see it."""
    from urllib.parse import urlparse

    port = urlparse(url).port or 6379
    for process in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if "redis-server" in (process.info["name"] or "") and f":{port}" in " ".join(process.info["cmdline"] or []):
                return int(process.pid)
            if "redis-server" in (process.info["name"] or "") and str(port) in (process.info["cmdline"] or []):
                return int(process.pid)
    return None


def start_bench_stack(*, concurrency: int = 450, extra_env: dict[str, str] | None = None) -> BenchStack:
    """Start Redis (embedded unless REDIS_URL is set), migrate a database of its own (a
    temporary SQLite file unless DATABASE_URL is set), create the users, start Daphne and
    a Celery worker."""
    workdir = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    embedded = None
    redis_url = os.environ.get("REDIS_URL")
    if redis_url:
        redis_pid = _redis_pid(redis_url)
    else:
        from config.embedded_redis import start_embedded_redis

        embedded = start_embedded_redis()
        redis_url, redis_pid = embedded.url, embedded.process.pid
    database = os.environ.get("DATABASE_URL") or f"sqlite:///{workdir / 'bench.sqlite3'}"
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": database,
        "REDIS_URL": redis_url,
        "CHAT_KEY_PREFIX": prefix,
        **(extra_env or {}),
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    try:
        subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=env, cwd=ROOT, check=True, timeout=120)
        subprocess.run(
            [*manage, "ensure_demo_user", "--username", "bench", "--password", PASSWORD],
            env=env,
            cwd=ROOT,
            check=True,
            timeout=60,
            stdout=subprocess.DEVNULL,
        )
        stack = start_stack(
            database=database,
            key_prefix=prefix,
            concurrency=concurrency,
            extra_env={k: env[k] for k in ("DJANGO_SETTINGS_MODULE", "REDIS_URL", *(extra_env or {}))},
        )
    except Exception:
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return BenchStack(
        stack=stack,
        redis_pid=redis_pid,
        workdir=workdir,
        base_url=stack.base_url,
        users=["bench", "bench2"],
        _embedded=embedded,
    )


# --- building blocks of scenarios ---


async def new_sessions(client: ChatClient, count: int, options: dict[str, Any] | None = None) -> list[str]:
    async def create(_: int) -> str:
        session = await client.create_session(title="bench", model="demo", model_options=options or WORKLOAD)
        return str(session["id"])

    return await bounded_gather(range(count), create)


async def connect(client: ChatClient, session_ids: Sequence[str], after: int | None = None) -> list[BenchDevice]:
    async def one(session_id: str) -> BenchDevice:
        device = BenchDevice(client, session_id)
        await device.open(after=after)
        return device

    return await bounded_gather(session_ids, one)


async def close_all(devices: Sequence[Device]) -> None:
    async def one(device: Device) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(device.close(), 10)

    await bounded_gather(devices, one, limit=50)


def new_prompt(tag: str) -> str:
    return f"bench {tag} {uuid.uuid4().hex[:12]}"


@dataclass
class Started:
    device: BenchDevice
    turn_id: str
    prompt: str
    sent_at: float
    acked_at: float

    def result(self, tokens: int = TOKENS) -> TurnResult:
        """What the device saw of this turn, with the send's ack time."""
        result = analyse_turn(self.device, self.turn_id, self.prompt, self.sent_at, tokens)
        result.ack = self.acked_at - self.sent_at
        return result


async def start_turn(device: BenchDevice, prompt: str) -> Started:
    sent_at = time.time()
    handle = await device.send(prompt)
    return Started(device, handle.turn_id, prompt, sent_at, time.time())


async def run_turns(
    devices: Sequence[BenchDevice], tag: str, *, timeout: float = 60, tokens: int = TOKENS
) -> tuple[list[TurnResult], int]:
    """Start one turn on each device together, wait for every `turn.end` (bounded by
    `timeout`); returns the results and how many turns did not end in time."""
    prompts = [new_prompt(f"{tag}-{i}") for i in range(len(devices))]
    started = await asyncio.gather(*(start_turn(d, p) for d, p in zip(devices, prompts, strict=True)))

    async def end(item: Started) -> bool:
        try:
            await item.device.wait_turn_end(item.turn_id, timeout)
            return True
        except TimeoutError:
            return False

    ended = await asyncio.gather(*(end(s) for s in started))
    return [item.result(tokens) for item in started], sum(1 for ok in ended if not ok)


async def run_turns_closed_loop(
    devices: Sequence[BenchDevice], tag: str, *, until: float, timeout: float = 60
) -> tuple[list[TurnResult], int]:
    """Each device sends a turn, waits for its end and sends the next, until `until` (wall
    clock); returns every turn's result and how many did not end within `timeout`."""
    timed_out = 0

    async def loop(index: int, device: BenchDevice) -> list[TurnResult]:
        nonlocal timed_out
        out: list[TurnResult] = []
        count = 0
        while time.time() < until:
            item = await start_turn(device, new_prompt(f"{tag}-{index}-{count}"))
            count += 1
            try:
                await device.wait_turn_end(item.turn_id, timeout)
            except TimeoutError:
                timed_out += 1
            out.append(item.result())
        return out

    per_device = await asyncio.gather(*(loop(i, d) for i, d in enumerate(devices)))
    return [r for results in per_device for r in results], timed_out
