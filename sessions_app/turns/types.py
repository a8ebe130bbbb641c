"""The typed values that cross from the turns package to the worker and back: what a worker
needs to run a turn it claimed, and how the turn ended."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ClaimedTurn:
    """What a worker needs to run a turn, loaded once when it claims it."""

    pk: int
    session_id: str
    turn_id: str
    client_id: str
    model: str
    model_options: dict[str, Any]
    assistant_message_id: str
    cancel_requested: bool
    context: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class TurnOutcome:
    """How a turn ended: its reason and its final answer, as the worker saw it."""

    turn_pk: int
    session_id: str
    message_id: str  # the answer's node id
    status: str  # a TurnStatus that ends a turn: complete, cancelled or error
    parts: list[dict[str, Any]]
    content_seq: int  # seq of the last event carrying the answer's content
    error_code: str = ""
    error_message: str = ""
    usage: dict[str, Any] = field(default_factory=dict)
    finish_reason: str = ""
