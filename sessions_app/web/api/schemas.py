"""Response shapes of the HTTP API, for its OpenAPI schema (request bodies are the command
schemas of sessions_app/schemas.py). Views answer with these fields; the schema documents
them and every error of docs/protocol.md."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from sessions_app.schemas import Command

ErrorCode = Literal[
    "invalid",
    "unauthenticated",
    "forbidden",
    "not_found",
    "busy",
    "conflict",
    "too_large",
    "queue_full",
    "rate_limited",
    "unavailable",
    "internal",
]


class ErrorDetail(BaseModel):
    code: ErrorCode
    message: str


class ErrorOut(BaseModel):
    """The envelope of every error answer."""

    error: ErrorDetail


# The errors an endpoint may answer, by status (docs/protocol.md, "Errors").
ERRORS: dict[int, Any] = {
    400: ErrorOut,
    401: ErrorOut,
    403: ErrorOut,
    404: ErrorOut,
    409: ErrorOut,
    413: ErrorOut,
    429: ErrorOut,
    500: ErrorOut,
    503: ErrorOut,
}


class LoginBody(Command):
    username: str = Field(max_length=150)
    password: str = Field(max_length=4096)


class TokenOut(BaseModel):
    token: str
    client_id: str = Field(alias="clientId")


class ModelsOut(BaseModel):
    results: list[str]


class SendOut(BaseModel):
    turn_id: str = Field(alias="turnId")
    status: Literal["active", "queued", "complete", "cancelled", "error"]
    client_id: str = Field(alias="clientId")
    message_ids: list[str] = Field(alias="messageIds")
    user_message_id: str | None = Field(alias="userMessageId")
    assistant_message_id: str | None = Field(alias="assistantMessageId")


class MemberOut(BaseModel):
    username: str
    role: Literal["owner", "member"]


class CancelOut(BaseModel):
    cancelled: list[str]
    rejected: list[str]
    pending: list[str]


class WaitTurn(BaseModel):
    turn_id: str = Field(alias="turnId")
    status: str
    reason: str | None


class WaitOut(BaseModel):
    turns: list[WaitTurn]
    timed_out: bool = Field(alias="timedOut")
