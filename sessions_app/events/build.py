"""The builders of every event the server emits, each made from its typed model
(types.py) and returned as published (a dict with the protocol's field names)."""

from __future__ import annotations

from typing import Any, Literal, cast

from sessions_app.events.types import (
    CancelEvent,
    EndReason,
    MemberJoined,
    MemberLeft,
    MessageEvent,
    Node,
    Presence,
    SessionDeleted,
    SessionUpdated,
    ToolCallEvent,
    ToolCallPart,
    ToolResultEvent,
    ToolResultPart,
    TurnEnd,
    TurnError,
    TurnQueued,
    TurnStart,
)
from sessions_app.infra.live_state import Event, now_ms
from sessions_app.models import ChatSession, MessageNode, Turn, TurnStatus, node_payload


def turn_queued(turn: Turn, position: int, *, interrupts: list[str] | None = None) -> Event:
    return TurnQueued(
        type="turn.queued",
        turn_id=turn.turn_id,
        client_id=turn.client_id,
        parent_turn_id=_parent_turn_id(turn),
        position=position,
        interrupts=interrupts or None,
    ).wire()


def turn_start(turn: Turn) -> Event:
    return TurnStart(
        type="turn.start",
        turn_id=turn.turn_id,
        client_id=turn.client_id,
        parent_turn_id=_parent_turn_id(turn),
        model=turn.model,
    ).wire()


def _parent_turn_id(turn: Turn) -> str | None:
    """The public id of the turn a sub-agent's turn works for (read only for such turns)."""
    return turn.parent_turn.turn_id if turn.parent_turn_id and turn.parent_turn else None


def message(node: MessageNode, turn_id: str | None) -> Event:
    return MessageEvent(type="message", message=Node.model_validate(node_payload(node, turn_id=turn_id))).wire()


def delta(turn_id: str, message_id: str, text: str, part: Literal["text", "reasoning"] = "text") -> Event:
    """`Delta(...).wire()`, written out: a delta is the event of every batch of tokens of
    every turn, and making and dumping its model was ~7% of a worker's CPU with 100 turns
    streaming. tests/unit/test_event_builders.py holds it to the model, field by field."""
    event: Event = {"type": "delta", "at": now_ms(), "turnId": turn_id, "messageId": message_id, "text": text}
    if part == "reasoning":
        event["part"] = "reasoning"
    return event


def turn_end(turn: Turn) -> Event:
    error = TurnError(code=turn.error_code, message=turn.error_message) if turn.error_code else None
    return TurnEnd(
        type="turn.end",
        turn_id=turn.turn_id,
        client_id=turn.client_id,
        parent_turn_id=_parent_turn_id(turn),
        reason=cast(EndReason, turn.status),
        error=error,
        cancelled_by=(turn.cancel_requested_by or None) if turn.status == TurnStatus.CANCELLED else None,
    ).wire()


def cancel(filter_: dict[str, Any], client_id: str, cancelled: list[str], rejected: list[str]) -> Event:
    return CancelEvent(
        type="cancel", filter=filter_, client_id=client_id, cancelled=cancelled, rejected=rejected
    ).wire()


def session_updated(session: ChatSession, by: str) -> Event:
    return SessionUpdated(
        type="session.updated",
        client_id=by,
        title=session.title,
        policy=session.policy,
        model=session.model,
        model_options=session.model_options,
        agents=list(session.agents or []),
    ).wire()


def member_joined(client_id: str, role: str, by: str) -> Event:
    return MemberJoined(
        type="member.joined", client_id=client_id, role=cast(Literal["owner", "member"], role), by=by
    ).wire()


def member_left(client_id: str) -> Event:
    return MemberLeft(type="member.left", client_id=client_id).wire()


def session_deleted(by: str) -> Event:
    return SessionDeleted(type="session.deleted", client_id=by).wire()


def presence(online: list[str]) -> Event:
    return Presence(type="presence", online=online).wire()


def tool_call(turn_id: str, message_id: str, part: dict[str, Any]) -> Event:
    """A model asked for a server-side tool (`part`: a `tool-call` part of the answer)."""
    return ToolCallEvent(
        type="tool.call", turn_id=turn_id, message_id=message_id, part=ToolCallPart.model_validate(part)
    ).wire()


def tool_result(turn_id: str, message_id: str, part: dict[str, Any]) -> Event:
    """A tool's result (`part`: a `tool-result` part of the answer)."""
    return ToolResultEvent(
        type="tool.result", turn_id=turn_id, message_id=message_id, part=ToolResultPart.model_validate(part)
    ).wire()
