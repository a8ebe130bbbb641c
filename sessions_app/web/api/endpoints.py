"""The endpoints of the HTTP API. Each validates its input with the command schemas, runs one
service or selector on a database thread (`db`), and answers; errors map in app.py."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate
from django.contrib.auth.base_user import AbstractBaseUser
from django.http import HttpRequest, HttpResponse, QueryDict
from ninja import Body, Query

from sessions_app.conf import app_settings
from sessions_app.errors import Unauthenticated
from sessions_app.infra.db_threads import db
from sessions_app.schemas import (
    CancelFilter,
    MemberBody,
    SendCommand,
    SessionCreateBody,
    SessionUpdateBody,
    Text,
    WaitBody,
)
from sessions_app.sessions import selectors
from sessions_app.sessions.services import (
    member_add,
    member_leave,
    require_member,
    session_create,
    session_delete,
    session_update,
)
from sessions_app.web import commands, tokens
from sessions_app.web.api.answers import (
    CancelAnswer,
    EventsAnswer,
    MemberAnswer,
    MessagesAnswer,
    ModelsAnswer,
    SendAnswer,
    SessionDetailAnswer,
    SessionsAnswer,
    TokenAnswer,
    TurnAnswer,
    TurnsAnswer,
    WaitAnswer,
)
from sessions_app.web.api.app import api, json_response, no_content
from sessions_app.web.api.schemas import (
    BODY_ERRORS,
    LOGIN_ERRORS,
    READ_ERRORS,
    SEND_ERRORS,
    SESSION_BODY_ERRORS,
    SESSION_ERRORS,
    EventsQuery,
    LoginBody,
    MessagesQuery,
    TurnsQuery,
)
from sessions_app.web.waiting import wait_for_turns
from sessions_app.worker.providers.registry import available_models

S = "/sessions/{session_id}"  # its parameter, `session_id: Text`: no NUL character (the API refuses one in a path)

# Bodies whose fields are all optional: no body at all means `{}`.
NEW_SESSION: Any = Body(default_factory=SessionCreateBody)
NO_CHANGE: Any = Body(default_factory=SessionUpdateBody)
OWN: Any = Body(default_factory=CancelFilter)
WAIT_OWN: Any = Body(default_factory=WaitBody)


def _user(request: HttpRequest) -> AbstractBaseUser:
    user = request.auth  # type: ignore[attr-defined]
    assert isinstance(user, AbstractBaseUser)
    return user


# --- auth --------------------------------------------------------------------------------


@api.post("/auth/token", auth=None, response={200: TokenAnswer, **LOGIN_ERRORS}, tags=["auth"])
async def token(request: HttpRequest, body: LoginBody) -> HttpResponse:
    """Exchange a username and password for an API token (`Authorization: Token <key>`)."""
    return json_response(await db(_token)(request, body.username, body.password))


def _token(request: HttpRequest, username: str, password: str) -> dict[str, str]:
    # The body was read as JSON. Login throttling (django-axes) records a failure with the
    # request's form data, which a form Content-Type over that body would fail to parse: the
    # failure would go unrecorded, and the limit with it.
    request.POST = QueryDict()  # type: ignore[misc]
    user = authenticate(request, username=username, password=password)
    if user is None:
        raise Unauthenticated("wrong username or password")
    return {"token": tokens.issue(user), "clientId": user.get_username()}


# --- models and sessions -----------------------------------------------------------------


@api.get("/models", response={200: ModelsAnswer, **READ_ERRORS}, tags=["sessions"])
async def models(request: HttpRequest) -> HttpResponse:
    """The models sessions may use."""
    return json_response({"results": available_models()})


@api.get("/sessions", response={200: SessionsAnswer, **READ_ERRORS}, tags=["sessions"])
async def sessions_list(request: HttpRequest) -> HttpResponse:
    """The sessions the caller belongs to, most recently active first."""
    return json_response(await db(_sessions_list)(_user(request)))


def _sessions_list(user: AbstractBaseUser) -> dict[str, Any]:
    return {"results": [selectors.session_payload(s) for s in selectors.sessions_for_user(user=user)]}


@api.post("/sessions", response={201: SessionDetailAnswer, **BODY_ERRORS}, tags=["sessions"])
async def session_new(request: HttpRequest, body: SessionCreateBody = NEW_SESSION) -> HttpResponse:
    """Create a session; the caller owns it."""
    return json_response(await db(_session_new)(_user(request), body), status=201)


def _session_new(user: AbstractBaseUser, body: SessionCreateBody) -> dict[str, Any]:
    session = session_create(
        owner=user, title=body.title, model=body.model, model_options=body.model_options, policy=body.policy
    )
    return selectors.new_session_payload(session)


@api.get(S, response={200: SessionDetailAnswer, **SESSION_ERRORS}, tags=["sessions"])
async def session_detail(request: HttpRequest, session_id: Text) -> HttpResponse:
    """A session with its members, last seq and in-flight turns."""
    return json_response(await db(_session_detail)(_user(request), session_id))


def _session_detail(user: AbstractBaseUser, session_id: str) -> dict[str, Any]:
    return selectors.session_payload(require_member(session_id=session_id, user=user), detail=True)


@api.patch(S, response={200: SessionDetailAnswer, **SESSION_BODY_ERRORS}, tags=["sessions"])
async def session_change(request: HttpRequest, session_id: Text, body: SessionUpdateBody = NO_CHANGE) -> HttpResponse:
    """Rename, or change the default policy, model or options (model: owner only)."""
    return json_response(await db(_session_change)(_user(request), session_id, body))


def _session_change(user: AbstractBaseUser, session_id: str, body: SessionUpdateBody) -> dict[str, Any]:
    session = require_member(session_id=session_id, user=user)
    session = session_update(
        session=session,
        user=user,
        title=body.title,
        model=body.model,
        model_options=body.model_options,
        policy=body.policy,
    )
    return selectors.session_payload(session, detail=True)


@api.delete(S, response={204: None, **SESSION_ERRORS}, tags=["sessions"])
async def session_remove(request: HttpRequest, session_id: Text) -> HttpResponse:
    """Delete the session and everything in it (owner only): its turns stop, every device
    gets `session.deleted`, then its websockets close with 4404."""
    await db(_session_remove)(_user(request), session_id)
    return no_content()


def _session_remove(user: AbstractBaseUser, session_id: str) -> None:
    session_delete(session=require_member(session_id=session_id, user=user), by=user)


@api.post(S + "/members", response={201: MemberAnswer, **SESSION_BODY_ERRORS}, tags=["sessions"])
async def member_invite(request: HttpRequest, session_id: Text, body: MemberBody) -> HttpResponse:
    """Add a member (owner only)."""
    return json_response(await db(_member_invite)(_user(request), session_id, body.username), status=201)


def _member_invite(user: AbstractBaseUser, session_id: str, username: str) -> dict[str, Any]:
    membership = member_add(session=require_member(session_id=session_id, user=user), by=user, username=username)
    return {"username": membership.user.get_username(), "role": membership.role}


@api.delete(S + "/members", response={204: None, **SESSION_ERRORS}, tags=["sessions"])
async def member_leave_session(request: HttpRequest, session_id: Text) -> HttpResponse:
    """The caller leaves the session."""
    await db(_member_leave)(_user(request), session_id)
    return no_content()


def _member_leave(user: AbstractBaseUser, session_id: str) -> None:
    member_leave(session=require_member(session_id=session_id, user=user), user=user)


# --- turns -------------------------------------------------------------------------------


@api.post(S + "/turns", response={202: SendAnswer, 200: SendAnswer, **SEND_ERRORS}, tags=["turns"])
async def send(request: HttpRequest, session_id: Text, body: SendCommand) -> HttpResponse:
    """Send message(s): a turn starts, queues or is refused by the double-texting policy.
    Sends arriving together (over HTTP or websockets) are decided as one set."""
    result = await commands.send(session_id=session_id, user=_user(request), body=body, events_first=False)
    return json_response(result.as_dict(), status=202 if result.created else 200)


@api.get(S + "/turns", response={200: TurnsAnswer, **SESSION_ERRORS}, tags=["turns"])
async def turns_list(request: HttpRequest, session_id: Text, query: Query[TurnsQuery]) -> HttpResponse:
    """The session's turns, optionally of one status."""
    return json_response(await db(_turns_list)(_user(request), session_id, query.status))


