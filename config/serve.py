"""`python -m config.serve [daphne options] config.asgi:application`: Daphne's own command
line (every option of `daphne`), with three differences on websockets:

- a message from a client over Daphne's size limit (`--websocket-max-message-size`, 1 MiB
  by default) is refused with a close frame, code 1009 (message too big), instead of a
  dropped TCP connection the client can only read as 1006. The same holds for other
  protocol violations (invalid UTF-8: 1007). Frames between the app's own limit
  (SESSIONS_APP["MAX_FRAME_BYTES"], 256 KiB) and Daphne's reach the consumer, which answers
  `too_large` and keeps the connection open;
- that limit bounds what clients send, not what the server sends: autobahn applies it to
  both, so that under plain `daphne` a snapshot of a session holding more than 1 MiB of
  messages cannot be sent, and its devices cannot connect;
- a frame is written without the arguments of autobahn's debug line about it: autobahn
  formats them (the sending method's qualified name and the peer, in terminal colours)
  for every frame sent, debug logging on or off, ~3% of a web process's CPU while it
  streams to many devices. Daphne never turns that logging on.

And one as the server stops (SIGTERM, as a deploy stops it): every open websocket gets a
close frame with code 1012 (service restart) before Daphne cancels the connections. Plain
Daphne drops their TCP connections, which a client can only read as 1006, the code of a
network fault; 1012 tells it that the server is going away and that another one (or this
one again) takes its reconnect.

And one on every connection: what the server writes goes out at the end of the event
loop's turn in which it was written, by a plain `send`, rather than after Twisted has
asked epoll to watch the socket for writability, waited a turn for the answer, written,
and asked epoll to stop (two `epoll_ctl` calls, a wake-up and Twisted's per-event
logging context for every HTTP response and every batch of websocket frames). What a
turn writes to one connection still leaves as one `send`; what the socket does not take
is left to Twisted as before (decision 035).

And three on HTTP:

- Twisted parses the body of every POST for its own `request.args` (the content type of
  each through the email package, ~55 µs of a send's time; urlencoded and multipart
  bodies, an admin upload included, in full), which Daphne never reads: it hands the raw
  body to Django, which parses it. Requests are built with that parsing off.
- on every TCP listener, its listen backlog is LISTEN_BACKLOG (2048, the kernel caps
  it at `net.core.somaxconn`) where Twisted's default is 50. With 50, a hundred clients
  connecting at once overflow the accept queue; the kernel drops the overflow's handshakes
  and the clients retry after one second, then three: sends that arrive together over new
  connections were answered after 1-3 s. An endpoint given with `-e tcp:...:backlog=N`
  keeps its own.
- Twisted formats a Combined Log line of every request for its own logger, beside the
  access log Daphne writes (`--access-log`); at Daphne's default verbosity (1 or less) that
  logger goes nowhere, so the line is not made (~2% of a trivial request's CPU). From `-v 2`
  it goes to the `daphne.server` logger, as before.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from daphne.cli import CommandLineInterface
from daphne.http_protocol import WebRequest
from daphne.server import Server
from daphne.ws_protocol import WebSocketProtocol
from twisted.internet import tcp

CLOSE_SERVICE_RESTART = 1012  # RFC 6455's registry: the server is restarting


class UnboundedSendProtocol(WebSocketProtocol):
    """Daphne's websocket protocol, with its message size limit applied to incoming messages
    only (autobahn checks it in `sendMessage` too). What the server sends is the app's to
    bound: a session's snapshot grows with the session. Its frames are written without
    autobahn's per-frame debug formatting."""

    def sendMessage(self, *args: Any, **kwargs: Any) -> Any:
        limit: int = getattr(self, "maxMessagePayloadSize", 0)
        self.maxMessagePayloadSize = 0  # the reactor's one thread: no receive runs meanwhile
        try:
            return super().sendMessage(*args, **kwargs)
        finally:
            self.maxMessagePayloadSize = limit

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        """autobahn's, for a frame written at once (no chopping, nothing queued before it),
        without formatting its debug line's arguments; the rest as autobahn does it."""
        if sync or chopsize or self.send_queue or self.logOctets:
            super().sendData(data, sync, chopsize)
            return
        self.transport.write(data)
        if self.state == self.STATE_OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        elif self.state in (self.STATE_CONNECTING, self.STATE_PROXY_CONNECTING):
            self.trafficStats.preopenOutgoingOctetsWireLevel += len(data)


