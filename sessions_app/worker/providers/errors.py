"""Vendor failures as ProviderError codes, in one table for both vendors.

`provider_auth` (401/403), `provider_rate_limited` (429), `provider_unavailable` (5xx,
overloaded, connection refused or dropped), `provider_timeout` (408/504, read timeout),
`provider_bad_request` (the request or its options were refused: 400/404/413/422),
`provider_bad_response` (a stream we cannot read). Rate limits, overload and timeouts
are retryable; the runner retries them only before the first token.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import httpx2

from sessions_app.worker.providers.base import ProviderError

AUTH, RATE_LIMITED, UNAVAILABLE = "provider_auth", "provider_rate_limited", "provider_unavailable"
TIMEOUT, BAD_REQUEST, BAD_RESPONSE = "provider_timeout", "provider_bad_request", "provider_bad_response"

RETRYABLE = frozenset({RATE_LIMITED, UNAVAILABLE, TIMEOUT})

# Error `type`s of the vendors' error bodies (also sent inside a stream, with status 200).
_BY_TYPE = {
    "authentication_error": AUTH,
    "permission_error": AUTH,
    "invalid_api_key": AUTH,
    "rate_limit_error": RATE_LIMITED,
    "rate_limit_exceeded": RATE_LIMITED,
    "insufficient_quota": RATE_LIMITED,
    "overloaded_error": UNAVAILABLE,
    "api_error": UNAVAILABLE,
    "server_error": UNAVAILABLE,
    "timeout_error": TIMEOUT,
    "invalid_request_error": BAD_REQUEST,
    "not_found_error": BAD_REQUEST,
    "request_too_large": BAD_REQUEST,
}


def error(code: str, message: str) -> ProviderError:
    return ProviderError(code, message, retryable=code in RETRYABLE)


def code_for_status(status: int) -> str:
    if status in (401, 403):
        return AUTH
    if status == 429:
        return RATE_LIMITED
    if status in (408, 504):
        return TIMEOUT
    if status >= 500:
        return UNAVAILABLE
    return BAD_REQUEST


def vendor_error(body: Any) -> tuple[str | None, str | None]:
    """(type or code, message) of a vendor error body: `{"error": {...}}` or the inner dict."""
    inner = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(inner, dict):
        return None, body if isinstance(body, str) and body else None
    kind = inner.get("type") or inner.get("code")
    message = inner.get("message")
    return (str(kind) if kind else None), (str(message) if message else None)


def from_status(status: int | None, body: Any, fallback: str) -> ProviderError:
    """The error of an HTTP error answer, or of an error event inside a stream (status
    None or 200: the body's type decides)."""
    kind, message = vendor_error(body)
    if status is not None and status >= 400:
        code = code_for_status(status)
        if status == 529:  # Anthropic: overloaded
            code = UNAVAILABLE
    else:
        code = _BY_TYPE.get(kind or "", UNAVAILABLE)
    return error(code, message or fallback)


def from_transport(exc: BaseException) -> ProviderError | None:
    """The error of a network failure (raised bare by some SDK paths), or None."""
    if isinstance(exc, httpx2.TimeoutException):
        return error(TIMEOUT, f"the model did not answer in time ({type(exc).__name__})")
    if isinstance(exc, httpx2.TransportError):
        return error(UNAVAILABLE, f"connection to the model failed: {exc or type(exc).__name__}")
    return None


def bad_response(detail: str) -> ProviderError:
    return error(BAD_RESPONSE, f"the model's stream could not be read: {detail}")


def from_sdk(exc: BaseException, sdk: Any) -> ProviderError | None:
    """Map an exception of the `openai` or `anthropic` SDK (their hierarchies match), or a
    bare transport error; None for anything else."""
    if isinstance(exc, sdk.APIStatusError):
        return from_status(exc.status_code, exc.body, exc.message)
    if isinstance(exc, sdk.APITimeoutError):
        return error(TIMEOUT, "the model did not answer in time")
    if isinstance(exc, sdk.APIConnectionError):
        cause = exc.__cause__
        return error(UNAVAILABLE, f"connection to the model failed: {cause or exc.message}")
    if isinstance(exc, sdk.APIError):  # an error event inside a stream
        return from_status(None, exc.body, exc.message)
    return from_transport(exc)


def mapped(exc: BaseException, sdk: Any) -> BaseException:
    """A vendor SDK's failure as a ProviderError where it is one (a `data:` line that is not
    JSON raises ValueError inside the SDKs); anything else unchanged."""
    provider_error = from_sdk(exc, sdk)
    if provider_error is not None:
        return provider_error
    if isinstance(exc, ValueError):
        return bad_response(str(exc))
    return exc


async def stream_items(upstream: AsyncIterable[Any], sdk: Any) -> AsyncIterator[Any]:
    """The items of an SDK stream, with its failures as ProviderErrors."""
    iterator = upstream.__aiter__()
    while True:
        try:
            item = await iterator.__anext__()
        except StopAsyncIteration:
            return
        except Exception as exc:
            raise mapped(exc, sdk) from exc
        yield item
