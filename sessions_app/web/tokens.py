"""API tokens and websocket tickets (docs/security.md, "Credentials").

- API tokens are django-rest-knox's: each login (`POST /api/auth/token`) gets a token of its
  own, stored only as a SHA-512 digest, valid for REST_KNOX["TOKEN_TTL"]
  (API_TOKEN_TTL_HOURS). Logging out, changing one's password and
  `POST /api/auth/token/revoke` delete them.
- A websocket ticket is a one-use credential for one handshake, valid for
  SESSIONS_APP["WS_TICKET_SECONDS"]: a browser or a client that cannot set headers puts it in
  the URL (`?ticket=`) instead of a long-lived token. A ticket is the user's, not one
  token's: it carries how many times all of the user's tokens had been revoked when it was
  issued, and a websocket opened with it closes once that count has moved (web/open_sockets.py).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_save, pre_save
from django.dispatch import Signal
from django.utils import timezone
from knox.crypto import hash_token
from knox.models import AuthToken
from knox.settings import knox_settings

from sessions_app.conf import app_settings, key_prefix
from sessions_app.infra import live_state
from sessions_app.infra.sql import unique_row

logger = logging.getLogger(__name__)

MAX_KEY_CHARS = 200
# A logout's mark on its session outlives the checks its change starts (seconds); by then
# Django has deleted the session.
ENDED_SESSION_SECONDS = 3600


def issue(user: AbstractBaseUser) -> str:
    """A new API token for `user` (the key is shown once; only its digest is kept). The
    user's expired tokens are deleted on the way."""
    AuthToken.objects.filter(user_id=user.pk, expiry__lte=timezone.now()).delete()
    _row, key = AuthToken.objects.create(user=user, expiry=knox_settings.TOKEN_TTL)
    return str(key)


def well_formed(key: str) -> bool:
    return bool(key) and len(key) <= MAX_KEY_CHARS and key.isascii()


def lookup(key: str) -> tuple[AbstractBaseUser, AuthToken] | None:
    """The active user and token row of an API token key; None if it is unknown, expired
    (then deleted) or its user is inactive. One query by primary key."""
    key = key.strip()
    if not well_formed(key):
        return None
    row = unique_row(AuthToken.objects.select_related("user").filter(digest=hash_token(key)))
    if row is None:
        return None
    if row.expiry is not None and row.expiry <= timezone.now():
        row.delete()
        return None
    if not row.user.is_active:
        return None
    return row.user, row


def revoke(*, user: AbstractBaseUser, key: str | None = None) -> int:
    """Delete one token of `user` (the one with `key`), or all of them; how many went.
    Revoking them all (logout and a password change too) also counts one more revocation
    for the user's websocket tickets, as it commits: a websocket opened with a ticket issued
    before it then closes, as those opened with the tokens do (web/open_sockets.py)."""
    tokens = AuthToken.objects.filter(user_id=user.pk)
    if key is not None:
        tokens = tokens.filter(digest=hash_token(key.strip()))
    else:
        pk = user.pk
        # Registered before the deletion's own renewal of the generation (token_cache), so
        # that the count has moved when the processes hear of the change.
        transaction.on_commit(lambda: live_state.sync_redis().incr(_revoked_all_key(pk)))
    deleted, _ = tokens.delete()
    if key is None and not deleted:
        # No token went, so no model signal said so, but the tickets' count did move.
        all_revoked_none_held.send(sender=AuthToken, user=user)
    return int(deleted)


# Sent when all of a user's tokens were revoked and they held none: credentials changed all
# the same (token_cache renews the generation on it).
all_revoked_none_held = Signal()  # kwargs: user


def _revoked_all_key(user_pk: Any) -> str:
    return f"{key_prefix()}:tokens-revoked-all:{user_pk}"


