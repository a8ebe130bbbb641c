"""The one mapping of an exception to the protocol's error, `{code, message}` and its HTTP
status (docs/protocol.md, "Errors"). Each edge adds its own envelope: HTTP answers
`{"error": {code, message}}` with the status (api/app.py), the websocket sends
`{"type": "error", code, message, "ref"}` (consumer.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.http import Http404
from django.http.multipartparser import MultiPartParserError
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rest_framework import exceptions

from sessions_app.errors import ChatError


@dataclass(frozen=True)
class WireError:
    """A protocol error: the HTTP status, the documented code and a readable message."""

    status: int
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """`{code, message}`, in that order (the body inside either edge's envelope)."""
        return {"code": self.code, "message": self.message}


# A server fault: never a client's. The details go to the log, not to the client.
INTERNAL = WireError(500, "internal", "server error")


def problem_text(error: Mapping[str, Any]) -> str:
    """A pydantic error's message as a client reads it: a check of ours says what is wrong
    in its own words, without pydantic's "Value error, " before them."""
    message = str(error.get("msg", "invalid input"))
    if error.get("type") == "value_error" and message.startswith(_VALUE_ERROR):
        return message[len(_VALUE_ERROR) :]
    return message


_VALUE_ERROR = "Value error, "


def validation_message(exc: ValidationError) -> str:
    """The first problem of a pydantic validation, as `field.path: message`."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where}: {problem_text(first)}" if where else problem_text(first)


def describe(exc: BaseException) -> WireError | None:
    """The protocol error of an exception, or None if it is not a client error (the caller
    then reports `INTERNAL`, or lets it propagate)."""
    if isinstance(exc, ChatError):
        return WireError(exc.status, exc.code, exc.message)
    if isinstance(exc, ValidationError):
        return WireError(400, "invalid", validation_message(exc))
    if isinstance(exc, DatabaseError | RedisConnectionError | RedisTimeoutError):
        # The database or Redis is unreachable for a moment: the client may retry.
        return WireError(503, "unavailable", "the service is unavailable for a moment; try again")
    if isinstance(exc, RequestDataTooBig):
        return WireError(413, "too_large", "request body too large")
    if isinstance(exc, MultiPartParserError):  # a form content type over a body that is not one
        return WireError(400, "invalid", f"the body is not the form its Content-Type says: {exc}")
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        return WireError(401, "unauthenticated", str(exc.detail))
    if isinstance(exc, exceptions.PermissionDenied):
        return WireError(403, "forbidden", str(exc.detail))
    if isinstance(exc, exceptions.NotFound | Http404):
        return WireError(404, "not_found", "not found")
    if isinstance(exc, exceptions.Throttled):
        return WireError(429, "rate_limited", str(exc.detail))
    if isinstance(exc, exceptions.APIException):
        detail = exc.detail
        message = str(
            detail
            if not isinstance(detail, dict | list)
            else next(iter(detail.values() if isinstance(detail, dict) else detail), detail)
        )
        return WireError(exc.status_code, "invalid", message)
    return None
