"""A web process's connections write at the end of the loop's turn (config/serve.py,
FlushSoonServer): what was written arrives whole and in order, without the reactor
watching the socket for writability, unless the socket cannot take it all."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daphne.server import twisted_loop
from twisted.internet import main, protocol
from twisted.internet import reactor as the_reactor
from twisted.python import failure

from config.serve import CleanCloseServer, FlushSoonServer

reactor: Any = the_reactor  # the web process's (daphne.server installs it); Twisted's interfaces confuse mypy


@pytest.fixture
def connected() -> Iterator[tuple[FlushSoonServer, socket.socket]]:
    """A server-side transport on the web process's reactor, and its peer's socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    peer = socket.create_connection(listener.getsockname())
    accepted, address = listener.accept()
    listener.close()
    accepted.setblocking(False)
    peer.setblocking(False)
    transport = FlushSoonServer(accepted, protocol.Protocol(), address, None, 1, reactor)  # type: ignore[arg-type]
    transport.protocol.makeConnection(transport)  # type: ignore[call-arg,misc]
    try:
        yield transport, peer
    finally:
        if transport.connected:
            transport.stopReading()
            transport.stopWriting()
            transport.connectionLost(failure.Failure(main.CONNECTION_DONE))
        peer.close()


async def _read(peer: socket.socket, size: int) -> bytes:
    """`size` bytes, or what came before the end of the stream."""
    loop = asyncio.get_running_loop()
    received = b""
    while len(received) < size:
        chunk = await asyncio.wait_for(loop.sock_recv(peer, 1 << 20), 30)
        if not chunk:
            break
        received += chunk
    return received


def test_writes_of_one_turn_arrive_together_without_watching_the_socket(
    connected: tuple[FlushSoonServer, socket.socket],
) -> None:
    transport, peer = connected
    parts = (b"HTTP/1.1 200 OK\r\n", b"Content-Length: 2\r\n\r\n", b"{}")

    async def scenario() -> bytes:
        for part in parts:
            transport.write(part)
        # Twisted's own transport is now registered for writability; this one is not.
        assert transport not in reactor.getWriters()
        return await _read(peer, len(b"".join(parts)))

    assert twisted_loop.run_until_complete(scenario()) == b"".join(parts)
    assert transport not in reactor.getWriters()


def test_what_the_socket_cannot_take_is_written_when_it_has_room(
    connected: tuple[FlushSoonServer, socket.socket],
) -> None:
    transport, peer = connected
    data = bytes(range(256)) * (64 * 1024)  # 16 MiB: more than any socket buffer

    async def scenario() -> bytes:
        transport.write(data)
        await asyncio.sleep(0)  # the flush: the socket takes what it can
        await asyncio.sleep(0)
        assert transport in reactor.getWriters()  # the rest waits for room
        return await _read(peer, len(data))

    assert twisted_loop.run_until_complete(scenario()) == data
    assert transport not in reactor.getWriters()


def test_a_connection_closed_after_a_write_delivers_it_first(
    connected: tuple[FlushSoonServer, socket.socket],
) -> None:
    transport, peer = connected

    async def scenario() -> bytes:
        transport.write(b"last words")
        transport.loseConnection()
        return await _read(peer, 1 << 30)  # until the end of the stream

    assert twisted_loop.run_until_complete(scenario()) == b"last words"
    assert not transport.connected


def test_the_servers_tcp_listeners_make_such_connections(tmp_path: Path) -> None:
    server = CleanCloseServer(application=None, endpoints=["tcp:port=0:interface=127.0.0.1"])  # not started
    tcp_port = reactor.listenTCP(0, protocol.Factory(), interface="127.0.0.1")
    unix_port = reactor.listenUNIX(str(tmp_path / "web.sock"), protocol.Factory())
    try:
        for port in (tcp_port, unix_port):
            server.listen_success(port)  # as Daphne calls it once a port listens
        assert tcp_port.transport is FlushSoonServer
        assert unix_port.transport is not FlushSoonServer  # a Unix socket keeps Twisted's own
    finally:
        tcp_port.stopListening()
        unix_port.stopListening()
