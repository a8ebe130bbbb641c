"""Every API error answers `{"error": {"code", "message"}}` with the documented status."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import Http404, JsonResponse
from pydantic import ValidationError as PydanticValidationError
from rest_framework import exceptions
from rest_framework.response import Response

from sessions_app.errors import ChatError


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _pydantic_message(exc: PydanticValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))


def describe(exc: Exception) -> tuple[int, str, str] | None:
    """(status, code, message) of an exception, or None if it is not a client error."""
    if isinstance(exc, ChatError):
        return exc.status, exc.code, exc.message
    if isinstance(exc, PydanticValidationError):
        return 400, "invalid", _pydantic_message(exc)
    if isinstance(exc, RequestDataTooBig):
        return 413, "too_large", "request body too large"
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        return 401, "unauthenticated", str(exc.detail)
    if isinstance(exc, exceptions.PermissionDenied):
        return 403, "forbidden", str(exc.detail)
    if isinstance(exc, exceptions.NotFound | Http404):
        return 404, "not_found", "not found"
    if isinstance(exc, exceptions.Throttled):
        return 429, "rate_limited", str(exc.detail)
    if isinstance(exc, exceptions.APIException):
        detail = exc.detail
        message = str(
            detail
            if not isinstance(detail, dict | list)
            else next(iter(detail.values() if isinstance(detail, dict) else detail), detail)
        )
        return exc.status_code, "invalid", message
    return None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    described = describe(exc)
    if described is None:
        return None
    status, code, message = described
    response = Response(error_body(code, message), status=status)
    if status == 401:
        response["WWW-Authenticate"] = "Token"
    return response


def json_error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=status)
