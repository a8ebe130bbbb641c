"""Sessions and their members."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any, cast

import orjson
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models.signals import post_delete, pre_delete
from django.dispatch import Signal

from sessions_app.conf import app_settings, key_prefix
from sessions_app.errors import ChatError, Forbidden, Invalid, NotFound
from sessions_app.events import build, emit
from sessions_app.infra import live_state
from sessions_app.infra.db_threads import after_commit, at_answer
from sessions_app.models import ChatSession, Membership, MessageNode, Policy, Role
from sessions_app.sessions._queries import sessions_of_members
from sessions_app.turns.locking import lock_sessions, locked_session
from sessions_app.worker.providers.base import ProviderError
from sessions_app.worker.providers.registry import check_options, is_configured


def require_member(*, session_id: Any, user: AbstractBaseUser) -> ChatSession:
    """The session, if it exists and `user` belongs to it (404 / 403 otherwise). One query
    when the answer is yes: it runs on every command."""
    [outcome] = members_of([(session_id, user)])
    if isinstance(outcome, ChatError):
        raise outcome
    return outcome


def members_of(asks: Sequence[tuple[Any, AbstractBaseUser]]) -> list[ChatSession | ChatError]:
    """`require_member` for many (session id, user) pairs: one query when every answer is
    yes. One outcome per pair, in order: the session, or NotFound / Forbidden."""
    ids = [_uuid(session_id) for session_id, _ in asks]
    found = sessions_of_members(list({i for i in ids if i}), list({user.pk for _, user in asks}))
    sessions: dict[tuple[uuid.UUID, Any], ChatSession] = {(s.pk, s.member_id): s for s in found}  # type: ignore[attr-defined]
    return [
        (sessions.get((session_id, user.pk)) or _not_a_member(session_id))
        if session_id
        else NotFound("no such session")
        for session_id, (_, user) in zip(ids, asks, strict=True)
    ]


def _uuid(session_id: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(session_id))
    except ValueError:
        return None


def _not_a_member(session_id: uuid.UUID) -> ChatError:
    if ChatSession.objects.filter(pk=session_id).exists():
        return Forbidden("you are not a member of this session")
    return NotFound("no such session")


def _check_model(model: str) -> None:
    if not is_configured(model):
        raise Invalid(f"model {model!r} is not configured")


def _check_options(model: str, options: Any, *, kept: bool = False) -> None:
    """Options the model's provider would refuse at every turn (`provider_bad_request`) are
    refused now, where the owner sets them; what only the vendor can judge is not asked.
    `kept`: the session's options, kept with a new model (the message says so)."""
    hint = " (the session's modelOptions: give new ones with the model)" if kept else ""
    if not isinstance(options, dict):  # stored before bodies were checked
        raise Invalid(f"modelOptions for {model!r} must be a JSON object{hint}")
    try:
        check_options(model, options)
    except ProviderError as exc:
        raise Invalid(f"modelOptions for {model!r}: {exc.message}{hint}") from None


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
    _check_options(model, model_options or {})
    with transaction.atomic():
        session = ChatSession.objects.create(
            owner=cast(Any, owner),  # the configured user model; given as an object, it is not read again
            title=title,
            model=model,
            model_options=model_options or {},
            policy=policy or app_settings.DEFAULT_POLICY,
        )
        Membership.objects.create(session=session, user_id=owner.pk, role=Membership.MemberRole.OWNER)
        # Its numbering starts at 1; a counter found missing later was lost (live_state.py).
        transaction.on_commit(lambda: live_state.start_numbering_sync(str(session.pk)))
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
    """Any member may rename the session; its default policy, model and model options are
    the owner's to change (they decide what every member's messages do). A new model or new
    options are checked together (the options kept with a new model, the model kept with new
    options): options its provider refuses up front would fail every turn. Every device of
    the session learns the new settings (`session.updated`)."""
    if (model, model_options, policy) != (None, None, None) and session.owner_id != user.pk:  # type: ignore[attr-defined]
        raise Forbidden("only the owner changes the default policy, the model and its options")
    if model is not None:
        _check_model(model)
    with transaction.atomic():
        # Changed as it is now: another member's change meanwhile is kept, a deletion wins.
        session = locked_session(session.pk)
        if (model, model_options) != (None, None):
            _check_options(
                model if model is not None else session.model,
                model_options if model_options is not None else session.model_options,
                kept=model_options is None,
            )
        changes = {
            name: value
            for name, value in (
                ("title", title),
                ("model", model),
                ("model_options", model_options),
                ("policy", Policy(policy) if policy is not None else None),
            )
            if value is not None and getattr(session, name) != value
        }
        if not changes:
            return session  # nothing to tell anyone
        for name, value in changes.items():
            setattr(session, name, value)
        session.save(update_fields=[*changes, "updated_at"])
        emit.on_commit(str(session.pk), [build.session_updated(session, by=str(user.get_username()))])
    return session


