"""Domain errors with machine-readable codes, mapped to HTTP and websocket errors in one
place (web/errors.py reads `code` and `status`; web/api/app.py and web/consumer.py add
their envelopes)."""

from __future__ import annotations


class ChatError(Exception):
    """Base of every error the protocol reports. `code` is the documented error code."""

    code = "invalid"
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class Invalid(ChatError):
    code, status = "invalid", 400


class Unauthenticated(ChatError):
    code, status = "unauthenticated", 401


class Forbidden(ChatError):
    code, status = "forbidden", 403


class NotFound(ChatError):
    code, status = "not_found", 404


class Busy(ChatError):
    code, status = "busy", 409


class Conflict(ChatError):
    code, status = "conflict", 409


class TooLarge(ChatError):
    code, status = "too_large", 413


class QueueFull(ChatError):
    code, status = "queue_full", 429


class RateLimited(ChatError):
    code, status = "rate_limited", 429
