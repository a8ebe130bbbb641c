"""`make run`: the whole product on embedded defaults, in the foreground.

Starts the embedded Redis unless REDIS_URL is set, migrates, creates the demo users, then
runs Daphne and a Celery worker together; Ctrl-C stops all of them.

Ctrl-C reaches this launcher only: every process of the stack runs in a process group of
its own (and still dies with the launcher), so that the launcher stops them in an order
that leaves nothing to complain: the web first (no new sends), then the worker and the
other processes, and Redis, which they all talk to, last. The web's access log leaves out
static files served fine (CHAT_LOG_STATIC=1 keeps them): one page load is a dozen lines.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from config.embedded_redis import _die_with_parent

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


class Stop(Exception):
    """Ctrl-C or SIGTERM: stop every process of the stack."""


def _stop(signum: int, _frame: object) -> None:
    raise Stop(signal.Signals(signum).name)


def web_command(host: str, port: int | str) -> list[str]:
    """Daphne serving the ASGI application (through config/serve.py: Daphne's own command
    line, with an oversized websocket frame closed cleanly with 1009)."""
    return [PYTHON, "-m", "config.serve", "-b", host, "-p", str(port), "config.asgi:application"]


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


def mirror_command() -> list[str]:
    """The Ably mirror (docs/ably.md), run beside the stack when ABLY_API_KEY is set."""
    return [PYTHON, str(ROOT / "manage.py"), "ably_mirror"]


def ably_configured(env: dict[str, str]) -> bool:
    """ABLY_API_KEY in the environment, or in .env (which the settings read)."""
    if env.get("ABLY_API_KEY"):
        return True
    dotenv = ROOT / ".env"
    lines = dotenv.read_text().splitlines() if dotenv.exists() else []
    return any(line.startswith("ABLY_API_KEY=") and line.partition("=")[2].strip() for line in lines)


# An access-log line of a static file answered 200 or 304 (Daphne's NCSA-like format).
STATIC_OK = re.compile(rb'"(?:GET|HEAD) /static/\S*" (?:200|304) ')


def _start(command: list[str], env: dict[str, str], stdout: int | None = None) -> subprocess.Popen[bytes]:
    """A process of the stack in a process group of its own (the terminal's Ctrl-C does not
    reach it) that dies with the launcher, as the embedded Redis does. Before any thread of
    the launcher starts: `preexec_fn` is not safe once there are threads."""
    return subprocess.Popen(  # noqa: S603 - our own commands; no thread runs yet
        command, env=env, cwd=ROOT, stdout=stdout, process_group=0, preexec_fn=_die_with_parent
    )


def _relay(stream: IO[bytes], *, quiet_static: bool) -> None:
    """Copy the web's output to ours, line by line, without the static files served fine."""
    for line in iter(stream.readline, b""):
        if not (quiet_static and STATIC_OK.search(line)):
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()


def _stop_all(processes: list[subprocess.Popen[bytes]], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL for what is still there after `timeout` seconds."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> int:
    # Explicit handlers: a shell without job control starts background commands with
    # SIGINT ignored, and service managers stop with SIGTERM.
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    env = dict(os.environ)
    from config.celery_app import SETTINGS_GIVEN

    if not SETTINGS_GIVEN:  # the development stack: the local settings, unless told otherwise
        env["DJANGO_SETTINGS_MODULE"] = "config.settings.local"
    host, port = env.get("HOST", "127.0.0.1"), env.get("PORT", "8000")
    redis = None
    if not env.get("REDIS_URL"):
        from config.embedded_redis import start_embedded_redis

        redis = start_embedded_redis(own_group=True)
        env["REDIS_URL"] = redis.url
        print(f"embedded Redis on {redis.url}")
    manage = [PYTHON, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=env, check=True)  # noqa: S603
    subprocess.run([*manage, "ensure_demo_user"], env=env, check=True)  # noqa: S603
    concurrency = env.get("WORKER_CONCURRENCY", "200")
    web = _start(web_command(host, port), {**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE)
    processes = [web, _start(worker_command(int(concurrency)), env)]
    if ably_configured(env):
        processes.append(_start(mirror_command(), env))
    quiet_static = env.get("CHAT_LOG_STATIC", "").lower() not in ("1", "true", "yes")
    assert web.stdout is not None
    threading.Thread(target=_relay, args=(web.stdout,), kwargs={"quiet_static": quiet_static}, daemon=True).start()
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
        _stop_all([web])  # first: no new sends, no websocket left waiting on the others
        _stop_all([p for p in processes if p is not web])
        if redis is not None:
            redis.stop()  # last: everything above talks to it on the way out
        print("Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
