"""The site's answers to a server error (Django's `handler500`) and to a path no URL matches
(`handler404`). A server error whose cause is the database or Redis being unreachable for a
moment answers `503` with code `unavailable` and a `Retry-After`. Under `/api/`, both
answer the protocol's JSON envelope, never an HTML page. The API's own views map their
errors themselves (web/api/app.py); this catches what fails around them (middleware,
pages) and the API paths that name no endpoint."""

from __future__ import annotations

import sys

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

from sessions_app.web.errors import INTERNAL, WireError, describe

NO_SUCH_ENDPOINT = WireError(404, "not_found", "no such endpoint")

UNAVAILABLE_PAGE = (
    "<!doctype html><title>Unavailable for a moment</title>"
    "<h1>Unavailable for a moment</h1><p>The service cannot reach its database. Try again in a few seconds.</p>"
)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse({"error": NO_SUCH_ENDPOINT.as_dict()}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    # Django calls this inside its `except` block (on ASGI too: asgiref re-raises the
    # exception in the thread that runs it), so the exception is at hand.
    exc = sys.exc_info()[1]
    error = describe(exc) if exc is not None else None
    unavailable = error is not None and error.code == "unavailable"
    if not unavailable:
        error = INTERNAL
    assert error is not None
    response: HttpResponse
    if request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", ""):
        response = JsonResponse({"error": error.as_dict()}, status=error.status)
    elif unavailable:
        response = HttpResponse(UNAVAILABLE_PAGE, status=503)
    else:
        return defaults.server_error(request)
    if unavailable:
        response["Retry-After"] = "2"
    return response
