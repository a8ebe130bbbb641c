"""Start the real product for tests and benchmarks: Daphne and Celery worker processes
against a given database and Redis, each stack with its own key prefix (its own Celery
queue, channel layer and Redis keys), so that several can share one Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from config.runstack import web_command, worker_command

ROOT = Path(__file__).resolve().parent.parent


def database_url(settings_dict: dict[str, Any]) -> str:
    """DATABASE_URL of a Django connection's settings (the test database)."""
    if "sqlite" in settings_dict["ENGINE"]:
        return f"sqlite:///{Path(settings_dict['NAME']).resolve()}"
    user = settings_dict.get("USER") or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{settings_dict['NAME']}"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    base_url: str
    env: dict[str, str]
    key_prefix: str
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.env["REDIS_URL"])

    def start_worker(self, name: str = "worker", concurrency: int = 100) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")
        command = worker_command(concurrency, loglevel="WARNING", name=f"{name}-{self.key_prefix}@%h")
        process = subprocess.Popen(
            [*command, "--without-heartbeat"],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes[name] = process
        before = set(self.live_workers())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.log_tail(name)}")
            if set(self.live_workers()) - before:
                return process
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not start: {self.log_tail(name)}")

    def live_workers(self) -> list[bytes]:
        members = self.redis.zrangebyscore(f"{self.key_prefix}:workers", time.time() - 5, "+inf")
        return list(members)  # type: ignore[arg-type]

    def start_web(self, name: str = "web", extra_env: dict[str, str] | None = None) -> str:
        port = free_port()
        log = open(self.logs / f"{name}.log", "ab")
        process = subprocess.Popen(
            web_command("127.0.0.1", port),
            env={**self.env, **(extra_env or {})},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes[name] = process
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.log_tail(name)}")
            try:
                if httpx.get(f"{url}/api/models", timeout=1).status_code == 401:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not start: {self.log_tail(name)}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        process.send_signal(sig)
        process.wait(timeout=30)

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()


def start_stack(
    *,
    database: str,
    key_prefix: str,
    extra_env: dict[str, str] | None = None,
    worker: bool = True,
    concurrency: int = 100,
) -> Stack:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings.test"),
        "DATABASE_URL": database,
        "CHAT_KEY_PREFIX": key_prefix,
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    stack = Stack(base_url="", env=env, key_prefix=key_prefix, logs=Path(tempfile.mkdtemp(prefix="chat-stack-")))
    try:
        if worker:
            stack.start_worker(concurrency=concurrency)
        stack.base_url = stack.start_web()
    except Exception:
        stack.stop()
        raise
    return stack