def revocation_counts(user_pks: list[Any]) -> list[int]:
    """How many times all the tokens of each user were revoked (0: never, or Redis lost it)."""
    return [int(value or 0) for value in _values([_revoked_all_key(pk) for pk in user_pks])]


def _values(keys: list[str]) -> list[Any]:
    """The values of `keys` in one round trip (None where absent), none asked for no key."""
    return live_state.sync_redis().mget(keys) if keys else []


# --- revocation on logout and password change --------------------------------------------


def _on_logout(sender: Any, request: Any, user: AbstractBaseUser | None, **kwargs: Any) -> None:
    if user is not None:
        session_key = getattr(getattr(request, "session", None), "session_key", None)
        if session_key:
            # Django deletes the session only after this signal: the mark makes the websockets
            # opened with it close even when a process checks them in between (web/open_sockets.py).
            live_state.sync_redis().set(_ended_session_key(session_key), b"1", ex=ENDED_SESSION_SECONDS)
        revoke(user=user)  # renews the credentials generation, whatever it deletes


def _ended_session_key(session_key: str) -> str:
    return f"{key_prefix()}:session-ended:{hashlib.sha256(session_key.encode()).hexdigest()}"


def ended_sessions(session_keys: list[str]) -> list[bool]:
    """Whether each browser session was logged out of lately."""
    return [value is not None for value in _values([_ended_session_key(key) for key in session_keys])]


def _note_password_change(sender: Any, instance: AbstractBaseUser, update_fields: Any = None, **kwargs: Any) -> None:
    """Before a user row is saved: remember whether its password hash changes (one read,
    only for saves that may write the password; a login's last_login update does not)."""
    if instance.pk is None or (update_fields is not None and "password" not in update_fields):
        return
    stored = type(instance)._default_manager.filter(pk=instance.pk).values_list("password", flat=True).first()
    instance._chat_password_changed = stored is not None and stored != instance.password  # type: ignore[attr-defined]


def _on_password_change(sender: Any, instance: AbstractBaseUser, created: bool = False, **kwargs: Any) -> None:
    if getattr(instance, "_chat_password_changed", False):
        instance._chat_password_changed = False  # type: ignore[attr-defined]
        count = revoke(user=instance)
        logger.info("password of user %s changed: %d API tokens revoked", instance.pk, count)


def connect_signals() -> None:
    """Called once from the app's ready(): every process that changes users revokes."""
    user_model = get_user_model()
    user_logged_out.connect(_on_logout, dispatch_uid="sessions_app.tokens.logout")
    pre_save.connect(_note_password_change, sender=user_model, dispatch_uid="sessions_app.tokens.pw_before")
    post_save.connect(_on_password_change, sender=user_model, dispatch_uid="sessions_app.tokens.pw_after")


# --- websocket tickets -------------------------------------------------------------------


def _ticket_key(ticket: str) -> str:
    return f"{key_prefix()}:ws-ticket:{ticket}"


def ticket_issue(user: AbstractBaseUser) -> tuple[str, int]:
    """A one-use websocket ticket for `user` and its lifetime in seconds."""
    ticket = secrets.token_urlsafe(32)
    seconds = int(app_settings.WS_TICKET_SECONDS)
    [revocations] = revocation_counts([user.pk])  # one that lands meanwhile closes the socket later: safe
    live_state.sync_redis().set(_ticket_key(ticket), f"{user.pk} {revocations}", ex=seconds)
    return ticket, seconds


async def ticket_redeem(ticket: str) -> tuple[str, int] | None:
    """The user pk a ticket was issued to and the user's revocation count then, once: the
    ticket is gone after this."""
    if not ticket or len(ticket) > MAX_KEY_CHARS or not ticket.isascii():
        return None
    value = await live_state.async_redis().getdel(_ticket_key(ticket))
    if value is None:
        return None
    pk, _, revocations = (value.decode() if isinstance(value, bytes) else str(value)).partition(" ")
    return pk, int(revocations) if revocations.isdigit() else 0