def member_add(*, session: ChatSession, by: AbstractBaseUser, username: str) -> Membership:
    if session.owner_id != by.pk:  # type: ignore[attr-defined]
        raise Forbidden("only the owner invites members")
    user_model = get_user_model()
    try:
        user = user_model.objects.get(username=username)
    except user_model.DoesNotExist as exc:
        raise NotFound(f"no user named {username!r}") from exc
    with transaction.atomic():
        locked_session(session.pk)  # deleted meanwhile: not found (its row must outlive the invitation)
        membership, created = Membership.objects.get_or_create(session=session, user=user)
        if created:
            event = build.member_joined(username, role=membership.role, by=str(by.get_username()))
            emit.on_commit(str(session.pk), [event])
    return membership


def member_leave(*, session: ChatSession, user: AbstractBaseUser) -> None:
    if session.owner_id == user.pk:  # type: ignore[attr-defined]
        raise Invalid("the owner cannot leave their own session")
    # Every device hears `member.left` (`_membership_deleted`).
    Membership.objects.filter(session=session, user_id=user.pk).delete()


# --- deleting a session ----------------------------------------------------------------------

# Sent inside a session's deletion, under its lock, before its rows go (kwargs: session, by).
# A receiver stops the session's turns and answers the turns whose workers must hear it:
# [(session id, turn pks)]. The cancellation package connects it (cancellation/services.py):
# it imports this module, so this module cannot import it.
session_deleting = Signal()

# Who is deleting sessions in this context (`session_delete`); a deletion made elsewhere (a
# user's, which takes the sessions they own with them; a queryset's in a shell) is their
# owner's.
_deleted_by: ContextVar[AbstractBaseUser | None] = ContextVar("sessions_app_deleted_by", default=None)


def session_delete(*, session: ChatSession, by: AbstractBaseUser, as_admin: bool = False) -> None:
    """Delete a session and everything in it: the owner's to do (any session's `as_admin`,
    an operator in the admin). Raises NotFound if it is gone already.

    One transaction, under the session's lock; what a session's deletion does is done for
    every deletion of its row, however made (`_session_going`)."""
    if not as_admin and session.owner_id != by.pk:  # type: ignore[attr-defined]
        raise Forbidden("only the owner deletes the session")
    with transaction.atomic():
        lock_sessions([session.pk])
        mark = _deleted_by.set(by)
        try:
            _, per_model = ChatSession.objects.filter(pk=session.pk).delete()
        finally:
            _deleted_by.reset(mark)
        if not per_model.get(ChatSession._meta.label):
            raise NotFound("no such session")  # deleted meanwhile: the rollback undoes the cancel


