"""The answer to a locked-out login (django-axes calls `lockout_response`, settings
AXES_LOCKOUT_CALLABLE): the API's error envelope with 429 `rate_limited` for API calls, a
plain page for the login form; both with Retry-After."""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse


def retry_after_seconds() -> int:
    cool_off = getattr(settings, "AXES_COOLOFF_TIME", None)
    return max(1, int(cool_off.total_seconds())) if cool_off is not None else 3600


def lockout_response(request: HttpRequest, *_args: Any, **_kwargs: Any) -> HttpResponse:
    """Too many failed logins for this username or from this address."""
    wait = retry_after_seconds()
    message = f"too many failed logins; try again in {max(1, wait // 60)} minutes"
    if request.path.startswith("/api/"):
        body = orjson.dumps({"error": {"code": "rate_limited", "message": message}})
        response = HttpResponse(body, status=429, content_type="application/json")
    else:
        response = HttpResponse(f"{message.capitalize()}.\n", status=429, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(wait)
    return response
