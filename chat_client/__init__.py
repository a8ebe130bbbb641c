"""A Python asyncio client of the protocol (docs/protocol.md; guide: docs/python-client.md).

    client = await ChatClient.login("http://127.0.0.1:8000", "demo", "demo-password")
    session = await client.create_session(title="Trip")
    phone = await client.connect(session["id"])
    turn = await phone.send("Plan a 3 day trip")
    async for text in turn.stream():
        print(text, end="")
    await phone.close()

Modules:

- `client`: `ChatClient`, the HTTP side of the protocol and the factory of devices;
- `device`: `Device`, one websocket connection to a session: it keeps the session's state
  by applying events in `seq` order, resumes after a drop from the last seq it saw
  (`reconnect()`, or automatically), and sends commands;
- `state`: `SessionState`, the state a device builds from frames (records every gap or
  duplicate it would have seen in `gaps` / `duplicates`; both stay empty when the server
  keeps its promise);
- `turns`: `TurnHandle`, a turn as one device sees it (its text stream, its end);
- `protocol`: `ChatClientError`, ids, user messages and filters.
"""

from __future__ import annotations

from chat_client.client import ChatClient
from chat_client.device import Device
from chat_client.protocol import ChatClientError, Event, filter_of, new_id, user_message
from chat_client.state import SessionState
from chat_client.turns import TurnHandle

__all__ = [
    "ChatClient",
    "ChatClientError",
    "Device",
    "Event",
    "SessionState",
    "TurnHandle",
    "filter_of",
    "new_id",
    "user_message",
]