def _turns_list(user: AbstractBaseUser, session_id: str, status: str | None) -> dict[str, Any]:
    session = require_member(session_id=session_id, user=user)
    return {"results": selectors.turns_list(session=session, status=status)}


@api.get(S + "/turns/{turn_id}", response={200: TurnAnswer, **SESSION_ERRORS}, tags=["turns"])
async def turn_detail(request: HttpRequest, session_id: Text, turn_id: Text) -> HttpResponse:
    """One turn, with its answer's text so far."""
    return json_response(await db(_turn_detail)(_user(request), session_id, turn_id))


def _turn_detail(user: AbstractBaseUser, session_id: str, turn_id: str) -> dict[str, Any]:
    return selectors.turn_detail(session=require_member(session_id=session_id, user=user), turn_id=turn_id)


@api.post(S + "/cancel", response={200: CancelAnswer, **SESSION_BODY_ERRORS}, tags=["turns"])
async def cancel(request: HttpRequest, session_id: Text, body: CancelFilter = OWN) -> HttpResponse:
    """Cancel the turns a filter matches (`{}`: the caller's own)."""
    outcome = await commands.cancel(session_id=session_id, user=_user(request), flt=body, events_first=False)
    return json_response(outcome.as_dict())


@api.post(S + "/wait", response={200: WaitAnswer, **SESSION_BODY_ERRORS}, tags=["turns"])
async def wait(request: HttpRequest, session_id: Text, body: WaitBody = WAIT_OWN) -> HttpResponse:
    """Wait until the turns a filter matches have ended, or the timeout (seconds) passes."""
    user = _user(request)
    await db(require_member)(session_id=session_id, user=user)
    timeout = min(body.timeout, float(app_settings.MAX_WAIT_SECONDS))
    return json_response(await wait_for_turns(session_id=session_id, user=user, flt=body.filter, timeout=timeout))


# --- reads -------------------------------------------------------------------------------


@api.get(S + "/messages", response={200: MessagesAnswer, **SESSION_ERRORS}, tags=["reads"])
async def messages(request: HttpRequest, session_id: Text, query: Query[MessagesQuery]) -> HttpResponse:
    """The session's messages, newest first, a page at a time."""
    return json_response(await db(_messages)(_user(request), session_id, query))


def _messages(user: AbstractBaseUser, session_id: str, query: MessagesQuery) -> dict[str, Any]:
    session = require_member(session_id=session_id, user=user)
    return selectors.messages_page(session=session, before=query.before, limit=query.limit)


@api.get(S + "/events", response={200: EventsAnswer, **SESSION_ERRORS}, tags=["reads"])
async def events(request: HttpRequest, session_id: Text, query: Query[EventsQuery]) -> HttpResponse:
    """The session's events after a seq, for clients that poll instead of holding a websocket."""
    return json_response(await db(_events)(_user(request), session_id, query))


def _events(user: AbstractBaseUser, session_id: str, query: EventsQuery) -> dict[str, Any]:
    session = require_member(session_id=session_id, user=user)
    return selectors.events_page(session=session, after=query.after, limit=query.limit)