def _session_going(sender: Any, instance: ChatSession, origin: Any = None, **kwargs: Any) -> None:
    """A session's row is about to be deleted (inside the deletion's transaction, before its
    rows go): its turns in flight are cancelled (the cancellation service, authoriser
    bypassed: `session_deleting`). After the commit, in this order (decision 045):
    `session.deleted` reaches every device; every web process closes the session's
    websockets with 4404 once that event is written to them; the workers stop its turns and
    publish nothing more for them; its Redis state goes (its numbering and log a minute
    later: live_state). Registered ahead of the announcements of its memberships' ends
    (their rows go after this): a device closes once, with 4404."""
    by = _deleted_by.get()
    if by is None:  # not `session_delete`, which holds the session's lock already
        by = origin if isinstance(origin, get_user_model()) and origin.pk == instance.owner_id else instance.owner  # type: ignore[attr-defined]
        lock_sessions([instance.pk])
    session_id = str(instance.pk)
    event = build.session_deleted(str(by.get_username()))
    signals: list[tuple[str, list[int]]] = []
    for _receiver, stop in session_deleting.send(sender=ChatSession, session=instance, by=by):
        signals.extend(cast(list[tuple[str, list[int]]], stop or []))
    answers = list(
        MessageNode.objects.filter(session_id=instance.pk, role=Role.ASSISTANT).values_list("node_id", flat=True)
    )
    # Each step its own: one failing (logged) does not hold back the next.
    at_answer(lambda: emit.now(session_id, [event]))
    at_answer(lambda: _announce_session_deleted(session_id))
    at_answer(lambda: live_state.signal_cancels_sync(signals, deleted=True))
    at_answer(lambda: live_state.forget_session_sync(session_id, answers))


def _announce_session_deleted(session_id: str) -> None:
    """Every web process closes the session's websockets (4404), each once the events it
    received before this (`session.deleted` among them) are written (web/hub.py)."""
    payload = orjson.dumps({"session": session_id, "deleted": True})
    live_state.sync_redis().publish(membership_ended_channel(), payload)


# --- a membership ends: its user's open websockets of the session close ------------------


def membership_ended_channel() -> str:
    """Redis pub/sub channel on which an ended membership is announced to every web process
    (their hubs close that user's websockets of that session: web/hub.py), and a deleted
    session (`{"session", "deleted": true}`: every websocket of it)."""
    return f"{key_prefix()}:membership-ended"


def _membership_deleted(sender: Any, instance: Membership, origin: Any = None, **kwargs: Any) -> None:
    """Any deletion of a membership (leave, the admin, its user's account deleted): once
    committed, every device hears `member.left`, and every web process closes the member's
    websockets of the session (4403). Membership is checked when a websocket connects, so
    without this a member who left would go on receiving the session live. Nothing where
    the session goes too: its deletion tells every device itself (`_session_going`)."""
    if isinstance(origin, ChatSession) or getattr(origin, "model", None) is ChatSession:
        return
    session_id, user_id = str(instance.session_id), str(instance.user_id)  # type: ignore[attr-defined]
    client_id = str(instance.user.get_username())
    after_commit(lambda: _membership_ended(session_id, user_id, client_id))


def _membership_ended(session_id: str, user_id: str, client_id: str) -> None:
    if not ChatSession.objects.filter(pk=session_id).exists():  # its owner's account went
        return
    emit.now(session_id, [build.member_left(client_id)])
    _announce_membership_ended(session_id, user_id)


def _announce_membership_ended(session_id: str, user_id: str) -> None:
    """Every web process closes the member's websockets of the session (4403: web/hub.py)."""
    payload = orjson.dumps({"session": session_id, "user": user_id})
    live_state.sync_redis().publish(membership_ended_channel(), payload)


def connect_signals() -> None:
    """Called once from the app's ready(): any deletion of a membership (leave, the admin, a
    cascade) is announced, and any deletion of a session (the service, its owner's account
    deleted, a queryset's) stops it, whichever process makes it."""
    post_delete.connect(_membership_deleted, sender=Membership, dispatch_uid="sessions_app.membership_ended")
    pre_delete.connect(_session_going, sender=ChatSession, dispatch_uid="sessions_app.session_going")
