"""The events the server emits (docs/protocol.md, "Events"), as typed models. The builders
(build.py) make every event from these models, and tests validate every event they receive
against them, so the schema, the docs and the wire cannot drift apart."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from sessions_app.infra.live_state import now_ms
from sessions_app.schemas import Strict

EndReason = Literal["complete", "cancelled", "error"]
UNNUMBERED = 0  # the seq of an event not published yet (published events count from 1)


class Node(Strict):
    id: str
    parent: str | None
    role: Literal["user", "assistant", "system"]
    parts: list[dict[str, Any]]
    turn_id: str | None = Field(alias="turnId")
    client_id: str = Field(alias="clientId")
    fork_of: str | None = Field(alias="forkOf")
    status: Literal["queued", "streaming", "complete", "cancelled", "error"]
    content_seq: int = Field(alias="contentSeq")
    created_at: int | None = Field(alias="createdAt")


class EventBase(Strict):
    """Every event: its number in the session's stream (contiguous; given when it is
    published, so a built event holds UNNUMBERED), its type and when it was made."""

    seq: int = UNNUMBERED
    type: str
    at: int = Field(default_factory=now_ms)

    def wire(self) -> dict[str, Any]:
        """The event as published, before its number: the fields of docs/protocol.md with
        their names there."""
        # An absent optional field of the event itself is left out; null inside a message
        # node (no parent, no forkOf) is part of the node.
        return {k: v for k, v in self.model_dump(by_alias=True, exclude={"seq"}).items() if v is not None}


class TurnEvent(EventBase):
    """An event of a turn's life, naming the turn and its owner (a user, or an agent:
    `agent:<name>`), and for a sub-agent's turn the turn it works for."""

    turn_id: str = Field(alias="turnId")
    client_id: str = Field(alias="clientId")
    parent_turn_id: str | None = Field(default=None, alias="parentTurnId")


class AnswerEvent(EventBase):
    """A piece of a turn's answer, naming the turn and the answer's message."""

    turn_id: str = Field(alias="turnId")
    message_id: str = Field(alias="messageId")


class TurnQueued(TurnEvent):
    type: Literal["turn.queued"]
    position: int
    # An interrupting send's turn: it starts once these (the sender's turns it
    # interrupted) have ended, not when the queue's turn comes.
    interrupts: list[str] | None = None


class TurnStart(TurnEvent):
    type: Literal["turn.start"]
    model: str | None = None  # the model answering (a turn keeps the one it was sent with)


class MessageEvent(EventBase):
    type: Literal["message"]
    message: Node


class Delta(AnswerEvent):
    type: Literal["delta"]
    text: str
    part: Literal["reasoning"] | None = None


class TurnError(Strict):
    code: str
    message: str


class TurnEnd(TurnEvent):
    type: Literal["turn.end"]
    reason: EndReason
    error: TurnError | None = None
    cancelled_by: str | None = Field(default=None, alias="cancelledBy")  # whose cancel ended it


class CancelEvent(EventBase):
    type: Literal["cancel"]
    filter: dict[str, Any]
    client_id: str = Field(alias="clientId")
    cancelled: list[str]
    rejected: list[str]


class Presence(EventBase):
    type: Literal["presence"]
    online: list[str]


class SessionUpdated(EventBase):
    """The session's settings changed (every field holds its value after the change)."""

    type: Literal["session.updated"]
    client_id: str = Field(alias="clientId")  # who changed them
    title: str
    policy: str
    model: str
    model_options: dict[str, Any] = Field(alias="modelOptions")
    # The session's agents (docs/agents.md); absent from events archived before it was sent.
    agents: list[str] = Field(default_factory=list)


class MemberJoined(EventBase):
    type: Literal["member.joined"]
    client_id: str = Field(alias="clientId")  # the new member
    role: Literal["owner", "member"]
    by: str  # who invited them


class MemberLeft(EventBase):
    type: Literal["member.left"]
    client_id: str = Field(alias="clientId")  # the member who left


class SessionDeleted(EventBase):
    """The session's last event: it and everything in it are gone, its turns stopped (no
    `turn.end` follows for them); its websockets then close with 4404."""

    type: Literal["session.deleted"]
    client_id: str = Field(alias="clientId")  # who deleted it (an operator, from the admin)


EVENT_MODELS: dict[str, type[EventBase]] = {
    "presence": Presence,
    "turn.queued": TurnQueued,
    "turn.start": TurnStart,
    "message": MessageEvent,
    "delta": Delta,
    "turn.end": TurnEnd,
    "cancel": CancelEvent,
    "session.updated": SessionUpdated,
    "member.joined": MemberJoined,
    "member.left": MemberLeft,
    "session.deleted": SessionDeleted,
}


def validate_event(event: dict[str, Any]) -> EventBase:
    """Check a received event against its schema (raises pydantic.ValidationError, or
    ValueError for an event that was not numbered)."""
    model = EVENT_MODELS[event["type"]].model_validate(event)
    if model.seq < 1:
        raise ValueError(f"a published event has a seq: {event}")
    return model


# --- tool parts ---------------------------------------------------------------------------


class ToolCallPart(Strict):
    type: Literal["tool-call"]
    id: str
    name: str
    arguments: dict[str, Any]


class ToolResultPart(Strict):
    type: Literal["tool-result"]
    id: str
    name: str
    result: Any
    is_error: bool = Field(alias="isError")


class ToolCallEvent(AnswerEvent):
    type: Literal["tool.call"]
    part: ToolCallPart


class ToolResultEvent(AnswerEvent):
    type: Literal["tool.result"]
    part: ToolResultPart


EVENT_MODELS["tool.call"] = ToolCallEvent
EVENT_MODELS["tool.result"] = ToolResultEvent
