"""API tokens a web process has already checked: a request with a known token costs one
Redis read on the event loop instead of a database query on a thread (the query and its
thread hop were ~1 ms of a trivial API request's ~1.8; decision 024).

Revocation stays immediate everywhere. Every change that can turn a token away (a token
changed or deleted: revoke, logout, the admin, expiry; a user saved or deleted: deactivated, password
changed) renews one credentials generation in Redis as it commits, before the revoking
request answers. A known token is trusted only while the generation is the one read before
its database check; anything else (a bump, Redis unreachable) checks the database again.
Known tokens are also forgotten after KNOWN_SECONDS, so that a change made without model
signals (a queryset `update()`) shows within a minute.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.utils import timezone
from knox.crypto import hash_token
from knox.models import AuthToken

from sessions_app.conf import key_prefix
from sessions_app.infra import live_state
from sessions_app.infra.batching import GroupedCall, grouped
from sessions_app.infra.db_threads import db
from sessions_app.web import tokens

KNOWN_SECONDS = 60.0
KNOWN_LIMIT = 10_000  # tokens remembered per process; the oldest go first


@dataclass(frozen=True, slots=True)
class _Known:
    user: AbstractBaseUser
    expiry: datetime | None
    generation: bytes
    until: float  # time.monotonic()


_known: dict[str, _Known] = {}


def _generation_key() -> str:
    return f"{key_prefix()}:credentials-generation"


async def user_for_token(key: str) -> AbstractBaseUser | None:
    """The active user an API token belongs to, or None if it is unknown, expired or
    revoked (tokens.lookup, remembered while nothing has been revoked since)."""
    key = key.strip()
    if not tokens.well_formed(key):
        return None
    digest = hash_token(key)
    generation = await grouped("credentials-generation", lambda: GroupedCall(_generations, max_batch=None)).call(None)
    known = _known.get(digest)
    if known is not None and generation is not None and known.generation == generation:
        if known.until > time.monotonic() and (known.expiry is None or known.expiry > timezone.now()):
            return known.user
    found = await db(tokens.lookup)(key)
    if found is None:
        _known.pop(digest, None)
        return None
    user, row = found
    if generation is not None:
        _remember(digest, _Known(user, row.expiry, generation, time.monotonic() + KNOWN_SECONDS))
    return user


async def _generations(requests: list[None]) -> list[bytes | None]:
    """One read for every request that arrived while the previous read was under way (each
    read starts after its requests arrived, so none can miss a change that committed
    before it)."""
    return [await _generation()] * len(requests)


async def _generation() -> bytes | None:
    """The credentials generation; None if Redis cannot say (then nothing is trusted). A
    generation is random, never counted: one that Redis lost starts afresh, matching
    nothing remembered."""
    try:
        client = live_state.async_redis()
        value = await client.get(_generation_key())
        if value is None:
            await client.set(_generation_key(), uuid.uuid4().hex, nx=True)
            value = await client.get(_generation_key())
    except Exception:
        return None
    return value if isinstance(value, bytes) else None


def _remember(digest: str, known: _Known) -> None:
    if len(_known) >= KNOWN_LIMIT and digest not in _known:
        _known.pop(next(iter(_known)))
    _known[digest] = known


def credentials_changed() -> None:
    """A token or user changed in the current transaction: once it commits (before the
    request that made the change answers), no process trusts what it remembers."""
    transaction.on_commit(_bump)


def _bump() -> None:
    _known.clear()
    live_state.sync_redis().set(_generation_key(), uuid.uuid4().hex)


# --- what changes credentials ------------------------------------------------------------


def _token_changed(sender: Any, created: bool = False, **kwargs: Any) -> None:
    if not created:  # a new token changes nothing remembered
        credentials_changed()


def _user_changed(sender: Any, update_fields: Any = None, **kwargs: Any) -> None:
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return  # a login changes nothing a token may do
    credentials_changed()


def connect_signals() -> None:
    """Called once from the app's ready(), in every process that may change credentials."""
    user_model = get_user_model()
    post_save.connect(_token_changed, sender=AuthToken, dispatch_uid="sessions_app.token_cache.token_saved")
    post_delete.connect(_token_changed, sender=AuthToken, dispatch_uid="sessions_app.token_cache.token_deleted")
    post_save.connect(_user_changed, sender=user_model, dispatch_uid="sessions_app.token_cache.user_saved")
    post_delete.connect(_user_changed, sender=user_model, dispatch_uid="sessions_app.token_cache.user_deleted")
