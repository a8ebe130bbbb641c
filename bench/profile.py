"""Profile the Daphne and Celery worker processes with py-spy while 100 turns of the
workload stream (local use only; py-spy is not a project requirement):

    .venv/bin/pip install py-spy
    python -m bench.profile [--turns 100] [--delay 3] [--seconds 3]

`--delay`: seconds after the turns are sent before sampling starts (0.3 catches the sends
and turn starts; 3 catches the streaming once every turn has started).

Prints the top functions of each process by own samples (the frame on top of the stack)
and by inclusive samples (anywhere on the stack); raw stacks go to a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench.harness import close_all, connect, new_sessions, run_turns, start_bench_stack


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


def hotspots(raw: Path, top: int = 15) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        if frames and frames[0].startswith(("thread", "process")):
            frames = frames[1:]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    generic = (
        "threading.py",
        "concurrent/futures",
        "asgiref/sync.py",
        "asyncio/base_events.py",
        "asyncio/events.py",
        "dbasync.py",
        "engine.py:67",
    )
    ours = Counter({f: c for f, c in inclusive.items() if not any(g in f for g in generic)})
    return (
        total,
        [(f, 100 * c / total) for f, c in own.most_common(top)],
        [(f, 100 * c / total) for f, c in ours.most_common(top)],
    )


async def main_async(turns: int, delay: float, seconds: float) -> None:
    bench = await asyncio.to_thread(start_bench_stack, concurrency=max(turns + 50, 150))
    out_dir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    try:
        client = (await bench.login())[0]
        sessions = await new_sessions(client, turns)
        devices = await connect(client, sessions)
        pids = {"daphne": bench.pids["daphne"], "celery worker": bench.pids["celery worker"]}
        outputs = {name: out_dir / f"profile-{name.replace(' ', '-')}.txt" for name in pids}
        running = asyncio.create_task(run_turns(devices, "profile", timeout=60))
        await asyncio.sleep(delay)
        spies = [
            subprocess.Popen(
                [
                    py_spy(),
                    "record",
                    "--format",
                    "raw",
                    "--rate",
                    "200",
                    "--nonblocking",
                    "--duration",
                    str(int(seconds)),
                    "--pid",
                    str(pid),
                    "--output",
                    str(outputs[name]),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for name, pid in pids.items()
        ]
        for spy in spies:
            await asyncio.to_thread(spy.wait, seconds + 30)
            if spy.returncode:
                print(spy.stderr.read().decode() if spy.stderr else "", file=sys.stderr)
        await running
        await close_all(devices)
        for name, path in outputs.items():
            if not path.exists():
                print(f"{name}: no profile written")
                continue
            total, own, inclusive = hotspots(path)
            print(
                f"\n## {name} ({total} samples of active threads, {turns} turns, from {delay} s after the "
                f"sends for {seconds} s)\n\nown samples:"
            )
            for frame, share in own:
                print(f"  {share:5.1f}%  {frame}")
            print("inclusive (generic thread/executor/event-loop frames left out):")
            for frame, share in inclusive:
                print(f"  {share:5.1f}%  {frame}")
    finally:
        await bench.aclose()
        bench.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--delay", type=float, default=3)
    parser.add_argument("--seconds", type=float, default=3)
    args = parser.parse_args()
    asyncio.run(main_async(args.turns, args.delay, args.seconds))


if __name__ == "__main__":
    main()
