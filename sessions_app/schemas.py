"""Typed schemas of the commands clients send (docs/protocol.md), validated at the edge, over
HTTP and the websocket alike. The events the server emits are typed in events/types.py."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from sessions_app.models import Policy

Id = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:\-]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --- commands ----------------------------------------------------------------------------


class TextPart(Strict):
    type: Literal["text"]
    text: str = Field(min_length=1)


class UserMessage(Strict):
    id: Id
    role: Literal["user"]
    parts: list[TextPart] = Field(min_length=1)


class SendBody(Strict):
    turn_id: Id | None = Field(default=None, alias="turnId")
    messages: list[UserMessage] = Field(default_factory=list)
    parent: Id | None = None
    fork_of: Id | None = Field(default=None, alias="forkOf")
    regenerate: Id | None = None
    policy: Policy | None = None

    @model_validator(mode="after")
    def one_of_messages_or_regenerate(self) -> SendBody:
        if self.regenerate and self.messages:
            raise ValueError("a regenerate carries no messages")
        if not self.regenerate and not self.messages:
            raise ValueError("messages must hold at least one user message")
        if self.regenerate and (self.fork_of or self.parent):
            raise ValueError("regenerate takes neither parent nor forkOf")
        return self


class CancelFilter(Strict):
    """Exactly one of own / turnId / clientId / all."""

    own: Literal[True] | None = None
    turn_id: Id | None = Field(default=None, alias="turnId")
    client_id: Annotated[str, StringConstraints(min_length=1, max_length=150)] | None = Field(
        default=None, alias="clientId"
    )
    all: Literal[True] | None = None

    @model_validator(mode="after")
    def exactly_one(self) -> CancelFilter:
        given = [v for v in (self.own, self.turn_id, self.client_id, self.all) if v is not None]
        if len(given) > 1:
            raise ValueError("a filter holds exactly one of own, turnId, clientId, all")
        if not given:
            self.own = True  # {} means own
        return self

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class WaitBody(Strict):
    filter: CancelFilter = Field(default_factory=CancelFilter)
    timeout: float = Field(default=30, ge=0, le=60)


class SessionCreateBody(Strict):
    title: str = Field(default="", max_length=200)
    model: str | None = Field(default=None, max_length=100)
    model_options: dict[str, Any] = Field(default_factory=dict, alias="modelOptions")
    policy: Policy | None = None


class SessionUpdateBody(Strict):
    title: str | None = Field(default=None, max_length=200)
    model: str | None = Field(default=None, max_length=100)
    model_options: dict[str, Any] | None = Field(default=None, alias="modelOptions")
    policy: Policy | None = None


class MemberBody(Strict):
    username: str = Field(min_length=1, max_length=150)


# websocket frames


class WsSend(SendBody):
    type: Literal["send"]
    ref: Any = None


class WsCancel(Strict):
    type: Literal["cancel"]
    ref: Any = None
    filter: CancelFilter = Field(default_factory=CancelFilter)


class WsClose(Strict):
    type: Literal["close"]
    ref: Any = None
    cancel: CancelFilter | None = None


class WsPing(Strict):
    type: Literal["ping"]
    ref: Any = None
