"""Every API error answers `{"error": {"code", "message"}}` with the documented status; the
mapping of exceptions to errors is web/errors.py's (shared with the websocket)."""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse
from rest_framework.response import Response

from sessions_app.web import errors


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def describe(exc: Exception) -> tuple[int, str, str] | None:
    """(status, code, message) of an exception, or None if it is not a client error."""
    error = errors.describe(exc)
    return None if error is None else (error.status, error.code, error.message)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    error = errors.describe(exc)
    if error is None:
        return None
    response = Response(error_body(error.code, error.message), status=error.status)
    if error.status == 401:
        response["WWW-Authenticate"] = "Token"
    return response


def json_error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=status)
