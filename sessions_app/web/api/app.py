"""The HTTP API (docs/protocol.md, "HTTP") as one Django Ninja application: async views, so
concurrent requests of one process never queue behind each other on a thread (decision
024); the OpenAPI 3 schema at /api/schema and its docs page at /api/docs are generated from
the same code and the command schemas (sessions_app/schemas.py), anew for each request (Ninja
keeps no copy: what it reads of the configuration, such as the models, is current; decision
048)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from ninja import NinjaAPI, Router
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.renderers import BaseRenderer

from sessions_app.ops import metrics
from sessions_app.schemas import NUL
from sessions_app.web.api.parsing import JsonParser
from sessions_app.web.api.security import SessionAuth, TokenAuth
from sessions_app.web.errors import INTERNAL, WireError, describe, problem_text

logger = logging.getLogger(__name__)

NO_CREDENTIALS = WireError(
    401, "unauthenticated", "send 'Authorization: Token <key>' (POST /api/auth/token gives one) or log in"
)
HTTP_STATUS_CODES = {400: "invalid", 401: "unauthenticated", 403: "forbidden", 404: "not_found", 429: "rate_limited"}


class JsonRenderer(BaseRenderer):
    media_type = "application/json"

    def render(self, request: HttpRequest, data: Any, *, response_status: int) -> bytes:
        return orjson.dumps(data)


def json_response(data: Any, status: int = 200) -> HttpResponse:
    """An answer, serialised once with orjson (views return these directly)."""
    return HttpResponse(orjson.dumps(data), status=status, content_type="application/json")


def no_content() -> HttpResponse:
    """A 204: no body, so no Content-Type either (Django's default would say text/html).
    Its Content-Length goes where the answer is written (web/http_entry.py)."""
    response = HttpResponse(status=204)
    del response["Content-Type"]
    return response


def error_response(error: WireError) -> HttpResponse:
    metrics.ERRORS.labels("http", error.code).inc()
    response = json_response({"error": error.as_dict()}, status=error.status)
    if error.status == 401:
        response["WWW-Authenticate"] = "Token"
    return response


def schema_view(view: Callable[..., Any]) -> Callable[..., Any]:
    """The schema's and its docs page's views: GET only (HEAD is seen as a GET below; 405
    otherwise, answered with the envelope below) and exempt from Django's CSRF check, which
    would otherwise answer a POST with its HTML 403 page before the view could say 405.
    They change nothing."""
    return csrf_exempt(require_GET(view))


api = NinjaAPI(
    title="Chat sessions",
    version="1",
    description="Shared AI chat sessions: sessions, members, turns, cancels and waits (docs/protocol.md).",
    auth=[TokenAuth(), SessionAuth()],
    parser=JsonParser(),
    renderer=JsonRenderer(),
    urls_namespace="api",
    openapi_url="/schema",
    docs_url="/docs",
    docs_decorator=schema_view,
    # The schema names fields as they are sent (`turnId`, not `turn_id`). Views answer with
    # HttpResponses of their own, so this changes the schema only.
    default_router=Router(by_alias=True),
)


def answering_unknown_methods_with_the_envelope(view: Callable[..., Any]) -> Callable[..., Any]:
    """`view` (one of the API's paths), its 405 for a method the path does not take
    answered with the envelope (Ninja answers a plain-text page), the `Allow` header kept;
    HEAD answered as GET is (the body is left out where the answer is written:
    web/http_entry.py); and a path or query holding a NUL character refused `invalid`
    before the view runs: no id or cursor holding one may reach the database (see Command
    in schemas.py)."""

    def envelope(response: HttpResponseBase) -> HttpResponseBase:
        if not isinstance(response, HttpResponseNotAllowed):
            return response
        methods = {m.strip() for m in response["Allow"].split(",")}
        allowed = ", ".join(sorted((methods | {"HEAD"}) if "GET" in methods else methods))  # Ninja's: a set's order
        answer = error_response(WireError(405, "invalid", f"this path takes {allowed}"))
        answer["Allow"] = allowed
        return answer

    if asyncio.iscoroutinefunction(view):

        @functools.wraps(view)
        async def answering(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method == "HEAD":
                with _as_get(request):
                    return await answering(request, *args, **kwargs)  # once more, as the GET
            refused = _nul_in_url(request)
            return refused if refused is not None else envelope(await view(request, *args, **kwargs))

        return answering

    @functools.wraps(view)
    def answering_sync(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method == "HEAD":
            with _as_get(request):
                return answering_sync(request, *args, **kwargs)  # once more, as the GET
        refused = _nul_in_url(request)
        return refused if refused is not None else envelope(view(request, *args, **kwargs))

    return answering_sync


@contextlib.contextmanager
def _as_get(request: HttpRequest) -> Iterator[None]:
    """A HEAD request seen as a GET by the view: Ninja (and `require_GET`) pick a path's
    operation by method and know no HEAD, so this is what makes every GET endpoint take
    HEAD, with the same authentication and checks (both methods are safe: no CSRF check
    differs). The middleware and the log see HEAD, before and after."""
    request.method = "GET"
    try:
        yield
    finally:
        request.method = "HEAD"


def _nul_in_url(request: HttpRequest) -> HttpResponse | None:
    """The `invalid` answer to a path or query string holding a NUL character (`%00`), or None."""
    if NUL in request.path_info:
        return error_response(WireError(400, "invalid", "the path may not contain NUL characters"))
    query = request.META.get("QUERY_STRING", "")
    if "%00" in query or NUL in query:  # on the raw string: no query parsed for every request
        return error_response(WireError(400, "invalid", "query parameters may not contain NUL characters"))
    return None


def on_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    """Every failure answers the protocol's envelope `{"error": {code, message}}` with the
    documented status; anything unexpected is a logged `internal` 500, never a page."""
    return error_response(_wire_error(request, exc))


# Ninja picks the handler of the most specific class: replace its defaults too.
for handled in (Exception, Http404, HttpError, NinjaValidationError):
    api.add_exception_handler(handled, on_error)  # type: ignore[arg-type]  # called with instances


def _wire_error(request: HttpRequest, exc: Exception) -> WireError:
    described = describe(exc)
    if described is not None:
        if described.status >= 500:  # the database or Redis: an operator wants to know
            logger.warning("API request %s %s: %s", request.method, request.path, described.code, exc_info=exc)
        return described
    if isinstance(exc, NinjaValidationError):
        return WireError(400, "invalid", _validation_message(exc.errors))
    if isinstance(exc, HttpError):
        cause = describe(exc.__cause__) if isinstance(exc.__cause__, Exception) else None
        if cause is not None:  # the body parser's own error (malformed or too deep JSON)
            return cause
        if isinstance(exc, AuthenticationError):  # no credentials at all (Ninja says "Unauthorized")
            return NO_CREDENTIALS
        code = HTTP_STATUS_CODES.get(exc.status_code)
        if code is not None:
            return WireError(exc.status_code, code, str(exc) or code)
    logger.error("API request %s %s failed", request.method, request.path, exc_info=exc)
    return INTERNAL


def _validation_message(errors: list[dict[str, Any]]) -> str:
    """The first problem, as `field.path: message` (the body's own wrapper dropped)."""
    first = errors[0] if errors else {}
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "missing" and len(loc) == 2 and loc[0] == "body":  # (source, parameter)
        return "a JSON object body is required"  # none was sent (pydantic: "Field required", naming nothing)
    where = [str(p) for p in loc if p not in ("body", "query", "path")]
    message = problem_text(first)
    return f"{'.'.join(where)}: {message}" if where else message
