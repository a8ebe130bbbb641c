"""`make run`: the whole product on embedded defaults, in the foreground.

Starts the embedded Redis unless REDIS_URL is set, migrates, creates the demo users, then
runs Daphne and a Celery worker together; Ctrl-C stops all of them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


class Stop(Exception):
    """Ctrl-C or SIGTERM: stop every process of the stack."""


def _stop(signum: int, _frame: object) -> None:
    raise Stop(signal.Signals(signum).name)


def web_command(host: str, port: int | str) -> list[str]:
    """Daphne serving the ASGI application."""
    return [PYTHON, "-m", "daphne", "-b", host, "-p", str(port), "config.asgi:application"]


def worker_command(concurrency: int, *, loglevel: str = "INFO", name: str | None = None) -> list[str]:
    """A Celery worker on a pool of threads: one process streams `concurrency` turns at once."""
    command = [
        PYTHON,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        str(concurrency),
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
    ]
    return [*command, "-n", name] if name else command


def main() -> int:
    # Explicit handlers: a shell without job control starts background commands with
    # SIGINT ignored, and service managers stop with SIGTERM.
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    host, port = env.get("HOST", "127.0.0.1"), env.get("PORT", "8000")
    redis = None
    if not env.get("REDIS_URL"):
        from config.embedded_redis import start_embedded_redis

        redis = start_embedded_redis()
        env["REDIS_URL"] = redis.url
        print(f"embedded Redis on {redis.url}")
    manage = [PYTHON, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=env, check=True)  # noqa: S603
    subprocess.run([*manage, "ensure_demo_user"], env=env, check=True)  # noqa: S603
    concurrency = env.get("WORKER_CONCURRENCY", "200")
    processes = [
        subprocess.Popen(web_command(host, port), env=env, cwd=ROOT),  # noqa: S603
        subprocess.Popen(worker_command(int(concurrency)), env=env, cwd=ROOT),  # noqa: S603
    ]
    print(
        f"\n  Chat is running at http://{host}:{port}/  (admin: /admin/)\n"
        "  Log in as demo / demo-password (or demo2 / demo-password). Ctrl-C stops everything.\n",
        flush=True,
    )
    try:
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
    except (Stop, KeyboardInterrupt):
        print("\nStopping...", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        if redis is not None:
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
