"""What both halves of the client share: the error type, ids, user messages and filters
(docs/protocol.md)."""

from __future__ import annotations

import uuid
from typing import Any

Event = dict[str, Any]
"""A frame or event as received: a decoded JSON object."""


class ChatClientError(Exception):
    """An error answer: `code` is the protocol's error code."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status = code, message, status


def new_id() -> str:
    return str(uuid.uuid4())


def user_message(text: str, message_id: str | None = None) -> dict[str, Any]:
    return {"id": message_id or new_id(), "role": "user", "parts": [{"type": "text", "text": text}]}


def filter_of(own: bool, turn_id: str | None, client_id: str | None, all_: bool) -> dict[str, Any]:
    """The wire filter of a cancel or wait: the first of turnId, clientId, all, else own."""
    if turn_id is not None:
        return {"turnId": turn_id}
    if client_id is not None:
        return {"clientId": client_id}
    if all_:
        return {"all": True}
    return {"own": True}
