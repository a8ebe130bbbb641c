"""HTTP endpoints of the protocol (docs/protocol.md). Each view validates its input with the
command schemas, calls one service or selector, and answers; errors map in api/errors.py."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth import authenticate
from django.contrib.auth.base_user import AbstractBaseUser
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import status
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from sessions_app.cancellation.services import turns_cancel
from sessions_app.conf import app_settings
from sessions_app.errors import Invalid, Unauthenticated
from sessions_app.infra.db_threads import db
from sessions_app.schemas import CancelFilter, MemberBody, SendBody, SessionCreateBody, SessionUpdateBody, WaitBody
from sessions_app.sessions import selectors
from sessions_app.sessions.services import member_add, member_leave, require_member, session_create, session_update
from sessions_app.turns.sending import turn_send
from sessions_app.web.api.errors import describe, json_error
from sessions_app.web.waiting import wait_for_turns
from sessions_app.worker.providers.registry import available_models


def _user(request: Request) -> AbstractBaseUser:
    """The authenticated user (IsAuthenticated has already refused anonymous requests)."""
    user = request.user
    assert isinstance(user, AbstractBaseUser)
    return user


def _body(request: Request) -> dict[str, Any]:
    data = request.data
    if not isinstance(data, dict):
        raise Invalid("the body is a JSON object")
    return data


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise Invalid(f"{name} is a whole number") from exc
    if not low <= value <= high:
        raise Invalid(f"{name} is between {low} and {high}")
    return value


class TokenView(APIView):
    """POST {"username", "password"} -> {"token"}."""

    permission_classes = [AllowAny]
    authentication_classes: list[type] = []

    def post(self, request: Request) -> Response:
        body = _body(request)
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise Invalid("username and password are required")
        user = authenticate(request._request, username=username, password=password)
        if user is None:
            raise Unauthenticated("wrong username or password")
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key, "clientId": user.get_username()})


class ModelsView(APIView):
    def get(self, request: Request) -> Response:
        return Response({"results": available_models()})


class SessionsView(APIView):
    def get(self, request: Request) -> Response:
        sessions = selectors.sessions_for_user(user=_user(request))
        return Response({"results": [selectors.session_payload(s) for s in sessions]})

    def post(self, request: Request) -> Response:
        body = SessionCreateBody.model_validate(_body(request))
        session = session_create(
            owner=_user(request),
            title=body.title,
            model=body.model,
            model_options=body.model_options,
            policy=body.policy,
        )
        return Response(selectors.session_payload(session, detail=True), status=status.HTTP_201_CREATED)


class SessionView(APIView):
    def get(self, request: Request, session_id: str) -> Response:
        session = require_member(session_id=session_id, user=_user(request))
        return Response(selectors.session_payload(session, detail=True))

    def patch(self, request: Request, session_id: str) -> Response:
        session = require_member(session_id=session_id, user=_user(request))
        body = SessionUpdateBody.model_validate(_body(request))
        session = session_update(
            session=session,
            user=_user(request),
            title=body.title,
            model=body.model,
            model_options=body.model_options,
            policy=body.policy,
        )
        return Response(selectors.session_payload(session, detail=True))


class MembersView(APIView):
    def post(self, request: Request, session_id: str) -> Response:
        session = require_member(session_id=session_id, user=_user(request))
        body = MemberBody.model_validate(_body(request))
        membership = member_add(session=session, by=_user(request), username=body.username)
        return Response(
            {"username": membership.user.get_username(), "role": membership.role}, status=status.HTTP_201_CREATED
        )

    def delete(self, request: Request, session_id: str) -> Response:
        """Leave the session."""
        session = require_member(session_id=session_id, user=_user(request))
        member_leave(session=session, user=_user(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class TurnsView(APIView):
    def get(self, request: Request, session_id: str) -> Response:
        session = require_member(session_id=session_id, user=_user(request))
        return Response({"results": selectors.turns_list(session=session, status=request.query_params.get("status"))})

    def post(self, request: Request, session_id: str) -> Response:
        body = SendBody.model_validate(_body(request))
        result = turn_send(session_id=session_id, user=_user(request), body=body)
        return Response(result.as_dict(), status=status.HTTP_202_ACCEPTED if result.created else status.HTTP_200_OK)


class TurnView(APIView):
    def get(self, request: Request, session_id: str, turn_id: str) -> Response:
        session = require_member(session_id=session_id, user=_user(request))
        return Response(selectors.turn_detail(session=session, turn_id=turn_id))


class CancelView(APIView):
    def post(self, request: Request, session_id: str) -> Response:
        flt = CancelFilter.model_validate(_body(request))
        outcome = turns_cancel(session_id=session_id, user=_user(request), flt=flt)
        return Response(outcome.as_dict())


class MessagesView(APIView):
    def get(self, request: Request, session_id: str) -> Response:
        session = require_member(session_id=session_id, user=_user(request))
        limit = _int(request, "limit", 50, 1, 500)
        return Response(
            selectors.messages_page(session=session, before=request.query_params.get("before"), limit=limit)
        )


class EventsView(APIView):
    def get(self, request: Request, session_id: str) -> Response:
        session = require_member(session_id=session_id, user=_user(request))
        after = _int(request, "after", 0, 0, 2**62)
        limit = _int(request, "limit", 1000, 1, 5000)
        return Response(selectors.events_page(session=session, after=after, limit=limit))


# --- wait: async, so that a long wait holds no thread ------------------------------------


def _authenticate(request: HttpRequest) -> Any:
    """Token or session, as DRF does for the other views (with CSRF for sessions)."""
    drf_request = Request(request)
    for authenticator in (TokenAuthentication(), SessionAuthentication()):
        try:
            result = authenticator.authenticate(drf_request)
        except AuthenticationFailed as exc:
            raise Unauthenticated(str(exc.detail)) from exc
        if result is not None:
            return result[0]
    raise Unauthenticated("authentication credentials were not provided")


@csrf_exempt
async def wait_view(request: HttpRequest, session_id: str) -> HttpResponse:
    if request.method != "POST":
        return json_error(405, "invalid", "use POST")
    try:
        import orjson

        user = await sync_to_async(_authenticate)(request)
        try:
            raw = orjson.loads(request.body or b"{}")
        except orjson.JSONDecodeError as exc:
            raise Invalid("the body is a JSON object") from exc
        if not isinstance(raw, dict):
            raise Invalid("the body is a JSON object")
        body = WaitBody.model_validate(raw)
        await db(require_member)(session_id=session_id, user=user)
        result = await wait_for_turns(
            session_id=session_id,
            user=user,
            flt=body.filter,
            timeout=min(body.timeout, float(app_settings.MAX_WAIT_SECONDS)),
        )
    except Exception as exc:
        described = describe(exc)
        if described is None:
            raise
        return json_error(*described)
    return JsonResponse(result)
