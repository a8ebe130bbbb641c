"""`make soak`: many concurrent turns for a few minutes while devices connect and drop at
random, against two web and two worker processes; then checks that no token was lost or
doubled on any device and that every process's memory stayed bounded.

    python -m bench.soak [--minutes 3] [--sessions 24] [--devices-per-session 3] [--out DIR]

- Each session has members whose devices (Python client devices, which record every gap
  and duplicate they see) send turns at random (100-token answers at 50 tokens/s, several
  at once per session); every few seconds some devices drop without a goodbye and come
  back after a moment, to either web process, resuming with `after=`.
- At the end every device, once caught up, must show exactly what the server stored (every
  message, every answer's whole text, every status), with no gap and no duplicate; every
  finished answer is the demo model's text for its prompt.
- Memory: the resident size of every server process (both web processes, both workers,
  Redis), sampled every few seconds. Bounded: what a process holds in the last third of
  the run is within MEMORY_GROWTH_MB of what it held in the first third.

Results: DIR/soak-<time>.json and .md (figures for docs/reliability.md). Exit status 1 if
anything was lost, doubled or wrong, or memory grew beyond the bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from bench.harness import PASSWORD
from chat_client import ChatClient, ChatClientError, Device
from sessions_app.worker.providers.demo import demo_tokens
from tests.stack import ROOT, RedisServer, start_stack

TOKENS, RATE = 100, 50
MEMORY_GROWTH_MB = 48.0
SAMPLE_SECONDS = 3.0


@dataclass
class Session:
    id: str
    devices: list[Device] = field(default_factory=list)
    prompts: dict[str, str] = field(default_factory=dict)  # answer message id -> prompt


# The devices connected now (the chaos drops and brings them back).
ONLINE: set[int] = set()


@dataclass
class Tally:
    turns_sent: int = 0
    drops: int = 0
    reconnects: int = 0
    refused: dict[str, int] = field(default_factory=dict)


def start(args: argparse.Namespace) -> tuple[Any, RedisServer, Path, str]:
    workdir = Path(tempfile.mkdtemp(prefix="chat-soak-"))
    redis = RedisServer.start()
    database = os.environ.get("DATABASE_URL") or f"sqlite:///{workdir / 'soak.sqlite3'}"
    prefix = f"soak{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": database,
        "REDIS_URL": redis.url,
        "CHAT_KEY_PREFIX": prefix,
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=env, cwd=ROOT, check=True, timeout=300)
    for name in ("soak", "soakb"):
        subprocess.run(
            [*manage, "ensure_demo_user", "--username", name, "--password", PASSWORD],
            env=env,
            cwd=ROOT,
            check=True,
            timeout=120,
            stdout=subprocess.DEVNULL,
        )
    stack = start_stack(
        database=database,
        key_prefix=prefix,
        concurrency=300,
        extra_env={"DJANGO_SETTINGS_MODULE": "bench.settings", "REDIS_URL": redis.url, "LOG_LEVEL": "WARNING"},
    )
    stack.start_worker("worker-2", concurrency=300)
    stack.start_web("web-2")
    return stack, redis, workdir, database


def rss_mb(pid: int) -> float:
    try:
        return float(psutil.Process(pid).memory_info().rss) / 1024 / 1024
    except psutil.Error:
        return float("nan")


async def sample_memory(pids: dict[str, int], until: float, samples: dict[str, list[tuple[float, float]]]) -> None:
    started = time.monotonic()
    while time.time() < until:
        for name, pid in pids.items():
            samples.setdefault(name, []).append((round(time.monotonic() - started, 1), round(rss_mb(pid), 1)))
        await asyncio.sleep(SAMPLE_SECONDS)


async def sender(session: Session, until: float, tally: Tally, rng: random.Random) -> None:
    """Send turns to the session at random from whichever of its devices is connected."""
    count = 0
    while time.time() < until:
        await asyncio.sleep(rng.uniform(0.2, 2.0))
        connected = [d for d in session.devices if id(d) in ONLINE]
        if not connected:
            continue
        prompt = f"soak {session.id[:8]} {count} {uuid.uuid4().hex[:6]}"
        count += 1
        try:
            turn = await rng.choice(connected).send(prompt)
        except (ChatClientError, TimeoutError, ConnectionError) as exc:
            code = getattr(exc, "code", type(exc).__name__)
            tally.refused[code] = tally.refused.get(code, 0) + 1  # a drop raced the send: fine
            continue
        session.prompts[turn.ack["assistantMessageId"]] = prompt
        tally.turns_sent += 1


async def chaos(sessions: list[Session], webs: list[str], until: float, tally: Tally, rng: random.Random) -> None:
    """Drop devices at random, without a goodbye, and bring them back a moment later to
    either web process, resuming from the last seq they applied."""
    while time.time() < until:
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        device = rng.choice([d for s in sessions for d in s.devices])
        if id(device) not in ONLINE:
            continue
        ONLINE.discard(id(device))
        await device.drop()
        tally.drops += 1
        await asyncio.sleep(rng.uniform(0.1, 3.0))
        device.client.base_url = rng.choice(webs)
        for attempt in range(5):
            try:
                await device.open(after=device.last_seq)
                ONLINE.add(id(device))
                tally.reconnects += 1
                break
            except Exception:
                await asyncio.sleep(0.5 * (attempt + 1))


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    stack, redis, _workdir, database = await asyncio.to_thread(start, args)
    webs = [stack.web_url(name) for name in stack.web_ports]
    pids = {name: process.pid for name, process in stack.processes.items()}
    if redis.process is not None:
        pids["redis"] = redis.process.pid
    report: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "minutes": args.minutes,
        "database": database.split(":")[0],
        "sessions": args.sessions,
        "devices": args.sessions * args.devices_per_session,
        "problems": [],
    }
    owners: list[ChatClient] = []
    tally = Tally()
    try:
        alice = await ChatClient.login(webs[0], "soak", PASSWORD)
        bob = await ChatClient.login(webs[-1], "soakb", PASSWORD)
        owners = [alice, bob]
        sessions: list[Session] = []
        for index in range(args.sessions):
            created = await alice.create_session(title=f"soak {index}", model_options={"tokens": TOKENS, "rate": RATE})
            await alice.add_member(created["id"], "soakb")
            session = Session(created["id"])
            for number in range(args.devices_per_session):
                # Each device its own client object: a reconnect may pick another web process.
                owner = (alice, "soak") if number % 2 == 0 else (bob, "soakb")
                client = ChatClient(webs[number % len(webs)], owner[0].token)
                client.client_id = owner[1]
                owners.append(client)
                device = await client.connect(session.id)
                ONLINE.add(id(device))
                session.devices.append(device)
            sessions.append(session)
        until = time.time() + args.minutes * 60
        memory: dict[str, list[tuple[float, float]]] = {}
        started = time.monotonic()
        await asyncio.gather(
            sample_memory(pids, until, memory),
            chaos(sessions, webs, until, tally, rng),
            *(sender(session, until, tally, rng) for session in sessions),
        )
        report["seconds"] = round(time.monotonic() - started, 1)
        report["tally"] = vars(tally)
        # Settle: every device reconnected, every turn ended, every device caught up.
        for session in sessions:
            for device in session.devices:
                if id(device) not in ONLINE:
                    await device.open(after=device.last_seq)
                    ONLINE.add(id(device))
        await asyncio.wait_for(_all_ended(alice, sessions), 180)
        report["checked"] = await check(alice, sessions, report["problems"])
        report["memory"] = judge_memory(memory, report["problems"])
        report["log_problems"] = [
            f"{name}: {line}"
            for name in stack.processes
            for line in stack.log_text(name).splitlines()
            if any(w in line for w in ("ERROR", "Traceback", "Task was destroyed", "took too long"))
        ][-20:]
    finally:
        for client in owners:
            with contextlib.suppress(Exception):
                await client.aclose()
        stack.stop()
        redis.stop()
    return report


async def _all_ended(client: ChatClient, sessions: list[Session]) -> None:
    for session in sessions:
        while await client.turns(session.id, status="active") or await client.turns(session.id, status="queued"):
            with contextlib.suppress(TimeoutError):  # the next event of the session, a turn's end perhaps
                await session.devices[0].next_event(timeout=2)


async def check(client: ChatClient, sessions: list[Session], problems: list[str]) -> dict[str, int]:
    """Every device shows what the server stored; every finished answer is whole."""
    devices = turns = tokens = 0
    for session in sessions:
        stored = await _stored(client, session.id)
        last_seq = (await client.session(session.id))["lastSeq"]
        for device in session.devices:
            await device.wait_for(partial(caught_up, device, last_seq), timeout=60)
            devices += 1
            shown = {
                node_id: (node["role"], node["status"], _text(node["parts"]))
                for node_id, node in device.messages.items()
            }
            if shown != stored:
                differ = [k for k in set(shown) | set(stored) if shown.get(k) != stored.get(k)]
                problems.append(f"session {session.id}: device {device.connection_id} differs on {differ[:3]}")
            if device.gaps or device.duplicates:
                problems.append(
                    f"device {device.connection_id}: gaps {device.gaps[:3]} duplicates {device.duplicates[:3]}"
                )
        for answer_id, prompt in session.prompts.items():
            _, status, text = stored.get(answer_id, ("", "", ""))
            if status == "complete":
                turns += 1
                tokens += TOKENS
                if text != "".join(demo_tokens(prompt, TOKENS)):
                    problems.append(f"answer {answer_id}: text differs from the model's")
            elif status != "cancelled":
                problems.append(f"answer {answer_id}: ended {status!r}")
    return {"devices": devices, "complete_turns": turns, "tokens_checked_per_device": tokens}


def caught_up(device: Device, last_seq: int) -> bool:
    return device.last_seq >= last_seq


async def _stored(client: ChatClient, session_id: str) -> dict[str, tuple[str, str, str]]:
    nodes: list[dict[str, Any]] = []
    before = None
    while True:
        page = await client.messages(session_id, before=before, limit=100)
        nodes.extend(page["results"])
        before = page["next"]
        if not before:
            return {n["id"]: (n["role"], n["status"], _text(n["parts"])) for n in nodes}


def _text(parts: list[dict[str, Any]]) -> str:
    return "".join(p.get("text", "") for p in parts if p.get("type") == "text")


def judge_memory(samples: dict[str, list[tuple[float, float]]], problems: list[str]) -> dict[str, Any]:
    out = {}
    for name, series in samples.items():
        values = [mb for _, mb in series]
        third = max(len(values) // 3, 1)
        first, last = max(values[:third]), max(values[-third:])
        out[name] = {
            "start_mb": values[0],
            "first_third_peak_mb": first,
            "last_third_peak_mb": last,
            "peak_mb": max(values),
        }
        if last - first > MEMORY_GROWTH_MB:
            problems.append(f"{name}: memory grew from {first:.0f} MB to {last:.0f} MB")
    return out


def markdown(report: dict[str, Any]) -> str:
    tally = report.get("tally", {})
    checked = report.get("checked", {})
    lines = [
        f"# Soak ({report['started']})",
        "",
        f"{report['minutes']} minutes, {report['database']}, two web and two worker processes; "
        f"{report['sessions']} sessions, {report['devices']} devices; {tally.get('turns_sent')} turns sent, "
        f"{tally.get('drops')} drops and {tally.get('reconnects')} resumes.",
        "",
        f"Checked: {checked.get('devices')} devices against the server's tree; "
        f"{checked.get('complete_turns')} complete answers whole.",
        "",
        "| process | start MB | peak, first third | peak, last third | peak |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, figures in report.get("memory", {}).items():
        lines.append(
            f"| {name} | {figures['start_mb']:.0f} | {figures['first_third_peak_mb']:.0f} | "
            f"{figures['last_third_peak_mb']:.0f} | {figures['peak_mb']:.0f} |"
        )
    lines += ["", "Problems: " + ("none" if not report["problems"] else "")]
    lines += [f"- {p}" for p in report["problems"]]
    if report.get("log_problems"):
        lines += ["", "Log lines:"] + [f"- `{p[:200]}`" for p in report["log_problems"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--sessions", type=int, default=24)
    parser.add_argument("--devices-per-session", type=int, default=3)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)
    report = asyncio.run(soak(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = report["started"].replace(":", "").replace("-", "")
    (out / f"soak-{stamp}.json").write_text(json.dumps(report, indent=2, default=str))
    text = markdown(report)
    (out / f"soak-{stamp}.md").write_text(text)
    print(text)
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
