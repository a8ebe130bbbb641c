"""The Ably endpoints of the HTTP API (thin): a member's token request, and the mirror's
figures for operators. Registered on the API application by web/api/urls.py."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.http import HttpRequest, HttpResponse
from ninja import Schema
from pydantic import ConfigDict, Field

from sessions_app.ably.invocations import run_invocation
from sessions_app.ably.stats import read_stats
from sessions_app.ably.tokens import ably_token_request
from sessions_app.errors import Forbidden
from sessions_app.infra.db_threads import db
from sessions_app.infra.live_state import sync_redis
from sessions_app.schemas import NUL_FREE, Text
from sessions_app.web.api.answers import AblyStatsAnswer, AblyTokenRequestAnswer, InvocationAnswer
from sessions_app.web.api.app import api, json_response
from sessions_app.web.api.schemas import SEND_ERRORS, SESSION_ERRORS, STAFF_READ_ERRORS


def _user(request: HttpRequest) -> AbstractBaseUser:
    user = request.auth  # type: ignore[attr-defined]
    assert isinstance(user, AbstractBaseUser)
    return user


@api.post("/sessions/{session_id}/ably-token", response={200: AblyTokenRequestAnswer, **SESSION_ERRORS}, tags=["ably"])
async def ably_token(request: HttpRequest, session_id: Text) -> HttpResponse:
    """An Ably token request for the caller (a member): clientId = the caller's, and
    subscribe, history and publish on the session's channel only (docs/ably.md). 404 when
    Ably is not configured."""
    return json_response(await db(ably_token_request)(session_id=session_id, user=_user(request)))


@api.get("/ably/stats", response={200: AblyStatsAnswer, **STAFF_READ_ERRORS}, tags=["ably"])
async def ably_stats(request: HttpRequest) -> HttpResponse:
    """The mirror's counters: published, retried, rate limited, gaps, answers rewritten,
    cancels (staff only)."""
    if not getattr(_user(request), "is_staff", False):
        raise Forbidden("the mirror's figures are for staff")
    return json_response(await db(_stats)())


def _stats() -> dict[str, Any]:
    return read_stats(sync_redis())


class InvocationIn(Schema):
    """What the stock ChatTransport posts: its run's `Invocation` (and the app's own fields,
    ignored)."""

    # Other keys are ignored, and, like every key of a body, may hold no NUL (web/api/parsing.py).
    model_config = ConfigDict(extra="ignore", json_schema_extra={"propertyNames": {"pattern": NUL_FREE}})
    inputEventId: Text = Field(min_length=1, max_length=200)  # the names on the wire
    sessionName: Text = Field(min_length=1, max_length=300)


@api.post("/ably/invocations", response={202: InvocationAnswer, **SEND_ERRORS}, tags=["ably"])
async def ably_invocation(request: HttpRequest, body: InvocationIn) -> HttpResponse:
    """Run an `ai-input` the caller published on a session's channel as a turn of that
    session (a stock AI Transport front end driving this server). Answers the send's result
    with `runId` (our turnId) and `invocationId`."""
    result = await run_invocation(user=_user(request), input_event_id=body.inputEventId, session_name=body.sessionName)
    return json_response(result, status=202)
