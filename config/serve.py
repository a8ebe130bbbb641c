"""`python -m config.serve [daphne options] config.asgi:application`: Daphne's own command
line (every option of `daphne`), with one difference: a websocket message over Daphne's
size limit (`--websocket-max-message-size`, 1 MiB by default) is refused with a close
frame, code 1009 (message too big), instead of a dropped TCP connection the client can only
read as 1006. The same holds for other protocol violations (invalid UTF-8: 1007).

Frames between the app's own limit (SESSIONS_APP["MAX_FRAME_BYTES"], 256 KiB) and Daphne's
reach the consumer, which answers `too_large` and keeps the connection open.
"""

from __future__ import annotations

from typing import Any

from daphne.cli import CommandLineInterface
from daphne.server import Server


class CleanCloseServer(Server):
    """Daphne's server, its websocket factory set to fail a connection with a close
    handshake: autobahn's default (`failByDrop`) drops TCP instead. Daphne creates the
    factory in `run()` and offers no option for it, so it is set as the factory is stored."""

    @property  # type: ignore[override]
    def ws_factory(self) -> Any:
        return self._ws_factory

    @ws_factory.setter
    def ws_factory(self, factory: Any) -> None:
        factory.setProtocolOptions(failByDrop=False)
        self._ws_factory = factory


class CommandLine(CommandLineInterface):
    server_class = CleanCloseServer


if __name__ == "__main__":
    CommandLine.entrypoint()
