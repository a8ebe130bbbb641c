"""Credential endpoints beside `POST /api/auth/token` (docs/protocol.md, "Authentication"):
revoke one's own API tokens, and get a one-use websocket ticket. Registered on the API by
importing this module (web/api/urls.py)."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.http import HttpRequest, HttpResponse
from pydantic import Field

from sessions_app.infra.db_threads import db
from sessions_app.schemas import Command
from sessions_app.web import tokens
from sessions_app.web.api.answers import RevokeAnswer, TicketAnswer
from sessions_app.web.api.app import api, json_response
from sessions_app.web.api.parsing import load_json
from sessions_app.web.api.schemas import BODY_ERRORS, WRITE_ERRORS


class RevokeBody(Command):
    all: bool = Field(default=False, description="Revoke every token of the caller, not only the one used.")


def _user(request: HttpRequest) -> AbstractBaseUser:
    user = request.auth  # type: ignore[attr-defined]
    assert isinstance(user, AbstractBaseUser)
    return user


def _presented_key(request: HttpRequest) -> str | None:
    kind, _, key = request.headers.get("Authorization", "").partition(" ")
    return key.strip() if kind.lower() == "token" and key.strip() else None


@api.post(
    "/auth/token/revoke",
    response={200: RevokeAnswer, **BODY_ERRORS},
    tags=["auth"],
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": RevokeBody.model_json_schema()}},
        }
    },
)
async def token_revoke(request: HttpRequest) -> HttpResponse:
    """Revoke the API token this request carries (body optional), or every token of the
    caller with `{"all": true}`. A browser's session (no token) revokes every token."""
    body = RevokeBody.model_validate(load_json(request.body) if request.body else {})
    key = _presented_key(request)
    everything = body.all or key is None
    count = await db(tokens.revoke)(user=_user(request), key=None if everything else key)
    return json_response({"revoked": count})


@api.post("/auth/ws-ticket", response={200: TicketAnswer, **WRITE_ERRORS}, tags=["auth"])
async def ws_ticket(request: HttpRequest) -> HttpResponse:
    """A one-use credential for one websocket handshake (`/ws/sessions/{id}/?ticket=`),
    valid for a few seconds: a URL that may be logged then holds nothing worth stealing."""
    ticket, seconds = await db(tokens.ticket_issue)(_user(request))
    return json_response({"ticket": ticket, "expiresIn": seconds})
