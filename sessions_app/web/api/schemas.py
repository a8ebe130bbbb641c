"""The error envelope of the HTTP API and the errors each endpoint may answer, for its
OpenAPI schema, and the login's body (the other request bodies are the command schemas of
sessions_app/schemas.py; the success answers are in answers.py)."""

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
