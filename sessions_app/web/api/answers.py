"""The success answers of the HTTP API, as typed models for its OpenAPI schema: each
endpoint names its answer with `response={status: <model>}`, and the schema names the
fields as they are sent (`turnId`: the API's router sets by_alias).

They describe; they never run. The views answer with HttpResponses they serialise
themselves (`json_response`), and Ninja passes a returned HttpResponse through untouched: a
`response=` model is applied only to data a view returns, so no answer is validated or
serialised again per request (the hot endpoints' budget: docs/performance.md).
tests/unit/test_api_answers.py checks real answers against the schema built from these.

Message nodes and events are the event models' own (sessions_app/events/types.py), the
enums the database's (sessions_app/models.py): one definition each, on the wire and here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import BaseModel, Field, create_model

from sessions_app.ably.stats import COUNTERS
from sessions_app.events.types import EVENT_MODELS, EndReason, Node, TurnError
from sessions_app.models import Membership, Policy, TurnStatus

# --- auth --------------------------------------------------------------------------------


class TokenAnswer(BaseModel):
    token: str
    client_id: str = Field(alias="clientId")


class RevokeAnswer(BaseModel):
    revoked: int


class TicketAnswer(BaseModel):
    ticket: str
    expires_in: int = Field(alias="expiresIn")


# --- sessions ----------------------------------------------------------------------------


class ModelsAnswer(BaseModel):
    results: list[str]


class TurnAnswer(BaseModel):
    """A turn (`GET .../turns/{turnId}`, and the turns of a session's detail)."""

    turn_id: str = Field(alias="turnId")
    client_id: str = Field(alias="clientId")
    status: TurnStatus
    reason: EndReason | None
    error: TurnError | None
    policy: Policy
    model: str
    user_message_id: str | None = Field(alias="userMessageId")
    assistant_message_id: str | None = Field(alias="assistantMessageId")
    content: str
    usage: dict[str, Any] | None
    finish_reason: str | None = Field(alias="finishReason")
    cancelled_by: str | None = Field(alias="cancelledBy")
    created_at: int = Field(alias="createdAt")
    ended_at: int | None = Field(alias="endedAt")
    parent_turn_id: str | None = Field(alias="parentTurnId")


class SessionAnswer(BaseModel):
    """A session as a list shows it."""

    id: str
    title: str
    owner: str
    model: str
    model_options: dict[str, Any] = Field(alias="modelOptions")
    policy: Policy
    created_at: int = Field(alias="createdAt")
    updated_at: int = Field(alias="updatedAt")
    agents: list[str]


class SessionDetailAnswer(SessionAnswer):
    """A session with its members, last seq and turns in flight."""

    last_seq: int = Field(alias="lastSeq")
    members: list[str]
    active_turns: dict[str, list[str]] = Field(alias="activeTurns", description="clientId -> its active turns' ids")
    turns: list[TurnAnswer] = Field(description="the active turns")
    queued_turns: list[TurnAnswer] = Field(alias="queuedTurns")


class SessionsAnswer(BaseModel):
    results: list[SessionAnswer]


class MemberAnswer(BaseModel):
    username: str
    role: Membership.MemberRole


# --- turns -------------------------------------------------------------------------------


class SendAnswer(BaseModel):
    turn_id: str = Field(alias="turnId")
    status: TurnStatus
    client_id: str = Field(alias="clientId")
    message_ids: list[str] = Field(alias="messageIds")
    user_message_id: str | None = Field(alias="userMessageId")
    assistant_message_id: str | None = Field(alias="assistantMessageId")


class TurnsAnswer(BaseModel):
    results: list[TurnAnswer]


class CancelAnswer(BaseModel):
    cancelled: list[str]
    rejected: list[str]
    pending: list[str]


class WaitTurn(BaseModel):
    turn_id: str = Field(alias="turnId")
    status: TurnStatus
    reason: EndReason | None


class WaitAnswer(BaseModel):
    turns: list[WaitTurn]
    timed_out: bool = Field(alias="timedOut")


# --- reads -------------------------------------------------------------------------------


class MessagesAnswer(BaseModel):
    results: list[Node] = Field(description="newest first")
    next: str | None = Field(description="the `before` of the next page; null on the last")


if TYPE_CHECKING:
    Event = dict[str, Any]
else:  # every event the server sends, told apart by its `type`
    Event = Annotated[Union[tuple(EVENT_MODELS.values())], Field(discriminator="type")]  # noqa: UP007  # a Union of a tuple


class EventsAnswer(BaseModel):
    events: list[Event]
    last_seq: int = Field(alias="lastSeq")


# --- agents ------------------------------------------------------------------------------


class AgentAnswer(BaseModel):
    name: str
    client_id: str = Field(alias="clientId")
    model: str
    sub_agents: list[str] = Field(alias="subAgents")
    description: str


class AgentsAnswer(BaseModel):
    results: list[AgentAnswer]


# --- Ably --------------------------------------------------------------------------------


class AblyTokenRequestAnswer(BaseModel):
    """An Ably token request, signed: the client exchanges it with Ably for a token."""

    key_name: str = Field(alias="keyName")
    client_id: str = Field(alias="clientId")
    capability: str = Field(description="the capability, as JSON")
    ttl: int
    timestamp: int
    nonce: str
    mac: str


class InvocationAnswer(SendAnswer):
    run_id: str = Field(alias="runId", description="the turn's id")
    invocation_id: str = Field(alias="invocationId", description="the turn's id")


AblyStatsAnswer = create_model(
    "AblyStatsAnswer",
    **{name: (int, ...) for name in COUNTERS},  # type: ignore[call-overload]  # fields built from the counters
    channels_active=(int, ...),
    events_behind=(int, ...),
    seconds_since_report=(float | None, Field(description="since a mirror last reported; null: never")),
)
