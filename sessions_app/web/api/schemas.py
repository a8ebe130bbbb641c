"""The error envelope of the HTTP API and the errors each endpoint may answer, for its
OpenAPI schema, the login's body and the reads' query strings (the other request bodies
are the command schemas of sessions_app/schemas.py; the success answers are in answers.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from ninja import Schema
from pydantic import BaseModel, BeforeValidator, Field

from sessions_app.models import TurnStatus
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


# --- query strings -------------------------------------------------------------------------

MAX_SEQ = 2**62


def whole_number(name: str, low: int, high: int) -> Any:
    """A query parameter's whole number, in the schema with its range: ASCII digits only,
    as the websocket's `?after=` takes them (int() would also read `+5`, ` 5`, `5_0`), and
    out of range `invalid` with the range in its message."""

    def digits(value: Any) -> Any:
        if isinstance(value, str):
            fits = value.isascii() and value.isdigit() and len(value) <= len(str(high))
            if not fits or not low <= int(value) <= high:
                raise ValueError(f"{name} is a whole number from {low} to {high}")
        return value

    return Annotated[int, Field(ge=low, le=high), BeforeValidator(digits)]


def _no_status(value: Any) -> Any:
    return None if value == "" else value  # `?status=`: every turn, as no parameter


class TurnsQuery(Schema):
    status: Annotated[TurnStatus | None, BeforeValidator(_no_status)] = None


class MessagesQuery(Schema):
    before: str | None = None
    limit: whole_number("limit", 1, 500) = 50  # type: ignore[valid-type]


class EventsQuery(Schema):
    after: whole_number("after", 0, MAX_SEQ) = 0  # type: ignore[valid-type]
    limit: whole_number("limit", 1, 5000) = 1000  # type: ignore[valid-type]
