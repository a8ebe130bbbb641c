"""Sessions and their members."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from sessions_app.conf import app_settings
from sessions_app.errors import ChatError, Forbidden, Invalid, NotFound
from sessions_app.hotsql import sessions_of_members
from sessions_app.llm.registry import is_configured
from sessions_app.models import ChatSession, Membership, Policy


def require_member(*, session_id: Any, user: AbstractBaseUser) -> ChatSession:
    """The session, if it exists and `user` belongs to it (404 / 403 otherwise). One query
    when the answer is yes: it runs on every command."""
    try:
        # At most one row (unique together): a slice, not first(), which would sort. The
        # session alone, filtered by the membership (no Membership object to build).
        found = sessions_of_members([session_id], [user.pk])
        if found:
            return found[0]
        exists = ChatSession.objects.filter(pk=session_id).exists()
    except (ValidationError, ValueError, TypeError) as exc:  # not a UUID
        raise NotFound("no such session") from exc
    if exists:
        raise Forbidden("you are not a member of this session")
    raise NotFound("no such session")


def members_of(asks: Sequence[tuple[Any, AbstractBaseUser]]) -> list[ChatSession | ChatError]:
    """`require_member` for many (session id, user) pairs: one query when every answer is
    yes. One outcome per pair, in order: the session, or the error `require_member` gives."""
    wanted: set[tuple[uuid.UUID, Any]] = set()
    for session_id, user in asks:
        try:
            wanted.add((uuid.UUID(str(session_id)), user.pk))
        except ValueError:
            continue  # not a UUID: require_member below says "no such session"
    found = sessions_of_members(list({s for s, _ in wanted}), list({u for _, u in wanted}))
    sessions: dict[tuple[uuid.UUID, Any], ChatSession] = {(s.pk, s.member_id): s for s in found}  # type: ignore[attr-defined]
    outcomes: list[ChatSession | ChatError] = []
    for session_id, user in asks:
        try:
            outcomes.append(
                sessions.get((uuid.UUID(str(session_id)), user.pk)) or require_member(session_id=session_id, user=user)
            )
        except (ValueError, ChatError) as exc:
            outcomes.append(exc if isinstance(exc, ChatError) else NotFound("no such session"))
    return outcomes


def _check_model(model: str) -> None:
    if not is_configured(model):
        raise Invalid(f"model {model!r} is not configured")


def session_create(
    *,
    owner: AbstractBaseUser,
    title: str = "",
    model: str | None = None,
    model_options: dict[str, Any] | None = None,
    policy: str | None = None,
) -> ChatSession:
    model = model or app_settings.DEFAULT_MODEL
    _check_model(model)
    with transaction.atomic():
        session = ChatSession.objects.create(
            owner_id=owner.pk,
            title=title,
            model=model,
            model_options=model_options or {},
            policy=policy or app_settings.DEFAULT_POLICY,
        )
        Membership.objects.create(session=session, user_id=owner.pk, role=Membership.MemberRole.OWNER)
    return session


def session_update(
    *,
    session: ChatSession,
    user: AbstractBaseUser,
    title: str | None = None,
    model: str | None = None,
    model_options: dict[str, Any] | None = None,
    policy: str | None = None,
) -> ChatSession:
    """Any member may rename the session or change its default policy; the model is the
    owner's to change."""
    if model is not None or model_options is not None:
        if session.owner_id != user.pk:  # type: ignore[attr-defined]
            raise Forbidden("only the owner changes the model")
    if model is not None:
        _check_model(model)
        session.model = model
    if model_options is not None:
        session.model_options = model_options
    if title is not None:
        session.title = title
    if policy is not None:
        session.policy = Policy(policy)
    session.save()
    return session


def member_add(*, session: ChatSession, by: AbstractBaseUser, username: str) -> Membership:
    if session.owner_id != by.pk:  # type: ignore[attr-defined]
        raise Forbidden("only the owner invites members")
    user_model = get_user_model()
    try:
        user = user_model.objects.get(username=username)
    except user_model.DoesNotExist as exc:
        raise NotFound(f"no user named {username!r}") from exc
    membership, _created = Membership.objects.get_or_create(session=session, user=user)
    return membership


def member_leave(*, session: ChatSession, user: AbstractBaseUser) -> None:
    if session.owner_id == user.pk:  # type: ignore[attr-defined]
        raise Invalid("the owner cannot leave their own session")
    Membership.objects.filter(session=session, user_id=user.pk).delete()
