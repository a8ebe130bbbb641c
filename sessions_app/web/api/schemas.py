"""The error envelope of the HTTP API and the errors each endpoint may answer, for its
OpenAPI schema, the login's body, the paths' parameters and the reads' query strings (the
other request bodies are the command schemas of sessions_app/schemas.py; the success
answers are in answers.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from ninja import Schema
from pydantic import BaseModel, BeforeValidator, Field
from pydantic.json_schema import JsonDict

from sessions_app.models import TurnStatus
from sessions_app.schemas import MAX_SEQ, Command, Text, is_whole_number

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


def errors(*statuses: int) -> dict[int, Any]:
    """The error answers of an operation, each with the envelope: `statuses`, and 500 and
    503, which any operation may answer (a fault; the database or Redis away for a moment)."""
    return dict.fromkeys(sorted({*statuses, 500, 503}), ErrorOut)


# The errors each operation may answer, by status (docs/protocol.md, "Errors"), for its
# `response=`. 400 wherever a declared input (a body, a path or query parameter: a NUL
# character in a path is one) may be refused; 401 wherever credentials are needed; 403 for a
# write, which a browser's session makes with its CSRF token (web/api/security.py), and
# wherever a session is named (not a member; owner only); 404 wherever something is named
# by id; 413 wherever a body is read (beyond Django's DATA_UPLOAD_MAX_MEMORY_SIZE; a send's
# limits). A query parameter the operation does not declare, holding a NUL character, is
# 400 too: not listed (decision 048).
LOGIN_ERRORS = errors(400, 401, 413, 429)  # wrong credentials; too many failures
READ_ERRORS = errors(401)  # a GET naming nothing: the models, one's sessions, the agents
STAFF_READ_ERRORS = errors(401, 403)  # a GET for staff only (the Ably mirror's figures)
WRITE_ERRORS = errors(401, 403)  # a POST taking no body (a websocket ticket)
BODY_ERRORS = errors(400, 401, 403, 413)  # a write with a body, naming no session
SESSION_ERRORS = errors(400, 401, 403, 404)  # a session's path (and query) without a body
SESSION_BODY_ERRORS = errors(400, 401, 403, 404, 413)  # the same, with a body
SEND_ERRORS = errors(400, 401, 403, 404, 409, 413, 429)  # + conflict and busy; queue_full and rate_limited


class LoginBody(Command):
    username: Text = Field(max_length=150)
    password: Text = Field(max_length=4096)


# --- query strings -------------------------------------------------------------------------


def whole_number(low: int, high: int) -> Any:
    """A query parameter's whole number, in the schema with its range: ASCII digits only,
    as the websocket's `?after=` takes them (int() would also read `+5`, ` 5`, `5_0`), and
    out of range `invalid` with the range in its message."""

    def digits(value: Any) -> Any:
        if isinstance(value, str) and not is_whole_number(value, low, high):
            raise ValueError(f"not a whole number from {low} to {high}")
        return value

    return Annotated[int, Field(ge=low, le=high), BeforeValidator(digits)]


def _no_status(value: Any) -> Any:
    return None if value == "" else value  # `?status=`: every turn, as no parameter


def _or_empty(schema: JsonDict) -> None:
    options = schema.get("anyOf")
    if isinstance(options, list):  # schema only: `?status=` is taken, as no status
        options.append({"type": "string", "const": ""})


class TurnsQuery(Schema):
    status: Annotated[TurnStatus | None, BeforeValidator(_no_status)] = Field(default=None, json_schema_extra=_or_empty)


class MessagesQuery(Schema):
    before: Text | None = None
    limit: whole_number(1, 500) = 50  # type: ignore[valid-type]


class EventsQuery(Schema):
    after: whole_number(0, MAX_SEQ) = 0  # type: ignore[valid-type]
    limit: whole_number(1, 5000) = 1000  # type: ignore[valid-type]