class RawBodyRequest(WebRequest):
    """Daphne's HTTP request, without Twisted's parse of POST bodies into `args`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parsePOSTFormSubmission = False  # Twisted's constructor argument, which Daphne does not pass


def _listen_backlog() -> int:
    value = os.environ.get("LISTEN_BACKLOG", "2048")
    if not value.isdigit() or int(value) < 1:
        raise SystemExit(f"LISTEN_BACKLOG must be a positive whole number, not {value!r}")
    return int(value)


LISTEN_BACKLOG = _listen_backlog()


def with_backlog(endpoint: str, backlog: int = LISTEN_BACKLOG) -> str:
    """A Twisted endpoint description with a listen backlog: TCP ones that name none."""
    kind = endpoint.split(":", 1)[0]
    if kind in ("tcp", "tcp6") and ":backlog=" not in endpoint:
        return f"{endpoint}:backlog={backlog}"
    return endpoint


class CleanCloseServer(Server):
    """Daphne's server, its websocket factory set to fail a connection with a close
    handshake (autobahn's default, `failByDrop`, drops TCP instead) and to build the
    protocol above. Daphne creates the factory in `run()` and offers no option for either,
    so both are set as the factory is stored; its HTTP factory's connections build
    `RawBodyRequest`s the same way, and it makes Twisted's log line only where that line
    goes somewhere. Its TCP listeners get LISTEN_BACKLOG."""

    def __init__(self, application: Any, endpoints: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(application, [with_backlog(e) for e in endpoints or []], **kwargs)

    def listen_success(self, port: Any) -> None:
        flush_soon_on(port)  # runs as the port starts listening, before its first accept
        super().listen_success(port)

    def kill_all_applications(self) -> Any:
        """Daphne's shutdown step, after a close frame (1012) to every open websocket: the
        frames are written while Daphne waits for the cancelled connections to end."""
        for protocol in list(self.connections):
            if isinstance(protocol, WebSocketProtocol) and protocol.state == WebSocketProtocol.STATE_OPEN:
                # sendClose takes 1000 and 3000-4999 only; the frame itself any code
                protocol.sendCloseFrame(code=CLOSE_SERVICE_RESTART, isReply=False)
        return super().kill_all_applications()

    @property  # type: ignore[override]
    def ws_factory(self) -> Any:
        return self._ws_factory

    @ws_factory.setter
    def ws_factory(self, factory: Any) -> None:
        factory.setProtocolOptions(failByDrop=False)
        factory.protocol = UnboundedSendProtocol
        self._ws_factory = factory

    @property  # type: ignore[override]
    def http_factory(self) -> Any:
        return self._http_factory

    @http_factory.setter
    def http_factory(self, factory: Any) -> None:
        build_protocol = factory.buildProtocol

        def build_raw_body_protocol(addr: Any) -> Any:
            protocol = build_protocol(addr)
            if protocol is not None:
                protocol.requestFactory = RawBodyRequest
            return protocol

        factory.buildProtocol = build_raw_body_protocol
        if self.verbosity <= 1:  # Daphne then sends Twisted's log nowhere (Server.run)
            factory.log = _no_twisted_log_line
        self._http_factory = factory


def _no_twisted_log_line(_request: Any) -> None:
    """`HTTPFactory.log` where Twisted's log goes nowhere."""


class FlushSoonServer(tcp.Server):
    """Twisted's TCP connection, its writes flushed at the end of the loop's turn.

    Twisted writes by registering the socket for writability (`startWriting`) and sending
    when epoll reports it writable: for a socket with room, a wasted round through epoll on
    every write. Here `startWriting` schedules one flush for the loop's next turn instead:
    everything written meanwhile goes out in one `send` (`doWrite`, Twisted's own), and
    only what the socket does not take, a failed send, or a closing connection is handed to
    the reactor to watch for, exactly as Twisted does it."""

    _flush_scheduled = False

    def startWriting(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self.connected:  # lost meanwhile: nothing to write to
            return
        if self.disconnecting or self._writeDisconnecting:  # Twisted closes once flushed
            super().startWriting()
            return
        lost = self.doWrite()
        if lost or self.offset < len(self.dataBuffer) or self._tempDataLen:
            # The rest when the socket has room; a lost connection is seen there again.
            super().startWriting()


def flush_soon_on(port: Any) -> None:
    """Give a listening TCP port's new connections `FlushSoonServer` (before any is made)."""
    if isinstance(port, tcp.Port) and port.transport is tcp.Server:
        port.transport = FlushSoonServer


class CommandLine(CommandLineInterface):
    server_class = CleanCloseServer


if __name__ == "__main__":
    CommandLine.entrypoint()
